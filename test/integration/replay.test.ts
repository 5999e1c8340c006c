/**
 * `audit-gateway replay` (the built binary; CONTRACT.md §5, §7): idempotent loading of NDJSON files,
 * gzip detected by content, spool segments, stdin, a missing file, rejects in audit_reject, and the
 * export → replay round trip.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeRecord, SPOOL_MAGIC } from '../../src/ingest/spool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';
import { seedEntries } from '../helpers/seed.js';
import { BIN, cleanEnv, cleanupServes, type RunResult, run, tempDir } from '../helpers/serve.js';

let t: TestDatabase;
let dir: string;

beforeAll(async () => {
  t = await createTestDatabase('replay');
  dir = await tempDir('ag-replay-');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

function replay(args: string[], opts: { url?: string; input?: string | Buffer } = {}): Promise<RunResult> {
  return run(process.execPath, [BIN, 'replay', '--database-url', opts.url ?? t.url, ...args], {
    env: cleanEnv(),
    input: opts.input,
    timeoutMs: 60_000,
  });
}

const id = (tag: string, n: number) => `${tag}-0000-4000-8000-${n.toString().padStart(12, '0')}`;

function entryLine(tag: string, n: number): string {
  return JSON.stringify({
    request_id: id(tag, n),
    timestamp: `2024-05-01T12:00:${String(n % 60).padStart(2, '0')}.${String(n).padStart(6, '0')}Z`,
    client_subject: 'user:ada.example',
    client_role: n % 2 ? 'analyst' : null,
    tool_name: 'sql.query',
    backend_name: 'pg-reports',
    request_args: { q: `select ${n}` },
    response_status: 'ok',
    error_message: null,
    latency_ms: n,
  });
}

/**
 * An NDJSON file body: `n` valid entries and 3 invalid lines (at physical lines 5, 10, 15 when
 * n ≥ 12), no blank lines. Returns the body and the physical line numbers of the invalid ones.
 */
function body(tag: string, n: number): { text: string; bad: Map<number, string> } {
  const invalid = [
    'this is not json',
    JSON.stringify({ request_id: id(tag, 9001), timestamp: '2024-05-01T12:00:00Z', tool_name: 'x' }),
    JSON.stringify({
      request_id: id(tag, 9002),
      timestamp: 'yesterday',
      client_subject: 'a',
      tool_name: 'x',
      response_status: 'ok',
    }),
  ];
  const lines: string[] = [];
  const bad = new Map<number, string>();
  let next = 1;
  let k = 0;
  while (next <= n || k < invalid.length) {
    if (k < invalid.length && ((lines.length + 1) % 5 === 0 || next > n)) {
      lines.push(invalid[k]!);
      bad.set(lines.length, invalid[k]!);
      k++;
    } else lines.push(entryLine(tag, next++));
  }
  return { text: `${lines.join('\n')}\n`, bad };
}

async function storedCount(tag: string): Promise<{ rows: number; distinct: number }> {
  const r = await t.query<{ n: string; d: string }>(
    'SELECT count(*)::text AS n, count(DISTINCT request_id)::text AS d FROM audit_log WHERE request_id::text LIKE $1',
    [`${tag}-%`],
  );
  return { rows: Number(r.rows[0]!.n), distinct: Number(r.rows[0]!.d) };
}

