#!/usr/bin/env node
/**
 * `npm run bench`: ingest throughput of audit-gateway against its ceiling and its alternatives, on the
 * same rows and the same schema, in one run. See bench/README.md.
 *
 *   a. psql \copy of the rows in COPY text format (the ceiling)
 *   b. one INSERT per row with a pool of 5 (the seed gateway's writer), on a subset
 *   c. `audit-gateway serve` end to end over its Unix socket: unacked and acked, 1 and 16 clients;
 *      ack latency at 10% and 100% of the acked throughput; the daemon's CPU and peak RSS; the cost
 *      of the hash chains (unacked, 1 client, with and without them, alternated, best of two each)
 *      and `verify`'s rate over what serve stored
 *   d. a peer daemon (rsyslog + ompgsql) reading the same NDJSON from a Unix socket, when installed
 *
 * It starts its own embedded Postgres in a temp dir (never a shared server) and writes
 * bench/RESULTS.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  createReadStream,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
} from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbedded } from '../dist/db/embedded.js';
import { migrate } from '../dist/db/migrate.js';
import { encodeCopyRow } from '../dist/entry/copyText.js';
import { DEFAULT_REDACT_KEYS, ENTRY_COLUMNS, parseEntry } from '../dist/entry/parse.js';
import { silentLogger } from '../dist/log.js';
import { benchArgs, cleanEnv, percentile, say, wholeNumber, writer } from './lib/common.mjs';
import { makeCorpusReplicator, makeGenerator, makeHardGenerator } from './lib/gen.mjs';
import { findRsyslog, hasSyslogNgSql, startRsyslog } from './lib/peers.mjs';
import { CLK_TCK, cpuTicks, machine, statusKb, treeCpuTicks } from './lib/proc.mjs';
import { profileTable, summarizeProfile } from './lib/profile.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const BIN = join(REPO, 'bin', 'audit-gateway');
const PSQL = '/usr/bin/psql';
const COLS = ENTRY_COLUMNS.map((c) => (c === 'timestamp' ? '"timestamp"' : c)).join(', ');

const USAGE = `usage: npm run bench -- [options]
  --rows N            rows per method (default 1000000)
  --quick             100000 rows, shorter latency runs (a smoke run)
  --data LIST         data sets, run one after another on the same Postgres (default gen):
                        gen     the bench's generator (friendly: few escapes, ASCII)
                        hard    hard entries: escapes of every kind, non-ASCII, control characters,
                                nesting, decimals and exponents, extra fields
                        corpus  the real corpus replicated with fresh request_ids (--corpus DIR)
  --corpus DIR        the corpus directory (default ../shared/corpus, else test/fixtures/corpus);
                      alone, it means --data corpus
  --only LIST         methods to run, e.g. a,c (default a,b,c,d)
  --insert-rows N     rows for method b, the per-row INSERT writer (default 50000, quick 20000)
  --peer-rows N       rows for method d, the peer daemon (default 200000)
  --latency-seconds S length of each paced ack-latency run (default 10, quick 5)
  --profile           one more unacked serve run under node --cpu-prof; prints the top functions
  --seed N            PRNG seed (default 42)
  --out FILE          where to write the results (default bench/RESULTS.md)
  --keep              keep the temp dir (data files, Postgres cluster, logs)`;

// ---------------------------------------------------------------------------------------------
// Options

function options() {
  const parsed = benchArgs(
    {
      rows: { type: 'string' },
      quick: { type: 'boolean', default: false },
      corpus: { type: 'string' },
      data: { type: 'string' },
      only: { type: 'string', default: 'a,b,c,d' },
      'insert-rows': { type: 'string' },
      'peer-rows': { type: 'string' },
      'latency-seconds': { type: 'string' },
      profile: { type: 'boolean', default: false },
      seed: { type: 'string', default: '42' },
      out: { type: 'string', default: join(HERE, 'RESULTS.md') },
      keep: { type: 'boolean', default: false },
    },
    USAGE,
  );
  const num = wholeNumber;
  const quick = parsed.quick;
  const rows = num('rows', parsed.rows ?? (quick ? 100_000 : 1_000_000), 16);
  const only = new Set(parsed.only.split(',').map((s) => s.trim().toLowerCase()));
  for (const m of only) {
    if (!['a', 'b', 'c', 'd'].includes(m)) {
      console.error(`--only ${parsed.only}: methods are a, b, c, d`);
      process.exit(2);
    }
  }
  if (parsed.corpus && !existsSync(parsed.corpus)) {
    console.error(`--corpus ${parsed.corpus}: no such directory`);
    process.exit(2);
  }
  return {
    rows,
    quick,
    corpus: resolve(
      parsed.corpus ??
        (existsSync(join(REPO, '..', 'shared', 'corpus'))
          ? join(REPO, '..', 'shared', 'corpus')
          : join(REPO, 'test', 'fixtures', 'corpus')),
    ),
    data: dataSets(parsed.data ?? (parsed.corpus ? 'corpus' : 'gen')),
    only,
    insertRows: Math.min(rows, num('insert-rows', parsed['insert-rows'] ?? (quick ? 20_000 : 50_000), 1)),
    peerRows: Math.min(rows, num('peer-rows', parsed['peer-rows'] ?? 200_000, 1)),
    latencySeconds: num('latency-seconds', parsed['latency-seconds'] ?? (quick ? 5 : 10), 1),
    profile: parsed.profile,
    seed: num('seed', parsed.seed, 0),
    out: resolve(parsed.out),
    keep: parsed.keep,
  };
}

/** The data sets of `--data LIST`, in the order given; exits 2 on an unknown one. */
function dataSets(list) {
  const sets = list.split(',').map((x) => x.trim().toLowerCase());
  for (const d of sets) {
    if (!['gen', 'hard', 'corpus'].includes(d)) {
      console.error(`--data ${list}: data sets are gen, hard, corpus`);
      process.exit(2);
    }
  }
  return [...new Set(sets)];
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
const fmt1 = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toFixed(1));
const fmt2 = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toFixed(2));
const ratio = (x, y) => (x && y ? x / y : null);
// A closed stdout (`| head`) must not kill the bench before it stops its Postgres.
process.stdout.on('error', () => {});

