/**
 * Private files and directories of the daemon (CONTRACT.md §4 "Neighbours"): the data dir, the spool
 * directory, the pid file and the password file belong to the user `serve` runs as, are not
 * readable by others (0700/0600), and a file in them is never followed through a symbolic link.
 *
 * Why: as root the embedded Postgres runs as `postgres`; before this module it owned the data dir
 * and could replace `serve.pid` with a symbolic link that root then wrote through (issue 10).
 * Opening with `O_NOFOLLOW` makes the kernel refuse the link (ELOOP, open(2)); creating with
 * `O_EXCL` never follows one either; a rename replaces a link, never its target (rename(2)).
 */
import { constants, type Stats } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AuditGatewayError } from '../errors.js';

/** Our uid (-1 where the platform has none: then no ownership check is made). */
function myUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : -1;
}

/** Options of {@link ensurePrivateDir}. */
export interface PrivateDirOptions {
  /** The mode to set (default 0o700). */
  mode?: number;
  /** A group to give the directory (e.g. postgres' group, with mode 0o710), default: leave it. */
  gid?: number;
  /** Which flag or thing names the directory in errors, e.g. `--data-dir`. */
  what: string;
  /** Refuse a symbolic link at `dir` itself (a directory inside the data dir); default: follow it. */
  noLink?: boolean;
}

/**
 * Creates `dir` (and missing parents) and makes it private: a directory (a symbolic link the user
 * gave as the directory itself is followed; links inside are not), owned by us, with `mode`.
 * As root a directory owned by someone else is taken back (a data dir an older version handed to
 * `postgres`); as another user that is an error, since its owner could read or forge what we write.
 * @throws AuditGatewayError naming `what` and the path when it is not a directory or not ours.
 */
export async function ensurePrivateDir(dir: string, options: PrivateDirOptions): Promise<Stats> {
  const mode = options.mode ?? 0o700;
  await mkdir(dir, { recursive: true, mode });
  if (options.noLink && (await lstat(dir)).isSymbolicLink()) {
    throw new AuditGatewayError(
      `${options.what} ${dir}: a symbolic link where serve keeps a private directory; remove it`,
    );
  }
  let st = await stat(dir);
  if (!st.isDirectory()) {
    throw new AuditGatewayError(`${options.what} ${dir}: not a directory; remove it or choose another path`);
  }
  const uid = myUid();
  if (uid >= 0 && st.uid !== uid) {
    if (uid !== 0) {
      throw new AuditGatewayError(
        `${options.what} ${dir}: owned by uid ${st.uid}, not by this user (uid ${uid}), who could read or forge what serve keeps there; choose another path`,
      );
    }
    await chown(dir, 0, options.gid ?? st.gid);
  } else if (options.gid !== undefined && st.gid !== options.gid) {
    await chown(dir, st.uid, options.gid);
  }
  if ((st.mode & 0o7777) !== mode) await chmod(dir, mode);
  st = await stat(dir);
  return st;
}

/**
 * Reads a small file without following a symbolic link, and only when it is a regular file owned
 * by `owner` (default: us). Returns null when the file does not exist.
 * @throws AuditGatewayError naming the file when it is a link, not a regular file, or not ours.
 */
export async function readPrivateFile(path: string, owner = myUid()): Promise<string | null> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') {
      throw new AuditGatewayError(`${path}: a symbolic link where serve keeps a private file; remove it`);
    }
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new AuditGatewayError(`${path}: not a regular file; remove it`);
    if (owner >= 0 && st.uid !== owner) {
      throw new AuditGatewayError(
        `${path}: owned by uid ${st.uid}, not uid ${owner}: someone else put it there; remove it`,
      );
    }
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * Writes `data` into a new file beside `path` (created with O_EXCL, mode 0600, so no link is
 * followed), fsyncs it and renames it over `path`: the file appears whole, private, and a symbolic
 * link at `path` is replaced, its target never written (CONTRACT.md §7).
 */
export async function writePrivateFile(path: string, data: string | Buffer): Promise<void> {
  const tmp = await createPrivateTemp(path, data);
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Creates `<path>.<pid>.<n>.tmp` with O_EXCL and mode 0600, writes and fsyncs `data`; returns its
 * name. The caller renames or links it into place and removes it.
 */
export async function createPrivateTemp(path: string, data: string | Buffer): Promise<string> {
  for (let n = 0; ; n++) {
    const tmp = join(dirname(path), `.${basenameOf(path)}.${process.pid}.${n}.tmp`);
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(
        tmp,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && n < 100) continue;
      throw err;
    }
    try {
      await fh.writeFile(data);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw err;
    }
    await fh.close();
    return tmp;
  }
}

function basenameOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

/** lstat that returns null when nothing is there. */
export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
