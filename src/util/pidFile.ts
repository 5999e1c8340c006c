/**
 * The pid file of `serve` (`<data dir>/serve.pid`, CONTRACT.md §2 and §4 "Neighbours"): one `serve`
 * per data dir. The file holds `<pid> <start time>\n`, the start time being field 22 of
 * `/proc/<pid>/stat` (clock ticks since boot, proc(5)), so that a pid the kernel has since given to
 * another program counts as stale. It is created with O_EXCL and linked into place (link(2) fails
 * when the name exists: two starts cannot both win), never written through a symbolic link.
 */
import { readFileSync } from 'node:fs';
import { link, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditGatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { createPrivateTemp, lstatOrNull, readPrivateFile } from './privateFiles.js';

/** The start time of process `pid` (proc(5) `stat` field 22), or null where /proc cannot tell. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) is in parentheses and may hold spaces: count from the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null; // fields 3.. → index 0 is field 3, so field 22 is index 19
  } catch {
    return null;
  }
}

/** True when a process with this pid exists (kill(2) with signal 0; EPERM means it exists). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when the pid file's holder still runs: the pid exists and, where its start time was
 * recorded, has the same start time; a file of an older version (pid alone) counts only when the
 * process' command line names audit-gateway.
 */
export function holderRuns(pid: number, startTime: string | null): boolean {
  if (!pidExists(pid)) return false;
  const now = processStartTime(pid);
  if (startTime && now) return now === startTime;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('audit-gateway');
  } catch {
    return true; // no /proc: the pid exists, assume it is ours
  }
}

/**
 * Takes `<dataDir>/serve.pid` for this process. A file naming a live `serve` is an error; a stale
 * one, one naming another program, a symbolic link or a file someone else owns is removed (with a
 * warning) and replaced. The data dir must already be private (ensurePrivateDir).
 * @returns a function that removes the file again (only while it still names this process).
 * @throws AuditGatewayError naming the data dir when another `serve` holds it.
 */
export async function takePidFile(dataDir: string, log: Logger): Promise<() => Promise<void>> {
  const file = join(dataDir, 'serve.pid');
  const mine = `${process.pid} ${processStartTime(process.pid) ?? '-'}\n`;
  const tmp = await createPrivateTemp(file, mine);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, file);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP') && !(await lstatOrNull(file))) {
          // A file system without hard links: rename is not exclusive, but still never follows a link.
          await rename(tmp, file);
          break;
        }
        if (code !== 'EEXIST' || attempt >= 5) throw err;
      }
      let text: string | null = null;
      let why = 'stale';
      try {
        text = await readPrivateFile(file);
      } catch (err) {
        why = (err as Error).message;
      }
      if (text !== null) {
        const [pidText, start] = text.trim().split(/\s+/);
        const pid = Number(pidText);
        if (
          Number.isInteger(pid) &&
          pid > 0 &&
          pid !== process.pid &&
          holderRuns(pid, start && start !== '-' ? start : null)
        ) {
          throw new AuditGatewayError(
            `--data-dir ${dataDir}: already used by another 'audit-gateway serve' (pid ${pid}); stop it or choose another --data-dir`,
          );
        }
      }
      await unlink(file).catch(() => {});
      log.warn(
        { file, reason: why },
        'removed a stale pid file (its process no longer runs, or it was not ours)',
      );
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return async () => {
    const st = await lstatOrNull(file);
    if (!st?.isFile()) return;
    const text = await readPrivateFile(file).catch(() => null);
    if (text === mine) await unlink(file).catch(() => {});
  };
}
