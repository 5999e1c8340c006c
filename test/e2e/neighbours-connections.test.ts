/**
 * CONTRACT.md §4 "Neighbours", connections (issue 10): at most --max-connections clients, the next
 * one closed at once, logged and counted; out of file descriptors is logged, never silent; bytes
 * that do not yet form a line count against --max-queue-bytes, and past it the connections holding
 * the most unfinished bytes are paused first, so that clients sending whole lines are still served.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { freeTcpPort, metric } from '../helpers/ownPostgres.js';
import {
  cleanupServes,
  entryLine,
  REPO,
  rid,
  rssBytes,
  type ServeProcess,
  send,
  sleep,
  startServe,
  waitFor,
} from '../helpers/serve.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('nbconn');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

/** Opens a connection and resolves once connected; `closed` resolves when the daemon closes it. */
async function openConn(path: string): Promise<{ sock: Socket; closed: Promise<void> }> {
  const sock = connect(path);
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  await new Promise<void>((r, reject) => {
    sock.once('connect', () => r());
    sock.once('error', reject);
  });
  return { sock, closed };
}

function refusedLogs(s: ServeProcess): number {
  return s.logs().filter((l) => l.msg === 'refused a connection: --max-connections clients are connected')
    .length;
}

describe('--max-connections', () => {
  it('the connection past the limit is closed at once, logged and counted; the others are served', async () => {
    const mport = await freeTcpPort();
    const s = await startServe({
      databaseUrl: t.url,
      args: ['--max-connections', '5', '--metrics-listen', `127.0.0.1:${mport}`],
    });
    const held = await Promise.all(Array.from({ length: 5 }, () => openConn(s.socket)));
    await waitFor(async () => (await metric(mport, 'audit_gateway_connections')) === 5, '5 connections');
    const extra = await Promise.all(Array.from({ length: 3 }, () => openConn(s.socket)));
    // closed by the daemon without a byte sent or a timeout passing on our side
    await Promise.all(extra.map((c) => c.closed));
    await waitFor(() => refusedLogs(s) === 3, 'three refusal log lines');
    expect(await metric(mport, 'audit_gateway_connections_refused_total')).toBe(3);
    // the held connections still work
    held[0]!.sock.end(`${entryLine(rid('d1000000', 1))}\n`);
    await held[0]!.closed;
    const { acks } = await send(s.socket, `${entryLine(rid('d1000000', 2))}\n`, { ack: true });
    expect(acks).toEqual([{ seq: 1, ok: true }]);
    for (const c of held) c.sock.destroy();
    expect(await s.stop()).toBe(0);
  });

  it('with a file limit below --max-connections: a warning at start, and every connection past it is refused and logged (none reset silently)', async () => {
    const s = await startServe({
      databaseUrl: t.url,
      wrap: ['prlimit', '--nofile=160:160', '--'],
    });
    const warn = s.logs().find((l) => String(l.msg).startsWith('the open file limit'));
    expect(warn).toMatchObject({ max_connections: 1024, open_file_limit: 160, using: 96 });
    const conns = await Promise.all(Array.from({ length: 130 }, () => openConn(s.socket)));
    await waitFor(() => refusedLogs(s) === 34, '34 refusals logged', 15_000);
    const { acks } = await send(s.socket, `${entryLine(rid('d1000001', 1))}\n`, { ack: true }).catch(() => ({
      acks: [],
    }));
    expect(acks).toEqual([]); // still full: refused, not accepted
    for (const c of conns) c.sock.destroy();
    await waitFor(
      async () =>
        (
          await send(s.socket, `${entryLine(rid('d1000001', 2))}\n`, { ack: true }).catch(() => ({
            acks: [],
          }))
        ).acks.length === 1,
      'a connection to be served again',
    );
    expect(s.logs().some((l) => l.msg?.startsWith('cannot accept'))).toBe(false);
    expect(await s.stop()).toBe(0);
  });
});

