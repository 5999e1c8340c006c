/**
 * The read path against a real Postgres (CONTRACT.md §5): every filter and some combinations,
 * checked against an independent evaluation in JS of the seeded rows; the COPY path (literals) and
 * the bind-parameter path agree; index use (EXPLAIN); NDJSON round-trips to the stored rows; CSV
 * parses with a real CSV parser; stats against its own computation.
 */
import { Writable } from 'node:stream';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withClient } from '../../src/db/connect.js';
import type { Filters } from '../../src/db/filter.js';
import {
  CSV_COLUMNS,
  ENTRY_FIELDS,
  entriesAfterQuery,
  entriesQuery,
  selectEntries,
  statsBy,
} from '../../src/db/queries.js';
import { silentLogger } from '../../src/log.js';
import { type StreamFormat, streamEntries } from '../../src/read/stream.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { SPECIAL, seedEntries } from '../helpers/seed.js';

interface Ref {
  id: string;
  us: bigint;
  ts: string;
  request_id: string;
  subject: string;
  role: string | null;
  tool: string;
  backend: string | null;
  status: string;
  error: string | null;
  latency: bigint | null;
  args: unknown;
}

let t: TestDatabase;
let all: Ref[];

beforeAll(async () => {
  t = await createTestDatabase('read');
  await seedEntries(t, 4000);
  const res = await t.query(
    `SELECT id::text AS id, (extract(epoch FROM "timestamp") * 1000000)::bigint::text AS us,
            to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts, request_id::text,
            client_subject, client_role, tool_name, backend_name, response_status, error_message,
            latency_ms::text AS latency, request_args::text AS args
       FROM audit_log`,
  );
  all = res.rows.map((r) => ({
    id: r.id,
    us: BigInt(r.us),
    ts: r.ts,
    request_id: r.request_id,
    subject: r.client_subject,
    role: r.client_role,
    tool: r.tool_name,
    backend: r.backend_name,
    status: r.response_status,
    error: r.error_message,
    latency: r.latency === null ? null : BigInt(r.latency),
    args: r.args === null ? null : JSON.parse(r.args),
  }));
});

afterAll(async () => {
  await t?.drop();
});

/** The rows a predicate picks, in contract order (timestamp, then id). */
function expected(pred: (r: Ref) => boolean, order: 'asc' | 'desc' = 'asc'): string[] {
  const rows = all
    .filter(pred)
    .sort((a, b) => (a.us === b.us ? Number(BigInt(a.id) - BigInt(b.id)) : a.us < b.us ? -1 : 1));
  if (order === 'desc') rows.reverse();
  return rows.map((r) => r.id);
}

/** `*` as the only wildcard, in JS. */
function wild(pattern: string): (v: string | null) => boolean {
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    's',
  );
  return (v) => v !== null && re.test(v);
}

const byId = (id: string) => all.find((r) => r.request_id === id)!;

async function viaParams(filters: Filters, order: 'asc' | 'desc' = 'asc', limit?: number): Promise<string[]> {
  const rows = await withClient(t.pool, t.db, (c) => selectEntries(c, filters, { order, limit }));
  return rows.map((r) => r.id);
}

