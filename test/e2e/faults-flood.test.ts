/**
 * Issue 4: a flood while Postgres is down (CONTRACT.md §4 "Backpressure", "Postgres down or
 * failing"; known-traps C18). 200k acked entries go to a `serve` whose Postgres (this file's own) is
 * stopped: everything is spooled and acked, memory stays bounded, and once Postgres is back every
 * entry is stored exactly once. The 1M variant is `node bench/flood.mjs` (not run by the tests).
 * And a full spool: the client is held back by backpressure, never acked past what the spool took.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { readSegment } from '../../src/ingest/spool.js';
import {
  counts,
  faultLine,
  freeTcpPort,
  logText,
  metric,
  procMemBytes,
  requestId,
  serveArgs,
  spoolFiles,
  streamLines,
  useOwnPostgres,
  waitStored,
} from '../helpers/ownPostgres.js';
import { sleep, startServe, waitFor } from '../helpers/serve.js';

const own = useOwnPostgres();

const MB = 2 ** 20;

it('200k entries sent while Postgres is down: all acked from the spool, all stored exactly once after it returns, peak RSS bounded', async () => {
  const tag = 'fa040000';
  const N = 200_000;
  const db = await own().createDatabase('flood');
  const s = await startServe({ databaseUrl: db.url, args: ['--log-level', 'info'] });
  const spoolDir = join(s.dataDir, 'spool');
  await own().stop();

  const t0 = Date.now();
  const st = streamLines(s.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 2000 });
  await waitFor(() => st.closed || st.okSeqs.size + st.failed.length === N, 'every ack', 90_000, 100);
  const floodMs = Date.now() - t0;
  const spoolSegments = (await readdir(spoolDir)).filter((f) => f.endsWith('.seg')).length;
  const hwmDown = (await procMemBytes(s.pid, 'VmHWM')) ?? 0;

  await own().start();
  const up = Date.now();
  let rows = 0;
  await waitFor(
    async () => {
      const r = await db.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log');
      rows = Number(r.rows[0]!.n);
      const left = (await readdir(spoolDir)).filter((f) => f.startsWith('spool-'));
      return rows >= N && left.length === 0;
    },
    `${N} rows stored and the spool empty`,
    90_000,
    200,
  );
  const recoveryMs = Date.now() - up;
  await st.done;
  const hwm = (await procMemBytes(s.pid, 'VmHWM')) ?? 0;
  const r = await db.query<{ n: string; d: string; lo: string; hi: string }>(
    `SELECT count(*)::text AS n, count(DISTINCT request_id)::text AS d,
            min(request_id::text) AS lo, max(request_id::text) AS hi FROM audit_log`,
  );
  const c = r.rows[0]!;
  console.log(
    `[faults] flood ${N} while Postgres down: spooled and acked in ${floodMs} ms (${spoolSegments} segment files, peak RSS then ${(hwmDown / MB).toFixed(1)} MB); recovery ${recoveryMs} ms after Postgres returned; daemon peak RSS (VmHWM) ${(hwm / MB).toFixed(1)} MB; rows ${c.n}, distinct ${c.d}`,
  );
  expect(st.error).toBeNull();
  expect(st.failed).toEqual([]);
  expect(st.inOrder).toBe(true);
  expect(st.okSeqs.size).toBe(N);
  expect(spoolSegments).toBeGreaterThan(0);
  expect({ rows: Number(c.n), distinct: Number(c.d) }).toEqual({ rows: N, distinct: N });
  expect([c.lo, c.hi]).toEqual([requestId(tag, 1), requestId(tag, N)]);
  expect(hwm).toBeGreaterThan(0);
  expect(hwm).toBeLessThan(300 * MB);
  expect(s.alive).toBe(true);
  expect(await s.stop()).toBe(0);
}, 180_000);

it('full spool (--max-spool-bytes 200 KB) with Postgres down: the client is blocked, no ack past the spool, all stored once later', async () => {
  const tag = 'fa060000';
  const N = 10_000;
  const maxSpool = 200 * 1024;
  const db = await own().createDatabase('fullspool');
  const mport = await freeTcpPort();
  const s = await startServe({
    databaseUrl: db.url,
    args: serveArgs([
      '--batch-size',
      '100',
      '--max-queue',
      '2000',
      '--max-spool-bytes',
      String(maxSpool),
      '--metrics-listen',
      `127.0.0.1:${mport}`,
    ]),
  });
  const spoolDir = join(s.dataDir, 'spool');
  await own().stop();
  const st = streamLines(s.socket, N, (i) => faultLine(tag, i), { ack: true, chunk: 200 });
  // Wait until nothing moves any more: acks and the client's progress stall.
  let last = '';
  await waitFor(
    async () => {
      const now = `${st.okSeqs.size}/${st.flushed}`;
      const still = now === last && st.okSeqs.size > 0;
      last = now;
      return still;
    },
    'the stream to stall',
    30_000,
    1500,
  );
  let spoolBytes = 0;
  let spoolEntries = 0;
  for (const f of await spoolFiles(spoolDir)) {
    const buf = await readFile(join(spoolDir, f));
    spoolBytes += (await stat(join(spoolDir, f))).size;
    for (const b of readSegment(buf, f).batches) spoolEntries += b.entries.length;
  }
  const okWhileDown = st.okSeqs.size;
  const flushedWhileDown = st.flushed;
  const received = await metric(mport, 'audit_gateway_entries_received_total');
  const spooled = await metric(mport, 'audit_gateway_entries_spooled_total');
  const full = logText(s).includes('spool full');
  console.log(
    `[faults] full spool: acked ${okWhileDown}, in spool ${spoolEntries} entries / ${spoolBytes} bytes, received ${received}, client flushed ${flushedWhileDown} of ${N}`,
  );
  expect(full).toBe(true);
  expect(spoolBytes).toBeLessThanOrEqual(maxSpool);
  expect(okWhileDown).toBeLessThanOrEqual(spoolEntries);
  expect(spooled).toBe(spoolEntries);
  expect(received).toBeLessThan(N);
  expect(flushedWhileDown).toBeLessThan(N);
  expect(st.closed).toBe(false);

  await own().start();
  await Promise.race([st.done, sleep(60_000)]);
  await waitStored(db, N, spoolDir);
  const c = await counts(db);
  expect(st.failed).toEqual([]);
  expect(st.okSeqs.size).toBe(N);
  expect(c).toEqual({ rows: N, distinct: N });
  expect(s.alive).toBe(true);
  expect(await s.stop()).toBe(0);
});
