/**
 * Ids order as numbers, never as text (CONTRACT.md §5; issue 12 "tail skips entries"): with ids
 * crossing powers of ten (991 → 3490, 9 → 12) and more rows than one page (tail reads 1000 per
 * follow query), every read command gives every entry once, in (timestamp, id) order. The alias
 * `id::text AS id` once made `ORDER BY id` sort the text ("1000" < "991").
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Background, run } from '../helpers/cli.js';
import { createTestDatabase, ensurePartitionsBack, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase('order');
});

afterAll(async () => {
  await t?.drop();
});

/** Inserts `n` entries in one statement, all with the same timestamp; returns their ids in order. */
async function insertBatch(c: pg.Client | pg.Pool, n: number, subject: string): Promise<string[]> {
  const res = await c.query<{ id: string }>(
    `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status, latency_ms)
     SELECT gen_random_uuid(), '2026-11-01T10:00:00Z', $2, 'tool.x', 'success', g FROM generate_series(1, $1::int) g
     RETURNING id::text AS id`,
    [n, subject],
  );
  return res.rows.map((r) => r.id).sort((a, b) => Number(a) - Number(b));
}

const numeric = (ids: string[]) => [...ids].sort((a, b) => Number(a) - Number(b));
const ndjsonIds = (out: string) =>
  out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => String(JSON.parse(l).id));

describe('ids across powers of ten, more than a page', () => {
  let small: string[];

  beforeAll(async () => {
    // plain SQL: the day's partition is made here (the writer makes its own, CONTRACT.md §10)
    await ensurePartitionsBack(t.pool, 0, ['2026-11-01T10:00:00Z']);
    // ids 1..15 (crossing 9 → 10, equal timestamps), then the sequence at 990
    small = await insertBatch(t.pool, 15, 'small');
    await t.query(`SELECT setval(pg_get_serial_sequence('audit_log', 'id'), 990)`);
  });

  it('tail --follow: one INSERT of 2,500 rows (ids 991..3490) is printed whole, in id order', async () => {
    // a marker entry that tail prints first (-n 1) shows that it has started
    await t.query(`SELECT setval(pg_get_serial_sequence('audit_log', 'id'), 500)`);
    const [marker] = await insertBatch(t.pool, 1, 'big');
    await t.query(`SELECT setval(pg_get_serial_sequence('audit_log', 'id'), 990)`);
    const args = ['tail', '--database-url', t.url, '--output', 'json', '-n', '1', '--subject', 'big'];
    const tail = new Background(args);
    try {
      await tail.waitFor((l) => l.length >= 1, 30_000, 'the marker line');
      const ids = await insertBatch(t.pool, 2500, 'big');
      expect(ids[0]).toBe('991');
      await t.query(`NOTIFY audit_log, '3490'`);
      await tail.waitFor((l) => l.length >= 2501, 30_000, '2500 lines');
      await new Promise((r) => setTimeout(r, 500));
      expect(ndjsonIds(`${tail.lines.join('\n')}\n`)).toEqual([marker, ...ids]);
    } finally {
      await tail.interrupt();
    }
  });

  it('tail --no-follow -n 25: equal timestamps print in id order (9 before 10)', async () => {
    const r = await run([
      'tail',
      '--database-url',
      t.url,
      '--output',
      'json',
      '--no-follow',
      '-n',
      '12',
      '--subject',
      'small',
    ]);
    expect(r.code).toBe(0);
    expect(ndjsonIds(r.stdout)).toEqual(small.slice(-12));
  });

  it('search --order asc|desc and export: every entry, by timestamp then id as numbers', async () => {
    const all = numeric(
      (await t.query<{ id: string }>('SELECT id::text AS id FROM audit_log')).rows.map((r) => r.id),
    );
    for (const format of ['ndjson', 'json', 'csv'] as const) {
      const asc = await run([
        'search',
        '--database-url',
        t.url,
        '--order',
        'asc',
        '--limit',
        '5000',
        '--output',
        format,
      ]);
      expect(asc.code, asc.stderr).toBe(0);
      const got =
        format === 'csv'
          ? asc.stdout
              .trim()
              .split('\r\n')
              .slice(1)
              .map((l) => l.split(',')[0]!)
          : format === 'json'
            ? (JSON.parse(asc.stdout) as { id: number }[]).map((e) => String(e.id))
            : ndjsonIds(asc.stdout);
      expect(got, format).toEqual(all);
    }
    const desc = await run(['search', '--database-url', t.url, '--limit', '1500', '--output', 'ndjson']);
    expect(ndjsonIds(desc.stdout)).toEqual([...all].reverse().slice(0, 1500));
    for (const format of ['ndjson', 'csv'] as const) {
      const ex = await run(['export', '--database-url', t.url, '--format', format]);
      expect(ex.code, ex.stderr).toBe(0);
      const got =
        format === 'csv'
          ? ex.stdout
              .trim()
              .split('\r\n')
              .slice(1)
              .map((l) => l.split(',')[0]!)
          : ndjsonIds(ex.stdout);
      expect(got, format).toEqual(all);
    }
  });
});
