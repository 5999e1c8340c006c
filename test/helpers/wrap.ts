/**
 * Helpers for the `wrap` tests (CONTRACT.md §11): spawn `node bin/audit-gateway wrap … -- SERVER`
 * (dist/: `npm run build` first) as a raw stdio peer, and read the entries it stored.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { BIN, cleanEnv, REPO, waitFor } from './serve.js';

/** The tests' own MCP server (test/fixtures/wrap/fake-server.mjs). */
export const FAKE_SERVER = join(REPO, 'test', 'fixtures', 'wrap', 'fake-server.mjs');
/** The real servers, run with this Node. */
export const EVERYTHING = join(
  REPO,
  'node_modules',
  '@modelcontextprotocol',
  'server-everything',
  'dist',
  'index.js',
);
export const FILESYSTEM = join(
  REPO,
  'node_modules',
  '@modelcontextprotocol',
  'server-filesystem',
  'dist',
  'index.js',
);

/** A running wrap driven line by line. */
export interface RawWrap {
  proc: ChildProcess;
  /** Every byte wrap wrote to stdout so far. */
  stdout(): Buffer;
  /** How many bytes wrap wrote to stdout so far (cheap). */
  stdoutBytes(): number;
  /** The stdout lines so far, parsed (lines that are not JSON are skipped). */
  messages(): unknown[];
  stderr(): string;
  /** Writes raw bytes to wrap's stdin. */
  write(data: string | Buffer): void;
  /** Waits for a parsed stdout message matching `pred`. */
  waitFor(pred: (m: unknown) => boolean, what: string, timeoutMs?: number): Promise<unknown>;
  /** Resolves with the exit code (and signal) of wrap. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `audit-gateway wrap ...wrapArgs -- ...server`. */
export function startRawWrap(wrapArgs: string[], server: string[], env: NodeJS.ProcessEnv = {}): RawWrap {
  const proc = spawn(process.execPath, [BIN, 'wrap', ...wrapArgs, '--', ...server], {
    cwd: REPO,
    env: cleanEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  let outBytes = 0;
  proc.stdout!.on('data', (d: Buffer) => {
    out.push(d);
    outBytes += d.length;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  proc.stdin!.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => resolve({ code, signal })),
  );
  const stdout = () => Buffer.concat(out);
  const messages = () =>
    stdout()
      .toString('utf8')
      .split('\n')
      .flatMap((l) => {
        try {
          return l.trim() ? [JSON.parse(l) as unknown] : [];
        } catch {
          return [];
        }
      });
  return {
    proc,
    stdout,
    stdoutBytes: () => outBytes,
    messages,
    stderr: () => err,
    write: (data) => proc.stdin!.write(data),
    waitFor: (pred, what, timeoutMs = 15_000) => waitFor(() => messages().find(pred), what, timeoutMs),
    exited,
  };
}

/** The initialize request every raw test sends first. */
export const INITIALIZE =
  '{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-test","version":"9.9"}}}\n';

/** True for a response to `id` (compared by type and value). */
export function isResponseTo(id: unknown): (m: unknown) => boolean {
  return (m) => {
    const r = m as { id?: unknown; method?: unknown };
    return r !== null && typeof r === 'object' && !Array.isArray(r) && r.method === undefined && r.id === id;
  };
}

/** A stored entry as the wrap tests read it back. */
export interface WrapRow {
  tool_name: string;
  client_subject: string;
  client_role: string | null;
  backend_name: string | null;
  request_args: unknown;
  response_status: string;
  error_message: string | null;
  latency_ms: string | null;
  extra: { mcp_session: string; jsonrpc_id: unknown; mcp_client: { name: string; version: string } | null };
  ts_ms: string;
}

/** SQL selecting the rows of one subject, oldest first (then by id). */
export const WRAP_ROWS_SQL = `SELECT tool_name, client_subject, client_role, backend_name, request_args, response_status,
  error_message, latency_ms::text, extra, (extract(epoch FROM "timestamp") * 1000)::bigint::text AS ts_ms
  FROM audit_log WHERE client_subject = $1 ORDER BY "timestamp", id`;
