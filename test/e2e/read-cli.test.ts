/**
 * `search`, `export`, `stats` (and `tail --no-follow`) through the built binary: the questions a new
 * user asks, each answered by one command; output formats; terminal behaviour under a
 * pseudo-terminal (colours, width); `| head`; bad flag values (exit 2) and an unreachable database
 * (exit 1), each one line on stderr (CONTRACT.md §5, §7).
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runCommand, runInPty, shq } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { seedEntries } from '../helpers/seed.js';

let t: TestDatabase;
let dir: string;
let db: string[];
const ANSI = /\u001b\[[0-9;]*m/;
const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '');

beforeAll(async () => {
  t = await createTestDatabase('readcli');
  await seedEntries(t, 4000);
  dir = await mkdtemp(join(tmpdir(), 'ag-read-'));
  db = ['--database-url', t.url];
});

afterAll(async () => {
  await t?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const ndjsonIds = (out: string) =>
  out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => String(JSON.parse(l).id));

async function sqlIds(where: string, order = 'DESC'): Promise<string[]> {
  const res = await t.query<{ id: string }>(
    `SELECT id::text AS id FROM audit_log WHERE ${where} ORDER BY audit_log."timestamp" ${order}, audit_log.id ${order}`,
  );
  return res.rows.map((r) => r.id);
}

describe('the questions of a new user, one command each', () => {
  it('what did alice call in the last hour: search --subject alice --since 1h', async () => {
    const r = await run(['search', '--subject', 'alice', '--since', '1h', ...db]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const want = await sqlIds(`client_subject = 'alice' AND "timestamp" >= now() - interval '1 hour'`);
    expect(want.length).toBeGreaterThan(0);
    expect(ndjsonIds(r.stdout)).toEqual(want); // ndjson into a pipe, newest first
  });

  it('errors of a tool since yesterday as CSV: search --output csv, and export --format csv', async () => {
    const env = { TZ: 'UTC' };
    const where = `tool_name = 'fs.write' AND response_status <> 'success'
      AND "timestamp" >= (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '1 day') AT TIME ZONE 'UTC'`;
    const want = await sqlIds(where);
    expect(want.length).toBeGreaterThan(50);
    const s = await run(
      [
        'search',
        '--tool',
        'fs.write',
        '--errors',
        '--since',
        'yesterday',
        '--output',
        'csv',
        '--limit',
        '50',
        ...db,
      ],
      { env },
    );
    expect(s.code).toBe(0);
    const rows: string[][] = parse(s.stdout, { columns: false });
    expect(rows[0]![0]).toBe('id');
    expect(rows.slice(1).map((r) => r[0])).toEqual(want.slice(0, 50));
    const d = await run(['search', '--tool', 'fs.write', '--errors', '--since', 'yesterday', ...db], { env });
    expect(ndjsonIds(d.stdout)).toEqual(want.slice(0, 100)); // --limit 100 by default
    const e = await run(
      ['export', '--format', 'csv', '--tool', 'fs.write', '--errors', '--since', 'yesterday', ...db],
      { env },
    );
    expect(e.code).toBe(0);
    const all: Record<string, string>[] = parse(e.stdout, { columns: true });
    expect(all.map((r) => r.id)).toEqual([...want].reverse()); // every one, oldest first
    expect(all.every((r) => r.tool_name === 'fs.write' && r.response_status !== 'success')).toBe(true);
  });

  it('which tools are slowest this week: stats --by tool --since 7d', async () => {
    const r = await run(['stats', '--by', 'tool', '--since', '7d', ...db]);
    expect(r.code).toBe(0);
    const got = JSON.parse(r.stdout); // JSON into a pipe
    const res = await t.query(
      `SELECT tool_name AS "group", count(*)::int AS count,
              count(*) FILTER (WHERE response_status <> 'success')::int AS errors,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
         FROM audit_log WHERE "timestamp" >= now() - interval '7 days'
        GROUP BY 1 ORDER BY 2 DESC, 1`,
    );
    expect(got.map((g: { group: string }) => g.group)).toEqual(res.rows.map((x) => x.group));
    for (const [i, g] of got.entries()) {
      expect(Object.keys(g)).toEqual([
        'group',
        'count',
        'errors',
        'error_rate',
        'p50_ms',
        'p95_ms',
        'p99_ms',
      ]);
      const w = res.rows[i]!;
      expect(g.count).toBe(w.count);
      expect(g.errors).toBe(w.errors);
      expect(g.error_rate).toBeCloseTo(w.errors / w.count, 12);
      expect(g.p95_ms).toBeCloseTo(w.p95, 2);
      expect(typeof g.p50_ms).toBe('number');
    }
    const table = await runInPty(['stats', '--by', 'tool', '--since', '7d', ...db], { COLUMNS: '100' });
    expect(table.code).toBe(0);
    expect(stripAnsi(table.stdout)).toMatch(/│ tool +│ +count │/);
  });
});

describe('export', () => {
  it('writes NDJSON to a .gz file (gzip) and CSV to a file; the same entries, oldest first', async () => {
    const gz = join(dir, 'all.ndjson.gz');
    const r = await run(['export', '--output', gz, ...db]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(''); // no progress line: stderr is not a terminal
    const lines = gunzipSync(readFileSync(gz)).toString('utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.map((l) => String(JSON.parse(l).id))).toEqual(await sqlIds('TRUE', 'ASC'));
    const csvFile = join(dir, 'all.csv');
    expect(
      (await run(['export', '--format', 'csv', '--output', csvFile, '--subject', 'bob', ...db])).code,
    ).toBe(0);
    const rows: Record<string, string>[] = parse(readFileSync(csvFile), { columns: true });
    expect(rows.map((x) => x.id)).toEqual(await sqlIds(`client_subject = 'bob'`, 'ASC'));
  });

  it('what export writes, replay reads back into the same entries', async () => {
    const file = join(dir, 'rt.ndjson');
    expect((await run(['export', '--output', file, ...db])).code).toBe(0);
    const other = await createTestDatabase('readrt');
    try {
      const r = await run(['replay', '--database-url', other.url, '--no-progress', file]);
      expect(r.code, r.stderr).toBe(0);
      // extra fields named id or received_at (or like a wire field) cannot come back: export never
      // lets them replace the real ones (CONTRACT.md §5)
      const dump = async (d: TestDatabase) =>
        (
          await d.pool.query({
            rowMode: 'array',
            text: `SELECT request_id::text, to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                          client_subject, client_role, tool_name, backend_name, request_args::text, response_status,
                          error_message, latency_ms::text,
                          NULLIF(extra - ARRAY['id', 'received_at', 'tool_name'], '{}'::jsonb)::text
                     FROM audit_log ORDER BY request_id, "timestamp"`,
          })
        ).rows;
      const [a, b] = [await dump(t), await dump(other)];
      expect(b.length).toBe(a.length);
      expect(b).toEqual(a);
    } finally {
      await other.drop();
    }
  });

  it('a progress line goes to stderr when stderr is a terminal', async () => {
    const out = join(dir, 'p.ndjson');
    const cmd = `${[process.execPath, join(process.cwd(), 'bin', 'audit-gateway'), 'export', '--output', out, ...db].map(shq).join(' ')}`;
    const r = await runCommand('script', ['-qfec', cmd, '/dev/null']);
    expect(r.code).toBe(0);
    // the last progress line is erased before the summary, so nothing is glued to it
    expect(r.stdout).toMatch(
      /\r\u001b\[Kaudit-gateway: exported 4,012 entries to .*p\.ndjson in [\d.]+ s\r?\n$/,
    );
    // --no-progress: the summary alone is gone too
    const quiet = await runCommand('script', ['-qfec', `${cmd} --no-progress`, '/dev/null']);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout).toBe('');
    // the data on the terminal itself: no progress line among them
    const toTty = `${[process.execPath, join(process.cwd(), 'bin', 'audit-gateway'), 'export', '--subject', 'alice', ...db].map(shq).join(' ')}`;
    const mixed = await runCommand('script', ['-qfec', toTty, '/dev/null']);
    expect(mixed.stdout).not.toMatch(/rows\/s|\u001b\[K/);
  });

  it('| head -n 1 on a large export exits quietly, and leaves no COPY running', async () => {
    for (const args of [
      ['export'],
      ['export', '--format', 'csv'],
      ['search', '--limit', '5000', '--output', 'ndjson'],
      ['tail', '--no-follow', '-n', '5000'],
    ]) {
      const cmd = `${[process.execPath, 'bin/audit-gateway', ...args, ...db].map(shq).join(' ')} | head -n 1; echo "rc=\${PIPESTATUS[0]}" >&2`;
      const r = await runCommand('bash', ['-c', cmd]);
      expect(r.stdout.split('\n').filter(Boolean), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toBe('rc=0\n');
    }
    await new Promise((res) => setTimeout(res, 1000));
    const left = await t.query(
      `SELECT query FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'COPY%' AND state = 'active'`,
    );
    expect(left.rows).toEqual([]);
  });
});

describe('terminal behaviour', () => {
  it('search is a coloured table that fits the width on a terminal, ndjson into a pipe', async () => {
    for (const columns of [80, 130, 200]) {
      const r = await runInPty(['search', '--limit', '30', ...db], { COLUMNS: String(columns) });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(ANSI);
      const lines = stripAnsi(r.stdout).trimEnd().split('\n');
      // the table, then (stderr on the same terminal) the note that --limit cut the result
      expect(lines.pop()).toMatch(/more entries match than the 30 shown/);
      if (columns === 80) {
        // nine columns do not fit 80: one block per entry, like psql's \x
        expect(lines[0]).toMatch(/^-\[ RECORD 1 \]-+$/);
        expect(lines.filter((l) => /^-\[ RECORD \d+ \]/.test(l))).toHaveLength(30);
      } else {
        expect(lines[0]).toMatch(/^┌/);
        expect(lines.length).toBe(30 + 4);
      }
      for (const l of lines) expect([...l].length, l).toBeLessThanOrEqual(columns);
    }
    const pipe = await run(['search', '--limit', '3', ...db]);
    expect(pipe.stdout).not.toMatch(ANSI);
    expect(ndjsonIds(pipe.stdout)).toHaveLength(3);
  });

  it('no colours with NO_COLOR, --no-color, or in a pipe; FORCE_COLOR forces them', async () => {
    const args = ['search', '--limit', '5', '--output', 'table', ...db];
    expect((await runInPty(args, { NO_COLOR: '1', COLUMNS: '120' })).stdout).not.toMatch(ANSI);
    expect((await runInPty([...args, '--no-color'], { COLUMNS: '120' })).stdout).not.toMatch(ANSI);
    expect((await run(args)).stdout).not.toMatch(ANSI);
    expect((await run(args, { env: { FORCE_COLOR: '1' } })).stdout).toMatch(ANSI);
    const tailArgs = ['tail', '--no-follow', '-n', '5', ...db];
    expect((await runInPty(tailArgs, { COLUMNS: '120' })).stdout).toMatch(ANSI);
    expect((await runInPty(tailArgs, { NO_COLOR: '1', COLUMNS: '120' })).stdout).not.toMatch(ANSI);
    const plain = await run(tailArgs);
    expect(plain.stdout).not.toMatch(ANSI);
    expect(plain.stdout.trimEnd().split('\n')).toHaveLength(5);
  });

  it('every read command has --help with examples', async () => {
    for (const c of ['tail', 'search', 'export', 'stats']) {
      const r = await run([c, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Examples:');
      expect(r.stdout).toContain('--since <time>');
    }
  });
});

describe('errors: one line, naming the thing', () => {
  const bad: [string[], string][] = [
    [['search', '--since', 'last tuesday'], '--since'],
    [['export', '--until', '2026-13-01'], '--until'],
    [['stats', '--since', '5 parsecs'], '--since'],
    [['tail', '--until', 'nope', '--no-follow'], '--until'],
    [['search', '--limit', '-1'], '--limit'],
    [['search', '--order', 'up'], '--order'],
    [['search', '--output', 'xml'], '--output'],
    [['search', '--request-id', 'not-a-uuid'], '--request-id'],
    [['search', '--min-latency', 'fast'], '--min-latency'],
    [['search', '--arg', 'novalue'], '--arg'],
    [['stats', '--by', 'colour'], '--by'],
    [['stats', '--output', 'csv'], '--output'],
    [['tail', '-n', 'ten'], '--lines'],
    [['tail', '--output', 'table'], '--output'],
    [['export', '--format', 'xml'], '--format'],
  ];
  it.each(bad)('%j exits 2 naming %s', async (args, flag) => {
    const r = await run([...args, ...db]);
    expect(r.code).toBe(2);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(flag);
    expect(r.stdout).toBe('');
  });

  it('a bad TIME says what a TIME may be', async () => {
    const r = await run(['search', '--since', 'last tuesday', ...db]);
    expect(r.stderr).toMatch(
      /--since: 'last tuesday' is not a TIME; use RFC 3339 .*now, today, yesterday.*90s, 15m, 2h, 7d/,
    );
  });

  it.each([['tail'], ['tail', '--no-follow'], ['search'], ['export'], ['stats']])(
    'an unreachable database: %j exits 1 with one line naming host and port',
    async (...args) => {
      const r = await run([...args, '--database-url', 'postgres://127.0.0.1:1/x']);
      expect(r.code).toBe(1);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain('127.0.0.1:1');
    },
  );
});
