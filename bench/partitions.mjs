/**
 * Partitions and retention (CONTRACT.md §10), on the local Postgres (TEST_DATABASE_URL's server,
 * default postgres://postgres@127.0.0.1:5432), in one run so that the ratios compare like with like:
 *
 * 1. ingest: the same N generated entries (bench/lib/gen.mjs, seed 42) by `psql \copy` (COPY text,
 *    as serve would send it) and by `serve` end to end (one Unix-socket connection, unacked, until
 *    the NOTIFY of id N), into the partitioned schema (every migration) and into the unpartitioned
 *    one (the migrations before 1764400000005), alternating, REPS times;
 * 2. conversion: `migrate` of an unpartitioned audit_log holding CONV rows over 30 days;
 * 3. search by subject over DAYS days of PER_DAY rows each: p50 of the `search` query
 *    (db/queries.ts entriesQuery, limit 100, newest first) over all days and over the last 2 days,
 *    with EXPLAIN showing the partitions scanned;
 * 4. retention of the oldest day's partition (with and without --archive) while serve ingests at
 *    full speed over an acked connection: retention's wall time and the longest gap between two
 *    acks during it.
 *
 *   npm run build && node bench/partitions.mjs        (N=300000 CONV=1000000 DAYS=30 PER_DAY=50000 REPS=2)
 * Prints a Markdown section (also written to bench/out/partitions.md).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { entriesQuery } from '../dist/db/queries.js';
import { encodeCopyRow } from '../dist/entry/copyText.js';
import { DEFAULT_REDACT_KEYS, parseEntry } from '../dist/entry/parse.js';
import { makeGenerator } from './lib/gen.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = join(HERE, '..', 'bin', 'audit-gateway');
const N = Number(process.env.N ?? 300_000);
const CONV = Number(process.env.CONV ?? 1_000_000);
const DAYS = Number(process.env.DAYS ?? 30);
const PER_DAY = Number(process.env.PER_DAY ?? 50_000);
const REPS = Number(process.env.REPS ?? 2);
/** Which parts run (PARTS=ingest,conversion,days,retention; default all). */
const PARTS = new Set((process.env.PARTS ?? 'ingest,conversion,days,retention').split(','));
const admin = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const work = join(tmpdir(), `ag-bench-partitions-${process.pid}`);
mkdirSync(work, { recursive: true });
const out = [];
const say = (s) => {
  console.log(s);
  out.push(s);
};

function urlOf(db) {
  const u = new URL(admin);
  u.pathname = `/${db}`;
  return u.toString();
}
async function adminQuery(sql) {
  const a = new pg.Client(admin);
  await a.connect();
  try {
    await a.query(sql);
  } finally {
    await a.end();
  }
}
async function freshDb(name, migrateArgs = []) {
  await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await adminQuery(`CREATE DATABASE ${name}`);
  execFileSync(process.execPath, [BIN, 'migrate', '--database-url', urlOf(name), ...migrateArgs]);
  return urlOf(name);
}

/** Writes NDJSON (when `ndFile`) and COPY text of the same entries, in chunks; returns the row count. */
function generate(n, seed, startMs, stepScale, cpFile, ndFile) {
  const g = makeGenerator(seed, startMs, stepScale);
  const opts = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };
  const cp = openSync(cpFile, 'w');
  const nd = ndFile ? openSync(ndFile, 'w') : null;
  let rows = 0;
  let a = [];
  let b = [];
  const flush = () => {
    writeSync(cp, b.join(''));
    if (nd !== null) writeSync(nd, a.join(''));
    a = [];
    b = [];
  };
  for (let i = 0; i < n; i++) {
    const line = g.next();
    if (nd !== null) a.push(`${line}\n`);
    const r = parseEntry(Buffer.from(line), opts);
    if (r.ok) {
      b.push(encodeCopyRow(r.row));
      rows++;
    }
    if (b.length >= 10_000) flush();
  }
  flush();
  closeSync(cp);
  if (nd !== null) closeSync(nd);
  return rows;
}

const COLS =
  'request_id, "timestamp", client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message, latency_ms, extra';

