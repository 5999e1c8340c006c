/**
 * Issue 4, "Nothing lost, nothing doubled": `serve` (the built binary) against a Postgres of this
 * file's own that the tests stop, kill, cut and lock (CONTRACT.md §4 "Acks", "Backpressure",
 * "Postgres down or failing"; known-traps C15, C17, C18). The flood and the full spool are in
 * faults-flood.test.ts, shutdown in faults-shutdown.test.ts.
 *
 * Every test counts exactly: stored rows = distinct request_ids = entries acked ok (or sent), so a
 * lost entry and a doubled one both fail it.
 */
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  counts,
  faultLine,
  freeTcpPort,
  logText,
  metric,
  procMemBytes,
  readyz,
  requestId,
  serveArgs,
  spoolFiles,
  startPgProxy,
  storedAmong,
  streamLines,
  useOwnPostgres,
  waitStored,
  withPort,
} from '../helpers/ownPostgres.js';
import { runCli, send, sleep, startServe, tempDir, waitFor } from '../helpers/serve.js';

/** `verify` on the database (CONTRACT.md §9): every row is in its batch and the chains hold. */
async function expectVerified(url: string): Promise<void> {
  const v = await runCli(['verify', '--database-url', url, '--output', 'json']);
  expect(v.code, `${v.stdout}${v.stderr}`).toBe(0);
}

const own = useOwnPostgres();

