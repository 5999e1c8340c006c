/**
 * Files a command writes (CONTRACT.md §7): whole or not at all. The data goes to a new file beside
 * the final name (created with O_EXCL | O_NOFOLLOW, mode 0600), which is flushed to disk and then
 * renamed over the final name. So a failed run never loses an existing file, a reader never sees a
 * half-written one, and a symbolic link at the final name is replaced by the rename, its target
 * never opened (rename(2) acts on the link itself).
 */

import { randomBytes } from 'node:crypto';
import { constants, createWriteStream, type WriteStream } from 'node:fs';
import { lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AuditGatewayError, messageOf } from '../errors.js';

/** A file being written: its stream, then `commit()` (rename into place) or `abort()` (removed). */
export interface WholeFile {
  /** Where the data goes; ended by the writer (pipeline) before {@link commit}. */
  stream: WriteStream;
  /** Flushes the data to disk and renames the new file to the final name. */
  commit(): Promise<void>;
  /** Removes the new file; the final name is left as it was. Never throws. */
  abort(): Promise<void>;
}

/**
 * Opens a new file beside `path` for {@link WholeFile} writing.
 * @throws {AuditGatewayError} naming the file (`--output`) when the directory cannot take it
 */
export async function openWholeFile(path: string, flag = '--output'): Promise<WholeFile> {
  if (await isStreamTarget(path)) return openStream(path, flag);
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`);
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(
      temp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (err) {
    throw new AuditGatewayError(`${flag}: cannot write '${path}': ${messageOf(err)}`, 1, { cause: err });
  }
  const stream = createWriteStream('', { fd: handle.fd, autoClose: false });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await handle.close().catch(() => {});
  };
  return {
    stream,
    async commit() {
      try {
        if (!stream.writableFinished) {
          await new Promise<void>((resolve, reject) => {
            stream.once('finish', resolve);
            stream.once('error', reject);
          });
        }
        await handle.sync();
        await close();
        await rename(temp, path);
      } catch (err) {
        await close();
        await unlink(temp).catch(() => {});
        throw new AuditGatewayError(`${flag}: cannot write '${path}': ${messageOf(err)}`, 1, { cause: err });
      }
    },
    async abort() {
      stream.destroy();
      await close();
      await unlink(temp).catch(() => {});
    },
  };
}

/**
 * True for names that are not files to replace: `/dev/…` and `/proc/…` (`/dev/stdout`, a tty) and
 * an existing FIFO, character device or socket. Renaming a new file over them would replace the
 * device node (as root, `/dev/stdout` itself); they are written as the streams they are.
 */
async function isStreamTarget(path: string): Promise<boolean> {
  if (/^\/(dev|proc)\//.test(path)) return true;
  try {
    const st = await lstat(path);
    if (st.isSymbolicLink()) return false; // replaced, never followed (CONTRACT.md §7)
    return st.isFIFO() || st.isCharacterDevice() || st.isSocket();
  } catch {
    return false;
  }
}

/** A device or FIFO written directly: nothing to rename or remove. */
async function openStream(path: string, flag: string): Promise<WholeFile> {
  const fail = (err: unknown) =>
    new AuditGatewayError(`${flag}: cannot write '${path}': ${messageOf(err)}`, 1, { cause: err });
  try {
    await stat(path);
  } catch (err) {
    throw fail(err);
  }
  const stream = createWriteStream(path, { flags: 'w' });
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', (err) => reject(fail(err)));
  });
  return {
    stream,
    async commit() {
      if (!stream.writableFinished) {
        await new Promise<void>((resolve, reject) => {
          stream.once('finish', resolve);
          stream.once('error', reject);
        });
      }
    },
    async abort() {
      stream.destroy();
    },
  };
}
