/**
 * CONTRACT.md §10 against a real Postgres: `migrate` converts both older layouts into daily
 * partitions keeping every row and id; the writer stores entries of any valid timestamp (years old,
 * future, offsets across midnight, a leap second, a fraction that rounds into the next day) by COPY
 * and by INSERT, into the partition of their UTC day, never as rejects; a partition dropped behind
 * the writer's back is made again; two writers making the same days at once both succeed.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { PartitionKeeper, utcDayOf } from '../../src/db/partitions.js';
import { BatchWriter, type WriteEntry } from '../../src/db/writer.js';
import { silentLogger } from '../../src/log.js';
import { verifyDatabase } from '../../src/read/verify.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

const SEED = readFileSync(new URL('../fixtures/seed-gateway-schema.sql', import.meta.url), 'utf8');
const dbs: TestDatabase[] = [];
afterEach(async () => {
  for (const d of dbs.splice(0)) await d.drop();
});
let shared: TestDatabase | undefined;
afterAll(async () => {
  await shared?.drop();
});

async function up(d: TestDatabase, count?: number): Promise<string[]> {
  const c = await d.pool.connect();
  try {
    return await migrate(c, 'up', silentLogger(), count);
  } finally {
    c.release();
  }
}

/** Every partition of audit_log with its index count, and whether a DEFAULT partition exists. */
async function layout(d: TestDatabase) {
  const kind = await d.query<{ relkind: string }>(
    `SELECT relkind FROM pg_class WHERE oid = 'audit_log'::regclass`,
  );
  const parts = await d.query<{ name: string; indexes: number; bound: string }>(
    `SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
            (SELECT count(*)::int FROM pg_index x WHERE x.indrelid = c.oid) AS indexes
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1`,
  );
  return { kind: kind.rows[0]!.relkind, parts: parts.rows };
}

const ROWS_SQL = `SELECT id::text, request_id::text, "timestamp", client_subject, client_role, tool_name, backend_name,
  request_args, response_status, error_message, latency_ms, received_at, extra FROM audit_log ORDER BY id`;

describe('migrate converts an unpartitioned audit_log', () => {
  it("this project's earlier layout: every row and id kept, one partition per UTC day, every index in each", async () => {
    const d = await createTestDatabase('part_conv', { migrated: false });
    dbs.push(d);
    expect(await up(d, 3)).toHaveLength(3); // the layout before 1764400000005
    // ids with gaps, timestamps years old, in the future, with offsets crossing midnight
    await d.query(`INSERT INTO audit_log (id, request_id, "timestamp", client_subject, tool_name, response_status, request_args, extra)
      SELECT g * 3, md5('c' || g)::uuid,
             CASE g % 4 WHEN 0 THEN timestamptz '1999-12-31T23:30:00-05:00' + g * interval '7 hours'
                        WHEN 1 THEN timestamptz '2031-06-01T00:00:00Z' + g * interval '13 hours'
                        WHEN 2 THEN now() - g * interval '5 hours'
                        ELSE timestamptz '2026-03-01T00:30:00+05:00' END + g * interval '1 microsecond',
             's' || (g % 7), 't' || (g % 3), 'success', jsonb_build_object('g', g), NULL
        FROM generate_series(1, 600) g`);
    await d.query(`SELECT setval(pg_get_serial_sequence('audit_log', 'id'), 5000)`);
    const before = (await d.query(ROWS_SQL)).rows;
    const days = (
      await d.query<{ n: number }>(
        `SELECT count(DISTINCT ("timestamp" AT TIME ZONE 'UTC')::date)::int AS n FROM audit_log`,
      )
    ).rows[0]!.n;
    // 0003 and 0004 (reject key, chains: the rows are bound into adopted batches), then 0005
    expect(await up(d)).toEqual([
      '1764400000003_reject-key',
      '1764400000004_chains',
      '1764400000005_partitions',
    ]);
    expect((await d.query(ROWS_SQL)).rows).toEqual(before);
    // CONTRACT.md §10: the conversion keeps each row's chain: verify finds the adopted batches intact
    const report = await verifyDatabase(d.pool, d.db, silentLogger());
    expect(report.faults).toEqual([]);
    expect(report.rows).toBe(600);
    const l = await layout(d);
    expect(l.kind).toBe('p');
    expect(l.parts.length).toBeGreaterThanOrEqual(days);
    expect(l.parts.filter((p) => p.bound === 'DEFAULT')).toEqual([]);
    // primary key, exactly-once key, request_id hash, subject, tool
    for (const p of l.parts) expect(p.indexes, p.name).toBe(5);
    // every row sits in the partition of its UTC day
    const misplaced = await d.query(
      `SELECT id FROM audit_log WHERE tableoid::regclass::text <> audit_log_partition_name(("timestamp" AT TIME ZONE 'UTC')::date)`,
    );
    expect(misplaced.rows).toEqual([]);
    // the id sequence goes on from where it was: new ids stay above every old one
    const next = await d.query<{ id: string }>(
      `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status)
       VALUES (gen_random_uuid(), now(), 'x', 't', 'success') RETURNING id::text AS id`,
    );
    expect(BigInt(next.rows[0]!.id)).toBe(5001n);
    // migrate again: nothing to do
    expect(await up(d)).toEqual([]);
  });

  it("the gateway's sqlx table: every row kept with its id, created_at as received_at", async () => {
    const d = await createTestDatabase('part_sqlx', { migrated: false });
    dbs.push(d);
    await d.query(SEED);
    await d.query(`INSERT INTO audit_log (request_id, timestamp, client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message, latency_ms, created_at)
      SELECT md5('s' || g)::uuid, '2025-01-01T00:00:00Z'::timestamptz + g * interval '37 minutes',
             'alice', 'admin', 'fs.read', 'fs', jsonb_build_object('n', g), 'success', NULL, g, '2026-02-01T00:00:00Z'::timestamptz + g * interval '1 second'
        FROM generate_series(1, 2000) g`);
    const before = (
      await d.query(`SELECT id::text, request_id::text, "timestamp", created_at FROM audit_log ORDER BY id`)
    ).rows;
    await up(d);
    const after = (
      await d.query(
        `SELECT id::text, request_id::text, "timestamp", received_at AS created_at FROM audit_log ORDER BY id`,
      )
    ).rows;
    expect(after).toEqual(before);
    const l = await layout(d);
    expect(l.kind).toBe('p');
    for (const p of l.parts) expect(p.indexes, p.name).toBe(5);
  });

  it('down converts back to one table, keeping every row and id', async () => {
    const d = await createTestDatabase('part_down', { migrated: true });
    dbs.push(d);
    await d.query(`INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status)
      SELECT md5('d' || g)::uuid, now() - g * interval '1 hour', 'a', 't', 'success' FROM generate_series(1, 50) g`);
    const before = (await d.query(ROWS_SQL)).rows;
    const c = await d.pool.connect();
    try {
      expect(await migrate(c, 'down', silentLogger(), 1)).toEqual(['1764400000005_partitions']);
    } finally {
      c.release();
    }
    expect((await layout(d)).kind).toBe('r');
    expect((await d.query(ROWS_SQL)).rows).toEqual(before);
  });
});

