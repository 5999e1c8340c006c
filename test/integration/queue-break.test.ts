/**
 * Write-path faults found by review (IngestQueue + Spool + the real BatchWriter on a test database
 * of the shared server; the Postgres faults are injected in the sink or by a TCP proxy in front of
 * the shared server, which is never stopped). Each test states what CONTRACT.md §4 asks for:
 * "acked ... once fsynced into the spool", "once Postgres answers, loads the spool", "No entry is
 * lost".
 *
 * 1. Spool.append ignores the byte count of `writeSync`: a short write (disk full: ENOSPC after a
 *    partial write; or RLIMIT_FSIZE) leaves a torn record that is acked as durable. At load it is
 *    skipped as a "torn tail" or makes the rest of the segment unreadable, and `totalBytes` stays
 *    above 0 for ever, so the recovery loop never leaves spool mode and pings Postgres in a tight
 *    loop.
 * 2. A segment file without the AGSPOOL1 header (0 bytes: a crash between `openSync('wx')` and the
 *    magic write in `startSegment`, or ENOSPC on that write) makes every `load` throw, so the spool
 *    is never loaded and spool mode never ends: every later entry is acked from the spool and never
 *    reaches Postgres.
 * 3. A frozen Postgres (connections that stay open but never answer) is never treated as down: the
 *    write in flight has no timeout, nothing is spooled or acked, and the clients stay blocked.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPool } from '../../src/db/connect.js';
import { BatchWriter, type WriteEntry } from '../../src/db/writer.js';
import { type BatchSink, IngestQueue, type ItemOwner } from '../../src/ingest/queue.js';
import { Spool } from '../../src/ingest/spool.js';
import { silentLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';
import { startPgProxy } from '../helpers/ownPostgres.js';

/** Makes the next `writeSync` whose buffer is at least `minBytes` long write only half of it. */
const fsHook = vi.hoisted(() => ({ shortNext: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const writeSync = ((fd: number, buf: Buffer, ...rest: unknown[]) => {
    if (fsHook.shortNext > 0 && Buffer.isBuffer(buf) && buf.length >= fsHook.shortNext) {
      fsHook.shortNext = 0;
      // What write(2) does on a disk that fills up mid-write: part of the buffer, no error.
      return fs.writeSync(fd, buf.subarray(0, Math.floor(buf.length / 2)));
    }
    return (fs.writeSync as (...a: unknown[]) => number)(fd, buf, ...rest);
  }) as typeof fs.writeSync;
  return { ...fs, default: { ...fs, writeSync }, writeSync };
});

let t: TestDatabase;
const log = silentLogger();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function entry(n: number): WriteEntry {
  const line = JSON.stringify({
    request_id: `e7700000-0000-4000-8000-${n.toString().padStart(12, '0')}`,
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada.example',
    tool_name: 'sql.query',
    response_status: 'ok',
    latency_ms: n,
  });
  return writeEntryOf(line, `test ${n}`);
}

function push(queue: IngestQueue, owner: ItemOwner, from: number, to: number): void {
  for (let n = from; n <= to; n++) {
    const e = entry(n);
    queue.push({ kind: 'entry', entry: e, bytes: e.copy.length + e.raw.length, owner, seq: n });
  }
}

async function storedAmong(from: number, to: number): Promise<Set<number>> {
  const r = await t.query<{ n: number }>(
    'SELECT latency_ms::int AS n FROM audit_log WHERE latency_ms BETWEEN $1 AND $2',
    [from, to],
  );
  return new Set(r.rows.map((x) => x.n));
}

async function until(pred: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await sleep(50);
  }
  return pred();
}

beforeAll(async () => {
  t = await createTestDatabase('qbreak');
});
afterAll(async () => {
  await t?.drop();
});

