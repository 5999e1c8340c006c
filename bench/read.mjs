#!/usr/bin/env node
/**
 * `npm run bench:read`: the read path (`export`, `search`, `tail`) on a table of N rows (default 1M)
 * spread over the last 7 days. See bench/README.md, "Read benchmark".
 *
 *   1. export vs psql: `audit-gateway export` (ndjson, csv) of every row against psql `\copy` of the
 *      very same SELECT (db/queries.js `entriesCopySql`); the export process's peak RSS at 100k rows
 *      and at N rows
 *   2. search latency: the SQL that `search` runs, through a pg client (p50/p95, EXPLAIN ANALYZE once),
 *      and the wall time of the `search` binary (process start included)
 *   3. tail latency: `tail --output json` following entries committed at ~200/s (commit → printed)
 *
 * It starts its own embedded Postgres in a temp dir (never a shared server) and writes
 * bench/READ-RESULTS.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { filtersOf } from '../dist/cli/readOptions.js';
import { startEmbedded } from '../dist/db/embedded.js';
import { entriesCopySql, entriesQuery } from '../dist/db/queries.js';
import { CopyRowSplitter, decodeCopyValue } from '../dist/entry/copyDecode.js';
import { encodeCopyRow } from '../dist/entry/copyText.js';
import { DEFAULT_REDACT_KEYS, ENTRY_COLUMNS, parseEntry } from '../dist/entry/parse.js';
import { silentLogger } from '../dist/log.js';
import { benchArgs, cleanEnv, percentile, say, wholeNumber, writer } from './lib/common.mjs';
import { makeGenerator } from './lib/gen.mjs';
import { CLK_TCK, machine, statusKb, treeCpuTicks } from './lib/proc.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const BIN = join(REPO, 'bin', 'audit-gateway');
const EXIT_STATS = pathToFileURL(join(HERE, 'lib', 'exit-stats.mjs')).href;
const PSQL = '/usr/bin/psql';
const COLS = ENTRY_COLUMNS.map((c) => (c === 'timestamp' ? '"timestamp"' : c)).join(', ');

const USAGE = `usage: npm run bench:read -- [options]
  --rows N            rows in audit_log (default 1000000)
  --quick             100000 rows, fewer runs (a smoke run)
  --small N           the smaller table for the export RSS comparison (default 100000, at most rows/2)
  --days D            the rows' timestamps span the last D days (default 7)
  --repeat N          runs of each export measurement; the best counts (default 2)
  --search-runs N     runs of each indexed search query (default 50)
  --cli-runs N        runs of each \`search\` binary measurement (default 10)
  --tail-seconds S    length of each tail run (default 10)
  --tail-rate R       entries/s committed during a tail run (default 200)
  --seed N            PRNG seed (default 42)
  --out FILE          where to write the results (default bench/READ-RESULTS.md)
  --keep              keep the temp dir (data files, Postgres cluster)`;

// ---------------------------------------------------------------------------------------------
// Options

function options() {
  const parsed = benchArgs(
    {
      rows: { type: 'string' },
      quick: { type: 'boolean', default: false },
      small: { type: 'string' },
      days: { type: 'string', default: '7' },
      repeat: { type: 'string' },
      'search-runs': { type: 'string' },
      'cli-runs': { type: 'string' },
      'tail-seconds': { type: 'string' },
      'tail-rate': { type: 'string', default: '200' },
      seed: { type: 'string', default: '42' },
      out: { type: 'string', default: join(HERE, 'READ-RESULTS.md') },
      keep: { type: 'boolean', default: false },
    },
    USAGE,
  );
  const num = wholeNumber;
  const quick = parsed.quick;
  const rows = num('rows', parsed.rows ?? (quick ? 100_000 : 1_000_000), 1000);
  const small = Math.min(Math.floor(rows / 2), num('small', parsed.small ?? 100_000, 100));
  return {
    rows,
    quick,
    small,
    days: num('days', parsed.days, 1),
    repeat: num('repeat', parsed.repeat ?? (quick ? 1 : 2), 1),
    searchRuns: num('search-runs', parsed['search-runs'] ?? (quick ? 20 : 50), 1),
    cliRuns: num('cli-runs', parsed['cli-runs'] ?? (quick ? 5 : 10), 1),
    tailSeconds: num('tail-seconds', parsed['tail-seconds'] ?? (quick ? 5 : 10), 1),
    tailRate: num('tail-rate', parsed['tail-rate'], 1),
    seed: num('seed', parsed.seed, 0),
    out: resolve(parsed.out),
    keep: parsed.keep,
  };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmtInt = (n) => (n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US'));
const fmt1 = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toFixed(1));
const fmt2 = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toFixed(2));
process.stdout.on('error', () => {});

function stats(samples) {
  const s = Float64Array.from(samples).sort();
  return {
    n: s.length,
    p50: percentile(s, 50),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s.at(-1),
  };
}

/** Runs a child to its exit; resolves with wall ms, exit code and the tail of stderr. */
function runChild(cmd, args, { env, stdout = 'ignore', onSpawn } = {}) {
  return new Promise((resolveRun, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { cwd: REPO, stdio: ['ignore', stdout, 'pipe'], env: env ?? cleanEnv() });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.length > 1 << 16) stderr = stderr.slice(-(1 << 15));
    });
    onSpawn?.(child);
    child.on('error', reject);
    child.on('close', (code, signal) => resolveRun({ ms: now() - t0, code, signal, stderr }));
  });
}

