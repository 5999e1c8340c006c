/**
 * Retry versus reject (CONTRACT.md §4), on errors as Postgres and node-postgres really raise them:
 * data errors (SQLSTATE classes 22, 23, 54) are rejects, never retried; connection and resource
 * errors (08, 53, 57, 40, a refused or cut socket) are retried, never rejected.
 */
import { createServer } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDataError, isRetryable, sqlState } from '../../src/errors.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('errors');
});
afterAll(async () => {
  await t.drop();
});

/** The error a query raises on the test database. */
async function errorOf(sql: string, setup: string[] = []): Promise<unknown> {
  const c = await t.pool.connect();
  try {
    for (const s of setup) await c.query(s);
    await c.query(sql);
  } catch (err) {
    return err;
  } finally {
    await c.query('ROLLBACK').catch(() => {});
    c.release();
  }
  throw new Error(`no error from: ${sql}`);
}

describe('data errors are rejects', () => {
  it.each([
    ['22P02 invalid text', "SELECT 'not-a-uuid'::uuid"],
    ['22007 bad datetime', "SELECT '2026-13-45'::timestamptz"],
    ['22003 out of range', 'SELECT 9223372036854775807::bigint + 1'],
    ['22021 bad encoding', "SELECT convert_from('\\xff'::bytea, 'UTF8')"],
    ['23502 not null', 'INSERT INTO audit_log (request_id, "timestamp") VALUES (NULL, now())'],
  ])('%s', async (_name, sql) => {
    const err = await errorOf(sql);
    expect(sqlState(err)).toMatch(/^2[23]/);
    expect(isDataError(err)).toBe(true);
    expect(isRetryable(err)).toBe(false);
  });

  it('54000 program limit (an index row over the B-tree limit)', async () => {
    const err = await errorOf('INSERT INTO lim VALUES (repeat(md5(random()::text), 20000))', [
      'BEGIN',
      'CREATE TEMP TABLE lim (v text)',
      'ALTER TABLE lim ALTER COLUMN v SET STORAGE PLAIN',
      'CREATE INDEX ON lim (v)',
    ]);
    expect(sqlState(err)?.slice(0, 2)).toBe('54');
    expect(isDataError(err)).toBe(true);
    expect(isRetryable(err)).toBe(false);
  });
});

describe('connection and resource errors are retried', () => {
  it('57014 a statement timeout', async () => {
    const err = await errorOf('SELECT pg_sleep(5)', ['BEGIN', "SET LOCAL statement_timeout = '50ms'"]);
    expect(sqlState(err)).toBe('57014');
    expect(isRetryable(err)).toBe(true);
    expect(isDataError(err)).toBe(false);
  });

  it('40P01 a deadlock', async () => {
    await t.query('CREATE TABLE dl (id int PRIMARY KEY, v int)');
    await t.query('INSERT INTO dl VALUES (1, 0), (2, 0)');
    const a = await t.pool.connect();
    const b = await t.pool.connect();
    try {
      await a.query('BEGIN');
      await b.query('BEGIN');
      await a.query('UPDATE dl SET v = 1 WHERE id = 1');
      await b.query('UPDATE dl SET v = 1 WHERE id = 2');
      const results = await Promise.allSettled([
        a.query('UPDATE dl SET v = 2 WHERE id = 2'),
        b.query('UPDATE dl SET v = 2 WHERE id = 1'),
      ]);
      const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(sqlState(failed.reason)).toBe('40P01');
      expect(isRetryable(failed.reason)).toBe(true);
      expect(isDataError(failed.reason)).toBe(false);
    } finally {
      await a.query('ROLLBACK').catch(() => {});
      await b.query('ROLLBACK').catch(() => {});
      a.release();
      b.release();
    }
  });

  it('57P01 a backend terminated by an administrator, and the client errors after it', async () => {
    const c = new pg.Client({ connectionString: t.url });
    const errors: unknown[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await t.query('SELECT pg_terminate_backend($1)', [pid]);
    const err = await c.query('SELECT 1').then(
      () => undefined,
      (e: unknown) => e,
    );
    await c.end().catch(() => {});
    const seen = [err, ...errors].filter((e) => e !== undefined);
    expect(seen.length).toBeGreaterThan(0);
    for (const e of seen) {
      expect(isRetryable(e), String(e)).toBe(true);
      expect(isDataError(e)).toBe(false);
    }
  });

  it('a refused connection (ECONNREFUSED) and a socket cut before the startup reply', async () => {
    const server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const cut = await new pg.Client({ host: '127.0.0.1', port, user: 'x' }).connect().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isRetryable(cut), String(cut)).toBe(true);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
    const refused = await new pg.Client({ host: '127.0.0.1', port, user: 'x' }).connect().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((refused as { code?: string }).code).toBe('ECONNREFUSED');
    expect(isRetryable(refused)).toBe(true);
    expect(isDataError(refused)).toBe(false);
  });
});

describe('neither', () => {
  it('42P01 an undefined table (a bug or a missing migration, not the data and not the network)', async () => {
    const err = await errorOf('SELECT * FROM no_such_table');
    expect(sqlState(err)).toBe('42P01');
    expect(isRetryable(err)).toBe(false);
    expect(isDataError(err)).toBe(false);
  });
  it('a thrown non-error value', () => {
    expect(isRetryable('boom')).toBe(false);
    expect(isDataError(undefined)).toBe(false);
    expect(sqlState({ code: 'ECONNRESET' })).toBeUndefined();
  });
});
