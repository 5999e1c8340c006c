#!/usr/bin/env node
/**
 * Flood bench (issue 4; not run by the tests): N acked entries (default 1,000,000) sent to `serve`
 * while its Postgres is down, then Postgres is started again. Prints the time to spool and ack
 * everything, the recovery time (Postgres back → every row stored and the spool empty), the
 * daemon's peak RSS (VmHWM from /proc/<pid>/status) and the exact counts (lost, duplicated).
 *
 * Usage: npm run build && node bench/flood.mjs [N] [-- extra serve flags…]
 * It starts its own embedded Postgres in a temporary directory (never the shared one) and removes
 * it afterwards. Linux only (/proc).
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { startEmbedded } = await import(join(REPO, 'dist', 'db', 'embedded.js'));
const { silentLogger } = await import(join(REPO, 'dist', 'log.js'));

const dash = process.argv.indexOf('--');
const N = Number(process.argv[2] && process.argv[2] !== '--' ? process.argv[2] : 1_000_000);
const extraFlags = dash >= 0 ? process.argv.slice(dash + 1) : [];
const TAG = 'f1000000';
const MB = 2 ** 20;

const line = (i) =>
  `{"request_id":"${TAG}-0000-4000-8000-${String(i).padStart(12, '0')}","timestamp":"2024-05-01T12:00:00Z","client_subject":"user:ada.example","client_role":"analyst","tool_name":"sql.query","backend_name":"pg-reports","request_args":{"q":"select ${i}","n":${i}},"response_status":"ok","error_message":null,"latency_ms":12}\n`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

async function mem(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(
      await readFile(`/proc/${pid}/status`, 'utf8'),
    );
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function query(url, sql) {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

const pgDir = await mkdtemp(join(tmpdir(), 'ag-bench-pg-'));
const srvDir = await mkdtemp(join(tmpdir(), 'ag-bench-serve-'));
const port = await freePort();
let server = await startEmbedded(pgDir, silentLogger(), { adoptRunning: true, port });
const url = `postgres://postgres:${encodeURIComponent(server.password)}@127.0.0.1:${port}/postgres`;
const socket = join(srvDir, 's.sock');
const spoolDir = join(srvDir, 'spool');
const logFile = join(srvDir, 'serve.log');
let daemon;

try {
  daemon = spawn(
    process.execPath,
    [
      join(REPO, 'bin', 'audit-gateway'),
      'serve',
      '--socket',
      socket,
      '--data-dir',
      srvDir,
      '--database-url',
      url,
      '--log-level',
      'info',
      ...extraFlags,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const log = createWriteStream(logFile);
  daemon.stderr.pipe(log);
  let listening = false;
  daemon.stderr.on('data', (d) => {
    if (String(d).includes('serve: listening')) listening = true;
  });
  for (let t = 0; !listening; t++) {
    if (t > 600 || daemon.exitCode !== null) throw new Error(`serve did not start; see ${logFile}`);
    await sleep(100);
  }
  let peakRss = 0;
  const sampler = setInterval(async () => {
    peakRss = Math.max(peakRss, await mem(daemon.pid, 'VmRSS'));
  }, 100);

  await server.stop();
  server = null;
  console.log(`Postgres stopped; sending ${N} acked entries…`);

  const t0 = Date.now();
  const sock = connect(socket);
  await new Promise((r, j) => {
    sock.once('connect', r);
    sock.once('error', j);
  });
  let ok = 0;
  let failed = 0;
  let partial = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const l of lines) {
      if (!l) continue;
      if (JSON.parse(l).ok) ok++;
      else failed++;
    }
  });
  const closed = new Promise((r) => sock.on('close', r));
  sock.write('{"ack":true}\n');
  for (let i = 1; i <= N; i += 2000) {
    let s = '';
    for (let k = i; k < Math.min(N + 1, i + 2000); k++) s += line(k);
    if (!sock.write(s)) await new Promise((r) => sock.once('drain', r));
  }
  sock.end();
  await closed;
  const floodMs = Date.now() - t0;
  const hwmDown = await mem(daemon.pid, 'VmHWM');
  const segs = (await readdir(spoolDir)).filter((f) => f.endsWith('.seg')).length;
  console.log(
    `spooled and acked: ${ok} ok, ${failed} failed, in ${(floodMs / 1000).toFixed(1)} s (${Math.round(N / (floodMs / 1000))} entries/s), ${segs} segment files; peak RSS so far ${(hwmDown / MB).toFixed(1)} MB`,
  );

  server = await startEmbedded(pgDir, silentLogger(), { adoptRunning: true, port });
  const up = Date.now();
  let rows = 0;
  for (;;) {
    try {
      rows = Number((await query(url, 'SELECT count(*) AS n FROM audit_log'))[0].n);
    } catch {
      // not ready yet
    }
    const left = (await readdir(spoolDir)).filter((f) => f.startsWith('spool-'));
    if (rows >= N && left.length === 0) break;
    if (Date.now() - up > 30 * 60_000)
      throw new Error(`recovery did not finish: ${rows} rows, spool ${left}`);
    await sleep(250);
  }
  const recoveryMs = Date.now() - up;
  clearInterval(sampler);
  const hwm = await mem(daemon.pid, 'VmHWM');
  const [c] = await query(
    url,
    `SELECT count(*)::bigint AS n, count(DISTINCT request_id)::bigint AS d FROM audit_log WHERE request_id::text LIKE '${TAG}-%'`,
  );
  const n = Number(c.n);
  const d = Number(c.d);
  console.log(
    `recovery (Postgres back -> all stored, spool empty): ${(recoveryMs / 1000).toFixed(1)} s (${Math.round(N / (recoveryMs / 1000))} entries/s)`,
  );
  console.log(
    `daemon peak RSS: VmHWM ${(hwm / MB).toFixed(1)} MB (sampled VmRSS max ${(peakRss / MB).toFixed(1)} MB; ${(hwmDown / MB).toFixed(1)} MB before Postgres returned)`,
  );
  console.log(`rows ${n}, distinct ${d}: lost ${N - d}, duplicated ${n - d}`);
  daemon.kill('SIGTERM');
  await Promise.race([new Promise((r) => daemon.once('exit', r)), sleep(15_000)]);
  process.exitCode = N - d === 0 && n === d && failed === 0 ? 0 : 1;
} finally {
  if (daemon && daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
  if (server) await server.stop().catch(() => {});
  await rm(pgDir, { recursive: true, force: true });
  await rm(srvDir, { recursive: true, force: true });
}
