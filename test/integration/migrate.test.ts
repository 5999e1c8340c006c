/** migrate against a real Postgres: a fresh schema, adopting the gateway's own table, down/up, the lock. */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate, migrationStatus } from '../../src/db/migrate.js';
import { silentLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

const SEED = readFileSync(new URL('../fixtures/seed-gateway-schema.sql', import.meta.url), 'utf8');
/** Every migration file: a fresh `up` applies them all. */
const ALL = readdirSync(new URL('../../migrations', import.meta.url)).filter((f) =>
  f.endsWith('.sql'),
).length;
const dbs: TestDatabase[] = [];
afterEach(async () => {
  for (const d of dbs.splice(0)) await d.drop();
});

async function fresh(prefix: string): Promise<TestDatabase> {
  const d = await createTestDatabase(prefix, { migrated: false });
  dbs.push(d);
  return d;
}

async function up(d: TestDatabase): Promise<string[]> {
  const c = await d.pool.connect();
  try {
    return await migrate(c, 'up', silentLogger());
  } finally {
    c.release();
  }
}

async function columns(d: TestDatabase): Promise<Record<string, { nullable: string; type: string }>> {
  const r = await d.query<{ column_name: string; is_nullable: string; data_type: string }>(
    `SELECT column_name, is_nullable, data_type FROM information_schema.columns WHERE table_name = 'audit_log'`,
  );
  return Object.fromEntries(
    r.rows.map((x) => [x.column_name, { nullable: x.is_nullable, type: x.data_type }]),
  );
}

describe('migrate', () => {
  it('creates the schema of CONTRACT.md §8 on an empty database, then has nothing to do', async () => {
    const d = await fresh('mig_fresh');
    expect(await up(d)).toHaveLength(ALL);
    expect(await up(d)).toEqual([]);
    const cols = await columns(d);
    expect(Object.keys(cols).sort()).toEqual(
      [
        'backend_name',
        'client_role',
        'client_subject',
        'error_message',
        'extra',
        'id',
        'latency_ms',
        'received_at',
        'request_args',
        'request_id',
        'response_status',
        'timestamp',
        'tool_name',
      ].sort(),
    );
    expect(cols.latency_ms).toEqual({ nullable: 'YES', type: 'bigint' });
    expect(cols.request_args?.type).toBe('jsonb');
    const c = await d.pool.connect();
    try {
      expect((await migrationStatus(c)).every((m) => m.runOn !== null)).toBe(true);
    } finally {
      c.release();
    }
  });

  it("adopts the gateway's own audit_log: keeps every row, relaxes NOT NULL, created_at becomes received_at", async () => {
    const d = await fresh('mig_adopt');
    await d.query(SEED);
    await d.query(`INSERT INTO audit_log (request_id, timestamp, client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message, latency_ms, created_at)
      SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 minute',
             'alice', 'admin', 'fs.read', 'fs', jsonb_build_object('n', g), 'success', NULL, g, '2026-02-01T00:00:00Z'::timestamptz + g * interval '1 second'
      FROM generate_series(1, 500) g`);
    // a gateway at-least-once duplicate: same (request_id, timestamp)
    await d.query(`INSERT INTO audit_log (request_id, timestamp, client_subject, client_role, tool_name, backend_name, response_status, latency_ms)
      SELECT request_id, timestamp, client_subject, client_role, tool_name, backend_name, response_status, 99 FROM audit_log WHERE id = 7`);
    const before = await d.query(`SELECT id, request_id, created_at FROM audit_log ORDER BY id`);
    expect(await up(d)).toHaveLength(ALL);
    const cols = await columns(d);
    expect(cols.created_at).toBeUndefined();
    for (const c of ['client_role', 'backend_name', 'latency_ms']) expect(cols[c]?.nullable).toBe('YES');
    const after = await d.query(
      `SELECT id, request_id, received_at AS created_at FROM audit_log ORDER BY id`,
    );
    const dup = await d.query(
      `SELECT id, request_id, received_at AS created_at FROM audit_log_duplicate ORDER BY id`,
    );
    expect([...after.rows, ...dup.rows].sort((a, b) => Number(a.id) - Number(b.id))).toEqual(before.rows);
    expect(dup.rows).toHaveLength(1);
    // the relaxed columns take nulls now; new rows get received_at by default
    await d.query(
      `INSERT INTO audit_log (request_id, timestamp, client_subject, tool_name, response_status) VALUES ('00000000-0000-4000-8000-999999999999', now(), '', 't', 'success')`,
    );
    const n = await d.query(`SELECT count(*)::int AS n FROM audit_log WHERE received_at IS NOT NULL`);
    expect(n.rows[0]?.n).toBe(501);
    // the sqlx bookkeeping is left alone
    expect((await d.query('SELECT count(*)::int AS n FROM _sqlx_migrations')).rows[0]?.n).toBe(1);
  });

  it('a migration that fails: one line naming it and the fix, nothing applied, the SQL only in the debug log', async () => {
    const d = await fresh('fail');
    // a table in the way of migration 1764400000004 (a half-done manual change, say)
    await d.query('CREATE TABLE audit_chain (x int)');
    const c = await d.pool.connect();
    try {
      const err = await migrate(c, 'up', silentLogger()).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(
        /^migrate up: migration 1764400000004_chains failed: relation "audit_chain" already exists; nothing was applied .*migrate status/,
      );
      expect(err?.message).not.toContain('\n');
      expect(await migrationStatus(c)).toSatisfy((all: { runOn: Date | null }[]) =>
        all.every((m) => m.runOn === null),
      );
    } finally {
      c.release();
    }
  });

  it('down then up keeps every row', async () => {
    const d = await fresh('mig_down');
    await up(d);
    await d.query(
      `INSERT INTO audit_log (request_id, timestamp, client_subject, tool_name, response_status, extra) VALUES ('00000000-0000-4000-8000-000000000001', now(), 'a', 't', 'success', '{"x":1}')`,
    );
    const c = await d.pool.connect();
    try {
      expect(await migrate(c, 'down', silentLogger(), ALL)).toHaveLength(ALL);
    } finally {
      c.release();
    }
    expect((await d.query('SELECT count(*)::int AS n FROM audit_log')).rows[0]?.n).toBe(1);
    expect(await up(d)).toHaveLength(ALL);
    expect((await d.query('SELECT count(*)::int AS n FROM audit_log')).rows[0]?.n).toBe(1);
  });

  it('two migrate runs at once: one applies, the other waits and finds nothing to do (C21)', async () => {
    const d = await fresh('mig_race');
    const [a, b] = await Promise.all([up(d), up(d)]);
    expect([a.length, b.length].sort()).toEqual([0, ALL]);
    const dupNames = await d.query('SELECT name FROM pgmigrations GROUP BY name HAVING count(*) > 1');
    expect(dupNames.rows).toEqual([]);
    const invalid = await d.query('SELECT indexrelid::regclass FROM pg_index WHERE NOT indisvalid');
    expect(invalid.rows).toEqual([]);
  });
});
