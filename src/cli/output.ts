/**
 * The process edge of the read commands: writing to stdout with backpressure, a closed stdout
 * (`| head`: EPIPE) as a quiet end (CONTRACT.md §7), colours only where they belong (CONTRACT.md §5:
 * a terminal, `NO_COLOR`, `FORCE_COLOR`, `--no-color`), the terminal width, SIGINT/SIGTERM as a
 * stop request, and export's progress line on stderr.
 */
import { Chalk, type ChalkInstance } from 'chalk';

/** stdout was closed by its reader; the command ends quietly with exit 0. */
export class OutputClosedError extends Error {
  constructor() {
    super('stdout was closed');
    this.name = 'OutputClosedError';
  }
}

let guarded = false;
let stdoutClosed = false;
const closeListeners = new Set<() => void>();

/**
 * Keeps a closed stdout from crashing the process: an `'error'` event without a listener is an
 * uncaught exception. EPIPE (and any other write error) marks stdout closed and tells the
 * listeners of {@link onStdoutClosed}. Idempotent.
 */
export function guardStdout(): void {
  if (guarded) return;
  guarded = true;
  process.stdout.on('error', () => {
    stdoutClosed = true;
    for (const l of closeListeners) l();
  });
}

/** Calls `fn` once stdout is closed; returns a function that removes it. */
export function onStdoutClosed(fn: () => void): () => void {
  closeListeners.add(fn);
  return () => closeListeners.delete(fn);
}

/** True for errors that only mean "the reader of stdout went away". */
export function isOutputClosed(err: unknown): boolean {
  if (err instanceof OutputClosedError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return (
    code === 'EPIPE' ||
    (stdoutClosed && (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_DESTROYED'))
  );
}

/**
 * Writes text to stdout, waiting for `'drain'` when its buffer is full.
 * @throws {OutputClosedError} when stdout is (or gets) closed
 */
export function writeOut(text: string): Promise<void> {
  if (stdoutClosed) return Promise.reject(new OutputClosedError());
  if (text.length === 0) return Promise.resolve();
  const ok = process.stdout.write(text);
  if (ok) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = () => {
      process.stdout.off('drain', done);
      off();
      if (stdoutClosed) reject(new OutputClosedError());
      else resolve();
    };
    const off = onStdoutClosed(done);
    process.stdout.once('drain', done);
  });
}

/** The `--no-color` option as commander gives it (`color: false`). */
export interface ColorOption {
  color?: boolean;
}

/**
 * Whether to colour output written to `stream`: never with `--no-color` or a non-empty `NO_COLOR`;
 * always with `FORCE_COLOR` (other than `0`/`false`); else only on a terminal that is not `dumb`.
 */
export function useColor(
  opts: ColorOption,
  stream: { isTTY?: boolean } = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (opts.color === false) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined) return env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false';
  return stream.isTTY === true && env.TERM !== 'dumb';
}

/** A chalk instance that colours only when {@link useColor} says so. */
export function chalkFor(opts: ColorOption, stream: { isTTY?: boolean } = process.stdout): ChalkInstance {
  return new Chalk({ level: useColor(opts, stream) ? 1 : 0 });
}

/**
 * The width to fit tables and lines to: `COLUMNS` when set (as `ls` does), else the terminal's,
 * else undefined (not a terminal).
 */
export function terminalColumns(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const fromEnv = Number(env.COLUMNS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return process.stdout.isTTY ? process.stdout.columns || 80 : undefined;
}

/**
 * An AbortSignal that aborts on SIGINT or SIGTERM (tail ends with exit 0) or when stdout closes.
 * Call `detach` when done, which removes the handlers.
 */
export function stopSignal(): { signal: AbortSignal; detach(): void } {
  const ctl = new AbortController();
  const stop = () => ctl.abort();
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const off = onStdoutClosed(stop);
  return {
    signal: ctl.signal,
    detach: () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      off();
    },
  };
}

/**
 * export's progress line on stderr (rows, rows/s, elapsed), redrawn at most every 200 ms, only when
 * enabled (stderr is a terminal, the data do not go to that same terminal, no `--no-progress`).
 * The line is always erased at the end (`\r` + erase-line), so it is never glued to data or to a
 * later message; `done()` then writes one summary line.
 */
export function progressLine(enabled: boolean = process.stderr.isTTY === true): {
  update(rows: number): void;
  done(rows: number, what?: string): void;
  clear(): void;
} {
  const start = Date.now();
  let lastDraw = 0;
  let drawn = false;
  const elapsed = () => (Date.now() - start) / 1000;
  const clear = () => {
    if (drawn) process.stderr.write('\r\u001b[K');
    drawn = false;
  };
  return {
    update(rows) {
      if (!enabled) return;
      const now = Date.now();
      if (now - lastDraw < 200) return;
      lastDraw = now;
      const secs = elapsed();
      const rate = secs > 0 ? Math.round(rows / secs) : rows;
      process.stderr.write(
        `\r\u001b[K${rows.toLocaleString('en-US')} rows  ${rate.toLocaleString('en-US')} rows/s  ${secs.toFixed(1)} s`,
      );
      drawn = true;
    },
    done(rows, what = '') {
      clear();
      if (enabled) {
        process.stderr.write(
          `audit-gateway: exported ${rows.toLocaleString('en-US')} entries${what} in ${elapsed().toFixed(1)} s\n`,
        );
      }
    },
    clear,
  };
}