function line(i: number, timestamp: string | number): string {
  return JSON.stringify({
    request_id: `b1400000-0000-4000-8000-${i.toString().padStart(12, '0')}`,
    timestamp,
    client_subject: `p${i % 3}`,
    tool_name: 'fs.read',
    response_status: 'success',
    request_args: { i },
  });
}

/** Timestamps at every edge of a UTC day (CONTRACT.md §10: stored, never rejected). */
const EDGES: (string | number)[] = [
  '1970-01-01T00:00:00Z',
  '1999-12-31T23:59:59.999999Z',
  '2000-02-29T12:00:00+14:00',
  '2026-03-01T00:30:00+05:00', // 2026-02-28 UTC
  '2026-02-28T23:30:00-05:00', // 2026-03-01 UTC
  '2016-12-31T23:59:60Z', // leap second: Postgres reads 2017-01-01T00:00:00
  '2020-06-30T23:59:59.9999999Z', // rounds to the next day in Postgres
  '2099-12-31T23:59:59Z',
  '9999-12-31T23:59:59Z',
  '0001-01-01T00:00:00Z',
  '1900-01-01T00:00:00+00:30',
  -86_400_001, // epoch ms before 1970
  253_402_300_799_000, // 9999-12-31T23:59:59Z as epoch ms
];

async function db(): Promise<TestDatabase> {
  shared ??= await createTestDatabase('part_write');
  return shared;
}

async function misplacedOrMissing(d: TestDatabase, prefix: string, expected: number): Promise<void> {
  const r = await d.query<{ n: number; bad: number }>(
    `SELECT count(*)::int AS n,
            count(*) FILTER (WHERE tableoid::regclass::text <> audit_log_partition_name(("timestamp" AT TIME ZONE 'UTC')::date))::int AS bad
       FROM audit_log WHERE request_id::text LIKE $1`,
    [`${prefix}%`],
  );
  expect(r.rows[0]).toEqual({ n: expected, bad: 0 });
  const rejects = await d.query(`SELECT reason FROM audit_reject WHERE reason LIKE '%partition%'`);
  expect(rejects.rows).toEqual([]);
}