/** Counts `needle` in `hay` (strings). */
function countOf(hay, needle) {
  let n = 0;
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + needle.length)) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Data: NDJSON file (what clients send) and COPY text file (what psql \copy loads)

function corpusLines(dir) {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.ndjson'))
    .sort();
  if (files.length === 0) throw new Error(`--corpus ${dir}: no .ndjson files`);
  const lines = [];
  for (const f of files) {
    for (const l of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (l.trim() !== '') lines.push(l.replace(/\r$/, ''));
    }
  }
  return { files, lines };
}

/**
 * Writes `rows` entries to entries.ndjson and their COPY text to entries.copy. Every line is parsed
 * with the daemon's own parseEntry (default redaction), and lines it would reject are left out, so
 * every method stores the same rows.
 */
function prepareData(opts, work, set) {
  const t0 = now();
  let source;
  let gen;
  if (set === 'corpus') {
    const { files, lines } = corpusLines(opts.corpus);
    gen = makeCorpusReplicator(lines, opts.seed);
    source = `corpus ${opts.corpus} (${files.length} files, ${fmtInt(lines.length)} lines, replicated with fresh request_ids)`;
  } else if (set === 'hard') {
    gen = makeHardGenerator(opts.seed);
    source = `hard entries (seed ${opts.seed}: escapes of every kind, non-ASCII, control characters, nesting, decimals and exponents, extra fields)`;
  } else {
    gen = makeGenerator(opts.seed);
    source = `generated (seed ${opts.seed})`;
  }
  const ndjsonPath = join(work, 'entries.ndjson');
  const copyPath = join(work, 'entries.copy');
  const nd = writer(ndjsonPath);
  const cp = writer(copyPath);
  const redactKeys = new Set(DEFAULT_REDACT_KEYS);
  const lineEnds = new Float64Array(opts.rows);
  const subset = [];
  /** NULL counts of the first peerRows rows, to check what the peer daemon stored. */
  const peerNulls = { client_role: 0, backend_name: 0, request_args: 0, error_message: 0, latency_ms: 0 };
  let bytes = 0;
  let skipped = 0;
  let attempts = 0;
  for (let i = 0; i < opts.rows; ) {
    const line = gen.next();
    if (++attempts > opts.rows * 2 + 1000) throw new Error('too many lines rejected by parseEntry');
    const buf = Buffer.from(line, 'utf8');
    const r = parseEntry(buf, { redactKeys });
    if (!r.ok) {
      skipped++;
      continue;
    }
    nd.write(`${line}\n`);
    cp.write(encodeCopyRow(r.row));
    bytes += buf.length + 1;
    lineEnds[i] = bytes;
    if (i < opts.insertRows) subset.push(r.row);
    if (i < opts.peerRows) for (const k in peerNulls) if (r.row[k] === null) peerNulls[k]++;
    i++;
  }
  const ndBytes = nd.close();
  const copyBytes = cp.close();
  if (ndBytes !== bytes) throw new Error('internal: NDJSON size mismatch');
  return {
    source,
    ndjsonPath,
    copyPath,
    rows: opts.rows,
    bytes,
    copyBytes,
    lineEnds,
    subset,
    peerRows: opts.peerRows,
    peerNulls,
    skipped,
    ms: now() - t0,
  };
}

/** Byte offset where row i starts. */
const rowStart = (data, i) => (i === 0 ? 0 : data.lineEnds[i - 1]);

// ---------------------------------------------------------------------------------------------
// Postgres

