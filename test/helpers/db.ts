/**
 * Test databases: each test file creates its own uniquely named database on the server named by
 * TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) and drops it afterwards.
 * Tests never assume an empty server.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool, type Database } from '../../src/db/connect.js';
import { migrate } from '../../src/db/migrate.js';
import { silentLogger } from '../../src/log.js';

/** The admin URL of the shared test server. */
export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * Makes the daily partitions of the last `days` days (UTC) and of `extra` timestamps, for tests that
 * insert with plain SQL (the writer makes its own).
 */
export async function ensurePartitionsBack(
  c: pg.ClientBase | pg.Pool,
  days: number,
  extra: string[] = [],
): Promise<void> {
  await c.query(
    `SELECT audit_log_ensure_partitions(array(SELECT (now() - g * interval '1 day')::text FROM generate_series(0, $1::int) g) || $2::text[])`,
    [days, extra],
  );
}

/** A database made for one test file. */
export interface TestDatabase {
  name: string;
  url: string;
  db: Database;
  pool: pg.Pool;
  /** Runs one query on the test database. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params?: unknown[],
  ): Promise<pg.QueryResult<R>>;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Creates a fresh database (migrated unless `migrated: false`).
 * @param prefix a short tag naming the test file, for debugging leftovers.
 */
export async function createTestDatabase(
  prefix: string,
  options: { migrated?: boolean } = {},
): Promise<TestDatabase> {
  const name = `ag_test_${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(ADMIN_URL, name);
  const db: Database = {
    config: { connectionString: url, application_name: 'audit-gateway-test' },
    where: url,
    embedded: false,
    close: async () => {},
  };
  const pool = createPool(db, silentLogger(), 4);
  if (options.migrated !== false) {
    const c = await pool.connect();
    try {
      await migrate(c, 'up', silentLogger());
      // Tests seed with plain SQL (no writer, which makes its own partitions: CONTRACT.md §10) over
      // the last month; migrate made today and the days ahead.
      await ensurePartitionsBack(c, 31);
    } finally {
      c.release();
    }
  }
  return {
    name,
    url,
    db,
    pool,
    query: (sql, params) => pool.query(sql, params as unknown[]),
    drop: async () => {
      await pool.end();
      const a = new pg.Client({ connectionString: ADMIN_URL });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${a.escapeIdentifier(name)} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}