describe('the writer makes the partitions of any timestamp', () => {
  it.each([
    ['COPY', 1],
    ['INSERT', 1000],
  ])('by %s: every edge timestamp stored in its UTC day, none rejected', async (_path, copyMinRows) => {
    const d = await db();
    const base = copyMinRows === 1 ? 0 : 100;
    const writer = new BatchWriter(d.pool, silentLogger(), { copyMinRows });
    const entries = EDGES.map((ts, i) => writeEntryOf(line(base + i, ts)));
    const out = await writer.write(entries, []);
    expect(out.refused.size).toBe(0);
    expect(out.stored).toBe(EDGES.length);
    await misplacedOrMissing(
      d,
      `b1400000-0000-4000-8000-0000000${copyMinRows === 1 ? '000' : '001'}`,
      EDGES.length,
    );
  });

  it('a partition dropped after the writer made it (retention elsewhere): made again, the batch stored', async () => {
    const d = await db();
    const writer = new BatchWriter(d.pool, silentLogger(), { copyMinRows: 1 });
    const mk = (i: number) => writeEntryOf(line(i, '2011-11-11T11:11:11Z'));
    expect((await writer.write([mk(200)], [])).stored).toBe(1);
    await d.query('DROP TABLE audit_log_p20111111');
    const out = await writer.write([mk(201), mk(202)], []);
    expect(out.stored).toBe(2);
    expect(out.refused.size).toBe(0);
    const n = await d.query(`SELECT count(*)::int AS n FROM audit_log_p20111111`);
    expect(n.rows[0]!.n).toBe(2);
  });

  it('two writers (two daemons) making the same new days at once: both store everything', async () => {
    const d = await db();
    const a = new BatchWriter(d.pool, silentLogger(), { copyMinRows: 1 });
    const b = new BatchWriter(d.pool, silentLogger(), { copyMinRows: 1 });
    const days = Array.from({ length: 12 }, (_, k) => `2041-01-${String(k + 1).padStart(2, '0')}T05:00:00Z`);
    const batch = (offset: number): WriteEntry[] =>
      days.map((ts, k) => writeEntryOf(line(300 + offset + k, ts)));
    const [ra, rb] = await Promise.all([a.write(batch(0), []), b.write(batch(50), [])]);
    expect(ra.stored + rb.stored).toBe(24);
    const parts = await d.query(
      `SELECT count(*)::int AS n FROM pg_class WHERE relkind = 'r' AND relname LIKE 'audit_log_p204101%'`,
    );
    expect(parts.rows[0]!.n).toBe(12);
  });

  it('utcDayOf agrees with Postgres on every RFC 3339 timestamp it answers for (property)', async () => {
    const d = await db();
    const pad = (n: number, w = 2) => String(n).padStart(w, '0');
    const stamp = fc
      .record({
        y: fc.integer({ min: 1, max: 9999 }),
        mo: fc.integer({ min: 1, max: 12 }),
        da: fc.integer({ min: 1, max: 28 }),
        h: fc.integer({ min: 0, max: 23 }),
        mi: fc.integer({ min: 0, max: 59 }),
        s: fc.integer({ min: 0, max: 60 }),
        frac: fc.option(fc.stringMatching(/^[0-9]{1,9}$/), { nil: undefined }),
        off: fc.option(
          fc.record({
            sign: fc.constantFrom('+', '-'),
            h: fc.integer({ min: 0, max: 15 }),
            m: fc.integer({ min: 0, max: 59 }),
          }),
          { nil: undefined },
        ),
      })
      .map(
        (r) =>
          `${pad(r.y, 4)}-${pad(r.mo)}-${pad(r.da)}T${pad(r.h)}:${pad(r.mi)}:${pad(r.s)}${r.frac ? `.${r.frac}` : ''}${
            r.off ? `${r.off.sign}${pad(r.off.h)}:${pad(r.off.m)}` : 'Z'
          }`,
      );
    const samples = fc.sample(stamp, 3000);
    const pgDays = await d.query<{ t: string; day: string }>(
      `SELECT t, to_char((t::timestamptz AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day FROM unnest($1::text[]) t`,
      [samples],
    );
    const wrong = pgDays.rows.filter((r) => {
      const mine = utcDayOf(r.t);
      return mine !== null && mine !== r.day;
    });
    expect(wrong).toEqual([]);
    // and the keeper remembers days: a second batch of known days asks nothing
    const keeper = new PartitionKeeper(silentLogger());
    const c = await d.pool.connect();
    try {
      await keeper.ensureFor(c, ['2030-05-05T00:00:00Z']);
      const calls: string[] = [];
      const spy = {
        query: (q: string) => {
          calls.push(q);
          return Promise.reject(new Error('no query expected'));
        },
      };
      await keeper.ensureFor(spy as never, ['2030-05-05T23:00:00Z']);
      expect(calls).toEqual([]);
    } finally {
      c.release();
    }
  });
});