describe('replay', () => {
  it('the same file twice: "read N, stored N-R, skipped 0, rejected R", then "stored 0, skipped N-R"; rejects named replay:<file>:<line>', async () => {
    const tag = 'e7010000';
    const { text, bad } = body(tag, 40);
    const file = join(dir, 'entries.ndjson');
    await writeFile(file, text);
    const first = await replay([file]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe('read 43, stored 40, skipped 0, rejected 3\n');
    const second = await replay([file]);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe('read 43, stored 0, skipped 40, rejected 3\n');
    expect(await storedCount(tag)).toEqual({ rows: 40, distinct: 40 });

    const rejects = await t.query<{ source: string; raw: Buffer; reason: string }>(
      'SELECT source, raw, reason FROM audit_reject WHERE source LIKE $1 ORDER BY id',
      [`replay:${file}:%`],
    );
    // The same line of the same file is the same reject: stored once (issue 10, audit_reject.reject_key).
    const expected = [...bad].map(([lineNo, raw]) => ({ source: `replay:${file}:${lineNo}`, raw }));
    expect(rejects.rows.map((r) => ({ source: r.source, raw: r.raw.toString('utf8') }))).toEqual(expected);
    expect(rejects.rows.every((r) => r.reason.length > 0)).toBe(true);
    expect(rejects.rows[2]!.reason).toMatch(/^timestamp/);
  });

  it('with blank lines in the file, a reject names the physical line of the file', async () => {
    const tag = 'e7020000';
    const file = join(dir, 'blanks.ndjson');
    // line 1 entry, line 2 blank, line 3 blank (spaces), line 4 the bad one, line 5 entry
    await writeFile(file, `${entryLine(tag, 1)}\n\n   \nnot json at line 4\n${entryLine(tag, 2)}\n`);
    const r = await replay([file]);
    expect(r.stdout).toBe('read 3, stored 2, skipped 0, rejected 1\n');
    const rejects = await t.query<{ source: string }>(
      'SELECT source FROM audit_reject WHERE source LIKE $1',
      [`replay:${file}:%`],
    );
    expect(rejects.rows.map((x) => x.source)).toEqual([`replay:${file}:4`]);
  });

  it('gzip is detected by content (a name without .gz); the spool segment format is read as such; "-" reads stdin', async () => {
    // gzip
    const gtag = 'e7030000';
    const gz = join(dir, 'compressed.data');
    await writeFile(gz, gzipSync(body(gtag, 30).text));
    const g1 = await replay([gz]);
    expect(g1.code).toBe(0);
    expect(g1.stdout).toBe('read 33, stored 30, skipped 0, rejected 3\n');
    expect((await replay([gz])).stdout).toBe('read 33, stored 0, skipped 30, rejected 3\n');
    expect(await storedCount(gtag)).toEqual({ rows: 30, distinct: 30 });

    // a spool segment: two records (20 entries and one reject)
    const stag = 'e7040000';
    const entries = Array.from({ length: 20 }, (_, k) =>
      writeEntryOf(entryLine(stag, k + 1), `seg ${k + 1}`),
    );
    const seg = join(dir, 'spool-0000000000000007.seg');
    await writeFile(
      seg,
      Buffer.concat([
        SPOOL_MAGIC,
        encodeRecord(entries.slice(0, 12), []),
        encodeRecord(entries.slice(12), [
          { source: `${stag} reject`, reason: 'latency_ms: test', raw: Buffer.from('{}') },
        ]),
      ]),
    );
    const s1 = await replay([seg]);
    expect(s1.code).toBe(0);
    expect(s1.stdout).toBe('read 21, stored 20, skipped 0, rejected 1\n');
    expect((await replay([seg])).stdout).toBe('read 21, stored 0, skipped 20, rejected 1\n');
    expect(await storedCount(stag)).toEqual({ rows: 20, distinct: 20 });

    // stdin
    const itag = 'e7050000';
    const { text } = body(itag, 25);
    const i1 = await replay(['-'], { input: text });
    expect(i1.code).toBe(0);
    expect(i1.stdout).toBe('read 28, stored 25, skipped 0, rejected 3\n');
    expect((await replay(['-'], { input: gzipSync(text) })).stdout).toBe(
      'read 28, stored 0, skipped 25, rejected 3\n',
    );
    expect(await storedCount(itag)).toEqual({ rows: 25, distinct: 25 });
    const src = await t.query<{ source: string }>(
      `SELECT DISTINCT source FROM audit_reject WHERE source LIKE 'replay:stdin:%' ORDER BY source`,
    );
    expect(src.rows.map((r) => r.source)).toEqual(['replay:stdin:10', 'replay:stdin:15', 'replay:stdin:5']);
  });

  it('a missing file: exit 1, one line on stderr naming it, nothing loaded (not even the files before it)', async () => {
    const tag = 'e7060000';
    const good = join(dir, 'good-before-missing.ndjson');
    await writeFile(good, body(tag, 10).text);
    const missing = join(dir, 'no-such-file.ndjson');
    const r = await replay([good, missing]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').filter((l) => l.length > 0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(missing);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await storedCount(tag)).toEqual({ rows: 0, distinct: 0 });
  });
});

describe('export → replay round trip', () => {
  let a: TestDatabase;
  let b: TestDatabase;
  beforeAll(async () => {
    a = await createTestDatabase('rtA');
    b = await createTestDatabase('rtB');
    await seedEntries(a, 2000);
  });
  afterAll(async () => {
    await a?.drop();
    await b?.drop();
  });

  it('export NDJSON from one database, replay into a fresh one: every field equal (args deep-equal, µs timestamps, extra)', async () => {
    const file = join(dir, 'export.ndjson');
    const ex = await run(process.execPath, [BIN, 'export', '--database-url', a.url, '--output', file], {
      env: cleanEnv(),
      timeoutMs: 60_000,
    });
    expect(ex.stderr).toBe('');
    expect(ex.code).toBe(0);
    const total = Number(
      (await a.query<{ n: string }>('SELECT count(*)::text AS n FROM audit_log')).rows[0]!.n,
    );
    const r = await replay([file], { url: b.url });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`read ${total}, stored ${total}, skipped 0, rejected 0\n`);

    // Extra fields named like entry fields (or id, received_at) cannot come back at the top level
    // of an export (CONTRACT.md §5): compare extra without them.
    const SQL = `SELECT request_id::text, (extract(epoch FROM "timestamp") * 1000000)::bigint::text AS ts_us,
        client_subject, client_role, tool_name, backend_name, request_args::text AS args, response_status,
        error_message, latency_ms::text AS latency_ms,
        nullif(extra - ARRAY['id','received_at','request_id','timestamp','client_subject','client_role',
          'tool_name','backend_name','request_args','response_status','error_message','latency_ms'], '{}'::jsonb)::text AS extra
      FROM audit_log ORDER BY request_id, "timestamp"`;
    const before = (await a.query(SQL)).rows;
    const after = (await b.query(SQL)).rows;
    expect(after).toHaveLength(before.length);
    for (let i = 0; i < before.length; i++) expect(after[i]).toEqual(before[i]);
    expect(before.some((row) => String(row.args).includes('12345678901234567890'))).toBe(true);
    expect(before.some((row) => row.extra !== null)).toBe(true);
    // Replaying the export again changes nothing.
    expect((await replay([file], { url: b.url })).stdout).toBe(
      `read ${total}, stored 0, skipped ${total}, rejected 0\n`,
    );
  });
});
