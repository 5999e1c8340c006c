/**
 * `migrate --roles` (CONTRACT.md §9): audit_writer stores batches with their chain records and can
 * change nothing stored; audit_reader can read and verify, never write. Login roles of this file
 * (unique names) are made members of the two roles and dropped afterwards.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Database } from '../../src/db/connect.js';
import { createRoles } from '../../src/db/migrate.js';
import { BatchWriter } from '../../src/db/writer.js';
import { silentLogger } from '../../src/log.js';
import { verifyDatabase } from '../../src/read/verify.js';
import { ADMIN_URL, createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

let t: TestDatabase;
const tag = randomBytes(3).toString('hex');
const writerLogin = `ag_test_w_${tag}`;
const readerLogin = `ag_test_r_${tag}`;

function as(user: string): { db: Database; pool: pg.Pool } {
  const u = new URL(t.url);
  u.username = user;
  const db: Database = {
    config: { connectionString: u.toString() },
    where: u.toString(),
    embedded: false,
    close: async () => {},
  };
  return { db, pool: createPool(db, silentLogger(), 2) };
}

beforeAll(async () => {
  t = await createTestDatabase('roles');
  const c = await t.pool.connect();
  try {
    await createRoles(c);
    await createRoles(c); // twice: idempotent
  } finally {
    c.release();
  }
  await t.query(`CREATE ROLE ${writerLogin} LOGIN IN ROLE audit_writer`);
  await t.query(`CREATE ROLE ${readerLogin} LOGIN IN ROLE audit_reader`);
});
afterAll(async () => {
  await t?.drop();
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP ROLE IF EXISTS ${writerLogin}`);
  await admin.query(`DROP ROLE IF EXISTS ${readerLogin}`);
  await admin.end();
});

const line = (i: number) =>
  JSON.stringify({
    request_id: `abcd0000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'alice',
    tool_name: 'fs.read',
    response_status: 'success',
  });

describe('migrate --roles', () => {
  it('audit_writer stores batches and their chain records (COPY and INSERT) but changes nothing', async () => {
    const w = as(writerLogin);
    try {
      const writer = new BatchWriter(w.pool, silentLogger(), { chainId: 'role-writer' });
      const out = await writer.write(
        Array.from({ length: 40 }, (_, i) => writeEntryOf(line(i))),
        [],
      );
      expect(out.stored).toBe(40);
      expect((await writer.write([writeEntryOf(line(99))], [])).stored).toBe(1);
      for (const sql of [
        `UPDATE audit_log SET client_subject = 'x'`,
        'DELETE FROM audit_log',
        'TRUNCATE audit_log',
        'DELETE FROM audit_batch',
        `UPDATE audit_batch SET ids = ''`,
        'DELETE FROM audit_checkpoint',
      ]) {
        await expect(w.pool.query(sql), sql).rejects.toThrow(/permission denied|append-only/);
      }
    } finally {
      await w.pool.end();
    }
  });

  it('audit_reader reads and verifies, and cannot write', async () => {
    const r = as(readerLogin);
    try {
      const report = await verifyDatabase(r.pool, r.db, silentLogger());
      expect(report.faults).toEqual([]);
      expect(report.rows).toBe(41);
      await expect(
        r.pool.query(
          `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status) VALUES (gen_random_uuid(), now(), 'a', 'b', 'c')`,
        ),
      ).rejects.toThrow(/permission denied/);
    } finally {
      await r.pool.end();
    }
  });
});