describe('faults: Postgres goes away under an acked stream', () => {
  it('Postgres stopped ~5 s in the middle of a 20k acked stream: every ok stored once, spool emptied, metrics and /readyz', async () => {
    const tag = 'fa010000';
    const N = 20_000;
    const db = await own().createDatabase('stop5');
    const mport = await freeTcpPort();
    const s = await startServe({
      databaseUrl: db.url,
      args: serveArgs(['--batch-size', '200', '--metrics-listen', `127.0.0.1:${mport}`]),
    });
    const spoolDir = join(s.dataDir, 'spool');
    // ~2000 lines/s: the stream lasts ~10 s, the outage ~5 s of it.
    const st = streamLines(s.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 100, paceMs: 50 });
    await waitFor(() => st.okSeqs.size >= 3000, '3000 acks before the outage', 30_000);
    const okBefore = st.okSeqs.size;
    const down = Date.now();
    await own().stop();
    // While down: acks keep coming (from the spool), /readyz says 200, the spool counter grows.
    await waitFor(() => st.okSeqs.size >= okBefore + 1000, 'acks while Postgres is down', 30_000);
    const spooledWhileDown = await waitFor(
      async () => {
        const v = await metric(mport, 'audit_gateway_entries_spooled_total');
        return v > 0 ? v : false;
      },
      'audit_gateway_entries_spooled_total > 0',
      10_000,
      100,
    );
    const readyWhileDown = await readyz(mport);
    const filesWhileDown = await spoolFiles(spoolDir);
    await sleep(Math.max(0, 5000 - (Date.now() - down)));
    const okWhileDown = st.okSeqs.size - okBefore;
    await own().start();
    const up = Date.now();
    await Promise.race([st.done, sleep(60_000)]);
    await waitStored(db, N, spoolDir);
    const recoveryMs = Date.now() - up;

    const c = await counts(db);
    const okIds = [...st.okSeqs].map((seq) => requestId(tag, seq));
    console.log(
      `[faults] stop-5s: acked while down ${okWhileDown}, spooled_total ${spooledWhileDown}, recovery ${recoveryMs} ms, rows ${c.rows}, distinct ${c.distinct}`,
    );
    expect(st.error).toBeNull();
    expect(st.closed).toBe(true);
    expect(st.failed).toEqual([]);
    expect(st.inOrder).toBe(true);
    expect(st.okSeqs.size).toBe(N);
    expect(c).toEqual({ rows: N, distinct: N });
    expect(await storedAmong(db, okIds)).toBe(okIds.length);
    expect(filesWhileDown.length).toBeGreaterThan(0);
    expect(await spoolFiles(spoolDir)).toEqual([]);
    expect(spooledWhileDown).toBeGreaterThan(0);
    expect(readyWhileDown).toBe(200);
    expect(await metric(mport, 'audit_gateway_entries_spooled_total')).toBeGreaterThan(0);
    expect(s.alive).toBe(true);
    expect(await s.stop()).toBe(0);
    await expectVerified(db.url); // the spool's batches are bound into the chain like any other
  });

  it('kill -9 of the daemon while Postgres is down: the leftover spool is loaded at restart, every ok stored once', async () => {
    const tag = 'fa020000';
    const N = 20_000;
    const db = await own().createDatabase('kill9');
    const dir = await tempDir();
    const socket = join(dir, 's.sock');
    const spoolDir = join(dir, 'spool');
    const args = serveArgs(['--batch-size', '200', '--spool-dir', spoolDir]);
    const s1 = await startServe({ databaseUrl: db.url, dataDir: dir, socket, args });
    const st = streamLines(s1.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 100, paceMs: 20 });
    await waitFor(() => st.okSeqs.size >= 2000, '2000 acks', 30_000);
    await own().stop();
    const okAtStop = st.okSeqs.size;
    await waitFor(() => st.okSeqs.size >= okAtStop + 2000, '2000 acks from the spool', 30_000);
    s1.proc.kill('SIGKILL');
    await s1.exited;
    await st.done;
    const acked = [...st.okSeqs];
    const left = await spoolFiles(spoolDir);
    expect(st.failed).toEqual([]);
    expect(left.length).toBeGreaterThan(0);

    await own().start();
    const s2 = await startServe({ databaseUrl: db.url, dataDir: dir, socket, args });
    await waitStored(db, acked.length, spoolDir);
    const c = await counts(db);
    console.log(
      `[faults] kill-9: acked ${acked.length} (${acked.length - okAtStop} while Postgres was down), spool files ${left.length}, rows ${c.rows}, distinct ${c.distinct}`,
    );
    expect(c.rows).toBe(c.distinct);
    expect(
      await storedAmong(
        db,
        acked.map((seq) => requestId(tag, seq)),
      ),
    ).toBe(acked.length);
    expect(c.rows).toBeGreaterThanOrEqual(acked.length);
    expect(c.rows).toBeLessThanOrEqual(N);
    expect(s2.logs().some((l) => l.msg === 'spool: loading leftover files')).toBe(true);
    // The restarted daemon takes new entries as usual.
    const r = await send(s2.socket, faultLine(tag, N + 1), { ack: true });
    expect(r.acks).toEqual([{ seq: 1, ok: true }]);
    expect(await storedAmong(db, [requestId(tag, N + 1)])).toBe(1);
    expect(await s2.stop()).toBe(0);
    await expectVerified(db.url);
  });

  it('a connection cut right after COMMIT reached the server (reply lost): the batch is retried, not doubled (C15)', async () => {
    const tag = 'fa030000';
    const N = 5000;
    const db = await own().createDatabase('commitcut');
    const proxy = await startPgProxy(own().port);
    try {
      const mport = await freeTcpPort();
      const s = await startServe({
        databaseUrl: withPort(db.url, proxy.port),
        args: serveArgs(['--batch-size', '500', '--metrics-listen', `127.0.0.1:${mport}`]),
      });
      const cut = proxy.cutAfterNextCommit();
      const st = streamLines(s.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 250, paceMs: 10 });
      const cutSeen = await Promise.race([cut.then(() => true), sleep(30_000).then(() => false)]);
      await Promise.race([st.done, sleep(60_000)]);
      await waitStored(db, N, join(s.dataDir, 'spool'));
      const c = await counts(db);
      const dups = await metric(mport, 'audit_gateway_entries_duplicate_total');
      console.log(
        `[faults] commit-cut: connections cut ${proxy.cuts}, duplicates detected ${dups}, rows ${c.rows}, distinct ${c.distinct}`,
      );
      expect(cutSeen).toBe(true);
      expect(proxy.cuts).toBeGreaterThan(0);
      expect(st.failed).toEqual([]);
      expect(st.okSeqs.size).toBe(N);
      expect(c).toEqual({ rows: N, distinct: N });
      // The committed batch was written again and recognised as already stored.
      expect(dups).toBeGreaterThan(0);
      expect(s.alive).toBe(true);
      expect(await s.stop()).toBe(0);
      await expectVerified(db.url); // the retried batch's duplicates are in no second batch
    } finally {
      await proxy.close();
    }
  });
});

