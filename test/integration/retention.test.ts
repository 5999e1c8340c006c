/**
 * retention's locks (CONTRACT.md §10) against a real Postgres: a writer holding the partition in an
 * open transaction makes retention wait (lock_timeout, retried), never lose that writer's entry;
 * when the retries run out, the partition and its rows are kept and the error names the partition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter } from '../../src/db/writer.js';
import { AuditGatewayError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { runRetention } from '../../src/retention/retention.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('ret_lock');
});
afterAll(async () => {
  await t?.drop();
});

const line = (i: number, ts: string) =>
  JSON.stringify({
    request_id: `d1400000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    timestamp: ts,
    client_subject: 'alice',
    tool_name: 'fs.read',
    response_status: 'success',
  });

async function seedDay(day: string, base: number): Promise<void> {
  const w = new BatchWriter(t.pool, silentLogger());
  await w.write(
    Array.from({ length: 20 }, (_, i) =>
      writeEntryOf(line(base + i, `${day}T10:00:${String(i).padStart(2, '0')}Z`)),
    ),
    [],
  );
}

const exists = async (name: string) =>
  (await t.query('SELECT to_regclass($1) AS r', [name])).rows[0]!.r !== null;

describe('retention and writers', () => {
  it("waits for a writer holding the partition, then removes it with the writer's entry counted", async () => {
    await seedDay('2001-02-03', 0);
    const a = await t.pool.connect();
    try {
      await a.query('BEGIN');
      await a.query(
        `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status)
         VALUES ('d1400000-0000-4000-8000-000000000999', '2001-02-03T23:00:00Z', 'late', 't', 'success')`,
      );
      let done = false;
      const run = runRetention(t.pool, t.db, silentLogger(), {
        cutoff: new Date('2001-02-04T00:00:00Z'),
        lockTimeoutMs: 50,
        tries: 200,
      }).then((r) => {
        done = true;
        return r;
      });
      await new Promise((r) => setTimeout(r, 700));
      expect(done).toBe(false);
      expect(await exists('audit_log_p20010203')).toBe(true);
      await a.query('COMMIT');
      const removed = (await run).filter((r) => r.day === '2001-02-03');
      expect(removed).toHaveLength(1);
      expect(removed[0]!.entries).toBe(21);
      expect(await exists('audit_log_p20010203')).toBe(false);
      const rec = await t.query(
        `SELECT entries::int AS n FROM audit_retention WHERE partition_name = 'audit_log_p20010203'`,
      );
      expect(rec.rows).toEqual([{ n: 21 }]);
    } finally {
      a.release();
    }
  });

  it('when the lock retries run out: the partition and its rows are kept, the error names it', async () => {
    await seedDay('2002-03-04', 100);
    const a = await t.pool.connect();
    try {
      await a.query('BEGIN');
      await a.query('LOCK TABLE audit_log_p20020304 IN ROW EXCLUSIVE MODE');
      const err = await runRetention(t.pool, t.db, silentLogger(), {
        cutoff: new Date('2002-03-05T00:00:00Z'),
        lockTimeoutMs: 20,
        tries: 3,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuditGatewayError);
      expect((err as Error).message).toContain('audit_log_p20020304');
      await a.query('COMMIT');
    } finally {
      a.release();
    }
    expect(await exists('audit_log_p20020304')).toBe(true);
    const n = await t.query(`SELECT count(*)::int AS n FROM audit_log_p20020304`);
    expect(n.rows[0]!.n).toBe(20);
    const rec = await t.query(`SELECT 1 FROM audit_retention WHERE partition_name = 'audit_log_p20020304'`);
    expect(rec.rows).toEqual([]);
  });
});