describe('queue-break: the spool', () => {
  it('a short write to the spool (disk full) is never acked as durable: every acked entry is stored once Postgres is back, and spool mode ends', async () => {
    const spool = await Spool.open(
      { dir: await mkdtemp(join(tmpdir(), 'ag-qbreak-')), maxBytes: 1 << 30 },
      log,
    );
    const writer = new BatchWriter(t.pool, log);
    let down = true;
    let pings = 0;
    const sink: BatchSink = {
      write: async (entries, rejects, order) => {
        if (down) throw Object.assign(new Error('terminating connection'), { code: '57P01' });
        return writer.write(entries, rejects, order);
      },
      ping: async () => {
        pings++;
        if (down) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
        await writer.ping();
      },
    };
    const queue = new IngestQueue(
      sink,
      {
        batchSize: 100,
        flushMs: 10,
        maxQueue: 1e6,
        maxQueueBytes: 1 << 30,
        retryBaseMs: 20,
        retryMaxMs: 100,
      },
      log,
      spool,
    );
    const acked: number[] = [];
    const owner: ItemOwner = { settled: (seq, r) => r.ok && acked.push(seq) };
    try {
      push(queue, owner, 1, 300);
      await queue.drain(); // three records spooled and acked
      fsHook.shortNext = 1000; // the next record is written half
      push(queue, owner, 301, 400);
      await queue.drain();
      push(queue, owner, 401, 600); // more records after it, in the same segment
      await queue.drain();
      down = false;
      const left = await until(() => !queue.spooling && spool.bytes === 0, 10_000);
      const stored = await storedAmong(1, 600);
      const lost = acked.filter((n) => !stored.has(n));
      const p0 = pings;
      await sleep(500);
      const pingsPerHalfSecond = pings - p0;
      // Each acked entry must be in Postgres (it was acked as fsynced into the spool).
      expect({ lost: lost.length, first: lost.slice(0, 3) }).toEqual({ lost: 0, first: [] });
      expect(left).toBe(true);
      expect(pingsPerHalfSecond).toBeLessThan(50);
    } finally {
      fsHook.shortNext = 0;
      queue.close();
    }
  });

  it('a segment file without its header (a crash right after creating it) does not keep the queue in spool mode for ever', async () => {
    await t.query(
      'SET session_replication_role = replica; TRUNCATE audit_log; RESET session_replication_role',
    ); // the append-only trigger is off for this reset only
    const dir = await mkdtemp(join(tmpdir(), 'ag-qbreak-'));
    await writeFile(join(dir, 'spool-0000000000000001.seg'), ''); // openSync('wx') done, magic not yet written
    const spool = await Spool.open({ dir, maxBytes: 1 << 30 }, log);
    const queue = new IngestQueue(
      new BatchWriter(t.pool, log),
      {
        batchSize: 100,
        flushMs: 10,
        maxQueue: 1e6,
        maxQueueBytes: 1 << 30,
        retryBaseMs: 20,
        retryMaxMs: 100,
      },
      log,
      spool,
    );
    const acked: number[] = [];
    const owner: ItemOwner = { settled: (seq, r) => r.ok && acked.push(seq) };
    try {
      await queue.resumeSpool();
      push(queue, owner, 1001, 2000);
      await queue.drain();
      expect(acked.length).toBe(1000);
      // Postgres answers all along: the entries must reach it.
      const stored = await until(async () => (await storedAmong(1001, 2000)).size === 1000, 10_000);
      expect({ stored, spooling: queue.spooling }).toEqual({ stored: true, spooling: false });
    } finally {
      queue.close();
    }
  });
});

describe('queue-break: a frozen Postgres', () => {
  it('connections that never answer count as Postgres down: new entries are spooled and acked within 30 s', async () => {
    await t.query(
      'SET session_replication_role = replica; TRUNCATE audit_log; RESET session_replication_role',
    ); // the append-only trigger is off for this reset only
    const proxy = await startPgProxy(Number(new URL(t.url).port || 5432));
    const u = new URL(t.url);
    u.hostname = '127.0.0.1';
    u.port = String(proxy.port);
    const pool = createPool(
      {
        config: { connectionString: u.toString() },
        where: u.toString(),
        embedded: false,
        close: async () => {},
      },
      log,
      4,
    );
    const spool = await Spool.open(
      { dir: await mkdtemp(join(tmpdir(), 'ag-qbreak-')), maxBytes: 1 << 30 },
      log,
    );
    const queue = new IngestQueue(
      new BatchWriter(pool, log),
      {
        batchSize: 100,
        flushMs: 10,
        maxQueue: 1e6,
        maxQueueBytes: 1 << 30,
        retryBaseMs: 20,
        retryMaxMs: 500,
      },
      log,
      spool,
    );
    const acked: number[] = [];
    const owner: ItemOwner = { settled: (seq, r) => r.ok && acked.push(seq) };
    try {
      push(queue, owner, 3001, 3500);
      await queue.drain();
      proxy.freeze();
      push(queue, owner, 3501, 4000);
      const spooled = await until(() => acked.length === 1000, 30_000);
      expect({ acked: acked.length, spooling: queue.spooling }).toEqual({ acked: 1000, spooling: true });
      expect(spooled).toBe(true);
    } finally {
      queue.close();
      await proxy.close();
      await Promise.race([pool.end(), sleep(500)]);
    }
  }, 60_000);
});
