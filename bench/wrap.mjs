#!/usr/bin/env node
/**
 * `npm run bench:wrap` (and the last step of `npm run bench`): the overhead of `audit-gateway wrap`
 * (CONTRACT.md §11) on a real MCP server. A raw stdio client makes N sequential `tools/call`s of
 * @modelcontextprotocol/server-everything's `echo` (a fast tool), once straight to the server and
 * once through wrap with a real `serve` acking every entry into Postgres; rounds alternate
 * (direct, wrap, direct, wrap …) so that both see the same machine load. Reported: the median
 * latency per call of each (and of a bare Node pipe proxy, the floor of any proxy process), their difference (the added latency; target ≤ 1 ms), calls/s of each
 * and their ratio (target ≥ 0.9), wrap's own CPU per call, and a check that every wrapped call is
 * stored. It starts its own embedded Postgres in a temp dir (never a shared server) and writes its
 * section at the end of bench/RESULTS.md (between markers, leaving the rest of the file alone).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbedded } from '../dist/db/embedded.js';
import { migrate } from '../dist/db/migrate.js';
import { silentLogger } from '../dist/log.js';
import { benchArgs, cleanEnv, percentile, say, wholeNumber } from './lib/common.mjs';
import { CLK_TCK, cpuTicks, machine } from './lib/proc.mjs';
import { profileTable, summarizeProfile } from './lib/profile.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const BIN = join(REPO, 'bin', 'audit-gateway');
const EVERYTHING = join(
  REPO,
  'node_modules',
  '@modelcontextprotocol',
  'server-everything',
  'dist',
  'index.js',
);
const START = '<!-- wrap-bench:start -->';
const END = '<!-- wrap-bench:end -->';

const USAGE = `usage: npm run bench:wrap -- [options]
  --calls N     sequential tools/call per round (default 2000)
  --rounds R    rounds of each (direct, wrap), alternating (default 5)
  --warmup N    calls before each round's measured ones (default 200)
  --out FILE    the results file whose wrap section is written (default bench/RESULTS.md)
  --profile     run wrap under node --cpu-prof and print its top functions
  --keep        keep the temp dir`;

/**
 * The floor of any stdio proxy written in Node: spawn the server and pipe both ways, nothing else
 * (no inspection, no audit). Measured in the same run, it tells the cost of the extra process hop
 * from the cost of what wrap does on top of it.
 */
const BARE_PROXY = `const c = require('node:child_process').spawn(process.execPath, [process.argv[1]], { stdio: ['pipe', 'pipe', 'inherit'] });
process.stdin.pipe(c.stdin); c.stdout.pipe(process.stdout); c.on('close', (code) => process.exit(code ?? 1));`;