describe('faults: backpressure', () => {
  it('C18: audit_log locked ACCESS EXCLUSIVE ~5 s while 20k entries arrive (--max-queue 2000): bounded RSS, client blocked, exactly 20000', async () => {
    const tag = 'fa180000';
    const N = 20_000;
    const db = await own().createDatabase('c18');
    const mport = await freeTcpPort();
    const s = await startServe({
      databaseUrl: db.url,
      args: serveArgs([
        '--batch-size',
        '500',
        '--max-queue',
        '2000',
        '--metrics-listen',
        `127.0.0.1:${mport}`,
      ]),
    });
    const locker = new pg.Client({ connectionString: db.url });
    locker.on('error', () => {});
    await locker.connect();
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, (await procMemBytes(s.pid, 'VmRSS')) ?? 0);
        await sleep(100);
      }
    })();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE');
      const st = streamLines(s.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 500 });
      await sleep(5000);
      const received = await metric(mport, 'audit_gateway_entries_received_total');
      const depth = await metric(mport, 'audit_gateway_queue_depth');
      const flushed = st.flushed;
      const acked = st.acked;
      await locker.query('COMMIT');
      await Promise.race([st.done, sleep(60_000)]);
      await waitStored(db, N, join(s.dataDir, 'spool'));
      sampling = false;
      await sampler;
      const c = await counts(db);
      console.log(
        `[faults] C18: while locked: received ${received}, queue depth ${depth}, client flushed ${flushed}, acked ${acked}; peak RSS ${(peak / 2 ** 20).toFixed(1)} MB; rows ${c.rows}`,
      );
      expect(acked).toBe(0);
      expect(received).toBeLessThan(N);
      expect(depth).toBeLessThanOrEqual(2000 + 500);
      expect(flushed).toBeLessThan(N);
      expect(peak).toBeLessThan(300 * 2 ** 20);
      expect(st.failed).toEqual([]);
      expect(st.okSeqs.size).toBe(N);
      expect(c).toEqual({ rows: N, distinct: N });
      expect(logText(s)).not.toMatch(/drop/i);
      expect(s.alive).toBe(true);
      expect(await s.stop()).toBe(0);
    } finally {
      sampling = false;
      await sampler;
      await locker.end().catch(() => {});
    }
  });
});

describe('faults: C17, the database drops connections', () => {
  it('backends terminated, then Postgres stopped ~3 s: the daemon keeps its pid, logs a warning, stores 001, 002 and 003', async () => {
    const tag = 'c1700000';
    const db = await own().createDatabase('c17');
    const s = await startServe({ databaseUrl: db.url, args: serveArgs() });
    const pid = s.pid;
    expect((await send(s.socket, faultLine(tag, 1), { ack: true })).acks).toEqual([{ seq: 1, ok: true }]);
    const killed = await db.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'audit-gateway' AND pid <> pg_backend_pid()) t`,
    );
    await sleep(1000);
    expect((await send(s.socket, faultLine(tag, 2), { ack: true })).acks).toEqual([{ seq: 1, ok: true }]);
    // The variant: Postgres down while …003 arrives; it is held (spooled) and stored once it is back.
    await own().stop();
    const third = send(s.socket, faultLine(tag, 3), { ack: true });
    await sleep(3000);
    expect(s.alive).toBe(true);
    await own().start();
    expect((await third).acks).toEqual([{ seq: 1, ok: true }]);
    await waitStored(db, 3, join(s.dataDir, 'spool'));
    console.log(`[faults] C17: backends terminated ${killed.rows[0]!.n}`);
    expect(Number(killed.rows[0]!.n)).toBeGreaterThan(0);
    expect(await counts(db)).toEqual({ rows: 3, distinct: 3 });
    expect(
      await storedAmong(
        db,
        [1, 2, 3].map((i) => requestId(tag, i)),
      ),
    ).toBe(3);
    expect(s.alive).toBe(true);
    expect(s.pid).toBe(pid);
    expect(s.logs().some((l) => (l.level ?? 0) === 40)).toBe(true);
    expect(logText(s)).not.toMatch(/uncaught|unhandled/i);
    expect(await s.stop()).toBe(0);
  });
});
