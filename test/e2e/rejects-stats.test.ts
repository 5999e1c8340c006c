/**
 * `rejects` (CONTRACT.md §5) and `stats --sort`, through the built binary: rejected lines newest
 * first with source, reason and the raw line (U+FFFD for invalid bytes, base64 exact), --since,
 * --limit with its note; a line rejected by `replay` is found; stats sorted by each key; an empty
 * result said on stderr; search --output vertical.
 */
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runInPty } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
let dir: string;
let db: string[];

beforeAll(async () => {
  t = await createTestDatabase('rejects');
  dir = await mkdtemp(join(tmpdir(), 'ag-rejects-'));
  db = ['--database-url', t.url];
  await t.query(
    `INSERT INTO audit_reject (received_at, source, reason, raw) VALUES
       (now() - interval '3 days', 'unix#1 line 1', 'invalid_json: old', '\\x7b6f6c647d'),
       (now() - interval '1 hour', 'unix#2 line 7', 'invalid_json: bad bytes', '\\x7bff1b5b324a7d'),
       (now() - interval '1 hour', 'tcp#3:127.0.0.1:5000 line 2', 'request_id: missing', '\\x7b7d')`,
  );
  // stats: tool a (fast, no errors, many), b (slow, half errors), c (few, all errors)
  await t.query(
    `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status, latency_ms)
     SELECT gen_random_uuid(), now(), '', 'a', 'success', 10 FROM generate_series(1, 30)
     UNION ALL SELECT gen_random_uuid(), now(), 'bob', 'b', CASE WHEN g % 2 = 0 THEN 'error' ELSE 'success' END, 900 + g FROM generate_series(1, 10) g
     UNION ALL SELECT gen_random_uuid(), now(), 'bob', 'c', 'error', 50 FROM generate_series(1, 3)`,
  );
});

afterAll(async () => {
  await t?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const nd = (s: string) =>
  s
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('rejects', () => {
  it('newest first, every field, raw as text with U+FFFD and exact in base64', async () => {
    const r = await run(['rejects', ...db, '--output', 'ndjson']);
    expect(r.code, r.stderr).toBe(0);
    const rows = nd(r.stdout);
    expect(rows.map((x) => x.source)).toEqual([
      'tcp#3:127.0.0.1:5000 line 2',
      'unix#2 line 7',
      'unix#1 line 1',
    ]);
    expect(rows[1]).toMatchObject({ reason: 'invalid_json: bad bytes', raw: '{\ufffd\u001b[2J}' });
    expect(Buffer.from(rows[1]!.raw_base64 as string, 'base64')).toEqual(
      Buffer.from('7bff1b5b324a7d', 'hex'),
    );
    expect(Object.keys(rows[0]!)).toEqual(['id', 'received_at', 'source', 'reason', 'raw', 'raw_base64']);
    expect(rows[0]!.received_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });

  it('--since, --limit with the note, json array, and the empty note', async () => {
    const since = await run(['rejects', ...db, '--since', '1d', '--output', 'json']);
    expect((JSON.parse(since.stdout) as unknown[]).length).toBe(2);
    const lim = await run(['rejects', ...db, '--limit', '1', '--output', 'ndjson']);
    expect(nd(lim.stdout)).toHaveLength(1);
    expect(lim.stderr).toMatch(/more rejects match than the 1 shown/);
    const none = await run(['rejects', ...db, '--since', 'now', '--output', 'json']);
    expect(none.stdout).toBe('[]\n');
    expect(none.stderr).toMatch(/no rejects match/);
    const bad = await run(['rejects', ...db, '--since', 'last tuesday']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--since: 'last tuesday' is not a TIME/);
  });

  it('a table on a terminal, escape sequences shown escaped', async () => {
    const r = await runInPty(['rejects', ...db, '--no-color'], { COLUMNS: '160' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/│ received \(UTC\) +│ source/);
    expect(r.stdout).toContain('{\ufffd\\u001b[2J}');
    expect(r.stdout).not.toContain('\u001b[2J');
  });

  it('a line that replay rejected is listed with its file and line', async () => {
    const file = join(dir, 'bad.ndjson');
    writeFileSync(
      file,
      '{"request_id":"d0000000-0000-4000-8000-000000000001","timestamp":"2026-11-01T10:00:00Z","client_subject":"x","tool_name":"a","response_status":"success"}\n{"timestamp":"2026-11-01T10:00:00Z"}\n',
    );
    const rep = await run(['replay', ...db, file]);
    expect(rep.code, rep.stderr).toBe(0);
    const r = await run(['rejects', ...db, '--since', '1m', '--output', 'ndjson']);
    const rows = nd(r.stdout);
    expect(
      rows.some((x) => String(x.source).includes('bad.ndjson') && String(x.reason).includes('request_id')),
    ).toBe(true);
  });
});

describe('stats --sort and its table', () => {
  it('sorts by each key, largest first', async () => {
    const order = async (sort: string) =>
      (
        JSON.parse((await run(['stats', ...db, '--sort', sort, '--output', 'json'])).stdout) as {
          group: string;
        }[]
      ).map((g) => g.group);
    expect(await order('count')).toEqual(['a', 'b', 'c']);
    expect(await order('errors')).toEqual(['b', 'c', 'a']);
    expect(await order('error_rate')).toEqual(['c', 'b', 'a']);
    expect(await order('p95')).toEqual(['b', 'c', 'a']);
    const bad = await run(['stats', ...db, '--sort', 'speed']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--sort: 'speed' is not one of count, errors, error_rate, p50, p95, p99/);
  });

  it('table: the anonymous caller named, numbers in one format per column; empty result said', async () => {
    const r = await runInPty(['stats', ...db, '--by', 'subject', '--no-color'], { COLUMNS: '100' });
    expect(r.stdout).toMatch(/│ \(anonymous\) +│ +30 │ +0 │ +0\.0% │ +10\.0 │/);
    const e = await run(['stats', ...db, '--tool', 'nothing', '--output', 'json']);
    expect(e.stdout).toBe('[]\n');
    expect(e.stderr).toMatch(/no entries match/);
  });
});

describe('search --output vertical and tail with nothing to show', () => {
  it('vertical: one block per entry', async () => {
    const r = await run(['search', ...db, '--tool', 'c', '--output', 'vertical']);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^-\[ RECORD \d+ \]/gm)).toHaveLength(3);
    expect(r.stdout).toMatch(/^tool +│ c$/m);
  });

  it('tail --no-follow with no match: nothing on stdout, the note on stderr', async () => {
    const r = await run(['tail', ...db, '--subject', 'nobody', '--no-follow']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/no entries match/);
  });
});
