/**
 * IngestQueue with the real BatchWriter: when batches wait for the writer they are written together
 * (whole batches, at most maxWriteEntries per write), two writes overlap (the next COPY during the
 * previous COMMIT) and still store in arrival order, and every owner hears about each of its items
 * in order, refused ones included.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter, type WriteEntry } from '../../src/db/writer.js';
import { type BatchSink, IngestQueue, type ItemOwner, type ItemResult } from '../../src/ingest/queue.js';
import { Spool } from '../../src/ingest/spool.js';
import { silentLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

let t: TestDatabase;
function entry(n: number, tool = 'sql.query'): WriteEntry {
  const line = JSON.stringify({
    request_id: `a5500000-0000-4000-8000-${n.toString().padStart(12, '0')}`,
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada.example',
    tool_name: tool,
    response_status: 'ok',
    latency_ms: n,
  });
  return writeEntryOf(line, `test ${n}`);
}

/** Queues entries seq 1..count, entry `base + seq` each (tool 'poison' for seq `poisoned`). */
function fill(queue: IngestQueue, count: number, base: number, owner?: ItemOwner, poisoned = -1): void {
  for (let seq = 1; seq <= count; seq++) {
    const e = entry(base + seq, seq === poisoned ? 'poison' : 'sql.query');
    queue.push({ kind: 'entry', entry: e, bytes: e.copy.length + e.raw.length, owner, seq });
  }
}

beforeAll(async () => {
  t = await createTestDatabase('queue');
});
afterAll(async () => {
  await t?.drop();
});

