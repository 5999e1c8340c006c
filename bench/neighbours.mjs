#!/usr/bin/env node
/**
 * Issue 10 figures, on the built dist/ (run `npm run build` first):
 *  1. RSS of `serve` while 100 connections each hold ~1 MiB without a newline (default
 *     --max-queue-bytes 8 MiB), against its RSS just before;
 *  2. 4 connections sending one byte per write, 100 KB each: RSS growth;
 *  3. the time from connect() to the daemon's close of the 1025th connection (--max-connections
 *     default 1024), median of 20, beside a connect+close on an accepted connection as reference.
 * Usage: node bench/neighbours.mjs [--database-url URL]   (default: the local Postgres, a fresh db)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { cleanEnv, say } from './lib/common.mjs';

const REPO = resolve(import.meta.dirname, '..');
const admin = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const dbName = `ag_bench_nb_${Date.now().toString(36)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rss = (pid) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const MiB = (b) => (b / 1048576).toFixed(1);

async function withDb(fn) {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${dbName}`);
  await c.end();
  const u = new URL(admin);
  u.pathname = `/${dbName}`;
  try {
    return await fn(u.toString());
  } finally {
    const d = new pg.Client({ connectionString: admin });
    await d.connect();
    await d.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await d.end();
  }
}

async function startServe(url, dir, extra = []) {
  const sock = join(dir, 's.sock');
  const child = spawn(
    process.execPath,
    [
      join(REPO, 'bin/audit-gateway'),
      'serve',
      '--socket',
      sock,
      '--data-dir',
      join(dir, 'data'),
      '--database-url',
      url,
      ...extra,
    ],
    { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  for (let i = 0; i < 400 && !err.includes('serve: listening'); i++) await sleep(50);
  if (!err.includes('serve: listening')) throw new Error(`serve did not start:\n${err}`);
  return { child, sock, stop: () => new Promise((r) => child.once('exit', r) && child.kill('SIGTERM')) };
}

function open(path) {
  return new Promise((res, rej) => {
    const s = connect(path);
    s.on('error', () => {});
    s.once('connect', () => res(s));
    s.once('error', rej);
  });
}

async function settle(pid) {
  let last = 0;
  for (let i = 0; i < 60; i++) {
    await sleep(500);
    const now = rss(pid);
    if (Math.abs(now - last) < 512 * 1024) return now;
    last = now;
  }
  return last;
}

await withDb(async (url) => {
  // migrate once
  const m = spawn(process.execPath, [join(REPO, 'bin/audit-gateway'), 'migrate', '--database-url', url], {
    stdio: 'ignore',
  });
  await new Promise((r) => m.once('exit', r));

  const dir = mkdtempSync(join(tmpdir(), 'ag-bench-nb-'));
  try {
    // 1. 100 x 1 MiB unfinished
    let s = await startServe(url, dir);
    await sleep(500);
    const before = rss(s.child.pid);
    const chunk = Buffer.alloc(1024 * 1024, 0x78);
    const holders = [];
    for (let i = 0; i < 100; i++) {
      const c = await open(s.sock);
      c.write(chunk);
      holders.push(c);
    }
    const after = await settle(s.child.pid);
    say(
      `100 connections x 1 MiB without a newline: RSS ${MiB(before)} -> ${MiB(after)} MiB (+${MiB(after - before)} MiB)`,
    );
    for (const c of holders) c.destroy();
    await s.stop();

    // 2. one byte per write
    rmSync(join(dir, 'data'), { recursive: true, force: true });
    s = await startServe(url, dir);
    await sleep(500);
    const before2 = rss(s.child.pid);
    const drips = await Promise.all(Array.from({ length: 4 }, () => open(s.sock)));
    const byte = Buffer.from('x');
    for (let i = 0; i < 100_000; i++) {
      for (const c of drips) c.write(byte);
      if (i % 2000 === 0) await sleep(1); // let the daemon read: one byte per read
    }
    const after2 = await settle(s.child.pid);
    say(
      `4 connections x 100 KB, one byte per write: RSS ${MiB(before2)} -> ${MiB(after2)} MiB (+${MiB(after2 - before2)} MiB)`,
    );
    for (const c of drips) c.destroy();
    await s.stop();

    // 3. the 1025th connection
    rmSync(join(dir, 'data'), { recursive: true, force: true });
    s = await startServe(url, dir);
    const ref = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const c = await open(s.sock);
      await new Promise((r) => {
        c.once('close', r);
        c.end();
      });
      ref.push(performance.now() - t0);
    }
    const held = [];
    for (let i = 0; i < 1024; i++) held.push(await open(s.sock));
    await sleep(500);
    const times = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const c = connect(s.sock);
      c.on('error', () => {});
      const closedAt = await Promise.race([
        new Promise((r) => c.once('close', () => r(performance.now()))),
        sleep(10_000).then(() => null),
      ]);
      times.push(closedAt === null ? Number.POSITIVE_INFINITY : closedAt - t0);
      c.destroy();
    }
    const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    say(
      `1025th connection: closed by the daemon after ${med(times).toFixed(2)} ms (median of 20; max ${Math.max(...times).toFixed(2)} ms); an accepted connect+end+close: ${med(ref).toFixed(2)} ms`,
    );
    for (const c of held) c.destroy();
    await s.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