/** A stand-in for serve that acks every line at once and stores nothing (wrap's cost without serve's and Postgres'). */
const ACK_SINK = `const net = require('node:net'); const fs = require('node:fs'); const p = process.argv[1]; try { fs.unlinkSync(p); } catch {}
net.createServer((s) => { let seq = 0, buf = '', hs = false; s.on('data', (d) => { buf += d; let out = ''; for (let nl = buf.indexOf('\\n'); nl >= 0; nl = buf.indexOf('\\n')) { buf = buf.slice(nl + 1); if (!hs) { hs = true; continue; } out += '{"seq":' + (++seq) + ',"ok":true}\\n'; } if (out) s.write(out); }); }).listen(p);`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A raw MCP stdio client of one spawned command: sends lines, resolves answers by id. */
function client(command, args, env) {
  const proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'], env });
  const waiting = new Map();
  let buf = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const m = JSON.parse(line);
      if (m.id !== undefined && m.method === undefined) {
        const w = waiting.get(m.id);
        waiting.delete(m.id);
        w?.(m);
      }
    }
  });
  const exited = new Promise((r) => proc.on('close', (code, signal) => r({ code, signal })));
  return {
    proc,
    exited,
    request(id, method, params) {
      return new Promise((r) => {
        waiting.set(id, r);
        proc.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      });
    },
    notify(method) {
      proc.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method })}\n`);
    },
  };
}

/** One round: start the target, initialize, warm up, then `calls` timed sequential echo calls. */
async function round(mode, opts, socks, spool) {
  const sock = mode === 'wrap-sink' ? socks.sink : socks.serve;
  const args =
    mode === 'direct'
      ? [EVERYTHING]
      : mode === 'bare'
        ? ['-e', BARE_PROXY, EVERYTHING]
        : [
            ...(opts.profileDir && mode === 'wrap' ? ['--cpu-prof', '--cpu-prof-dir', opts.profileDir] : []),
            BIN,
            'wrap',
            '--subject',
            'bench',
            '--socket',
            sock,
            '--spool-dir',
            spool,
            '--',
            process.execPath,
            EVERYTHING,
          ];
  const c = client(process.execPath, args, cleanEnv());
  await c.request(0, 'initialize', {
    protocolVersion: '2025-06-18',
    capabilities: {},
    clientInfo: { name: 'bench-wrap', version: '1' },
  });
  c.notify('notifications/initialized');
  let id = 1;
  const call = () =>
    c.request(id++, 'tools/call', { name: 'echo', arguments: { message: `call ${id} of the wrap bench` } });
  for (let i = 0; i < opts.warmup; i++) await call();
  const ticks0 = cpuTicks(c.proc.pid);
  const lat = new Float64Array(opts.calls);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < opts.calls; i++) {
    const s = process.hrtime.bigint();
    const r = await call();
    lat[i] = Number(process.hrtime.bigint() - s) / 1e6;
    if (!r.result) throw new Error(`${mode}: echo failed: ${JSON.stringify(r)}`);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const ticks = cpuTicks(c.proc.pid) - ticks0;
  c.proc.stdin.end();
  const ex = await c.exited;
  if (ex.code !== 0) throw new Error(`${mode}: exit ${ex.code} ${ex.signal ?? ''}`);
  return { lat: [...lat], ms, cpuMs: (ticks * 1000) / CLK_TCK };
}

async function startServe(work, url) {
  const sock = join(work, 's.sock');
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
      join(work, 'serve'),
      '--no-migrate',
      '--log-level',
      'warn',
    ],
    { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'], env: cleanEnv() },
  );
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  for (const t0 = Date.now(); ; await sleep(50)) {
    if (proc.exitCode !== null) throw new Error('serve exited at start');
    if (Date.now() - t0 > 60_000) throw new Error(`serve did not listen on ${sock}`);
    if (
      existsSync(sock) &&
      (await new Promise((r) => {
        const s = connect(sock);
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      }))
    )
      break;
  }
  return {
    sock,
    async stop() {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

const median = (xs) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
const f2 = (x) => x.toFixed(3);

async function main() {
  const v = benchArgs(
    {
      calls: { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '200' },
      out: { type: 'string', default: join(HERE, 'RESULTS.md') },
      keep: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
    },
    USAGE,
  );
  const opts = {
    calls: wholeNumber('calls', v.calls, 1),
    rounds: wholeNumber('rounds', v.rounds, 1),
    warmup: wholeNumber('warmup', v.warmup, 0),
  };
  const work = await mkdtemp(join(tmpdir(), 'ag-bench-wrap-'));
  if (v.profile) opts.profileDir = join(work, 'profiles');
  const load0 = loadavg();
  const pgServer = await startEmbedded(join(work, 'pg'), silentLogger(), { adoptRunning: true });
  const base = { host: pgServer.host, port: pgServer.port, user: pgServer.user, password: pgServer.password };
  const admin = new pg.Client({ ...base, database: 'postgres' });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS bench_wrap');
  await admin.query('CREATE DATABASE bench_wrap');
  await admin.end();
  const db = new pg.Client({ ...base, database: 'bench_wrap' });
  await db.connect();
  await migrate(db, 'up', silentLogger());
  const url = `postgres://${base.user}:${encodeURIComponent(base.password)}@${base.host}:${base.port}/bench_wrap`;
  const serve = await startServe(work, url);
  const sinkSock = join(work, 'sink.sock');
  const sink = spawn(process.execPath, ['-e', ACK_SINK, sinkSock], { stdio: 'inherit' });
  while (!existsSync(sinkSock)) await sleep(20);
  const results = { direct: [], bare: [], 'wrap-sink': [], wrap: [] };
  try {
    for (let r = 0; r < opts.rounds; r++) {
      for (const mode of ['direct', 'bare', 'wrap-sink', 'wrap']) {
        const res = await round(mode, opts, { serve: serve.sock, sink: sinkSock }, join(work, 'spool'));
        results[mode].push(res);
        say(
          `round ${r + 1} ${mode.padEnd(6)} median ${f2(median(res.lat))} ms, ${Math.round((opts.calls * 1000) / res.ms)} calls/s`,
        );
      }
    }
    const expected = opts.rounds * (opts.calls + opts.warmup);
    let stored = 0;
    for (const t0 = Date.now(); Date.now() - t0 < 30_000; await sleep(100)) {
      stored = Number((await db.query('SELECT count(*) AS n FROM audit_log')).rows[0].n);
      if (stored >= expected) break;
    }
    const statuses = (await db.query('SELECT response_status, count(*)::int AS n FROM audit_log GROUP BY 1'))
      .rows;
    const load1 = loadavg();
    const MODES = {
      direct: 'direct (no proxy)',
      bare: 'bare Node pipe proxy (the floor of any proxy process)',
      'wrap-sink': 'wrap, stand-in serve that acks at once',
      wrap: '**wrap, real serve + Postgres**',
    };
    const stat = (mode) => {
      const lat = results[mode].flatMap((x) => x.lat).sort((x, y) => x - y);
      return {
        median: percentile(lat, 50),
        p99: percentile(lat, 99),
        // Per round, the difference from that round's direct median; the median of those.
        addedPerRound: median(results[mode].map((x, i) => median(x.lat) - median(results.direct[i].lat))),
        rate: median(results[mode].map((x) => (opts.calls * 1000) / x.ms)),
        // Per round, the ratio to that round's direct calls/s; the median of those.
        ratioPerRound: median(results[mode].map((x, i) => results.direct[i].ms / x.ms)),
        cpuUs: (median(results[mode].map((x) => x.cpuMs)) * 1000) / opts.calls,
      };
    };
    const st = Object.fromEntries(Object.keys(MODES).map((k) => [k, stat(k)]));
    const m = machine();
    const rowsMd = Object.entries(MODES)
      .map(([k, label]) => {
        const x = st[k];
        const added =
          k === 'direct' ? '' : `+${f2(x.median - st.direct.median)} ms (per round: +${f2(x.addedPerRound)})`;
        const ratio =
          k === 'direct'
            ? ''
            : `${(x.rate / st.direct.rate).toFixed(3)}× (per round: ${x.ratioPerRound.toFixed(3)}×)`;
        return `| ${label} | ${f2(x.median)} ms | ${added} | ${f2(x.p99)} ms | ${Math.round(x.rate)} | ${ratio} | ${x.cpuUs.toFixed(0)} µs |`;
      })
      .join('\n');
    const w = st.wrap;
    const section = `${START}
## wrap: overhead per tools/call (bench/wrap.mjs)

\`npm run bench:wrap\` (also the last step of \`npm run bench\`), ${new Date().toISOString().slice(0, 16)}Z.
A raw stdio client makes ${opts.calls} sequential \`tools/call\` of \`echo\` on
@modelcontextprotocol/server-everything per round (after ${opts.warmup} warm-up calls); ${opts.rounds} rounds, each
running every variant in turn, so all see the same machine load. Postgres is an embedded one in a temp dir.
Machine: ${m.model}, ${m.nproc} cores, shared with other work; load average
${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after.

| variant | median latency per call | added over direct | p99 | calls/s (median of rounds) | vs direct | CPU per call of the process the client talks to |
|---|---|---|---|---|---|---|
${rowsMd}

Targets: added median latency ≤ 1 ms — **${w.median - st.direct.median <= 1 ? 'met' : 'not met'}** (+${f2(w.median - st.direct.median)} ms);
calls/s ≥ 0.9× direct — **${w.rate / st.direct.rate >= 0.9 ? 'met' : 'not met'}** (${(w.rate / st.direct.rate).toFixed(3)}×).
Reading: the tool answers in ${f2(st.direct.median)} ms, so each extra process hop weighs heavily in calls/s.
A proxy that does nothing but pipe already gets ${(st.bare.rate / st.direct.rate).toFixed(2)}× direct here (two more pipe
writes and two more process wake-ups per call); wrap gets ${(w.rate / st.bare.rate).toFixed(2)}× the bare proxy's calls/s and adds
${f2(w.median - st.bare.median)} ms to its median, for reading both directions, correlating and sending the entry
(${(w.cpuUs - st.bare.cpuUs).toFixed(0)} µs more CPU per call than the bare proxy). A slower tool, or an idle machine, moves the
ratio toward 1; the added latency stays the same.
Entries stored: ${stored} of ${expected} wrapped calls (${statuses.map((s) => `${s.response_status} ${s.n}`).join(', ')}).
${END}
`;
    say('');
    say(section);
    let text = existsSync(v.out) ? readFileSync(v.out, 'utf8') : '';
    const a = text.indexOf(START);
    const b = text.indexOf(END);
    if (a >= 0 && b > a) text = text.slice(0, a) + section.trimEnd() + text.slice(b + END.length);
    else text = `${text.trimEnd()}\n\n${section}`;
    await writeFile(v.out, text.endsWith('\n') ? text : `${text}\n`);
    say(`wrote the wrap section of ${v.out}`);
    if (opts.profileDir) {
      for (const f of readdirSync(opts.profileDir)) {
        const p = summarizeProfile(join(opts.profileDir, f), 20, REPO);
        say(`\nwrap under --cpu-prof (${f}): ${p.busyMs.toFixed(0)} ms busy\n${profileTable(p)}`);
      }
    }
    if (stored !== expected) throw new Error(`stored ${stored} entries, expected ${expected}`);
  } finally {
    await serve.stop();
    sink.kill();
    await db.end();
    await pgServer.stop();
    if (!v.keep) await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/wrap.mjs: ${err.message}`);
  process.exit(1);
});