async function startPostgres(work) {
  const dir = join(work, 'pg');
  const server = await startEmbedded(dir, silentLogger(), { adoptRunning: true });
  const base = {
    host: server.host,
    port: server.port,
    user: server.user,
    password: server.password,
  };
  const admin = new pg.Client({ ...base, database: 'postgres' });
  await admin.connect();
  try {
    await admin.query('DROP DATABASE IF EXISTS bench');
    await admin.query('CREATE DATABASE bench');
  } finally {
    await admin.end();
  }
  const cfg = { ...base, database: 'bench', application_name: 'audit-gateway-bench' };
  const client = new pg.Client(cfg);
  await client.connect();
  await migrate(client, 'up', silentLogger());
  const postmasterPid = Number(readFileSync(join(dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const settings = {};
  for (const name of [
    'server_version',
    'shared_buffers',
    'synchronous_commit',
    'fsync',
    'wal_level',
    'max_wal_size',
    'checkpoint_timeout',
  ]) {
    settings[name] = (await client.query(`SHOW ${name}`)).rows[0][name];
  }
  const url = `postgres://${base.user}:${encodeURIComponent(base.password)}@${base.host}:${base.port}/bench`;
  return { server, cfg, client, url, postmasterPid, settings };
}

/** Empties the tables and brings the server to a comparable state before each run. */
async function reset(db) {
  // The append-only triggers (CONTRACT.md §9) refuse TRUNCATE: the bench's own superuser turns
  // them off for this session only.
  await db.client.query('SET session_replication_role = replica');
  await db.client.query(
    'TRUNCATE audit_log, audit_reject, audit_batch, audit_checkpoint, audit_chain, audit_retention RESTART IDENTITY',
  );
  await db.client.query('RESET session_replication_role');
  await db.client.query('VACUUM (ANALYZE) audit_log');
  await db.client.query('VACUUM audit_reject');
  await db.client.query('CHECKPOINT');
  // Flush what earlier runs left dirty in the page cache, so its writeback does not land in this run.
  execFileSync('sync');
}

async function countRows(db) {
  const r = await db.client.query(
    'SELECT (SELECT count(*) FROM audit_log)::int AS n, (SELECT count(*) FROM audit_reject)::int AS rejects',
  );
  return r.rows[0];
}

/** CPU and time accounting around a run. */
function meter(db, pid) {
  const t = now();
  const pg0 = treeCpuTicks(db.postmasterPid);
  const p0 = pid ? cpuTicks(pid) : null;
  const m0 = machineBusyTicks();
  const self0 = process.cpuUsage();
  return {
    t0: t,
    /**
     * @param tEnd when the run ended (the clock stops there; CPU is read now).
     * @param procCpu the client's or daemon's CPU seconds when not read from /proc (psql).
     */
    stop(tEnd = now(), procCpu = undefined) {
      const pg1 = treeCpuTicks(db.postmasterPid);
      const p1 = pid ? cpuTicks(pid) : null;
      const m1 = machineBusyTicks();
      const self = process.cpuUsage(self0);
      const seconds = (tEnd - t) / 1000;
      const pgCpu = pg1 !== null && pg0 !== null ? (pg1 - pg0) / CLK_TCK : null;
      const proc = procCpu !== undefined ? procCpu : p1 !== null && p0 !== null ? (p1 - p0) / CLK_TCK : null;
      const selfCpu = (self.user + self.system) / 1e6;
      const wall = (now() - t) / 1000;
      // CPU the machine spent on processes that are not part of this run (other users' jobs).
      const other = (m1 - m0) / CLK_TCK - (pgCpu ?? 0) - (proc ?? 0) - selfCpu;
      return { seconds, pgCpu, procCpu: proc, benchCpu: selfCpu, otherCores: Math.max(0, other / wall) };
    },
  };
}

/** Busy ticks of all CPUs together (/proc/stat: everything but idle and iowait). */
function machineBusyTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
}

function result(data, rows, m, extra = {}) {
  const rowsPerS = rows / m.seconds;
  return {
    rows,
    seconds: m.seconds,
    rowsPerS,
    mbPerS: (rowsPerS * (data.bytes / data.rows)) / 1e6,
    pgCpuPer100k: m.pgCpu !== null ? (m.pgCpu / rows) * 1e5 : null,
    procCpuPer100k: m.procCpu !== null && m.procCpu !== undefined ? (m.procCpu / rows) * 1e5 : null,
    otherCores: m.otherCores,
    benchCpuPer100k: (m.benchCpu / rows) * 1e5,
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------
// a. psql \copy

/**
 * The UTC days of the rows (the COPY file's timestamp column, read once per data set): psql \copy
 * makes no partition (CONTRACT.md §10), so the reference gets its partitions made first, as serve's
 * writer makes them before its COPY.
 */
async function ensureDataPartitions(db, data) {
  if (!data.days) {
    const days = new Set();
    const text = readFileSync(data.copyPath, 'utf8');
    for (let i = 0; i < text.length; ) {
      const nl = text.indexOf('\n', i);
      const tab = text.indexOf('\t', i);
      days.add(text.slice(tab + 1, text.indexOf('\t', tab + 1)));
      i = nl < 0 ? text.length : nl + 1;
    }
    data.days = [...days];
  }
  await db.client.query('SELECT audit_log_ensure_partitions($1::text[])', [data.days]);
}

async function runPsqlCopy(db, data) {
  await reset(db);
  await ensureDataPartitions(db, data);
  const copyCmd = `\\copy audit_log (${COLS}) FROM '${data.copyPath.replaceAll("'", "''")}'`;
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', db.cfg.host, '-p', String(db.cfg.port)];
  args.push('-U', db.cfg.user, '-d', db.cfg.database, '-c', copyCmd);
  const m = meter(db, null);
  // bash's `times` gives the CPU time of its finished children: psql's own CPU.
  const out = await new Promise((resolveRun, reject) => {
    const child = spawn('bash', ['-c', `"$0" "$@"; rc=$?; times >&2; exit $rc`, PSQL, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({ PGPASSWORD: db.cfg.password }),
    });
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolveRun(err) : reject(new Error(`psql failed: ${err.trim()}`)),
    );
  });
  const tEnd = now();
  const times = out.trim().split('\n').slice(-1)[0];
  const tm = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/.exec(times);
  const psqlCpu = tm ? Number(tm[1]) * 60 + Number(tm[2]) + Number(tm[3]) * 60 + Number(tm[4]) : null;
  // Let the postmaster reap psql's backend, so its CPU is counted (in the postmaster's cutime).
  await sleep(300);
  const r = m.stop(tEnd, psqlCpu);
  const c = await countRows(db);
  if (c.n !== data.rows) throw new Error(`psql \\copy stored ${c.n} rows, expected ${data.rows}`);
  return result(data, data.rows, r);
}

// ---------------------------------------------------------------------------------------------
// b. one INSERT per row, pool of 5

async function runPerRow(db, data) {
  await reset(db);
  const rows = data.subset;
  const pool = new pg.Pool({ ...db.cfg, max: 5 });
  pool.on('error', () => {});
  const sql = `INSERT INTO audit_log (${COLS}) VALUES (${ENTRY_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`;
  // Open the 5 connections first (a long-running gateway has them open).
  const warm = await Promise.all(Array.from({ length: 5 }, () => pool.connect()));
  for (const c of warm) c.release();
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= rows.length) return;
      const row = rows[i];
      await pool.query({ name: 'audit_insert', text: sql, values: ENTRY_COLUMNS.map((c) => row[c]) });
    }
  };
  const m = meter(db, null);
  await Promise.all(Array.from({ length: 5 }, worker));
  const r = m.stop();
  await pool.end();
  const c = await countRows(db);
  if (c.n !== rows.length) throw new Error(`per-row writer stored ${c.n} rows, expected ${rows.length}`);
  return result(data, rows.length, r);
}

// ---------------------------------------------------------------------------------------------
// c. serve

