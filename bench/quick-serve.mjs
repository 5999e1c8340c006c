/**
 * A quick end-to-end figure for one serve configuration: N generated entries (bench/lib/gen.mjs)
 * over one Unix-socket connection, unacked, into a fresh database on the local Postgres
 * (TEST_DATABASE_URL's server, default postgres://postgres@127.0.0.1:5432). Prints rows/s, serve's
 * CPU-seconds per 100k entries and its peak RSS. Extra arguments go to `serve`.
 *   npm run build && node bench/quick-serve.mjs 300000 --batch-size 4000
 * PROF=1 adds node --cpu-prof (profiles in bench/out/prof); MEMTRACE=1 prints serve's peak heap and
 * buffer figures (bench/lib/memtrace.cjs); PGOPT='-c synchronous_commit=off' sets serve's session
 * options, CONNS=16 sends on 16 connections. The Postgres figure is the CPU of every live `postgres` process on the machine.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { makeGenerator } from './lib/gen.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = join(HERE, '..', 'bin', 'audit-gateway');
const N = Number(process.argv[2] ?? 300000);
const serveArgs = process.argv.slice(3);
const admin = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const work = join(tmpdir(), 'ag-quick-serve');
mkdirSync(work, { recursive: true });
const file = join(work, `gen-${N}.ndjson`);
if (!existsSync(file)) {
  const g = makeGenerator(42);
  const lines = [];
  for (let i = 0; i < N; i++) lines.push(g.next());
  writeFileSync(file, `${lines.join('\n')}\n`);
}
const db = `quick_serve_${Date.now()}`;
const a = new pg.Client(admin);
await a.connect();
await a.query(`CREATE DATABASE ${db}`);
const u = new URL(admin);
u.pathname = `/${db}`;
if (process.env.PGOPT) u.searchParams.set('options', process.env.PGOPT);
const url = u.toString();
execFileSync(process.execPath, [BIN, 'migrate', '--database-url', url]);
const sock = join(work, `${db}.sock`);
const prof = process.env.PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(HERE, 'out', 'prof')}`] : [];
const proc = spawn(
  process.execPath,
  [
    ...prof,
    BIN,
    'serve',
    '--database-url',
    url,
    '--socket',
    sock,
    '--data-dir',
    join(work, db),
    '--no-migrate',
    '--log-level',
    'warn',
    ...serveArgs,
  ],
  {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: {
      ...process.env,
      NODE_OPTIONS: [
        process.env.NODE_OPTIONS ?? '',
        process.env.MEMTRACE ? `-r ${join(HERE, 'lib', 'memtrace.cjs')}` : '',
      ].join(' '),
    },
  },
);
while (!existsSync(sock)) await new Promise((r) => setTimeout(r, 50));
const ticks = () => {
  const f = readFileSync(`/proc/${proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
/** CPU ticks of every live process named postgres (the server's share of the run). */
const pgTicks = () => {
  let sum = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (!raw.includes('(postgres)')) continue;
      const f = raw.split(') ')[1].split(' ');
      sum += Number(f[11]) + Number(f[12]);
    } catch {}
  }
  return sum;
};
const t0 = ticks();
const p0 = pgTicks();
const w0 = performance.now();
const c = new pg.Client(url);
await c.connect();
// The end: the NOTIFY that carries id N (a fresh table numbers the rows 1..N); no polling, which
// would cost the server CPU during the run.
await c.query('LISTEN audit_log');
const stored = new Promise((resolve) => {
  c.on('notification', (n) => {
    if (Number(n.payload) >= N) resolve();
  });
});
// CONNS=k: the rows split into k contiguous ranges, sent on k connections at once.
const conns = Number(process.env.CONNS ?? 1);
const body = readFileSync(file);
const parts = [];
for (let k = 0, start = 0; k < conns; k++) {
  let end = k === conns - 1 ? body.length : Math.floor((body.length * (k + 1)) / conns);
  if (end < body.length) end = body.indexOf(10, end) + 1;
  parts.push(body.subarray(start, end));
  start = end;
}
await Promise.all(
  parts.map(
    (part) =>
      new Promise((res) => {
        const s = connect(sock, () => s.end(part));
        s.on('close', res);
        s.resume();
      }),
  ),
);
await stored;
const wall = (performance.now() - w0) / 1000;
const cpu = (ticks() - t0) / 100; // CLK_TCK is 100 on Linux
const pgCpu = (pgTicks() - p0) / 100;
const hwm = Number(readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/VmHWM:\s+(\d+)/)[1]);
console.log(
  `rows ${N} wall ${wall.toFixed(2)}s ${Math.round(N / wall)} rows/s; serve cpu ${cpu.toFixed(2)}s = ${((cpu / N) * 1e5).toFixed(2)} core-s/100k; Postgres ${((pgCpu / N) * 1e5).toFixed(2)} core-s/100k; VmHWM ${Math.round(hwm / 1024)} MB`,
);
proc.kill('SIGTERM');
await new Promise((r) => proc.on('exit', r));
await c.end();
await a.query(`DROP DATABASE ${db} WITH (FORCE)`);
await a.end();