// ---------------------------------------------------------------------------------------------
// Data: N generated entries as COPY text, spread over the last `days` days

/**
 * Writes the first `small` rows to part1.copy and the rest to part2.copy (both COPY text, as serve
 * stores them: parsed with parseEntry, default redaction), oldest first, the newest about a minute
 * before now.
 */
function prepareData(opts, work) {
  const t0 = now();
  const spanMs = opts.days * 86_400_000;
  // makeGenerator's gaps average 2000 µs at stepScale 1.
  const stepScale = (spanMs * 1000) / opts.rows / 2000;
  const startMs = Date.now() - 60_000 - spanMs;
  const gen = makeGenerator(opts.seed, startMs, stepScale);
  const redactKeys = new Set(DEFAULT_REDACT_KEYS);
  const parts = [join(work, 'part1.copy'), join(work, 'part2.copy')];
  let w = writer(parts[0]);
  let bytes = 0;
  let first = null;
  let last = null;
  let sampleRequestId = null;
  for (let i = 0; i < opts.rows; ) {
    const line = gen.next();
    const r = parseEntry(Buffer.from(line, 'utf8'), { redactKeys });
    if (!r.ok) continue;
    if (i === opts.small) {
      w.close();
      w = writer(parts[1]);
    }
    const text = encodeCopyRow(r.row);
    w.write(text);
    bytes += line.length + 1;
    if (i === 0) first = r.row.timestamp;
    if (i === Math.floor(opts.rows / 2)) sampleRequestId = r.row.request_id;
    last = r.row.timestamp;
    i++;
  }
  w.close();
  return { parts, bytes, first, last, sampleRequestId, stepScale, ms: now() - t0 };
}

// ---------------------------------------------------------------------------------------------
// Postgres