async function startServe(work, db, { cpuProfDir, serveArgs = [] } = {}) {
  const dir = await mkdtemp(join(work, 'serve-'));
  const sock = join(dir, 's.sock');
  const nodeArgs = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [];
  const args = [...nodeArgs, BIN, 'serve', '--database-url', db.url, '--socket', sock, '--data-dir', dir];
  args.push('--no-migrate', '--log-level', 'error', ...serveArgs);
  const proc = spawn(process.execPath, args, {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: cleanEnv(),
  });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`serve exited at start: ${stderr.trim().slice(-800)}`);
    if (Date.now() - t0 > 60_000)
      throw new Error(`serve did not listen on ${sock}: ${stderr.trim().slice(-800)}`);
    if (existsSync(sock)) {
      const ok = await new Promise((r) => {
        const s = connect(sock);
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      });
      if (ok) break;
    }
    await sleep(50);
  }
  return {
    pid: proc.pid,
    sock,
    stderr: () => stderr,
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 60_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** Resolves with the time the NOTIFY of `audit_log` reached id `target` (ids restart at 1). */
async function watchCommits(db) {
  const listener = new pg.Client(db.cfg);
  await listener.connect();
  await listener.query('LISTEN audit_log');
  let maxId = 0;
  let at = now();
  let waiter = null;
  listener.on('notification', (msg) => {
    const id = Number(msg.payload);
    if (id > maxId) {
      maxId = id;
      at = now();
    }
    if (waiter && maxId >= waiter.target) waiter.resolve(at);
  });
  return {
    get maxId() {
      return maxId;
    },
    /** Waits until id >= target; fails after `stallMs` without progress. */
    until(target, stallMs = 60_000) {
      if (maxId >= target) return Promise.resolve(at);
      return new Promise((resolveWait, reject) => {
        waiter = { target, resolve: resolveWait };
        let last = maxId;
        let lastChange = now();
        const poll = setInterval(async () => {
          // A safety net for a lost notification: the committed max id.
          try {
            const r = await db.client.query('SELECT coalesce(max(id), 0)::bigint AS m FROM audit_log');
            const m = Number(r.rows[0].m);
            if (m >= target && maxId < target) {
              maxId = m;
              at = now();
              waiter.resolve(at);
            }
          } catch {}
          if (maxId !== last) {
            last = maxId;
            lastChange = now();
          } else if (now() - lastChange > stallMs) {
            clearInterval(poll);
            reject(new Error(`no commit for ${stallMs / 1000} s (at id ${maxId} of ${target})`));
          }
        }, 1000);
        const done = waiter.resolve;
        waiter.resolve = (t) => {
          clearInterval(poll);
          done(t);
        };
      });
    },
    close: () => listener.end(),
  };
}

/**
 * Streams rows [from, to) of the NDJSON file into one connection. With `ack`, sends the handshake
 * first and counts the response lines (and the `"ok":false` ones).
 */
function sendRange(sock, data, from, to, ack) {
  return new Promise((resolveSend, reject) => {
    const s = connect(sock);
    let acks = 0;
    let failed = 0;
    let pending = '';
    let lastAckAt = null;
    s.on('error', reject);
    s.on('data', (chunk) => {
      const text = pending + chunk.toString('latin1');
      const cut = text.lastIndexOf('\n') + 1;
      const whole = text.slice(0, cut);
      pending = text.slice(cut);
      acks += countOf(whole, '\n');
      failed += countOf(whole, '"ok":false');
      lastAckAt = now();
    });
    s.on('close', () => resolveSend({ acks, failed, lastAckAt, closedAt: now() }));
    s.once('connect', () => {
      if (ack) s.write('{"ack":true}\n');
      const start = rowStart(data, from);
      const end = data.lineEnds[to - 1];
      const rs = createReadStream(data.ndjsonPath, { start, end: end - 1, highWaterMark: 1 << 20 });
      rs.on('error', reject);
      rs.pipe(s);
    });
  });
}

async function runServe(work, db, data, { conns, ack, cpuProfDir, serveArgs, verify }) {
  await reset(db);
  const serve = await startServe(work, db, { cpuProfDir, serveArgs });
  const watch = await watchCommits(db);
  try {
    const m = meter(db, serve.pid);
    const per = Math.ceil(data.rows / conns);
    const sends = [];
    for (let i = 0; i < conns; i++) {
      const from = i * per;
      const to = Math.min(data.rows, from + per);
      if (from < to) sends.push(sendRange(serve.sock, data, from, to, ack));
    }
    const committedAt = await watch.until(data.rows);
    const sent = await Promise.all(sends);
    let end = committedAt;
    let acks = 0;
    let failed = 0;
    if (ack) {
      for (const s of sent) {
        acks += s.acks;
        failed += s.failed;
        if (s.lastAckAt !== null && s.lastAckAt > end) end = s.lastAckAt;
      }
    }
    const r = m.stop(end);
    const peakRssMb = (statusKb(serve.pid, 'VmHWM') ?? 0) / 1024;
    const exit = await serve.stop();
    const c = await countRows(db);
    if (c.n !== data.rows) throw new Error(`serve stored ${c.n} rows, expected ${data.rows}`);
    if (ack && acks !== data.rows) throw new Error(`serve sent ${acks} acks, expected ${data.rows}`);
    const verified = verify ? await runVerify(db, data.rows) : {};
    return result(data, data.rows, r, {
      ...verified,
      peakRssMb,
      acks,
      failed,
      commitSeconds: (committedAt - m.t0) / 1000,
      exit: exit.code,
    });
  } catch (err) {
    await serve.stop();
    throw new Error(`${err.message}\n  serve log tail: ${serve.stderr().trim().slice(-600)}`);
  } finally {
    await watch.close();
  }
}

/**
 * `audit-gateway verify` over what serve stored (a full run: every row's leaf, every batch, every
 * checkpoint): its rate in rows/s, its CPU and Postgres's. It must find the database intact.
 */
async function runVerify(db, rows) {
  await db.client.query('VACUUM (ANALYZE) audit_log');
  const m = meter(db, null);
  const out = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'verify', '--database-url', db.url, '--output', 'json'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv(),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
  const r = m.stop();
  if (out.code !== 0) throw new Error(`verify exited ${out.code}: ${(out.stdout + out.stderr).slice(-600)}`);
  const report = JSON.parse(out.stdout);
  if (report.rows !== rows) throw new Error(`verify checked ${report.rows} rows, expected ${rows}`);
  return {
    verifySeconds: r.seconds,
    verifyRowsPerS: rows / r.seconds,
    verifyPgCpuPer100k: r.pgCpu !== null ? (r.pgCpu / rows) * 1e5 : null,
    verifyOtherCores: r.otherCores,
  };
}

/**
 * One acked connection sending at `rate` entries/s for `seconds`; latency of each entry = arrival of
 * its ack − the time its line was written to the socket.
 */
async function runPaced(work, db, data, rate, seconds) {
  await reset(db);
  const n = Math.max(1, Math.min(data.rows, Math.round(rate * seconds)));
  const serve = await startServe(work, db);
  try {
    const sendT = new Float64Array(n + 1);
    const lat = new Float64Array(n);
    const fd = openSync(data.ndjsonPath, 'r');
    const out = await new Promise((resolveRun, reject) => {
      const s = connect(serve.sock);
      let acked = 0;
      let failed = 0;
      let pending = '';
      let sent = 0;
      let t0 = 0;
      let lastSendAt = 0;
      let timer = null;
      s.on('error', reject);
      s.on('data', (chunk) => {
        const t = now();
        const text = pending + chunk.toString('latin1');
        const cut = text.lastIndexOf('\n') + 1;
        pending = text.slice(cut);
        for (let i = text.indexOf('\n'); i >= 0 && i < cut; i = text.indexOf('\n', i + 1)) {
          if (acked < n) lat[acked] = t - sendT[acked + 1];
          acked++;
        }
        failed += countOf(text.slice(0, cut), '"ok":false');
      });
      s.on('close', () => {
        if (timer) clearInterval(timer);
        resolveRun({ acked, failed, sendSeconds: (lastSendAt - t0) / 1000 });
      });
      s.once('connect', () => {
        s.write('{"ack":true}\n');
        t0 = now();
        timer = setInterval(() => {
          const t = now();
          const due = Math.min(n, Math.floor(((t - t0) / 1000) * rate));
          if (due <= sent) return;
          const start = rowStart(data, sent);
          const buf = Buffer.allocUnsafe(data.lineEnds[due - 1] - start);
          readSync(fd, buf, 0, buf.length, start);
          for (let k = sent + 1; k <= due; k++) sendT[k] = t;
          sent = due;
          lastSendAt = t;
          s.write(buf);
          if (sent >= n) {
            clearInterval(timer);
            timer = null;
            s.end();
          }
        }, 2);
      });
    });
    closeSync(fd);
    await serve.stop();
    if (out.acked !== n) throw new Error(`paced run got ${out.acked} acks for ${n} entries`);
    const sorted = Float64Array.from(lat).sort();
    return {
      targetRate: rate,
      rows: n,
      // Rows sent ÷ time from the first to the last write (the send rate the pacer kept up).
      achievedRate: out.sendSeconds > 0 ? n / out.sendSeconds : rate,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted[sorted.length - 1],
      failed: out.failed,
    };
  } catch (err) {
    await serve.stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// d. peer daemon

async function runRsyslog(work, db, data, rs) {
  await reset(db);
  const dir = await mkdtemp(join(work, 'rsyslog-'));
  const peer = await startRsyslog({ rs, dir, pg: db.cfg });
  try {
    const m = meter(db, peer.pid);
    const n = data.peerRows;
    const send = sendRange(peer.sock, data, 0, n, false);
    // rsyslog sends no NOTIFY: poll the committed max id (index-only, cheap).
    let last = 0;
    let lastChange = now();
    let end;
    for (;;) {
      const r = await db.client.query('SELECT coalesce(max(id), 0)::bigint AS m FROM audit_log');
      const id = Number(r.rows[0].m);
      const t = now();
      if (id >= n) {
        end = t;
        break;
      }
      if (id !== last) {
        last = id;
        lastChange = t;
      } else if (t - lastChange > 60_000) {
        throw new Error(`rsyslog: no commit for 60 s (at ${id} of ${n} rows)`);
      }
      await sleep(100);
    }
    const r = m.stop(end);
    const peakRssMb = (statusKb(peer.pid, 'VmHWM') ?? 0) / 1024;
    await send;
    await peer.stop();
    const c = await countRows(db);
    if (c.n !== n) throw new Error(`rsyslog stored ${c.n} rows, expected ${n}`);
    // What it stored should have the same NULLs as what psql and serve store.
    const cols = Object.keys(data.peerNulls);
    const q = await db.client.query(
      `SELECT ${cols.map((k) => `count(*) FILTER (WHERE ${k} IS NULL)::int AS ${k}`).join(', ')} FROM audit_log`,
    );
    const differ = cols.filter((k) => q.rows[0][k] !== data.peerNulls[k]);
    const check = differ.length
      ? `NULL counts differ from the input: ${differ.map((k) => `${k} ${q.rows[0][k]} (expected ${data.peerNulls[k]})`).join(', ')}`
      : 'NULL counts of client_role, backend_name, request_args, error_message, latency_ms match the input';
    return result(data, n, r, { peakRssMb, check });
  } catch (err) {
    await peer.stop();
    throw new Error(`${err.message}\n  rsyslog output: ${peer.stderr().trim().slice(-600)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function versions(db) {
  let psql = '';
  try {
    psql = execFileSync(PSQL, ['--version'], { encoding: 'utf8' }).trim();
  } catch {}
  let rsyslog = '';
  if (findRsyslog()) {
    try {
      const first = execFileSync('/usr/sbin/rsyslogd', ['-v'], { encoding: 'utf8' }).split('\n')[0];
      rsyslog = first
        .replace(/\s+/g, ' ')
        .replace(/ compiled with:.*/, '')
        .trim();
    } catch {}
  }
  return { node: process.version, postgres: db.settings.server_version, psql, rsyslog };
}

/**
 * The Markdown of bench/RESULTS.md: the machine, then per data set its throughput, ratios and
 * latency; with more than one data set, a summary of the issue-9 targets for each first.
 */
function report(opts, runs, db, started, load) {
  const mc = machine();
  const v = versions(db);
  const L = [];
  const MB = (b) => `${(b / 1e6).toFixed(1)} MB`;
  L.push('# Ingest benchmark results');
  L.push('');
  L.push(`Written by \`npm run bench\` (bench/run.mjs); see bench/README.md for what each line means.`);
  L.push('');
  L.push(
    `- date: ${new Date(started).toISOString()} (run took ${((Date.now() - started) / 1000).toFixed(0)} s)`,
  );
  L.push(
    `- machine: ${mc.nproc} cores (\`nproc\`), ${mc.model}, ${mc.ramGiB.toFixed(1)} GiB RAM, Linux ${mc.kernel}; load average (1 min) ${load.start.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end (the machine is shared: see "other load" per run)`,
  );
  L.push(
    `- Node ${v.node}; Postgres ${v.postgres} (embedded, temp dir); ${v.psql}${v.rsyslog ? `; ${v.rsyslog}` : ''}`,
  );
  const s = db.settings;
  L.push(
    `- Postgres settings: shared_buffers ${s.shared_buffers}, synchronous_commit ${s.synchronous_commit}, fsync ${s.fsync}, wal_level ${s.wal_level}, max_wal_size ${s.max_wal_size}`,
  );
  L.push(
    '- schema: migrations/*.sql (audit_log with its PK, UNIQUE (timestamp, request_id), a hash index on request_id, B-trees on client_subject and tool_name); tables truncated, VACUUM and CHECKPOINT before every run',
  );
  L.push(`- command: \`npm run bench -- ${process.argv.slice(2).join(' ')}\``.replace(' -- `', '`'));
  L.push('');
  if (runs.length > 1) {
    L.push('## Targets on each data set (issue 9)');
    L.push('');
    L.push(
      '| data set | serve ÷ psql \\copy, 1 conn | serve ÷ psql \\copy, 16 conn | daemon core-s / 100k (unacked, 1 conn) | peak RSS MB |',
    );
    L.push('|---|---:|---:|---:|---:|');
    for (const { set, res } of runs) {
      const c = res.c ?? {};
      const ok = (r) => (r && !r.error ? r.rowsPerS : null);
      const r1 = ratio(ok(c.unacked1), ok(res.a));
      const r16 = ratio(ok(c.unacked16), ok(res.a));
      const cpu = c.unacked1?.procCpuPer100k ?? null;
      const rss = Math.max(
        0,
        ...['unacked1', 'unacked16', 'acked1', 'acked16'].map((k) => c[k]?.peakRssMb ?? 0),
      );
      const mark = (x, good) => (x === null ? '–' : `${fmt2(x)} ${good(x) ? '✅' : '❌'}`);
      L.push(
        `| ${set} | ${mark(r1, (x) => x >= 0.95)} | ${mark(r16, (x) => x >= 0.95)} | ${mark(cpu, (x) => x <= 0.6)} | ${mark(rss || null, (x) => x <= 200)} |`,
      );
    }
    L.push('');
    L.push(
      'Targets: ≥ 0.95 × psql \\copy at 1 and 16 connections; ≤ 0.6 daemon core-s per 100k entries (goal 0.4); peak RSS ≤ 200 MB.',
    );
    L.push('');
  }
  for (const { set, data, res, notes } of runs) {
    if (runs.length > 1) {
      L.push(`## Data set: ${set}`);
      L.push('');
    }
    L.push(
      `- rows: ${fmtInt(data.rows)} per method (b: the first ${fmtInt(data.subset.length)}; d: the first ${fmtInt(data.peerRows)}); ${data.source}; NDJSON ${MB(data.bytes)} (${(data.bytes / data.rows).toFixed(0)} B/entry), COPY text ${MB(data.copyBytes)}`,
    );
    L.push('');
    section(L, opts, res, notes, runs.length > 1 ? '###' : '##');
  }
  return L.join('\n');
}

/** One data set's tables (throughput, ratios, latency, profile), headings at level `h`. */
function section(L, opts, res, notes, h) {
  L.push(`${h} Throughput`);
  L.push('');
  L.push(
    '| method | rows | seconds | rows/s | MB/s (NDJSON) | client/daemon CPU-s per 100k | Postgres CPU-s per 100k | peak RSS MB | other load, cores |',
  );
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const row = (name, r, daemon = true) => {
    if (!r) return;
    if (r.error) {
      L.push(`| ${name} | – | – | failed: ${r.error.split('\n')[0]} | | | | | |`);
      return;
    }
    L.push(
      `| ${name} | ${fmtInt(r.rows)} | ${fmt2(r.seconds)} | ${fmtInt(r.rowsPerS)} | ${fmt1(r.mbPerS)} | ${r.procCpuPer100k !== null ? fmt2(r.procCpuPer100k) : '–'} | ${fmt2(r.pgCpuPer100k)} | ${daemon && r.peakRssMb ? fmt1(r.peakRssMb) : '–'} | ${fmt2(r.otherCores)} |`,
    );
  };
  row('a. psql \\copy (ceiling; CPU = psql)', res.a, false);
  row('b. INSERT per row, pool of 5 (CPU not measured)', res.b, false);
  row('c. serve, unacked, 1 connection', res.c?.unacked1);
  row('c. serve, unacked, 1 connection (again)', res.c?.chains1b);
  row('c. serve, unacked, 1 connection, without chains (--no-chains)', res.c?.noChains1);
  row('c. serve, unacked, 1 connection, without chains (again)', res.c?.noChains1b);
  row('c. serve, unacked, 16 connections', res.c?.unacked16);
  row('c. serve, acked, 1 connection', res.c?.acked1);
  row('c. serve, acked, 16 connections', res.c?.acked16);
  row('d. rsyslog imptcp + ompgsql, 1 connection', res.d);
  if (res.d?.check) notes.push(`d. rsyslog: ${res.d.check}.`);
  for (const [k, r] of Object.entries(res.c ?? {})) {
    if (r && !r.error && r.exit !== undefined && r.exit !== 0)
      notes.push(`c. ${k}: serve exited with code ${r.exit} on SIGTERM.`);
  }
  for (const n of notes) L.push(`\n> ${n}`);
  L.push('');
  const c = res.c ?? {};
  const best = (...rs) => Math.max(0, ...rs.filter((r) => r && !r.error).map((r) => r.rowsPerS)) || null;
  const unacked = best(c.unacked1, c.unacked16);
  const acked = best(c.acked1, c.acked16);
  const okRate = (r) => (r && !r.error ? r.rowsPerS : null);
  L.push(`${h} Ratios and targets`);
  L.push('');
  L.push('"serve" below is the better of its 1- and 16-connection unacked runs.');
  L.push('');
  L.push('| figure | value | target |');
  L.push('|---|---:|---|');
  const line = (name, v, target, ok) =>
    L.push(
      `| ${name} | ${v === null ? '–' : fmt2(v)} | ${target}${v === null ? '' : ok(v) ? ' ✅' : ' ❌'} |`,
    );
  line('c / a (serve ÷ psql \\copy)', ratio(unacked, okRate(res.a)), '≥ 0.95', (x) => x >= 0.95);
  line('c / a, 1 connection', ratio(okRate(c.unacked1), okRate(res.a)), '≥ 0.95', (x) => x >= 0.95);
  line('c / a, 16 connections', ratio(okRate(c.unacked16), okRate(res.a)), '≥ 0.95', (x) => x >= 0.95);
  line('c / b (serve ÷ INSERT per row)', ratio(unacked, okRate(res.b)), '≥ 10', (x) => x >= 10);
  line('c / d (serve ÷ rsyslog)', ratio(unacked, okRate(res.d)), '(> 1)', (x) => x > 1);
  line(
    'acked / unacked, 1 connection',
    ratio(okRate(c.acked1), okRate(c.unacked1)),
    '≥ 0.8',
    (x) => x >= 0.8,
  );
  line(
    'acked / unacked, 16 connections',
    ratio(okRate(c.acked16), okRate(c.unacked16)),
    '≥ 0.8',
    (x) => x >= 0.8,
  );
  line('acked / unacked, best of each', ratio(acked, unacked), '≥ 0.8', (x) => x >= 0.8);
  const cpu = c.unacked1?.procCpuPer100k ?? null;
  line('daemon CPU-s per 100k entries (unacked, 1 conn)', cpu, '≤ 0.6 (goal 0.4)', (x) => x <= 0.6);
  const rss = Math.max(0, ...['unacked1', 'unacked16', 'acked1', 'acked16'].map((k) => c[k]?.peakRssMb ?? 0));
  line('daemon peak RSS, MB (max over the serve runs)', rss || null, '≤ 200', (x) => x <= 200);
  const bestOf = (...rs) => {
    const v = rs.map(okRate).filter((x) => x !== null);
    return v.length ? Math.max(...v) : null;
  };
  line(
    'with chains / without (unacked, 1 conn, best of two each)',
    ratio(bestOf(c.unacked1, c.chains1b), bestOf(c.noChains1, c.noChains1b)),
    '≥ 0.9 (goal 0.97)',
    (x) => x >= 0.9,
  );
  line(
    'verify, rows/s (full run over the 1-conn rows)',
    c.unacked1?.verifyRowsPerS ?? null,
    '≥ 200,000',
    (x) => x >= 200_000,
  );
  L.push('');
  if (c.lat10 || c.lat100) {
    L.push(`${h} Ack latency (one acked connection, paced sender)`);
    L.push('');
    L.push(
      `Latency of an entry = arrival of its ack − the moment its line was written to the socket. The rate is a share of the acked 1-connection throughput above; each run lasts ${opts.latencySeconds} s (or until the rows run out).`,
    );
    L.push('');
    L.push('| load | target rate/s | achieved rate/s | entries | p50 ms | p99 ms | max ms |');
    L.push('|---|---:|---:|---:|---:|---:|---:|');
    for (const [name, r] of [
      ['10%', c.lat10],
      ['100%', c.lat100],
    ]) {
      if (!r) continue;
      if (r.error) L.push(`| ${name} | failed: ${r.error.split('\n')[0]} | | | | | |`);
      else
        L.push(
          `| ${name} | ${fmtInt(r.targetRate)} | ${fmtInt(r.achievedRate)} | ${fmtInt(r.rows)} | ${fmt1(r.p50)} | ${fmt1(r.p99)} | ${fmt1(r.max)} |`,
        );
    }
    L.push('');
  }
  if (res.profile) {
    L.push(`${h} Daemon CPU profile (unacked, 1 connection, \`node --cpu-prof\`)`);
    L.push('');
    if (res.profile.error) L.push(`failed: ${res.profile.error}`);
    else {
      L.push(
        `${fmtInt(res.profile.summary.busyMs)} ms busy of ${fmtInt(res.profile.summary.totalMs)} ms sampled; top functions by self time (profile: \`${res.profile.file}\`):`,
      );
      L.push('');
      L.push(profileTable(res.profile.summary));
    }
    L.push('');
  }
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = options();
  const started = Date.now();
  if (!existsSync(join(REPO, 'dist', 'bin.js'))) {
    console.error('dist/ is missing: run `npm run build` first (npm run bench does)');
    process.exit(1);
  }
  if (opts.only.has('a') && !existsSync(PSQL)) {
    console.error(`${PSQL} not found: install the postgresql-client package, or leave out a with --only`);
    process.exit(1);
  }
  const work = await mkdtemp(join(tmpdir(), 'ag-bench-'));
  let db = null;
  const load = { start: loadavg()[0] };
  const stopAll = async () => {
    if (db) {
      await db.client.end().catch(() => {});
      await db.server.stop().catch(() => {});
      db = null;
    }
    if (!opts.keep) await rm(work, { recursive: true, force: true }).catch(() => {});
  };
  process.once('SIGINT', () => {
    stopAll().finally(() => process.exit(130));
  });
  try {
    say(`bench: ${fmtInt(opts.rows)} rows, methods ${[...opts.only].sort().join(',')}, work dir ${work}`);
    db = await startPostgres(work);
    say(`postgres ${db.settings.server_version} on 127.0.0.1:${db.cfg.port} (embedded, ${join(work, 'pg')})`);
    const attempt = async (label, fn) => {
      say(`${label} …`);
      try {
        const r = await fn();
        if (r.rowsPerS)
          say(
            `  ${fmtInt(r.rows)} rows in ${fmt2(r.seconds)} s: ${fmtInt(r.rowsPerS)} rows/s, ${fmt1(r.mbPerS)} MB/s` +
              (r.procCpuPer100k !== null && r.procCpuPer100k !== undefined
                ? `, ${fmt2(r.procCpuPer100k)} CPU-s/100k (client or daemon)`
                : '') +
              (r.pgCpuPer100k !== null ? `, ${fmt2(r.pgCpuPer100k)} Postgres CPU-s/100k` : '') +
              (r.peakRssMb ? `, peak RSS ${fmt1(r.peakRssMb)} MB` : '') +
              `, bench process ${fmt2(r.benchCpuPer100k)} CPU-s/100k` +
              (r.otherCores > 0.1 ? ` (other processes used ${fmt2(r.otherCores)} cores meanwhile)` : ''),
          );
        else if (r.p50 !== undefined)
          say(
            `  ${fmtInt(r.rows)} entries at ${fmtInt(r.achievedRate)}/s: p50 ${fmt1(r.p50)} ms, p99 ${fmt1(r.p99)} ms, max ${fmt1(r.max)} ms`,
          );
        return r;
      } catch (err) {
        say(`  FAILED: ${err.message}`);
        return { error: err.message };
      }
    };

    const runs = [];
    for (const set of opts.data) {
      const res = {};
      const notes = [];
      const data = prepareData(opts, work, set);
      say(
        `data ${set}: ${data.source}; ${fmtInt(data.rows)} rows, NDJSON ${(data.bytes / 1e6).toFixed(1)} MB (${(data.bytes / data.rows).toFixed(0)} B/entry), COPY ${(data.copyBytes / 1e6).toFixed(1)} MB, made in ${(data.ms / 1000).toFixed(1)} s${data.skipped ? `, ${data.skipped} lines skipped (rejected by parseEntry)` : ''}`,
      );
      if (opts.only.has('a')) res.a = await attempt('a. psql \\copy', () => runPsqlCopy(db, data));
      if (opts.only.has('b'))
        res.b = await attempt(`b. INSERT per row, pool of 5 (${fmtInt(data.subset.length)} rows)`, () =>
          runPerRow(db, data),
        );
      if (opts.only.has('c')) {
        const c = {};
        res.c = c;
        c.unacked1 = await attempt('c. serve unacked, 1 connection (then verify)', () =>
          runServe(work, db, data, { conns: 1, ack: false, verify: true }),
        );
        if (c.unacked1.verifyRowsPerS)
          say(`  verify: ${fmtInt(c.unacked1.verifyRowsPerS)} rows/s (${fmt2(c.unacked1.verifySeconds)} s)`);
        // The cost of the chains: the same run without them, alternated with one more of each.
        c.noChains1 = await attempt('c. serve unacked, 1 connection, --no-chains (reference)', () =>
          runServe(work, db, data, { conns: 1, ack: false, serveArgs: ['--no-chains'] }),
        );
        c.chains1b = await attempt('c. serve unacked, 1 connection (again)', () =>
          runServe(work, db, data, { conns: 1, ack: false }),
        );
        c.noChains1b = await attempt('c. serve unacked, 1 connection, --no-chains (again)', () =>
          runServe(work, db, data, { conns: 1, ack: false, serveArgs: ['--no-chains'] }),
        );
        c.unacked16 = await attempt('c. serve unacked, 16 connections', () =>
          runServe(work, db, data, { conns: 16, ack: false }),
        );
        c.acked1 = await attempt('c. serve acked, 1 connection', () =>
          runServe(work, db, data, { conns: 1, ack: true }),
        );
        c.acked16 = await attempt('c. serve acked, 16 connections', () =>
          runServe(work, db, data, { conns: 16, ack: true }),
        );
        const rate = c.acked1?.rowsPerS;
        if (rate) {
          c.lat10 = await attempt(`c. ack latency at 10% (${fmtInt(rate * 0.1)}/s)`, () =>
            runPaced(work, db, data, rate * 0.1, opts.latencySeconds),
          );
          c.lat100 = await attempt(`c. ack latency at 100% (${fmtInt(rate)}/s)`, () =>
            runPaced(work, db, data, rate, opts.latencySeconds),
          );
        }
      }
      if (opts.only.has('d')) {
        const rs = findRsyslog();
        if (!rs) {
          const msg =
            'd. SKIPPED: rsyslog with ompgsql is not installed (Debian: `apt-get install rsyslog rsyslog-pgsql`; see bench/README.md)';
          say(msg);
          notes.push(msg);
        } else {
          res.d = await attempt('d. rsyslog (imptcp unix socket → mmjsonparse → ompgsql)', () =>
            runRsyslog(work, db, data, rs),
          );
        }
        if (hasSyslogNgSql())
          notes.push('syslog-ng with sql() is installed but not driven by this bench (see README).');
      }
      if (opts.profile && opts.only.has('c')) {
        const profDir = join(
          REPO,
          'bench',
          'out',
          `profile-${new Date(started).toISOString().replaceAll(':', '')}-${set}`,
        );
        await mkdir(profDir, { recursive: true });
        const r = await attempt('profile: serve unacked, 1 connection, under node --cpu-prof', () =>
          runServe(work, db, data, { conns: 1, ack: false, cpuProfDir: profDir }),
        );
        if (r.error) res.profile = { error: r.error };
        else {
          // The profile is written when the process exits (serve.stop() waited for that).
          const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
          if (files.length === 0) res.profile = { error: `no .cpuprofile in ${profDir}` };
          else {
            const file = join(profDir, files[0]);
            res.profile = { file: file.slice(REPO.length + 1), summary: summarizeProfile(file, 10, REPO) };
            say(profileTable(res.profile.summary));
          }
        }
      }
      runs.push({ set, data, res, notes });
    }
    const text = report(opts, runs, db, started, load);
    await writeFile(opts.out, `${text}\n`);
    // Keep the written file as the project's formatter wants it (`npm run lint` checks Markdown too).
    const biome = join(REPO, 'node_modules', '.bin', 'biome');
    if (existsSync(biome)) {
      try {
        execFileSync(biome, ['format', '--write', opts.out], { stdio: 'ignore' });
      } catch {}
    }
    say('');
    say(text);
    say('');
    say(`written to ${opts.out}`);
  } finally {
    await stopAll();
  }
}

main().catch((err) => {
  console.error(`bench: ${err.stack ?? err}`);
  process.exit(1);
});