function psqlCopy(url, file) {
  const t0 = performance.now();
  const r = spawnSync('psql', [
    url,
    '-qAt',
    '-v',
    'ON_ERROR_STOP=1',
    '-c',
    `\\copy audit_log (${COLS}) FROM '${file}'`,
  ]);
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

async function reset(url, partitioned, stamps) {
  const c = new pg.Client(url);
  await c.connect();
  // the append-only triggers (CONTRACT.md §9) refuse TRUNCATE: off for this session only
  await c.query('SET session_replication_role = replica');
  const { a: tables } = (
    await c.query(
      `SELECT array_agg(t) AS a FROM unnest(ARRAY['audit_log', 'audit_reject', 'audit_batch', 'audit_checkpoint',
         'audit_chain', 'audit_retention']) t WHERE to_regclass(t) IS NOT NULL`,
    )
  ).rows[0];
  await c.query(`TRUNCATE ${tables.join(', ')} RESTART IDENTITY`);
  await c.query('RESET session_replication_role');
  if (partitioned) await c.query('SELECT audit_log_ensure_partitions($1::text[])', [stamps]);
  await c.query('VACUUM');
  await c.query('CHECKPOINT');
  await c.end();
  spawnSync('sync');
}

function startServe(url, name, extra = []) {
  const sock = join(work, `${name}.sock`);
  rmSync(sock, { force: true });
  const proc = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      '--database-url',
      url,
      '--socket',
      sock,
      '--data-dir',
      join(work, name),
      '--no-migrate',
      '--log-level',
      'warn',
      ...extra,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  return { proc, sock };
}
/** Waits until serve accepts on its socket (the file appears at bind, before listen). */
async function waitSock(sock) {
  for (;;) {
    if (existsSync(sock)) {
      const ok = await new Promise((r) => {
        const so = connect(sock, () => {
          so.destroy();
          r(true);
        });
        so.on('error', () => r(false));
      });
      if (ok) return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function stopServe(s) {
  s.proc.kill('SIGTERM');
  await new Promise((r) => s.proc.on('exit', r));
}

/** serve end to end: seconds from the first byte to the NOTIFY of id `rows`. */
async function serveIngest(url, name, body, rows) {
  const s = startServe(url, name);
  await waitSock(s.sock);
  const c = new pg.Client(url);
  await c.connect();
  await c.query('LISTEN audit_log');
  const stored = new Promise((resolve) => {
    c.on('notification', (n) => {
      if (Number(n.payload) >= rows) resolve();
    });
  });
  const t0 = performance.now();
  await new Promise((res) => {
    const so = connect(s.sock, () => so.end(body));
    so.on('close', res);
    so.resume();
  });
  await stored;
  const secs = (performance.now() - t0) / 1000;
  await c.end();
  await stopServe(s);
  return secs;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

say(`### Partitions and retention (bench/partitions.mjs)`);
say('');
say(
  `Run ${new Date().toISOString()}, local Postgres 15 (${admin.replace(/\/[^/]*$/, '')}), ${cpus().length} cores, load average at start ${loadavg()
    .map((x) => x.toFixed(1))
    .join(' ')} (the machine is shared: ratios within this run are what count).`,
);
say('');

// 1. ingest
if (PARTS.has('ingest')) {
  const ndFile = join(work, 'ingest.ndjson');
  const cpFile = join(work, 'ingest.copy');
  const data = { rows: generate(N, 42, undefined, undefined, cpFile, ndFile) };
  const body = readFileSync(ndFile);
  const stamps = ['2026-11-29T12:00:00Z', '2026-11-30T12:00:00Z'];
  const part = await freshDb('bench_part');
  // every migration before the partitions (0005): chains included, as in the partitioned schema
  const flat = await freshDb('bench_flat', ['--count', '5']);
  const res = { copy_part: [], copy_flat: [], serve_part: [], serve_flat: [] };
  const runs = [
    ['copy_part', part, true, 'copy'],
    ['copy_flat', flat, false, 'copy'],
    ['serve_part', part, true, 'serve'],
    ['serve_flat', flat, false, 'serve'],
  ];
  for (let rep = 0; rep < REPS; rep++) {
    // ABBA: odd reps run in reverse order, so that neither schema always goes first
    for (const [key, url, partitioned, how] of rep % 2 ? [...runs].reverse() : runs) {
      await reset(url, partitioned, stamps);
      const secs = how === 'copy' ? psqlCopy(url, cpFile) : await serveIngest(url, key, body, data.rows);
      res[key].push(data.rows / secs);
      console.error(`  rep ${rep + 1} ${key}: ${Math.round(data.rows / secs)} rows/s`);
    }
  }
  const m = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)]));
  say(
    `**Ingest**, ${data.rows} entries, ${REPS} alternating reps (median of the reps; each rep's figures in parentheses):`,
  );
  say('');
  say('| schema | psql \\copy rows/s | serve rows/s | serve / \\copy |');
  say('| --- | --- | --- | --- |');
  const fmt = (v) => `${Math.round(median(v))} (${v.map((x) => Math.round(x)).join(', ')})`;
  say(
    `| partitioned (daily) | ${fmt(res.copy_part)} | ${fmt(res.serve_part)} | ${(m.serve_part / m.copy_part).toFixed(2)} |`,
  );
  say(
    `| unpartitioned | ${fmt(res.copy_flat)} | ${fmt(res.serve_flat)} | ${(m.serve_flat / m.copy_flat).toFixed(2)} |`,
  );
  say('');
  say(
    `serve partitioned / serve unpartitioned: **${(m.serve_part / m.serve_flat).toFixed(2)}**; \\copy partitioned / unpartitioned: ${(m.copy_part / m.copy_flat).toFixed(2)}.`,
  );
  say('');
  await adminQuery('DROP DATABASE bench_part WITH (FORCE)');
  await adminQuery('DROP DATABASE bench_flat WITH (FORCE)');
}

// 2. conversion of an unpartitioned table
if (PARTS.has('conversion') && CONV > 0) {
  const url = await freshDb('bench_conv', ['--count', '3']);
  const c = new pg.Client(url);
  await c.connect();
  await c.query(
    `INSERT INTO audit_log (request_id, "timestamp", client_subject, client_role, tool_name, backend_name, request_args, response_status, latency_ms)
    SELECT md5('conv' || g)::uuid, timestamptz '2026-10-01T00:00:00Z' + (g::float8 / $1 * 30) * interval '1 day',
           'user' || (g % 34), 'role' || (g % 8), 'tool' || (g % 36), 'be' || (g % 21),
           jsonb_build_object('path', '/data/' || g, 'n', g), CASE WHEN g % 20 = 0 THEN 'error' ELSE 'success' END, g % 5000
      FROM generate_series(1, $1::int) g`,
    [CONV],
  );
  await c.query('VACUUM ANALYZE audit_log');
  await c.query('CHECKPOINT');
  const before = (await c.query('SELECT count(*)::int AS n, max(id)::text AS m FROM audit_log')).rows[0];
  await c.end();
  const t0 = performance.now();
  execFileSync(process.execPath, [BIN, 'migrate', '--database-url', url]);
  const secs = (performance.now() - t0) / 1000;
  const c2 = new pg.Client(url);
  await c2.connect();
  const after = (await c2.query('SELECT count(*)::int AS n, max(id)::text AS m FROM audit_log')).rows[0];
  const parts = (
    await c2.query(`SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'audit_log'::regclass`)
  ).rows[0].n;
  await c2.end();
  say(
    `**Conversion**: \`migrate\` of an unpartitioned audit_log of ${before.n} rows over 30 days into ${parts} daily partitions: **${secs.toFixed(1)} s** (${Math.round(before.n / secs)} rows/s; rows after ${after.n}, highest id ${after.m} = before ${before.m}).`,
  );
  say('');
  await adminQuery('DROP DATABASE bench_conv WITH (FORCE)');
}

// 3. search over many days, and 4. retention while serve ingests
if (PARTS.has('days')) {
  const url = await freshDb('bench_days');
  const total = DAYS * PER_DAY;
  const start = Date.UTC(2026, 9, 1);
  // gen.mjs spaces entries ~2 ms apart at stepScale 1
  const cpFile = join(work, 'days.copy');
  const data = { rows: generate(total, 43, start, 86_400_000 / PER_DAY / 2, cpFile, null) };
  const c = new pg.Client(url);
  await c.connect();
  const stamps = Array.from({ length: DAYS + 3 }, (_, d) => new Date(start + d * 86_400_000).toISOString());
  await c.query('SELECT audit_log_ensure_partitions($1::text[])', [stamps]);
  const loadSecs = psqlCopy(url, cpFile);
  await c.query('VACUUM ANALYZE audit_log');
  const allParts = (
    await c.query(`SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'audit_log'::regclass`)
  ).rows[0].n;
  const span = (
    await c.query(
      `SELECT min("timestamp") AS a, max("timestamp") AS b, count(DISTINCT tableoid)::int AS parts FROM audit_log`,
    )
  ).rows[0];
  say(
    `**Search by subject over many days**: ${data.rows} entries from ${span.a.toISOString()} to ${span.b.toISOString()} in ${span.parts} daily partitions, ${allParts} partitions in all with the empty ones made ahead around today (loaded by \\copy in ${loadSecs.toFixed(0)} s). The query is the one \`search\` sends (db/queries.ts), timed over 21 runs on one connection.`,
  );
  say('');
  const subject = (await c.query(`SELECT client_subject FROM audit_log GROUP BY 1 ORDER BY count(*) LIMIT 1`))
    .rows[0].client_subject;
  const last2 = new Date(span.b.getTime() - 2 * 86_400_000).toISOString();
  say('| query (limit 100, newest first) | p50 ms | p95 ms | partitions in the plan (of all) |');
  say('| --- | --- | --- | --- |');
  for (const [label, filters] of [
    [`--subject ${subject} (the rarest), all days`, { subject }],
    [`--subject ${subject} --since <last 2 days>`, { subject, since: last2 }],
    ['--subject user7 (a common one), all days', { subject: 'user7' }],
    ['--subject user7 --since <last 2 days>', { subject: 'user7', since: last2 }],
  ]) {
    const q = entriesQuery(filters, { order: 'desc', limit: 100 });
    const times = [];
    for (let i = 0; i < 21; i++) {
      const t0 = performance.now();
      await c.query(q.text, q.values);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const plan = (await c.query(`EXPLAIN ${q.text}`, q.values)).rows.map((r) => r['QUERY PLAN']).join('\n');
    const scanned = new Set(plan.match(/audit_log_p\d{8}/g) ?? []).size;
    say(`| ${label} | ${times[10].toFixed(1)} | ${times[19].toFixed(1)} | ${scanned} of ${allParts} |`);
    if (filters.since) writeFileSync(join(HERE, 'out', `explain-${filters.subject}.txt`), plan);
  }
  say('');
  {
    const q = entriesQuery({ subject, since: last2 }, { order: 'desc', limit: 100 });
    const plan = (await c.query(`EXPLAIN ${q.text}`, q.values)).rows.map((r) => r['QUERY PLAN']).join('\n');
    say('EXPLAIN of `--subject … --since <last 2 days>` (pruned to the partitions of those days):');
    say('');
    say('```');
    say(plan.split('\n').slice(0, 14).join('\n'));
    say('```');
    say('');
  }
  await c.end();

  await adminQuery('DROP DATABASE bench_days WITH (FORCE)');
}

// 4. retention while serve ingests over an acked connection (a database of RET_DAYS days)
if (PARTS.has('retention')) {
  const RET_DAYS = Number(process.env.RET_DAYS ?? 3);
  const url = await freshDb('bench_ret');
  const start = Date.UTC(2026, 9, 1);
  const cpFile = join(work, 'ret.copy');
  generate(RET_DAYS * PER_DAY, 45, start, 86_400_000 / PER_DAY / 2, cpFile, null);
  const c = new pg.Client(url);
  await c.connect();
  const stamps = Array.from({ length: RET_DAYS + 1 }, (_, d) =>
    new Date(start + d * 86_400_000).toISOString(),
  );
  await c.query('SELECT audit_log_ensure_partitions($1::text[])', [stamps]);
  psqlCopy(url, cpFile);
  await c.query('VACUUM ANALYZE audit_log');
  await c.end();
  for (const archive of [false, true]) {
    const s = startServe(url, `ret_${archive}`);
    await waitSock(s.sock);
    const g = makeGenerator(44, Date.now());
    const acks = [];
    let stop = false;
    const so = connect(s.sock);
    await new Promise((r) => so.once('connect', r));
    so.write('{"ack":true}\n');
    let buf = '';
    so.setEncoding('utf8');
    so.on('data', (d) => {
      buf += d;
      let i = buf.indexOf('\n');
      while (i !== -1) {
        acks.push(performance.now());
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
      }
    });
    let sent = 0;
    const pump = (async () => {
      while (!stop) {
        const lines = [];
        for (let i = 0; i < 2000; i++) lines.push(g.next());
        sent += 2000;
        if (!so.write(`${lines.join('\n')}\n`)) await new Promise((r) => so.once('drain', r));
        // keep at most ~50k entries unacked (the daemon's queue pushes back beyond)
        while (sent - acks.length > 50_000 && !stop) await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await new Promise((r) => setTimeout(r, 4000));
    const c3 = new pg.Client(url);
    await c3.connect();
    const oldest = (
      await c3.query(
        `SELECT min(c.relname) AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_log'::regclass`,
      )
    ).rows[0].p;
    const rows = (await c3.query(`SELECT count(*)::int AS n FROM ${oldest}`)).rows[0].n;
    await c3.end();
    const day = `${oldest.slice(11, 15)}-${oldest.slice(15, 17)}-${oldest.slice(17, 19)}`;
    const cutoffMs = Date.parse(`${day}T00:00:00Z`) + 86_400_000 + 60_000;
    const olderThan = `${Math.floor((Date.now() - cutoffMs) / 1000)}s`;
    const a0 = acks.length;
    const t0 = performance.now();
    const args = ['retention', '--database-url', url, '--older-than', olderThan];
    if (archive) args.push('--archive', join(work, 'archive'));
    // async: the acks keep being read (and timed) while retention runs
    const r = await new Promise((res) => {
      const p = spawn(process.execPath, [BIN, ...args]);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => {
        stdout += d;
      });
      p.stderr.on('data', (d) => {
        stderr += d;
      });
      p.on('close', (status) => res({ status, stdout, stderr }));
    });
    const t1 = performance.now();
    if (r.status !== 0) throw new Error(`retention: ${r.stderr}`);
    await new Promise((res) => setTimeout(res, 2000));
    stop = true;
    await pump;
    so.end();
    // longest gap between acks from 1 s before retention to 1 s after it
    let gap = 0;
    for (let i = 1; i < acks.length; i++) {
      if (acks[i] < t0 - 1000 || acks[i - 1] > t1 + 1000) continue;
      gap = Math.max(gap, acks[i] - acks[i - 1]);
    }
    const during = acks.filter((x) => x >= t0 && x <= t1).length;
    const rate = Math.round(during / ((t1 - t0) / 1000));
    const before = acks.filter((x) => x >= t0 - 3000 && x < t0).length / 3;
    say(
      `**Retention ${archive ? 'with --archive' : 'without archive'}** of the oldest day (${oldest}, ${rows} entries, ${r.stdout.trim().split('\n').length} partition(s)) while serve ingests over an acked connection: retention took **${((t1 - t0) / 1000).toFixed(2)} s** (the command, node start-up included); ingest ${rate} acks/s during it vs ${Math.round(before)} acks/s in the 3 s before; longest gap between two acks around it **${gap.toFixed(0)} ms** (acks after retention started: ${acks.length - a0}).`,
    );
    say('');
    await stopServe(s);
  }
  await adminQuery('DROP DATABASE bench_ret WITH (FORCE)');
}

mkdirSync(join(HERE, 'out'), { recursive: true });
writeFileSync(join(HERE, 'out', 'partitions.md'), `${out.join('\n')}\n`);
rmSync(work, { recursive: true, force: true });