async function startPostgres(work) {
  const server = await startEmbedded(join(work, 'pg'), silentLogger(), { adoptRunning: true });
  const base = { host: server.host, port: server.port, user: server.user, password: server.password };
  const admin = new pg.Client({ ...base, database: 'postgres' });
  await admin.connect();
  try {
    await admin.query('DROP DATABASE IF EXISTS benchread');
    await admin.query('CREATE DATABASE benchread');
  } finally {
    await admin.end();
  }
  const url = `postgres://${base.user}:${encodeURIComponent(base.password)}@${base.host}:${base.port}/benchread`;
  const mig = await runChild(process.execPath, [BIN, 'migrate', '--database-url', url]);
  if (mig.code !== 0) throw new Error(`audit-gateway migrate failed (${mig.code}): ${mig.stderr.trim()}`);
  const cfg = { ...base, database: 'benchread', application_name: 'audit-gateway-bench-read' };
  const client = new pg.Client(cfg);
  await client.connect();
  const postmasterPid = Number(readFileSync(join(work, 'pg', 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const settings = {};
  for (const name of ['server_version', 'shared_buffers', 'work_mem', 'synchronous_commit', 'fsync']) {
    settings[name] = (await client.query(`SHOW ${name}`)).rows[0][name];
  }
  return { server, cfg, client, url, postmasterPid, settings };
}

function psqlArgs(db, command) {
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', db.cfg.host, '-p', String(db.cfg.port)];
  args.push('-U', db.cfg.user, '-d', db.cfg.database, '-c', command);
  return args;
}

/** psql with one command; resolves with wall ms and psql's own CPU seconds (bash's `times`). */
async function runPsql(db, command) {
  const r = await runChild(
    'bash',
    ['-c', `"$0" "$@"; rc=$?; times >&2; exit $rc`, PSQL, ...psqlArgs(db, command)],
    { env: cleanEnv({ PGPASSWORD: db.cfg.password }) },
  );
  if (r.code !== 0) throw new Error(`psql failed: ${r.stderr.trim().slice(-600)}`);
  const times = r.stderr.trim().split('\n').slice(-1)[0];
  const tm = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/.exec(times);
  const cpu = tm ? Number(tm[1]) * 60 + Number(tm[2]) + Number(tm[3]) * 60 + Number(tm[4]) : null;
  return { ms: r.ms, cpu };
}

async function load(db, file, rows) {
  const t0 = now();
  await runPsql(db, `\\copy audit_log (${COLS}) FROM '${file.replaceAll("'", "''")}'`);
  const loadMs = now() - t0;
  await db.client.query('VACUUM (ANALYZE) audit_log');
  await db.client.query('CHECKPOINT');
  execFileSync('sync');
  const n = Number((await db.client.query('SELECT count(*) AS n FROM audit_log')).rows[0].n);
  if (n !== rows) throw new Error(`audit_log holds ${n} rows after loading, expected ${rows}`);
  const size = (await db.client.query(`SELECT pg_size_pretty(pg_total_relation_size('audit_log')) AS s`))
    .rows[0].s;
  return { loadMs, size, totalMs: now() - t0 };
}

// ---------------------------------------------------------------------------------------------
// 1. export vs psql

/** Counts the bytes `byte` in a file; with `decodeHash`, also hashes the file's COPY rows decoded. */
async function scanFile(path, { decodeHash = false } = {}) {
  let lines = 0;
  const hash = decodeHash ? createHash('sha256') : null;
  const splitter = decodeHash ? new CopyRowSplitter() : null;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    if (splitter) {
      let out = '';
      for (const l of splitter.push(chunk)) out += `${decodeCopyValue(l) ?? 'null'}\n`;
      hash.update(out);
    }
  }
  return { lines, hash: hash?.digest('hex') ?? null };
}

async function hashFile(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

/** One `audit-gateway export` run to a file, with its peak RSS and CPU (exit-stats preload). */
async function runExport(db, work, format) {
  const out = join(work, `export.${format}`);
  const statsFile = join(work, 'export-stats.json');
  await unlink(statsFile).catch(() => {});
  let polledKb = 0;
  let poll = null;
  const pg0 = treeCpuTicks(db.postmasterPid);
  const r = await runChild(
    process.execPath,
    ['--import', EXIT_STATS, BIN, 'export', '--database-url', db.url, '--format', format, '--output', out],
    {
      env: cleanEnv({ BENCH_EXIT_STATS: statsFile }),
      onSpawn: (child) => {
        poll = setInterval(() => {
          const kb = statusKb(child.pid, 'VmHWM');
          if (kb !== null && kb > polledKb) polledKb = kb;
        }, 50);
      },
    },
  );
  clearInterval(poll);
  await sleep(200); // let the postmaster reap the backend, so its CPU is counted
  const pg1 = treeCpuTicks(db.postmasterPid);
  if (r.code !== 0)
    throw new Error(`export --format ${format} exited ${r.code}: ${r.stderr.trim().slice(-600)}`);
  let st = null;
  try {
    st = JSON.parse(readFileSync(statsFile, 'utf8'));
  } catch {}
  return {
    ms: r.ms,
    file: out,
    bytes: statSync(out).size,
    rssMb: (st?.hwmKb ?? polledKb) / 1024,
    cpu: st?.cpuSeconds ?? null,
    pgCpu: pg1 !== null && pg0 !== null ? (pg1 - pg0) / CLK_TCK : null,
  };
}

/** psql `\copy (<the SELECT export runs>) TO file`. */
async function runPsqlExport(db, work, format) {
  const out = join(work, `psql.${format}`);
  const sql = entriesCopySql({}, format, { order: 'asc' }).replace(/\s+/g, ' ');
  const m = /^COPY (\(.*\)) TO STDOUT$/.exec(sql);
  if (!m) throw new Error(`unexpected shape of entriesCopySql: ${sql.slice(0, 80)}…`);
  const pg0 = treeCpuTicks(db.postmasterPid);
  const r = await runPsql(db, `\\copy ${m[1]} TO '${out.replaceAll("'", "''")}'`);
  await sleep(200);
  const pg1 = treeCpuTicks(db.postmasterPid);
  return {
    ms: r.ms,
    file: out,
    bytes: statSync(out).size,
    cpu: r.cpu,
    pgCpu: pg1 !== null && pg0 !== null ? (pg1 - pg0) / CLK_TCK : null,
  };
}

/**
 * export and psql of every row, `repeat` times each (alternating), best of each; checks that both
 * wrote every row, and for NDJSON that export wrote exactly psql's rows decoded.
 */
async function measureExports(db, work, rows, repeat) {
  const res = {};
  for (const format of ['ndjson', 'csv']) {
    let bestExport = null;
    let bestPsql = null;
    let maxRss = 0;
    let check = '';
    for (let i = 0; i < repeat; i++) {
      const p = await runPsqlExport(db, work, format);
      const e = await runExport(db, work, format);
      maxRss = Math.max(maxRss, e.rssMb);
      if (i === 0) {
        const pl = await scanFile(p.file, { decodeHash: format === 'ndjson' });
        const el = await scanFile(e.file);
        const eRows = format === 'csv' ? el.lines - 1 : el.lines;
        if (pl.lines !== rows || eRows !== rows)
          throw new Error(`${format}: psql wrote ${pl.lines} rows, export ${eRows}; expected ${rows}`);
        if (format === 'ndjson') {
          const eh = await hashFile(e.file);
          check =
            eh === pl.hash
              ? `export's NDJSON = psql's rows decoded, byte for byte (${fmtInt(rows)} rows)`
              : 'export NDJSON DIFFERS from psql rows decoded';
        } else check = `both wrote ${fmtInt(rows)} rows`;
      }
      if (!bestPsql || p.ms < bestPsql.ms) bestPsql = p;
      if (!bestExport || e.ms < bestExport.ms) bestExport = e;
      await unlink(p.file).catch(() => {});
      await unlink(e.file).catch(() => {});
    }
    const out = {
      rows,
      export: { ...bestExport, rowsPerS: rows / (bestExport.ms / 1000), maxRssMb: maxRss },
      psql: { ...bestPsql, rowsPerS: rows / (bestPsql.ms / 1000) },
      check,
    };
    out.ratio = out.export.rowsPerS / out.psql.rowsPerS;
    res[format] = out;
    say(
      `  ${format} at ${fmtInt(rows)} rows: export ${fmtInt(out.export.rowsPerS)} rows/s (${fmt2(bestExport.ms / 1000)} s, ${fmt1(bestExport.bytes / 1e6)} MB, CPU ${fmt2(bestExport.cpu)} s, Postgres CPU ${fmt2(bestExport.pgCpu)} s, peak RSS ${fmt1(maxRss)} MB); psql ${fmtInt(out.psql.rowsPerS)} rows/s (${fmt2(bestPsql.ms / 1000)} s, Postgres CPU ${fmt2(bestPsql.pgCpu)} s); export/psql ${fmt2(out.ratio)}; ${check}`,
    );
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// 2. search latency

/** The plan of an EXPLAIN (ANALYZE, FORMAT JSON): scans on audit_log with their index and rows. */
function planSummary(plan) {
  const parts = [];
  let removed = 0;
  const walk = (node) => {
    if (node['Relation Name'] === 'audit_log' || node['Index Name']) {
      parts.push(`${node['Node Type']}${node['Index Name'] ? ` ${node['Index Name']}` : ''}`);
      removed += (node['Rows Removed by Filter'] ?? 0) * (node['Actual Loops'] ?? 1);
    } else if (node['Node Type'] === 'Sort')
      parts.push(`Sort (${node['Sort Method'] ?? ''})`.replace(' ()', ''));
    for (const child of node.Plans ?? []) walk(child);
  };
  walk(plan.Plan);
  return { scans: parts.join(' → '), removed, execMs: plan['Execution Time'] };
}

async function timeCopy(client, sql) {
  const t0 = now();
  const stream = client.query(copyTo(sql));
  let rows = 0;
  for await (const chunk of stream)
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) rows++;
  return { ms: now() - t0, rows };
}

async function measureSearch(db, data, opts) {
  const at = new Date();
  const subject = 'user:alice@acme-corp.example';
  const tool = 'postgres.query';
  const backend = 'mcp-sandbox';
  const queries = [
    { name: `--subject ${subject} --since 1h`, flags: { subject, since: '1h' }, cli: true },
    { name: `--tool ${tool} --errors --since yesterday`, flags: { tool, errors: true, since: 'yesterday' } },
    { name: `--request-id ${data.sampleRequestId}`, flags: { requestId: data.sampleRequestId }, cli: true },
    { name: '(no filter: the newest 100)', flags: {} },
    { name: `--backend ${backend} (no index of its own)`, flags: { backend } },
    {
      name: `--text 'no such message' (no index, matches nothing: reads every row)`,
      flags: { text: 'no such message' },
      runs: Math.min(opts.searchRuns, 5),
    },
  ];
  const results = [];
  for (const q of queries) {
    const filters = filtersOf(q.flags, at);
    const sel = entriesQuery(filters, { order: 'desc', limit: 100 });
    const copySql = entriesCopySql(filters, 'ndjson', { order: 'desc', limit: 100 });
    const ex = await db.client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${sel.text}`, sel.values);
    const plan = planSummary(ex.rows[0]['QUERY PLAN'][0]);
    const runs = q.runs ?? opts.searchRuns;
    // one warm-up run of each form, not counted
    let rows = (await db.client.query(sel.text, sel.values)).rowCount;
    await timeCopy(db.client, copySql);
    const selMs = [];
    const copyMs = [];
    for (let i = 0; i < runs; i++) {
      const t0 = now();
      rows = (await db.client.query(sel.text, sel.values)).rowCount;
      selMs.push(now() - t0);
      copyMs.push((await timeCopy(db.client, copySql)).ms);
    }
    const r = {
      name: q.name,
      flags: q.flags,
      cli: q.cli,
      rows,
      plan,
      select: stats(selMs),
      copy: stats(copyMs),
    };
    results.push(r);
    say(
      `  ${q.name}: ${rows} rows; SELECT p50 ${fmt2(r.select.p50)} ms p95 ${fmt2(r.select.p95)} ms; COPY (what search --output ndjson runs) p50 ${fmt2(r.copy.p50)} ms p95 ${fmt2(r.copy.p95)} ms; plan: ${plan.scans}, ${fmtInt(plan.removed)} rows removed by filter`,
    );
  }
  return results;
}

function cliArgs(flags) {
  const a = [];
  for (const [k, v] of Object.entries(flags)) {
    const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (v === true) a.push(flag);
    else a.push(flag, v);
  }
  return a;
}

/** Wall time of the `search` binary (process start included), and of `--version` for the start alone. */
async function measureCli(db, searches, runs) {
  const out = [];
  const time = async (name, args, check) => {
    const ms = [];
    for (let i = 0; i <= runs; i++) {
      let bytes = 0;
      const r = await runChild(process.execPath, args, {
        stdout: 'pipe',
        onSpawn: (c) =>
          c.stdout.on('data', (d) => {
            bytes += d.length;
          }),
      });
      if (r.code !== 0) throw new Error(`${name} exited ${r.code}: ${r.stderr.trim().slice(-400)}`);
      if (check && bytes === 0) throw new Error(`${name} printed nothing`);
      if (i > 0) ms.push(r.ms); // the first run warms the page cache
    }
    const s = stats(ms);
    out.push({ name, ...s });
    say(`  ${name}: p50 ${fmt1(s.p50)} ms, max ${fmt1(s.max)} ms (${s.n} runs)`);
  };
  await time('node -e 0 (Node itself)', ['-e', '0'], false);
  await time('node bin/audit-gateway --version (process start only)', [BIN, '--version'], true);
  for (const q of searches.filter((s) => s.cli)) {
    const args = [BIN, 'search', ...cliArgs(q.flags), '--output', 'ndjson', '--database-url', db.url];
    await time(`search ${q.name} --output ndjson`, args, true);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 3. tail latency

/**
 * `tail --output json` following entries that `writers` connections commit at `rate`/s in total for
 * `seconds` (each transaction: INSERT of the entries due, NOTIFY audit_log '<max id>', COMMIT).
 * Latency of an entry = the moment its line reached the bench − the moment its COMMIT returned.
 */
async function measureTail(db, opts, writers, seed) {
  const n = opts.tailRate * opts.tailSeconds;
  const gen = makeGenerator(seed, Date.now());
  const redactKeys = new Set(DEFAULT_REDACT_KEYS);
  const rows = [];
  while (rows.length < n) {
    const r = parseEntry(Buffer.from(gen.next(), 'utf8'), { redactKeys });
    if (r.ok) rows.push(r.row);
  }
  const committedAt = new Map();
  const arrivedAt = new Map();
  const printed = [];
  let doubled = 0;
  let firstLine = null;

  const tail = spawn(
    process.execPath,
    [BIN, 'tail', '-n', '1', '--output', 'json', '--database-url', db.url, '--log-level', 'warn'],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() },
  );
  let stderr = '';
  tail.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => tail.on('exit', (code, signal) => r({ code, signal })));
  let pending = '';
  let ready;
  const readyP = new Promise((r) => {
    ready = r;
  });
  tail.stdout.on('data', (chunk) => {
    const t = now();
    const text = pending + chunk.toString('utf8');
    const cut = text.lastIndexOf('\n') + 1;
    pending = text.slice(cut);
    for (const line of text.slice(0, cut).split('\n')) {
      if (line === '') continue;
      const m = /^\{"id":(\d+),/.exec(line);
      if (!m) continue;
      if (firstLine === null) {
        firstLine = m[1];
        ready();
        continue;
      }
      if (arrivedAt.has(m[1])) doubled++;
      else arrivedAt.set(m[1], t);
      printed.push(m[1]);
    }
  });
  const startTimeout = setTimeout(() => ready(), 30_000);
  await readyP;
  clearTimeout(startTimeout);
  if (firstLine === null) {
    tail.kill('SIGTERM');
    throw new Error(`tail printed nothing within 30 s: ${stderr.trim().slice(-400)}`);
  }

  const clients = [];
  for (let k = 0; k < writers; k++) {
    const c = new pg.Client(db.cfg);
    await c.connect();
    clients.push(c);
  }
  const tx = [];
  const t0 = now();
  const write = async (k) => {
    const c = clients[k];
    const mine = rows.filter((_, i) => i % writers === k);
    const rate = opts.tailRate / writers;
    let sent = 0;
    while (sent < mine.length) {
      const due = Math.min(mine.length, Math.floor(((now() - t0) / 1000) * rate) + 1);
      if (due <= sent) {
        await sleep(1);
        continue;
      }
      const batch = mine.slice(sent, due);
      sent = due;
      const values = [];
      const tuples = batch.map((row) => {
        const ph = ENTRY_COLUMNS.map((col) => {
          values.push(row[col]);
          return `$${values.length}`;
        });
        return `(${ph.join(', ')})`;
      });
      await c.query('BEGIN');
      const res = await c.query(
        `INSERT INTO audit_log (${COLS}) VALUES ${tuples.join(', ')} RETURNING id`,
        values,
      );
      const ids = res.rows.map((r) => String(r.id));
      const maxId = ids.reduce((a, b) => (BigInt(b) > BigInt(a) ? b : a));
      await c.query(`NOTIFY audit_log, '${maxId}'`);
      await c.query('COMMIT');
      const t = now();
      for (const id of ids) committedAt.set(id, t);
      tx.push(ids.length);
    }
  };
  await Promise.all(clients.map((_, k) => write(k)));
  const sendSeconds = (now() - t0) / 1000;
  for (const c of clients) await c.end();
  // wait for the last entries to be printed (at most 5 s)
  const waitEnd = now() + 5000;
  while (now() < waitEnd && [...committedAt.keys()].some((id) => !arrivedAt.has(id))) await sleep(20);
  tail.kill('SIGTERM');
  const killTimer = setTimeout(() => tail.kill('SIGKILL'), 10_000);
  const exit = await exited;
  clearTimeout(killTimer);

  const lat = [];
  let missing = 0;
  for (const [id, t] of committedAt) {
    const a = arrivedAt.get(id);
    if (a === undefined) missing++;
    else lat.push(a - t);
  }
  const unexpected = [...arrivedAt.keys()].filter((id) => !committedAt.has(id)).length;
  let outOfOrder = 0;
  for (let i = 1; i < printed.length; i++) if (BigInt(printed[i]) < BigInt(printed[i - 1])) outOfOrder++;
  const s = stats(lat);
  const r = {
    writers,
    entries: committedAt.size,
    transactions: tx.length,
    rate: committedAt.size / sendSeconds,
    ...s,
    min: lat.length ? Math.min(...lat) : null,
    missing,
    doubled,
    unexpected,
    outOfOrder,
    exit: exit.code ?? exit.signal,
  };
  say(
    `  ${writers} writer(s): ${fmtInt(r.entries)} entries in ${fmtInt(r.transactions)} transactions at ${fmtInt(r.rate)}/s; commit → printed p50 ${fmt1(r.p50)} ms, p99 ${fmt1(r.p99)} ms, max ${fmt1(r.max)} ms; missing ${missing}, doubled ${doubled}, not ours ${unexpected}, printed out of id order ${outOfOrder}; tail exit ${r.exit}`,
  );
  if (stderr.trim()) say(`  tail stderr: ${stderr.trim().slice(-400)}`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Report

function report(opts, data, db, res, started) {
  const mc = machine();
  let psqlVersion = '';
  try {
    psqlVersion = execFileSync(PSQL, ['--version'], { encoding: 'utf8' }).trim();
  } catch {}
  const L = [];
  const s = db.settings;
  L.push('# Read benchmark results');
  L.push('');
  L.push('Written by `npm run bench:read` (bench/read.mjs); see bench/README.md, "Read benchmark".');
  L.push('');
  L.push(
    `- date: ${new Date(started).toISOString()} (run took ${((Date.now() - started) / 1000).toFixed(0)} s)`,
  );
  L.push(
    `- machine: ${mc.nproc} cores (\`nproc\`), ${mc.model}, ${mc.ramGiB.toFixed(1)} GiB RAM, Linux ${mc.kernel}`,
  );
  L.push(`- Node ${process.version}; Postgres ${s.server_version} (embedded, temp dir); ${psqlVersion}`);
  L.push(
    `- Postgres settings: shared_buffers ${s.shared_buffers}, work_mem ${s.work_mem}, synchronous_commit ${s.synchronous_commit}, fsync ${s.fsync}`,
  );
  L.push(
    `- rows: ${fmtInt(opts.rows)} generated (seed ${opts.seed}, bench/lib/gen.mjs), timestamps from ${data.first} to ${data.last} (${opts.days} days); audit_log ${res.loadFull.size} with its indexes; loaded with psql \\copy, then VACUUM ANALYZE`,
  );
  L.push(`- command: \`npm run bench:read -- ${process.argv.slice(2).join(' ')}\``.replace(' -- `', '`'));
  L.push('');
  const startMs = Array.isArray(res.cli) ? res.cli.find((c) => c.name.includes('--version'))?.p50 : null;
  L.push('## 1. export vs psql `\\copy` of the same SELECT');
  L.push('');
  L.push(
    `Every row, oldest first. psql runs \`\\copy (<entriesCopySql(...)'s SELECT>) TO file\`; export runs \`audit-gateway export --format F --output file\` (wall time includes its process start). Best of ${opts.repeat} run${opts.repeat === 1 ? '' : 's'} each; peak RSS is the export process's VmHWM (max over the runs).`,
  );
  L.push('');
  L.push(
    `| format | rows | export s | export rows/s | psql s | psql rows/s | export ÷ psql | export ÷ psql net of process start${startMs ? ` (${fmtInt(startMs)} ms)` : ''} | export CPU-s | Postgres CPU-s (export / psql) | export peak RSS MB | check |`,
  );
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const [size, ex] of [
    ['small', res.exportSmall],
    ['full', res.exportFull],
  ]) {
    if (!ex) continue;
    if (ex.error) {
      L.push(`| ${size} | failed: ${ex.error.split('\n')[0]} | | | | | | | | | | |`);
      continue;
    }
    for (const f of ['ndjson', 'csv']) {
      const r = ex[f];
      L.push(
        `| ${f} | ${fmtInt(r.rows)} | ${fmt2(r.export.ms / 1000)} | ${fmtInt(r.export.rowsPerS)} | ${fmt2(r.psql.ms / 1000)} | ${fmtInt(r.psql.rowsPerS)} | ${fmt2(r.ratio)} | ${startMs ? fmt2(r.psql.ms / (r.export.ms - startMs)) : '–'} | ${fmt2(r.export.cpu)} | ${fmt2(r.export.pgCpu)} / ${fmt2(r.psql.pgCpu)} | ${fmt1(r.export.maxRssMb)} | ${r.check} |`,
      );
    }
  }
  L.push('');
  L.push('## 2. search latency');
  L.push('');
  if (res.search?.error) L.push(`failed: ${res.search.error}`);
  else if (res.search) {
    L.push(
      `The SQL that \`search\` runs (\`--limit 100\`, newest first), built by dist/db/queries.js from \`filtersOf\` of the flags, on one open pg connection: the SELECT of \`--output table\` (\`entriesQuery\`) and the \`COPY (SELECT …) TO STDOUT\` of \`--output json|ndjson|csv\` (\`entriesCopySql\`), ${opts.searchRuns} runs each after one warm-up. The plan is from one EXPLAIN ANALYZE of the SELECT.`,
    );
    L.push('');
    L.push(
      '| query | rows | SELECT p50 ms | SELECT p95 ms | COPY p50 ms | COPY p95 ms | plan | rows removed by filter |',
    );
    L.push('|---|---:|---:|---:|---:|---:|---|---:|');
    for (const q of res.search) {
      L.push(
        `| \`${q.name}\` | ${q.rows} | ${fmt2(q.select.p50)} | ${fmt2(q.select.p95)} | ${fmt2(q.copy.p50)} | ${fmt2(q.copy.p95)} | ${q.plan.scans} | ${fmtInt(q.plan.removed)} |`,
      );
    }
    L.push('');
  }
  if (res.cli?.error) L.push(`search binary: failed: ${res.cli.error}`);
  else if (res.cli) {
    L.push(`The binary, wall time from spawn to exit (${opts.cliRuns} runs after one warm-up):`);
    L.push('');
    L.push('| command | p50 ms | max ms |');
    L.push('|---|---:|---:|');
    for (const c of res.cli) L.push(`| \`${c.name}\` | ${fmt1(c.p50)} | ${fmt1(c.max)} |`);
    L.push('');
  }
  L.push('## 3. tail latency');
  L.push('');
  L.push(
    `\`audit-gateway tail -n 1 --output json\` following entries committed at ${opts.tailRate}/s in total for ${opts.tailSeconds} s; each transaction inserts the entries due, sends \`NOTIFY audit_log, '<max id>'\` and commits (as serve does). Latency = the moment the entry's line reached the bench − the moment its COMMIT returned.`,
  );
  L.push('');
  L.push(
    '| writers | entries | transactions | rate/s | p50 ms | p99 ms | max ms | missing | doubled | printed out of id order |',
  );
  L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const t of res.tail ?? []) {
    if (t.error) L.push(`| ${t.writers} | failed: ${t.error.split('\n')[0]} | | | | | | | | |`);
    else
      L.push(
        `| ${t.writers} | ${fmtInt(t.entries)} | ${fmtInt(t.transactions)} | ${fmtInt(t.rate)} | ${fmt1(t.p50)} | ${fmt1(t.p99)} | ${fmt1(t.max)} | ${t.missing} | ${t.doubled} | ${t.outOfOrder} |`,
      );
  }
  L.push('');
  L.push(
    'With one writer, ids commit in order, so "printed out of id order" must be 0; with several, a lower id can commit after a higher one and tail prints entries in commit order.',
  );
  L.push('');
  L.push('## Ratios and targets');
  L.push('');
  L.push('| figure | value | target |');
  L.push('|---|---:|---|');
  const line = (name, v, target, ok) =>
    L.push(
      `| ${name} | ${v === null || v === undefined ? '–' : fmt2(v)} | ${target}${v === null || v === undefined ? '' : ok(v) ? ' ✅' : ' ❌'} |`,
    );
  const full = res.exportFull && !res.exportFull.error ? res.exportFull : null;
  const small = res.exportSmall && !res.exportSmall.error ? res.exportSmall : null;
  line(`export ÷ psql, ndjson, ${fmtInt(opts.rows)} rows`, full?.ndjson.ratio, '≥ 0.95', (x) => x >= 0.95);
  line(`export ÷ psql, csv, ${fmtInt(opts.rows)} rows`, full?.csv.ratio, '≥ 0.95', (x) => x >= 0.95);
  for (const f of ['ndjson', 'csv']) {
    const a = small?.[f].export.maxRssMb;
    const b = full?.[f].export.maxRssMb;
    line(
      `export peak RSS ${f}, ${fmtInt(opts.rows)} ÷ ${fmtInt(opts.small)} rows (${fmt1(b)} / ${fmt1(a)} MB)`,
      a && b ? b / a : null,
      '≤ 1.2 (flat)',
      (x) => x <= 1.2,
    );
  }
  const indexed = (res.search && !res.search.error ? res.search : []).slice(0, 4);
  for (const q of indexed)
    line(`search p50 ms (COPY form), \`${q.name}\``, q.copy.p50, '< 50', (x) => x < 50);
  for (const t of res.tail ?? []) {
    if (t.error) continue;
    line(`tail commit → printed p99 ms, ${t.writers} writer(s)`, t.p99, '≤ 250', (x) => x <= 250);
    line(
      `tail entries missing + doubled, ${t.writers} writer(s)`,
      t.missing + t.doubled + t.unexpected,
      '= 0',
      (x) => x === 0,
    );
  }
  L.push('');
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = options();
  const started = Date.now();
  if (!existsSync(join(REPO, 'dist', 'bin.js'))) {
    console.error('dist/ is missing: run `npm run build` first (npm run bench:read does)');
    process.exit(1);
  }
  if (!existsSync(PSQL)) {
    console.error(`${PSQL} not found: install the postgresql-client package`);
    process.exit(1);
  }
  const work = await mkdtemp(join(tmpdir(), 'ag-bench-read-'));
  let db = null;
  const res = {};
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
  const attempt = async (label, fn) => {
    say(`${label} …`);
    try {
      return await fn();
    } catch (err) {
      say(`  FAILED: ${err.stack ?? err.message}`);
      return { error: err.message };
    }
  };
  try {
    say(`bench:read: ${fmtInt(opts.rows)} rows over ${opts.days} days, work dir ${work}`);
    const data = prepareData(opts, work);
    say(
      `data: ${fmtInt(opts.rows)} rows (${fmtInt(opts.small)} + ${fmtInt(opts.rows - opts.small)}), NDJSON ${(data.bytes / 1e6).toFixed(1)} MB, timestamps ${data.first} … ${data.last}, made in ${(data.ms / 1000).toFixed(1)} s`,
    );
    db = await startPostgres(work);
    say(
      `postgres ${db.settings.server_version} on 127.0.0.1:${db.cfg.port} (embedded), migrated with the binary`,
    );

    res.loadSmall = await load(db, data.parts[0], opts.small);
    say(
      `load ${fmtInt(opts.small)} rows: ${fmt1(res.loadSmall.loadMs / 1000)} s (\\copy), table ${res.loadSmall.size}`,
    );
    res.exportSmall = await attempt(`1. export vs psql at ${fmtInt(opts.small)} rows`, () =>
      measureExports(db, work, opts.small, opts.repeat),
    );
    res.loadFull = await load(db, data.parts[1], opts.rows);
    say(
      `load ${fmtInt(opts.rows - opts.small)} more rows: ${fmt1(res.loadFull.loadMs / 1000)} s (\\copy), table ${res.loadFull.size}`,
    );
    res.exportFull = await attempt(`1. export vs psql at ${fmtInt(opts.rows)} rows`, () =>
      measureExports(db, work, opts.rows, opts.repeat),
    );
    res.search = await attempt('2a. search SQL through a pg client', () => measureSearch(db, data, opts));
    res.cli = await attempt('2b. the search binary', () =>
      measureCli(db, Array.isArray(res.search) ? res.search : [], opts.cliRuns),
    );
    res.tail = [];
    for (const writers of [1, 4]) {
      res.tail.push(
        (await attempt(`3. tail, ${writers} writer(s) at ${opts.tailRate}/s for ${opts.tailSeconds} s`, () =>
          measureTail(db, opts, writers, opts.seed + writers),
        )) ?? { writers },
      );
      const last = res.tail.at(-1);
      if (last.error) last.writers = writers;
    }

    const text = report(opts, data, db, res, started);
    await writeFile(opts.out, `${text}\n`);
    say('');
    say(text);
    say(`written to ${opts.out}`);
  } finally {
    await stopAll();
  }
}

main().catch((err) => {
  console.error(`bench:read: ${err.stack ?? err}`);
  process.exit(1);
});