describe('unfinished lines count against --max-queue-bytes', () => {
  it('100 connections each holding ~1 MiB without a newline: memory stays bounded and a client sending whole lines is served', async () => {
    const mport = await freeTcpPort();
    const s = await startServe({
      databaseUrl: t.url,
      args: ['--metrics-listen', `127.0.0.1:${mport}`, '--max-line-bytes', String(2 * 1024 * 1024)],
    });
    await send(s.socket, `${entryLine(rid('d2000000', 0))}\n`, { ack: true }); // warm up
    const before = (await rssBytes(s.pid))!;
    const MiB = Buffer.alloc(1024 * 1024, 0x78); // "xxxx…" and never a newline
    const holders = await Promise.all(Array.from({ length: 100 }, () => openConn(s.socket)));
    for (const h of holders) h.sock.write(MiB);
    // Wait until the daemon stopped taking more: the unfinished bytes stay put for a while.
    let last = -1;
    await waitFor(
      async () => {
        const now = await metric(mport, 'audit_gateway_unfinished_line_bytes');
        const still = now === last;
        last = now;
        return still && now > 0;
      },
      'the unfinished bytes to settle',
      30_000,
      500,
    );
    const unfinished = await metric(mport, 'audit_gateway_unfinished_line_bytes');
    const rss = (await rssBytes(s.pid))!;
    console.log(
      `[neighbours] 100 x 1 MiB unfinished: held ${(unfinished / 1048576).toFixed(1)} MiB, RSS ${(before / 1048576).toFixed(0)} -> ${(rss / 1048576).toFixed(0)} MiB`,
    );
    // The budget is 8 MiB; each connection may read one more chunk (<= 64 KiB) before it is paused.
    expect(unfinished).toBeLessThanOrEqual(8 * 1048576 + 100 * 65536 + 100 * 400);
    expect(rss - before).toBeLessThan(60 * 1048576);
    // A client sending whole lines is still served.
    const lines = Array.from({ length: 200 }, (_, i) => entryLine(rid('d2000001', i)));
    const { acks } = await send(s.socket, `${lines.join('\n')}\n`, { ack: true, timeoutMs: 30_000 });
    expect(acks.filter((a) => a.ok)).toHaveLength(200);
    for (const h of holders) h.sock.destroy();
    // Each paused holder sees its client leave once it is let through again (its 1 MiB line is then
    // complete at end of stream, and rejected): one at a time until half the budget is free.
    await waitFor(
      async () => (await metric(mport, 'audit_gateway_unfinished_line_bytes')) === 0,
      'no held bytes',
      60_000,
    );
    expect(await s.stop()).toBe(0);
  }, 120_000);

  it('4 connections sending one byte per write: the daemon keeps no Buffer per byte (before: 400 KB sent held 160 MB)', async () => {
    const mport = await freeTcpPort();
    const s = await startServe({ databaseUrl: t.url, args: ['--metrics-listen', `127.0.0.1:${mport}`] });
    await send(s.socket, `${entryLine(rid('d5000000', 0))}\n`, { ack: true }); // warm up
    const before = (await rssBytes(s.pid))!;
    const drip = spawn(
      'python3',
      [join(REPO, 'test/fixtures/scripts/drip.py'), s.socket, '4', '50000', '30'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        drip.stdout!.on('data', (d: Buffer) => {
          if (d.toString().includes('sent')) resolve();
        });
        drip.once('exit', (code) => reject(new Error(`drip.py exited ${code}`)));
      });
      await waitFor(
        async () => (await metric(mport, 'audit_gateway_unfinished_line_bytes')) >= 4 * 50_000,
        'the daemon to hold every byte',
      );
      const grown = (await rssBytes(s.pid))! - before;
      console.log(`[neighbours] 4 x 50 KB one byte per write: RSS +${(grown / 1048576).toFixed(1)} MiB`);
      expect(grown).toBeLessThan(30 * 1048576);
      expect(await metric(mport, 'audit_gateway_unfinished_line_bytes')).toBeLessThanOrEqual(
        4 * (50_000 + 16 * 1024),
      );
    } finally {
      drip.kill();
    }
    expect(await s.stop()).toBe(0);
  }, 120_000);

  it('lines larger than the whole budget, sent slowly on several connections at once, are all stored (no deadlock)', async () => {
    const s = await startServe({ databaseUrl: t.url, args: ['--max-queue-bytes', String(256 * 1024)] });
    const big = (i: number) =>
      entryLine(rid('d3000000', i), { request_args: { blob: 'y'.repeat(200 * 1024) } });
    const clients = await Promise.all(Array.from({ length: 6 }, () => openConn(s.socket)));
    const acked = clients.map((c) => {
      let text = '';
      c.sock.on('data', (d: Buffer) => {
        text += d.toString();
      });
      return c.closed.then(() => text);
    });
    // handshake, then each line in 16 KiB pieces, interleaved across the connections
    const payloads = clients.map((_, i) => Buffer.from(`{"ack":true}\n${big(i)}\n`));
    for (let off = 0; off < payloads[0]!.length; off += 16 * 1024) {
      for (const [i, c] of clients.entries()) c.sock.write(payloads[i]!.subarray(off, off + 16 * 1024));
      await sleep(5);
    }
    for (const c of clients) c.sock.end();
    const texts = await Promise.race([
      Promise.all(acked),
      sleep(60_000).then(() => {
        throw new Error('deadlock: not every big line was acked within 60 s');
      }),
    ]);
    for (const text of texts) expect(text).toBe('{"seq":1,"ok":true}\n');
    const r = await t.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM audit_log WHERE request_id::text LIKE 'd3000000%'",
    );
    expect(Number(r.rows[0]!.n)).toBe(6);
    expect(await s.stop()).toBe(0);
  }, 90_000);
});