describe('IngestQueue group writes', () => {
  it('writes waiting batches together, whole and in order, and settles every item in order', async () => {
    await t.query(`ALTER TABLE audit_log ADD CONSTRAINT test_poison CHECK (tool_name <> 'poison')`);
    try {
      const writes: number[] = [];
      // The real writer, with the start and end of each write noted.
      const writer = new BatchWriter(t.pool, silentLogger());
      const events: string[] = [];
      let started = 0;
      const sink: BatchSink = {
        write: async (entries, rejects, order) => {
          const k = started++;
          events.push(`start ${k}`);
          try {
            return await writer.write(entries, rejects, order);
          } finally {
            events.push(`end ${k}`);
          }
        },
        ping: () => writer.ping(),
      };
      const queue = new IngestQueue(
        sink,
        { batchSize: 100, flushMs: 50, maxQueue: 1_000_000, maxQueueBytes: 1 << 30, maxWriteEntries: 1000 },
        silentLogger(),
        null,
        { batchWritten: (n) => writes.push(n) },
      );
      const settled: [number, ItemResult][] = [];
      const owner: ItemOwner = { settled: (seq, result) => settled.push([seq, result]) };
      const N = 5000;
      fill(queue, N, 0, owner, 2345);
      await queue.drain();

      // The first batch went alone (the writer was idle); the rest waited and were merged.
      expect(writes[0]).toBe(100);
      expect(Math.max(...writes)).toBe(1000);
      expect(writes.every((n) => n % 100 === 0)).toBe(true); // whole batches
      expect(writes.length).toBeLessThan(10);
      // Pipelined: a write starts before the previous one has ended (committed), never two ahead.
      expect(events.indexOf('start 2')).toBeLessThan(events.indexOf('end 1'));
      for (let k = 2; k < started; k++) {
        expect(events.indexOf(`start ${k}`)).toBeGreaterThan(events.indexOf(`end ${k - 2}`));
      }
      expect(queue.counters.stored).toBe(N - 1);
      // Every item settled once, in order; the refused one says why.
      expect(settled.map(([seq]) => seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      expect(settled.filter(([, r]) => !r.ok)).toEqual([
        [2345, { ok: false, error: expect.stringContaining('test_poison') }],
      ]);
      // Stored in arrival order: ids follow the sequence numbers.
      const order = await t.query<{ latency_ms: string }>('SELECT latency_ms FROM audit_log ORDER BY id');
      const want = Array.from({ length: N }, (_, i) => String(i + 1)).filter((s) => s !== '2345');
      expect(order.rows.map((r) => r.latency_ms)).toEqual(want);
    } finally {
      await t.query('ALTER TABLE audit_log DROP CONSTRAINT test_poison');
    }
  });

  it('a write that fails goes to the spool, the writes behind it follow it there, and all load in order', async () => {
    await t.query(
      'SET session_replication_role = replica; TRUNCATE audit_log; RESET session_replication_role',
    ); // the append-only trigger is off for this reset only
    const spool = await Spool.open(
      { dir: await mkdtemp(join(tmpdir(), 'ag-queue-')), maxBytes: 1 << 30 },
      silentLogger(),
    );
    const writer = new BatchWriter(t.pool, silentLogger());
    let calls = 0;
    let failuresLeft = 2;
    const sink: BatchSink = {
      write: async (entries, rejects, order) => {
        calls++;
        // The write holding entry 150 loses its connection twice before storing anything (SQLSTATE
        // 57P01): its pipelined attempt and its first retry, which sends the queue to spool mode.
        if (failuresLeft > 0 && entries.some((e) => e.copy.includes('000000200150'))) {
          failuresLeft--;
          throw Object.assign(new Error('terminating connection'), { code: '57P01' });
        }
        return writer.write(entries, rejects, order);
      },
      ping: () => writer.ping(),
    };
    const queue = new IngestQueue(
      sink,
      {
        batchSize: 100,
        flushMs: 50,
        maxQueue: 1_000_000,
        maxQueueBytes: 1 << 30,
        maxWriteEntries: 300,
        retryBaseMs: 10,
      },
      silentLogger(),
      spool,
    );
    const settled: number[] = [];
    const owner: ItemOwner = { settled: (seq, r) => r.ok && settled.push(seq) };
    const N = 3000;
    fill(queue, N, 200_000, owner);
    await queue.drain();
    // The failed write sent the queue to spool mode; the recovery loop loads the spool, in order.
    expect(queue.counters.spooled).toBeGreaterThan(0);
    for (let i = 0; i < 200 && (queue.spooling || spool.bytes > 0); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(queue.spooling).toBe(false);
    queue.close();
    expect(calls).toBeGreaterThan(3);
    expect(settled).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    const order = await t.query<{ latency_ms: string }>('SELECT latency_ms FROM audit_log ORDER BY id');
    expect(order.rows.map((r) => Number(r.latency_ms))).toEqual(
      Array.from({ length: N }, (_, i) => 200_001 + i),
    );
  });

  it('a write whose connection dies after its COPY, before COMMIT: the write behind it waits, rolls back and follows it', async () => {
    await t.query(
      'SET session_replication_role = replica; TRUNCATE audit_log; RESET session_replication_role',
    ); // the append-only trigger is off for this reset only
    const pool = new pg.Pool({ connectionString: t.url, max: 4 });
    // The client cut below reports on the pool and on itself (as createPool's handlers do in serve).
    pool.on('error', () => {});
    pool.on('connect', (c) => c.on('error', () => {}));
    // Note which write each pooled client serves (BatchWriter takes its client first thing).
    let currentWrite = -1;
    const clientOf = new Map<number, pg.PoolClient>();
    const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
    (pool as unknown as { connect: () => Promise<pg.PoolClient> }).connect = async () => {
      const k = currentWrite;
      const c = await connect();
      clientOf.set(k, c);
      return c;
    };
    const writer = new BatchWriter(pool, silentLogger());
    let calls = 0;
    let cut = false;
    const sink: BatchSink = {
      write: (entries, rejects, order) => {
        const k = calls++;
        currentWrite = k;
        if (k !== 1 || !order) return writer.write(entries, rejects, order);
        // The second write: once its rows have ids (the next write may start), its connection
        // dies, so its COMMIT never happens while the third write is already under way.
        return writer.write(entries, rejects, {
          beforeCommit: order.beforeCommit,
          ordered: () => {
            order.ordered();
            cut = true;
            (
              clientOf.get(k) as unknown as { connection: { stream: { destroy(): void } } }
            ).connection.stream.destroy();
          },
        });
      },
      ping: () => writer.ping(),
    };
    const queue = new IngestQueue(
      sink,
      {
        batchSize: 100,
        flushMs: 50,
        maxQueue: 1_000_000,
        maxQueueBytes: 1 << 30,
        maxWriteEntries: 300,
        retryBaseMs: 10,
      },
      silentLogger(),
    );
    const settled: number[] = [];
    const owner: ItemOwner = { settled: (seq, r) => r.ok && settled.push(seq) };
    const N = 3000;
    fill(queue, N, 300_000, owner);
    await queue.drain();
    await pool.end();
    expect(cut).toBe(true);
    expect(settled).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    const order = await t.query<{ latency_ms: string }>('SELECT latency_ms FROM audit_log ORDER BY id');
    expect(order.rows.map((r) => Number(r.latency_ms))).toEqual(
      Array.from({ length: N }, (_, i) => 300_001 + i),
    );
  });

  it('with maxWriteEntries at the batch size, writes every batch on its own', async () => {
    const writes: number[] = [];
    const queue = new IngestQueue(
      new BatchWriter(t.pool, silentLogger()),
      { batchSize: 100, flushMs: 50, maxQueue: 1_000_000, maxQueueBytes: 1 << 30, maxWriteEntries: 100 },
      silentLogger(),
      null,
      { batchWritten: (n) => writes.push(n) },
    );
    fill(queue, 1000, 100_000);
    await queue.drain();
    expect(writes).toEqual(Array(10).fill(100));
  });
});
