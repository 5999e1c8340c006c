/**
 * Runs the built binary (`node bin/audit-gateway …`, which runs dist/: `npm run build` first) for
 * the read-command tests: to completion, under a pseudo-terminal (`script`), or in the background
 * with its stdout lines collected.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The binary under test. */
export const BIN = join(REPO, 'bin', 'audit-gateway');

/** The outcome of one run. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment for a child: no database, colour or TTY-width variables unless given. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(AUDIT_GATEWAY_|DATABASE_URL$|NO_COLOR$|FORCE_COLOR$|COLUMNS$|VITEST|NODE_OPTIONS$)/.test(k))
      continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs `node bin/audit-gateway ...args` to its end. */
export function run(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return runCommand(process.execPath, [BIN, ...args], opts);
}

/** Runs any command to its end (e.g. `bash -c` for pipes). */
export function runCommand(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: childEnv(opts.env), cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    // decode as a stream: a chunk may end inside a multi-byte character
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

/** Single-quotes a word for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs the binary with stdout on a pseudo-terminal (util-linux `script`), returning what the
 * terminal showed (with `\r\n` line ends turned into `\n`).
 */
export async function runInPty(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const cmd = [process.execPath, BIN, ...args].map(shq).join(' ');
  const r = await runCommand('script', ['-qfec', cmd, '/dev/null'], { env });
  return { ...r, stdout: r.stdout.replace(/\r\n/g, '\n') };
}

/** A background run whose stdout lines are collected as they come. */
export class Background {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  private partial = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      env: childEnv(env),
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      const text = this.partial + d;
      const parts = text.split('\n');
      this.partial = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((r) => this.child.on('close', (code, signal) => r({ code, signal })));
  }

  /** Waits until `pred` holds for the collected lines (polling every 25 ms), or fails after `ms`. */
  async waitFor(pred: (lines: string[]) => boolean, ms = 5000, what = 'output'): Promise<void> {
    const end = Date.now() + ms;
    while (!pred(this.lines)) {
      if (Date.now() > end) {
        throw new Error(
          `timed out waiting for ${what}; got:\n${this.lines.join('\n')}\nstderr:\n${this.stderr}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Sends SIGINT and waits for the exit. */
  async interrupt(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.kill('SIGINT');
    return this.exited;
  }
}
