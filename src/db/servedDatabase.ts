/**
 * How the read commands find the database that `serve` writes to when it runs with a database URL
 * (issue 12; CONTRACT.md §2): `serve` records the URL in `<data dir>/serve-database.json`, and a
 * read command given no URL (no flag, environment variable or configuration file) reads it from
 * the same data dir and says so on stderr.
 *
 * What a security reviewer asked of it:
 * - the password is never written: the URL is stored without it, and the reader authenticates with
 *   its own PGPASSWORD or ~/.pgpass (node-postgres reads both), as psql would;
 * - the file is written whole (a new file, O_EXCL | O_NOFOLLOW, mode 0600, renamed into place);
 * - it is read only when it is a regular file (O_NOFOLLOW), owned by the reading user or root, and
 *   writable by no one else, so another local user (or the embedded server's `postgres` user) cannot
 *   point the read commands at a database of their own;
 * - it is used only while the `serve` that wrote it runs (its pid alive and an audit-gateway
 *   process), and `serve` removes it on exit.
 * Format: one JSON object `{"pid": 123, "url": "postgres://audit@db:5432/audit"}`.
 */
import { randomBytes } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { withoutPassword } from './databaseUrl.js';
import { isAlive } from './embedded.js';

/** The file's name inside the data dir. */
export const SERVED_DATABASE_FILE = 'serve-database.json';

/** What the file records. */
export interface ServedDatabase {
  pid: number;
  /** The URL without its password. */
  url: string;
  /** The file it came from. */
  file: string;
}

/**
 * Records the URL `serve` writes to (without its password) in the data dir.
 * @returns a function that removes the record (idempotent, never throws)
 * @throws the file system's error when the data dir cannot take the file
 */
export async function recordServedDatabase(
  dataDir: string,
  url: string,
  pid = process.pid,
): Promise<() => Promise<void>> {
  const file = join(dataDir, SERVED_DATABASE_FILE);
  const temp = `${file}.${randomBytes(6).toString('hex')}.partial`;
  const h = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await h.writeFile(`${JSON.stringify({ pid, url: withoutPassword(url) })}\n`);
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(temp, file);
  let removed = false;
  return async () => {
    if (removed) return;
    removed = true;
    await unlink(file).catch(() => {});
  };
}

/** True when `pid` runs and (where /proc tells) is an audit-gateway process, not a reused pid. */
function isServe(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('audit-gateway');
  } catch {
    return true; // no /proc (or not readable): the pid check alone
  }
}

/**
 * The database of the `serve` running on `dataDir`, or undefined when there is none, the file is
 * not trustworthy (see the module doc), or its `serve` is gone.
 */
export async function readServedDatabase(dataDir: string): Promise<ServedDatabase | undefined> {
  const file = join(dataDir, SERVED_DATABASE_FILE);
  let text: string;
  try {
    const h = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const st = await h.stat();
      const uid = process.getuid?.() ?? 0;
      if (!st.isFile() || (st.uid !== uid && st.uid !== 0) || (st.mode & 0o022) !== 0) return undefined;
      text = await h.readFile('utf8');
    } finally {
      await h.close();
    }
  } catch {
    return undefined;
  }
  try {
    const rec = JSON.parse(text) as { pid?: unknown; url?: unknown };
    if (typeof rec.pid !== 'number' || typeof rec.url !== 'string' || !isServe(rec.pid)) return undefined;
    return { pid: rec.pid, url: rec.url, file };
  } catch {
    return undefined;
  }
}
