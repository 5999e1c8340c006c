/**
 * End-to-end helpers: spawn the built binary (`node bin/audit-gateway serve …`, which runs dist/, so
 * `npm run build` first), talk to its socket, run bash blocks of known-traps.md, and compare stored
 * rows with the wire entries they came from (CONTRACT.md §3, §6).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The binary under test. */
export const BIN = join(REPO, 'bin', 'audit-gateway');

/** One parsed JSON log line of the daemon (pino). */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A child environment without the variables that would change which database or socket is used. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('AUDIT_GATEWAY_') || k === 'DATABASE_URL' || k === 'NO_COLOR' || k === 'FORCE_COLOR')
      continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

const tempDirs = new Set<string>();
const running = new Set<ServeProcess>();

/** A fresh temporary directory, removed by {@link cleanupServes}. */
export async function tempDir(prefix = 'ag-e2e-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

/** Options of {@link startServe}. */
export interface StartOptions {
  /** The database URL; `null` passes none at all (the embedded server). */
  databaseUrl: string | null;
  /** Extra flags, e.g. `['--copy-min-rows', '1']`. */
  args?: string[];
  /** Socket path (default `<dir>/s.sock`). */
  socket?: string;
  /** Data dir (default: the temp dir). */
  dataDir?: string;
  /** `--flush-ms` (default 20). */
  flushMs?: number;
  /** Extra environment variables for the child. */
  env?: NodeJS.ProcessEnv;
  /** Wait for the `serve: listening` log line (default true). */
  waitListening?: boolean;
  /** How long to wait for it (default 60 s). */
  startTimeoutMs?: number;
  /** Pass no --socket: serve picks its default (`socket` then names where it is expected). */
  defaultSocket?: boolean;
  /** A command that runs node, e.g. `['prlimit', '--nofile=150:150', '--']` (default none). */
  wrap?: string[];
}

/** A spawned `serve`. */
export interface ServeProcess {
  proc: ChildProcess;
  pid: number;
  socket: string;
  dataDir: string;
  dir: string;
  /** Every stderr line so far. */
  stderrLines: string[];
  /** The stderr lines that are JSON log lines, parsed. */
  logs(): LogLine[];
  /** Waits for a log line matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code (null when killed by a signal) and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True while the process runs. */
  readonly alive: boolean;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code; SIGKILLs after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

function parseLog(line: string): LogLine | null {
  if (!line.startsWith('{')) return null;
  try {
    return JSON.parse(line) as LogLine;
  } catch {
    return null;
  }
}

/** Polls `fn` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Spawns `node bin/audit-gateway serve --socket … --data-dir … [--database-url …] --flush-ms 20 …`
 * and waits until it logs `serve: listening`.
 */
export async function startServe(opts: StartOptions): Promise<ServeProcess> {
  const dir = opts.dataDir && opts.socket ? dirname(opts.socket) : await tempDir();
  const socket = opts.socket ?? join(dir, 's.sock');
  const dataDir = opts.dataDir ?? dir;
  const args = [
    BIN,
    'serve',
    ...(opts.defaultSocket ? [] : ['--socket', socket]),
    '--data-dir',
    dataDir,
    '--flush-ms',
    String(opts.flushMs ?? 20),
  ];
  if (opts.databaseUrl !== null) args.push('--database-url', opts.databaseUrl);
  args.push(...(opts.args ?? []));
  const [file, ...pre] = [...(opts.wrap ?? []), process.execPath];
  const proc = spawn(file!, [...pre, ...args], {
    cwd: REPO,
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderrLines: string[] = [];
  let partial = '';
  const listeners = new Set<() => void>();
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    if (parts.length > 0) {
      stderrLines.push(...parts);
      for (const l of listeners) l();
    }
  });
  proc.stdout!.resume();
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => {
    proc.on('exit', (code, signal) => {
      alive = false;
      r({ code, signal });
    });
  });
  // 'close' also flushes the last partial stderr line
  proc.on('close', () => {
    if (partial) stderrLines.push(partial);
    partial = '';
    for (const l of listeners) l();
  });
  const logs = () => stderrLines.map(parseLog).filter((l): l is LogLine => l !== null);
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> =>
    new Promise((resolveLog, reject) => {
      const check = () => {
        const hit = logs().find(pred);
        if (hit) {
          cleanup();
          resolveLog(hit);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for a log line; stderr:\n${stderrLines.join('\n')}`,
          ),
        );
      }, timeoutMs);
      const onExit = () => {
        if (check()) return;
        // give the close handler a moment to flush the last lines
        setTimeout(() => {
          if (check()) return;
          cleanup();
          reject(new Error(`serve exited before the expected log line; stderr:\n${stderrLines.join('\n')}`));
        }, 100);
      };
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(listener);
        proc.off('exit', onExit);
      };
      const listener = () => void check();
      listeners.add(listener);
      proc.on('exit', onExit);
      check();
    });
  const s: ServeProcess = {
    proc,
    pid: proc.pid!,
    socket,
    dataDir,
    dir,
    stderrLines,
    logs,
    waitForLog,
    exited,
    get alive() {
      return alive;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000) {
      if (alive) proc.kill(signal);
      const timer = setTimeout(() => {
        if (alive) proc.kill('SIGKILL');
      }, timeoutMs);
      const r = await exited;
      clearTimeout(timer);
      running.delete(s);
      return r.code;
    },
  };
  running.add(s);
  if (opts.waitListening !== false) {
    await waitForLog((l) => l.msg === 'serve: listening', opts.startTimeoutMs ?? 60_000);
  }
  return s;
}

/** Kills every serve still running (SIGKILL) and removes the temp dirs. Call in afterAll. */
export async function cleanupServes(): Promise<void> {
  for (const s of [...running]) {
    if (s.alive) s.proc.kill('SIGKILL');
    await s.exited;
    running.delete(s);
  }
  for (const d of [...tempDirs]) {
    await rm(d, { recursive: true, force: true }).catch(() => {});
    tempDirs.delete(d);
  }
}

/** Where to send: a Unix socket path or a TCP address. */
export type Target = string | { host: string; port: number };

function open(target: Target): Socket {
  return typeof target === 'string' ? connect(target) : connect(target.port, target.host);
}

/** One ack line of CONTRACT.md §4. */
export interface Ack {
  seq: number;
  ok: boolean;
  error?: string;
}

/**
 * Sends `data` on a new connection, half-closes, and resolves with what the daemon wrote back once
 * it closes its side (which it does after every line of the connection is settled).
 * With `ack`, sends the `{"ack":true}` handshake first and returns the parsed ack lines.
 */
export async function send(
  target: Target,
  data: Buffer | string,
  opts: { ack?: boolean; timeoutMs?: number } = {},
): Promise<{ text: string; acks: Ack[] }> {
  const sock = open(target);
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolveDone, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`send: no close from the daemon within ${opts.timeoutMs ?? 30_000} ms`));
    }, opts.timeoutMs ?? 30_000);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolveDone();
    });
  });
  await new Promise<void>((r, reject) => {
    sock.once('connect', () => r());
    sock.once('error', reject);
  });
  if (opts.ack) sock.write('{"ack":true}\n');
  sock.end(data);
  await done;
  const text = Buffer.concat(chunks).toString('utf8');
  const acks = opts.ack
    ? text
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Ack)
    : [];
  return { text, acks };
}

/** The result of a child process run to its end. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after `timeoutMs`). */
export function run(
  file: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string | Buffer } = {},
): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(file, args, {
      cwd: REPO,
      env: opts.env ?? cleanEnv(),
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveRun({ code, signal, stdout, stderr });
    });
  });
}

/** Runs `node bin/audit-gateway ARGS…`. */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return run(process.execPath, [BIN, ...args], { env: opts.env ?? cleanEnv(), timeoutMs: opts.timeoutMs });
}

/** Runs a bash block (of known-traps.md) with `SOCK` and other variables set, in `cwd`-free mode. */
export function runBash(
  script: string,
  vars: Record<string, string>,
  timeoutMs = 60_000,
): Promise<RunResult> {
  return run('bash', ['-c', script], { env: cleanEnv(vars), timeoutMs });
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/** Reads `VmRSS` of a process from /proc, in bytes (null when it is gone). */
export async function rssBytes(pid: number): Promise<number | null> {
  const { readFile } = await import('node:fs/promises');
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** True when a path exists. */
export function exists(path: string): boolean {
  return existsSync(path);
}

// ---------------------------------------------------------------------------------------------
// The contract's model of an entry, to compare stored rows with their input lines.
// ---------------------------------------------------------------------------------------------

/** The default `--redact-keys` of CONTRACT.md §6 (copied here on purpose: the test is the spec). */
export const CONTRACT_REDACT_KEYS = [
  'password',
  'passwd',
  'secret',
  'token',
  'api_key',
  'apikey',
  'authorization',
  'cookie',
  'private_key',
  'access_key',
  'client_secret',
  'refresh_token',
];

/** Postgres cannot hold U+0000 nor unpaired surrogates: both become U+FFFD (CONTRACT.md §3). */
export function sanitize(s: string): string {
  return s.toWellFormed().replaceAll('\u0000', '\ufffd');
}

/** Sanitises every string (keys too) of a parsed JSON value. */
export function sanitizeDeep(v: unknown): unknown {
  if (typeof v === 'string') return sanitize(v);
  if (Array.isArray(v)) return v.map(sanitizeDeep);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[sanitize(k)] = sanitizeDeep(x);
    return out;
  }
  return v;
}

/** Redacts values under `keys` (case-insensitive) at any depth, inside arrays too (CONTRACT.md §6). */
export function redactDeep(v: unknown, keys: readonly string[] = CONTRACT_REDACT_KEYS): unknown {
  const set = new Set(keys.map((k) => k.toLowerCase()));
  const walk = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(walk);
    if (x && typeof x === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, y] of Object.entries(x)) out[k] = set.has(k.toLowerCase()) ? '[REDACTED]' : walk(y);
      return out;
    }
    return x;
  };
  return walk(v);
}

const WIRE_FIELDS = new Set([
  'request_id',
  'timestamp',
  'client_subject',
  'client_role',
  'tool_name',
  'backend_name',
  'request_args',
  'response_status',
  'error_message',
  'latency_ms',
]);

const UUID_RE = /^(\{)?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}(\})?$/;
const RFC3339_RE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** The canonical text Postgres gives a uuid. */
export function canonicalUuid(s: string): string {
  const hex = s.replace(/[^0-9a-fA-F]/g, '').toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The exact instant of a wire timestamp, in nanoseconds since the epoch. */
export function timestampNs(ts: string | number): bigint {
  if (typeof ts === 'number') return BigInt(ts) * 1_000_000n;
  const m = RFC3339_RE.exec(ts);
  if (!m) throw new Error(`not RFC 3339: ${ts}`);
  const d = new Date(0);
  d.setUTCFullYear(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  d.setUTCHours(Number(m[4]), Number(m[5]), Number(m[6]), 0);
  let ns = BigInt(d.getTime()) * 1_000_000n;
  ns += BigInt((m[7] ?? '').padEnd(9, '0').slice(0, 9) || '0');
  // digits past nanoseconds only matter for rounding to microseconds; ignore them
  if (!m[8]) {
    const off = (Number(m[10]) * 60 + Number(m[11])) * 60_000_000_000;
    ns -= BigInt(m[9] === '-' ? -off : off);
  }
  return ns;
}

function byteLen(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Does CONTRACT.md §3 accept this (non-blank) line? An independent model of the rules: JSON object,
 * required fields present with the right types and lengths, latency an integer ≥ 0 or null.
 */
export function contractVerdict(
  line: string,
): { ok: true; obj: Record<string, unknown> } | { ok: false; why: string } {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return { ok: false, why: 'not JSON' };
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return { ok: false, why: 'not an object' };
  const e = o as Record<string, unknown>;
  const rid = e.request_id;
  if (typeof rid !== 'string') return { ok: false, why: 'request_id' };
  const um = UUID_RE.exec(rid);
  if (!um || Boolean(um[1]) !== Boolean(um[2])) return { ok: false, why: 'request_id' };
  const ts = e.timestamp;
  if (typeof ts === 'string') {
    if (!RFC3339_RE.test(ts)) return { ok: false, why: 'timestamp' };
  } else if (!(typeof ts === 'number' && Number.isSafeInteger(ts))) return { ok: false, why: 'timestamp' };
  const str = (k: string, required: boolean, min: number, max: number) => {
    const v = e[k];
    if (v === undefined || v === null) return !required;
    if (typeof v !== 'string') return false;
    const n = byteLen(sanitize(v));
    return n >= min && n <= max;
  };
  if (!str('client_subject', true, 0, 1024)) return { ok: false, why: 'client_subject' };
  if (!str('client_role', false, 0, Number.POSITIVE_INFINITY)) return { ok: false, why: 'client_role' };
  if (!str('tool_name', true, 1, 1024)) return { ok: false, why: 'tool_name' };
  if (!str('backend_name', false, 0, Number.POSITIVE_INFINITY)) return { ok: false, why: 'backend_name' };
  if (!str('response_status', true, 1, 64)) return { ok: false, why: 'response_status' };
  if (!str('error_message', false, 0, Number.POSITIVE_INFINITY)) return { ok: false, why: 'error_message' };
  const lat = e.latency_ms;
  if (lat !== undefined && lat !== null && !(typeof lat === 'number' && Number.isInteger(lat) && lat >= 0))
    return { ok: false, why: 'latency_ms' };
  return { ok: true, obj: e };
}

/** A stored row as {@link ROW_SQL} selects it. */
export interface StoredRow {
  request_id: string;
  ts_us: string;
  client_subject: string;
  client_role: string | null;
  tool_name: string;
  backend_name: string | null;
  request_args: unknown;
  response_status: string;
  error_message: string | null;
  latency_ms: string | null;
  extra: unknown;
}

/** Selects rows in the shape of {@link StoredRow}; append a WHERE clause. */
export const ROW_SQL = `SELECT request_id::text, (extract(epoch FROM "timestamp") * 1000000)::bigint::text AS ts_us,
  client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message,
  latency_ms::text AS latency_ms, extra FROM audit_log`;

/**
 * The row that CONTRACT.md §3/§6 says an accepted entry becomes (timestamp left out: compare it with
 * {@link timestampMatches}).
 */
export function expectedRow(
  e: Record<string, unknown>,
  redactKeys: readonly string[] = CONTRACT_REDACT_KEYS,
): Omit<StoredRow, 'ts_us'> {
  const s = (v: unknown) => (v === undefined || v === null ? null : sanitize(v as string));
  const extra: Record<string, unknown> = {};
  let hasExtra = false;
  for (const [k, v] of Object.entries(e)) {
    if (WIRE_FIELDS.has(k)) continue;
    extra[sanitize(k)] = sanitizeDeep(v);
    hasExtra = true;
  }
  return {
    request_id: canonicalUuid(e.request_id as string),
    client_subject: sanitize(e.client_subject as string),
    client_role: s(e.client_role),
    tool_name: sanitize(e.tool_name as string),
    backend_name: s(e.backend_name),
    request_args:
      e.request_args === undefined || e.request_args === null
        ? null
        : redactDeep(sanitizeDeep(e.request_args), redactKeys),
    response_status: sanitize(e.response_status as string),
    error_message: s(e.error_message),
    latency_ms: e.latency_ms === undefined || e.latency_ms === null ? null : String(e.latency_ms),
    extra: hasExtra ? extra : null,
  };
}

/** Postgres keeps microseconds: the stored instant is the input rounded to the nearest microsecond. */
export function timestampMatches(tsUs: string, input: string | number): boolean {
  const diff = BigInt(tsUs) * 1000n - timestampNs(input);
  return diff >= -500n && diff <= 500n;
}

/** The row without its timestamp, for `toEqual` against {@link expectedRow}. */
export function withoutTs(r: StoredRow): Omit<StoredRow, 'ts_us'> {
  const { ts_us: _ts, ...rest } = r;
  return rest;
}

// ---------------------------------------------------------------------------------------------
// known-traps.md (a copy in test/fixtures, so the inputs are exactly the document's)
// ---------------------------------------------------------------------------------------------

/** The copy of /work/shared/cases/known-traps.md that the trap tests read their inputs from. */
export const TRAPS_MD = join(REPO, 'test', 'fixtures', 'known-traps.md');

/** The fenced blocks tagged `lang` in the section `## <id> — …` of known-traps.md, in order. */
export function trapBlocks(id: string, lang: 'ndjson' | 'bash'): string[] {
  const md = readFileSync(TRAPS_MD, 'utf8');
  const start = md.indexOf(`\n## ${id} `);
  if (start < 0) throw new Error(`known-traps.md has no section ${id}`);
  const next = md.indexOf('\n## ', start + 1);
  const section = md.slice(start, next < 0 ? md.length : next);
  const blocks: string[] = [];
  const re = new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\\n\`\`\``, 'g');
  for (const m of section.matchAll(re)) blocks.push(m[1]!);
  if (blocks.length === 0) throw new Error(`known-traps.md ${id} has no ${lang} block`);
  return blocks;
}

/** The lines of the (first) ndjson block of a case. */
export function trapLines(id: string): string[] {
  return trapBlocks(id, 'ndjson')[0]!.split('\n');
}

/** The single-quoted shell variables (`A='…'`) that a case's bash block defines. */
export function trapVars(id: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const b of trapBlocks(id, 'bash')) {
    for (const m of b.matchAll(/^([A-Z][A-Z0-9]*)='(.*)'$/gm)) out[m[1]!] = m[2]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A streaming ack client (CONTRACT.md §4 "Acks")
// ---------------------------------------------------------------------------------------------

/**
 * A connection in ack mode that writes with backpressure and records every ack line as it arrives.
 * `onAck` runs synchronously for each ack, in arrival order.
 */
export class AckClient {
  readonly acks: Ack[] = [];
  /** Bytes received that are not a complete line yet. */
  private partial = '';
  private waiters: { n: number; resolve: () => void }[] = [];
  /** Set once the socket has closed (by either side) or failed. */
  closed = false;
  error: Error | null = null;
  private closeWaiters: (() => void)[] = [];
  onAck: (ack: Ack) => void = () => {};

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.partial += d;
      const lines = this.partial.split('\n');
      this.partial = lines.pop()!;
      for (const l of lines) {
        if (!l) continue;
        const a = JSON.parse(l) as Ack;
        this.acks.push(a);
        this.onAck(a);
      }
      this.waiters = this.waiters.filter((w) => {
        if (this.acks.length >= w.n) w.resolve();
        return this.acks.length < w.n;
      });
    });
    socket.on('error', (err) => {
      this.error = err;
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters.splice(0)) w();
      for (const w of this.waiters.splice(0)) w.resolve();
    });
  }

  /** Connects and sends the `{"ack":true}` handshake. */
  static async open(target: Target): Promise<AckClient> {
    const sock = open(target);
    await new Promise<void>((r, reject) => {
      sock.once('connect', () => r());
      sock.once('error', reject);
    });
    const c = new AckClient(sock);
    sock.write('{"ack":true}\n');
    return c;
  }

  /** Writes and waits for 'drain' when the socket buffer is full; false once the socket is gone. */
  async write(data: string | Buffer): Promise<boolean> {
    if (this.closed || this.socket.destroyed) return false;
    if (this.socket.write(data)) return true;
    await new Promise<void>((r) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        r();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
    return !this.closed;
  }

  /** Resolves when at least `n` acks arrived (or the socket closed), or rejects after `timeoutMs`. */
  async waitAcks(n: number, timeoutMs = 30_000): Promise<void> {
    if (this.acks.length >= n || this.closed) return;
    await new Promise<void>((resolveWait, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${this.acks.length} of ${n} acks after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolveWait();
        },
      });
    });
  }

  /** Half-closes and waits for the daemon to close its side. */
  async end(timeoutMs = 30_000): Promise<void> {
    if (!this.closed) this.socket.end();
    await this.whenClosed(timeoutMs);
  }

  /** Resolves once the socket has closed. */
  whenClosed(timeoutMs = 30_000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolveClose, reject) => {
      const timer = setTimeout(() => reject(new Error(`socket not closed after ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(timer);
        resolveClose();
      });
    });
  }
}

/** A valid wire entry with the given request_id (and optional overrides), as one JSON line. */
export function entryLine(requestId: string, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    request_id: requestId,
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada.example',
    client_role: 'analyst',
    tool_name: 'sql.query',
    backend_name: 'pg-reports',
    request_args: { q: 'select 1' },
    response_status: 'ok',
    error_message: null,
    latency_ms: 12,
    ...overrides,
  });
}

/** A request_id `<prefix>-0000-4000-8000-<n, 12 digits>`; prefix is 8 hex digits. */
export function rid(prefix: string, n: number): string {
  return `${prefix}-0000-4000-8000-${String(n).padStart(12, '0')}`;
}