async function streamText(
  filters: Filters,
  format: StreamFormat,
  order: 'asc' | 'desc' = 'asc',
  limit?: number,
) {
  let text = '';
  const sink = new Writable({
    write(chunk, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  const { rows } = await streamEntries(t.pool, t.db, silentLogger(), {
    filters,
    format,
    order,
    limit,
    destinations: [sink],
    end: true,
  });
  return { text, rows };
}

async function viaCopy(filters: Filters, order: 'asc' | 'desc' = 'asc', limit?: number): Promise<string[]> {
  const { text } = await streamText(filters, 'ndjson', order, limit);
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => String(JSON.parse(l).id));
}

const argHas = (key: string, value: unknown) => (r: Ref) =>
  r.args !== null &&
  typeof r.args === 'object' &&
  !Array.isArray(r.args) &&
  JSON.stringify((r.args as Record<string, unknown>)[key]) === JSON.stringify(value);

describe('filters', () => {
  const lower = (s: string | null) => (s === null ? null : s.toLowerCase());
  const cases: [string, Filters, (r: Ref) => boolean][] = [
    ['--subject alice', { subject: 'alice' }, (r) => r.subject === 'alice'],
    ['--subject "" (anonymous)', { subject: '' }, (r) => r.subject === ''],
    ['--subject with % _ \\ literal', { subject: 'x%y_z\\w' }, (r) => r.subject === 'x%y_z\\w'],
    ['--subject x%* (wildcard after a literal %)', { subject: 'x%*' }, (r) => r.subject.startsWith('x%')],
    ['--subject x_y* (_ is not a wildcard)', { subject: 'x_y*' }, (r) => r.subject.startsWith('x_y')],
    ['--subject *a*', { subject: '*a*' }, (r) => wild('*a*')(r.subject)],
    ['--subject user:*', { subject: 'user:*' }, (r) => r.subject.startsWith('user:')],
    ['--role admin', { role: 'admin' }, (r) => r.role === 'admin'],
    ['--role ro% (literal %)', { role: 'ro%' }, (r) => r.role === 'ro%'],
    ['--role * (any role, not null)', { role: '*' }, (r) => r.role !== null],
    ['--tool fs.*', { tool: 'fs.*' }, (r) => r.tool.startsWith('fs.')],
    ['--tool with quotes, comma, tab', { tool: 'a,b;"c"\t|d' }, (r) => r.tool === 'a,b;"c"\t|d'],
    ['--backend back%end', { backend: 'back%end' }, (r) => r.backend === 'back%end'],
    ['--backend *proxy', { backend: '*proxy' }, (r) => r.backend?.endsWith('proxy') === true],
    ['--status error', { status: 'error' }, (r) => r.status === 'error'],
    ['--status *o*', { status: '*o*' }, (r) => r.status.includes('o')],
    ['--request-id', { requestId: SPECIAL.unicode }, (r) => r.request_id === SPECIAL.unicode],
    ['--errors', { errors: true }, (r) => r.status !== 'success'],
    [
      '--min-latency 1000 (inclusive)',
      { minLatencyMs: '1000' },
      (r) => r.latency !== null && r.latency >= 1000n,
    ],
    ['--arg n=5 (number)', { args: ['{"n":5}'] }, argHas('n', 5)],
    ['--arg path=/data/10 (string)', { args: ['{"path":"/data/10"}'] }, argHas('path', '/data/10')],
    [
      '--arg opts={"deep":true} (nested containment)',
      { args: ['{"opts":{"deep":true}}'] },
      (r) => (r.args as { opts?: { deep?: boolean } } | null)?.opts?.deep === true,
    ],
    [
      '--arg big=12345678901234567890 (every digit)',
      { args: ['{"big":12345678901234567890}'] },
      (r) => r.request_id === SPECIAL.bigNumber,
    ],
    [
      '--arg big=12345678901234567891 (one digit off)',
      { args: ['{"big":12345678901234567891}'] },
      () => false,
    ],
    ['two --arg', { args: ['{"n":6}', '{"opts":{"deep":true}}'] }, argHas('n', 6)],
    [
      '--text (case-insensitive)',
      { text: 'PERMISSION denied' },
      (r) => lower(r.error)?.includes('permission denied') === true,
    ],
    ['--text 50% done_ (literal)', { text: '50% done_' }, (r) => r.error?.includes('50% done_') === true],
    ['--text %', { text: '%' }, (r) => r.error?.includes('%') === true],
    ['--text _', { text: '_' }, (r) => r.error?.includes('_') === true],
    ['--text \\', { text: '\\' }, (r) => r.error?.includes('\\') === true],
    [
      '--subject alice --errors --tool fs.*',
      { subject: 'alice', errors: true, tool: 'fs.*' },
      (r) => r.subject === 'alice' && r.status !== 'success' && r.tool.startsWith('fs.'),
    ],
    [
      '--role admin --min-latency 500 --backend fs-main --status success',
      { role: 'admin', minLatencyMs: '500', backend: 'fs-main', status: 'success' },
      (r) =>
        r.role === 'admin' &&
        r.latency !== null &&
        r.latency >= 500n &&
        r.backend === 'fs-main' &&
        r.status === 'success',
    ],
  ];

  it.each(cases)('%s', async (_name, filters, pred) => {
    const want = expected(pred);
    expect(await viaParams(filters)).toEqual(want);
    expect(await viaCopy(filters)).toEqual(want);
  });

  it('the seed covers what the cases need', () => {
    expect(all.length).toBe(4012);
    expect(all.some((r) => r.latency === 1000n)).toBe(true);
    expect(expected((r) => r.subject === 'alice').length).toBeGreaterThan(500);
  });

  it('--since is inclusive and --until exclusive, to the microsecond', async () => {
    const x = byId(SPECIAL.unicode);
    const since = expected((r) => r.us >= x.us);
    expect(await viaParams({ since: x.ts })).toEqual(since);
    expect(await viaCopy({ since: x.ts })).toEqual(since);
    expect(since).toContain(x.id);
    const until = expected((r) => r.us < x.us);
    expect(await viaParams({ until: x.ts })).toEqual(until);
    expect(until).not.toContain(x.id);
    const oneUs = `${x.ts.slice(0, 20)}${String(Number(x.ts.slice(20, 26)) + 1).padStart(6, '0')}Z`;
    expect(await viaParams({ since: x.ts, until: oneUs })).toEqual([x.id]);
  });

  it('orders by timestamp then id, desc reversing both, with --limit', async () => {
    const a = byId(SPECIAL.tieA).id;
    const b = byId(SPECIAL.tieB).id;
    const asc = await viaParams({ subject: 'alice', tool: 'fs.write', role: 'admin' }, 'asc');
    expect(asc.indexOf(a)).toBe(asc.indexOf(b) - 1);
    const desc = await viaParams({ subject: 'alice', tool: 'fs.write', role: 'admin' }, 'desc');
    expect(desc).toEqual([...asc].reverse());
    expect(await viaParams({}, 'desc', 7)).toEqual(expected(() => true, 'desc').slice(0, 7));
    expect(await viaCopy({}, 'desc', 7)).toEqual(expected(() => true, 'desc').slice(0, 7));
    expect(await viaCopy({ errors: true }, 'asc', 3)).toEqual(
      expected((r) => r.status !== 'success').slice(0, 3),
    );
    expect(await viaParams({}, 'asc', 0)).toEqual([]);
  });
});

/**
 * The indexes that stand for `parent` (an index on audit_log) in the plan: itself and its partitions'
 * indexes (CONTRACT.md §10: every partition carries every index of audit_log).
 */
async function indexNames(parent: string): Promise<RegExp> {
  const r = await t.query<{ relname: string }>(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass`,
    [parent],
  );
  expect(r.rows.length).toBeGreaterThan(0);
  return new RegExp(`\\b(${[parent, ...r.rows.map((x) => x.relname)].join('|')})\\b`);
}

describe('index use (EXPLAIN with enable_seqscan off)', () => {
  const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
  const cases: [string, Filters, string][] = [
    [
      '--since/--until',
      { since: `${yesterday}T00:00:00Z`, until: `${yesterday}T06:00:00Z` },
      'audit_log_timestamp_request_id_key',
    ],
    // a selective value: for a common one, walking the timestamp index backwards is the better plan
    ['--subject', { subject: '中村' }, 'audit_log_client_subject_idx'],
    ['--tool', { tool: 'ツール' }, 'audit_log_tool_name_idx'],
    ['--request-id', { requestId: SPECIAL.unicode }, 'audit_log_request_id_hash_idx'],
  ];
  it.each(cases)('%s uses %s', async (_name, filters, index) => {
    await withClient(t.pool, t.db, async (c) => {
      await c.query('SET enable_seqscan = off');
      try {
        const q = entriesQuery(filters, { order: 'desc', limit: 100 });
        const plan = await c.query(`EXPLAIN ${q.text}`, q.values);
        expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(await indexNames(index));
      } finally {
        await c.query('RESET enable_seqscan');
      }
    });
  });

  it("tail's follow query uses the primary key", async () => {
    await withClient(t.pool, t.db, async (c) => {
      await c.query('SET enable_seqscan = off');
      try {
        const q = entriesAfterQuery({ subject: 'alice' }, '4000', 1000);
        const plan = (await c.query(`EXPLAIN ${q.text}`, q.values)).rows
          .map((r) => r['QUERY PLAN'])
          .join('\n');
        const pkey = await indexNames('audit_log_pkey');
        const subject = await indexNames('audit_log_client_subject_idx');
        expect(pkey.test(plan) || subject.test(plan), plan).toBe(true);
      } finally {
        await c.query('RESET enable_seqscan');
      }
    });
  });
});

describe('NDJSON export round-trips to the stored rows', () => {
  it('every field equal (request_args deep-equal, times to the microsecond), all fields present', async () => {
    const { text, rows } = await streamText({}, 'ndjson');
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(rows).toBe(all.length);
    expect(lines.map((l) => String(JSON.parse(l).id))).toEqual(expected(() => true));
    const fields = `ARRAY[${ENTRY_FIELDS.map((f) => `'${f}'`).join(',')}]`;
    const res = await t.query<{ id: string; bad: string[] }>(
      `WITH e AS (SELECT l::jsonb AS j FROM unnest($1::text[]) AS u(l))
       SELECT a.id::text AS id, ARRAY_REMOVE(ARRAY[
         CASE WHEN NOT (j ?& ${fields}) THEN 'missing fields' END,
         CASE WHEN jsonb_typeof(j->'id') <> 'number' THEN 'id type' END,
         CASE WHEN (j->>'request_id')::uuid <> a.request_id THEN 'request_id' END,
         CASE WHEN j->>'timestamp' !~ '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z$'
                OR (j->>'timestamp')::timestamptz <> a."timestamp" THEN 'timestamp' END,
         CASE WHEN j->>'received_at' !~ '\\.\\d{6}Z$' OR (j->>'received_at')::timestamptz <> a.received_at THEN 'received_at' END,
         CASE WHEN j->'client_subject' <> to_jsonb(a.client_subject) THEN 'client_subject' END,
         CASE WHEN j->'client_role' <> COALESCE(to_jsonb(a.client_role), 'null') THEN 'client_role' END,
         CASE WHEN j->'tool_name' <> to_jsonb(a.tool_name) THEN 'tool_name' END,
         CASE WHEN j->'backend_name' <> COALESCE(to_jsonb(a.backend_name), 'null') THEN 'backend_name' END,
         CASE WHEN j->'request_args' <> COALESCE(a.request_args, 'null') THEN 'request_args' END,
         CASE WHEN j->'response_status' <> to_jsonb(a.response_status) THEN 'response_status' END,
         CASE WHEN j->'error_message' <> COALESCE(to_jsonb(a.error_message), 'null') THEN 'error_message' END,
         CASE WHEN j->'latency_ms' <> COALESCE(to_jsonb(a.latency_ms), 'null') THEN 'latency_ms' END,
         CASE WHEN (j - ${fields}) <> COALESCE(a.extra - ${fields}, '{}') THEN 'extra' END
       ], NULL) AS bad
       FROM e LEFT JOIN audit_log a ON a.id = (e.j->>'id')::bigint`,
      [lines],
    );
    expect(res.rows.filter((r) => r.bad.length > 0)).toEqual([]);
    expect(res.rows).toHaveLength(all.length);
  });

  it('keeps big numbers as text, extra fields at the top level, id and wire fields winning', async () => {
    const big = (await streamText({ requestId: SPECIAL.bigNumber }, 'ndjson')).text;
    expect(big).toContain('"big": 12345678901234567890');
    expect(big).toContain('18446744073709551617');
    const line = (await streamText({ requestId: SPECIAL.extra }, 'ndjson')).text;
    const o = JSON.parse(line);
    expect(o.id).toBe(Number(byId(SPECIAL.extra).id));
    expect(o.tool_name).toBe('http.get');
    expect(o.received_at).not.toBe('never');
    expect(o.trace_id).toBe('abc');
    expect(line).toContain('"span":{"n": 12345678901234567890}');
    expect(Object.keys(o).slice(0, ENTRY_FIELDS.length)).toEqual([...ENTRY_FIELDS]);
    const nulls = JSON.parse((await streamText({ requestId: SPECIAL.nulls }, 'ndjson')).text);
    for (const f of ['client_role', 'backend_name', 'request_args', 'error_message', 'latency_ms']) {
      expect(nulls[f], f).toBeNull();
    }
    const empties = JSON.parse((await streamText({ requestId: SPECIAL.empties }, 'ndjson')).text);
    expect([
      empties.client_subject,
      empties.client_role,
      empties.backend_name,
      empties.error_message,
    ]).toEqual(['', '', '', '']);
    expect(empties.request_args).toEqual({});
    const c12 = JSON.parse((await streamText({ requestId: SPECIAL.backslash }, 'ndjson')).text);
    expect(c12.error_message).toBe('line1\nline2\tcol2\\share\r\n\\.\n\\N');
    expect(c12.tool_name).toBe('a,b;"c"\t|d');
    expect(c12.request_args).toEqual({ path: 'C:\\temp\\new', msg: 'say "hi"\ttab', nl: 'x\ny' });
    const ctrl = JSON.parse((await streamText({ requestId: SPECIAL.copyEscapes }, 'ndjson')).text);
    expect(ctrl.error_message).toBe('ctrl \u0001\u0008\u000b\u000c chars');
    expect(ctrl.request_args).toBe('plain \\ string');
  });

  it('json output is one array of the same objects', async () => {
    const { text } = await streamText({ subject: 'bob' }, 'json', 'desc', 5);
    const arr = JSON.parse(text);
    expect(arr.map((o: { id: number }) => String(o.id))).toEqual(
      expected((r) => r.subject === 'bob', 'desc').slice(0, 5),
    );
    expect(JSON.parse((await streamText({ subject: 'nobody' }, 'json')).text)).toEqual([]);
  });
});

describe('CSV', () => {
  it('is RFC 4180 that a CSV parser reads back: header, quoting, NULL as an empty field', async () => {
    const { text } = await streamText({}, 'csv');
    expect(text.startsWith(`${CSV_COLUMNS.join(',')}\r\n`)).toBe(true);
    const records: (string | null)[][] = parse(text, {
      cast: (value, ctx) => (ctx.quoting || value !== '' ? value : null),
    });
    expect(records[0]).toEqual([...CSV_COLUMNS]);
    const body = records.slice(1);
    expect(body.map((r) => r[0])).toEqual(expected(() => true));
    const dump = await t.pool.query({
      rowMode: 'array',
      text: `SELECT id::text, request_id::text, to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              client_subject, client_role, tool_name, backend_name, request_args::text, response_status,
              error_message, latency_ms::text, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              extra::text
         FROM audit_log ORDER BY audit_log."timestamp", audit_log.id`,
    });
    const want = dump.rows;
    expect(body).toEqual(want);
    const e = body.find((r) => r[1] === SPECIAL.empties)!;
    const n = body.find((r) => r[1] === SPECIAL.nulls)!;
    expect([e[4], n[4]]).toEqual(['', null]); // client_role '' vs NULL
  });
});

describe('stats', () => {
  function percentile(sorted: number[], p: number): number | null {
    if (sorted.length === 0) return null;
    const pos = p * (sorted.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.ceil(pos);
    return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
  }

  const cases: [
    string,
    Filters,
    'tool' | 'subject' | 'role' | 'status' | 'backend',
    (r: Ref) => boolean,
    (r: Ref) => string | null,
  ][] = [
    ['by tool', {}, 'tool', () => true, (r) => r.tool],
    ['by subject, errors only', { errors: true }, 'subject', (r) => r.status !== 'success', (r) => r.subject],
    ['by role (null group)', {}, 'role', () => true, (r) => r.role],
    ['by backend for fs.*', { tool: 'fs.*' }, 'backend', (r) => r.tool.startsWith('fs.'), (r) => r.backend],
    ['by status', {}, 'status', () => true, (r) => r.status],
  ];
  it.each(cases)('%s', async (_name, filters, by, pred, key) => {
    const got = await withClient(t.pool, t.db, (c) => statsBy(c, filters, by));
    const groups = new Map<string | null, Ref[]>();
    for (const r of all.filter(pred)) groups.set(key(r), [...(groups.get(key(r)) ?? []), r]);
    const want = [...groups.entries()]
      .map(([group, rows]) => {
        const lat = rows
          .filter((r) => r.latency !== null)
          .map((r) => Number(r.latency))
          .sort((a, b) => a - b);
        const errors = rows.filter((r) => r.status !== 'success').length;
        return { group, count: rows.length, errors, error_rate: errors / rows.length, lat };
      })
      .sort((a, b) =>
        a.count !== b.count
          ? b.count - a.count
          : a.group === null
            ? 1
            : b.group === null
              ? -1
              : Buffer.compare(Buffer.from(a.group), Buffer.from(b.group)),
      );
    expect(got.map((g) => g.group)).toEqual(want.map((w) => w.group));
    for (const [i, w] of want.entries()) {
      const g = got[i]!;
      expect(typeof g.count).toBe('number');
      expect([g.count, g.errors]).toEqual([w.count, w.errors]);
      expect(g.error_rate).toBeCloseTo(w.error_rate, 12);
      for (const [p, k] of [
        [0.5, 'p50_ms'],
        [0.95, 'p95_ms'],
        [0.99, 'p99_ms'],
      ] as const) {
        const v = percentile(w.lat, p);
        if (v === null) expect(g[k]).toBeNull();
        else expect(g[k]).toBeCloseTo(v, 2);
      }
    }
  });
});
