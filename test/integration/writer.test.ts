/**
 * BatchWriter against a real Postgres: the COPY and INSERT paths store the same bytes, a refused
 * batch is split until the bad rows are found, stored keys are never stored twice, and every commit
 * sends NOTIFY audit_log with the highest id.
 */
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter, type WriteEntry } from '../../src/db/writer.js';
import { silentLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

let t: TestDatabase;

const entry = (line: string): WriteEntry => writeEntryOf(line);

function line(id: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    request_id: id,
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada.example',
    client_role: 'analyst',
    tool_name: 'sql.query',
    backend_name: 'pg-reports',
    request_args: { q: 'select 1' },
    response_status: 'ok',
    error_message: null,
    latency_ms: 12,
    ...over,
  });
}

const id = (prefix: string, n: number) => `${prefix}-0000-4000-8000-${n.toString().padStart(12, '0')}`;

/** Every column of the rows with this request_id prefix, as hex of the text form, to compare bytes. */
async function rowsHex(prefix: string): Promise<string[]> {
  const r = await t.query<{ h: string }>(
    `SELECT encode(convert_to(concat_ws('|', "timestamp"::text, client_subject, client_role, tool_name, backend_name,
       request_args::text, jsonb_typeof(request_args), response_status, error_message, latency_ms::text, extra::text), 'UTF8'), 'hex') AS h
     FROM audit_log WHERE request_id::text LIKE $1 ORDER BY request_id`,
    [`${prefix}%`],
  );
  return r.rows.map((x) => x.h);
}

beforeAll(async () => {
  t = await createTestDatabase('writer');
});
afterAll(async () => {
  await t?.drop();
});

describe('BatchWriter', () => {
  const tricky = [
    { client_subject: 'user:ada\u0000.example', error_message: 'upstream sent \u0000 then closed' },
    {
      tool_name: 'a,b;"c"\t|d',
      request_args: { path: 'C:\\temp\\new', msg: 'say "hi"\ttab', nl: 'x\ny' },
      error_message: 'line1\nline2\tcol2\\share\r\n\\.\n\\N',
    },
    { request_args: ['a', 1, { k: null }] },
    { request_args: 'plain string' },
    { request_args: 42 },
    { request_args: null },
    { request_args: {} },
    { request_args: { q: 'smile 😀', big: 1 }, extra_field: { x: [1, 2, 3] } },
    { client_role: null, backend_name: null, latency_ms: null },
  ];

  it('COPY and INSERT store identical bytes (C02, C12, C23)', async () => {
    const w = new BatchWriter(t.pool, silentLogger(), { copyMinRows: 1 });
    const viaCopy = await w.write(
      tricky.map((o, i) => entry(line(id('a0000000', i), o))),
      [],
    );
    expect(viaCopy.path).toBe('copy');
    expect(viaCopy.stored).toBe(tricky.length);
    const wi = new BatchWriter(t.pool, silentLogger(), { copyMinRows: 1_000_000 });
    const viaInsert = await wi.write(
      tricky.map((o, i) => entry(line(id('b0000000', i), o))),
      [],
    );
    expect(viaInsert.path).toBe('insert');
    expect(viaInsert.stored).toBe(tricky.length);
    const a = await rowsHex('a0000000');
    const b = await rowsHex('b0000000');
    expect(a).toHaveLength(tricky.length);
    expect(a).toEqual(b);
    const c12 = await t.query(
      `SELECT error_message, tool_name, request_args->>'path' AS path, request_args->>'msg' AS msg FROM audit_log WHERE request_id = $1`,
      [id('a0000000', 1)],
    );
    expect(c12.rows[0]).toEqual({
      error_message: 'line1\nline2\tcol2\\share\r\n\\.\n\\N',
      tool_name: 'a,b;"c"\t|d',
      path: 'C:\\temp\\new',
      msg: 'say "hi"\ttab',
    });
    const types = await t.query<{ t: string | null }>(
      `SELECT jsonb_typeof(request_args) AS t FROM audit_log WHERE request_id::text LIKE 'a0000000%' ORDER BY request_id`,
    );
    expect(types.rows.map((r) => r.t).slice(2, 7)).toEqual(['array', 'string', 'number', null, 'object']);
  });

  it('splits a refused batch: the rest is stored, the bad rows go to audit_reject with the server message (C14)', async () => {
    await t.query(`ALTER TABLE audit_log ADD CONSTRAINT test_poison CHECK (tool_name <> 'poison')`);
    try {
      for (const copyMinRows of [1, 1_000_000]) {
        const prefix = copyMinRows === 1 ? 'c1400000' : 'c1400001';
        const entries = Array.from({ length: 40 }, (_, i) =>
          entry(line(id(prefix, i), { tool_name: i % 13 === 5 ? 'poison' : 'sql.query' })),
        );
        const w = new BatchWriter(t.pool, silentLogger(), { copyMinRows });
        const out = await w.write(entries, [
          // a source per run: two rejects with the same source, reason and bytes are one (reject_key)
          {
            source: `test ${prefix}`,
            reason: 'request_id: not a UUID',
            raw: Buffer.from('{"request_id":""}'),
          },
        ]);
        expect([...out.refused.keys()]).toEqual([5, 18, 31]);
        expect(out.stored).toBe(37);
        const stored = await t.query(
          `SELECT count(*)::int AS n FROM audit_log WHERE request_id::text LIKE $1`,
          [`${prefix}%`],
        );
        expect(stored.rows[0]?.n).toBe(37);
        const rej = await t.query<{ reason: string; raw: Buffer }>(
          `SELECT reason, raw FROM audit_reject WHERE raw::text LIKE '%' ORDER BY id DESC LIMIT 4`,
        );
        const reasons = rej.rows.map((r) => r.reason);
        expect(reasons.filter((r) => r.includes('test_poison'))).toHaveLength(3);
        expect(reasons).toContain('request_id: not a UUID');
        const poisonRaw = rej.rows.find((r) => r.reason.includes('test_poison'))!.raw.toString();
        expect(poisonRaw).toBe(line(id(prefix, 31), { tool_name: 'poison' }));
      }
    } finally {
      await t.query('ALTER TABLE audit_log DROP CONSTRAINT test_poison');
    }
  });

  it('a COPY without validation rejects that Postgres refuses falls back to the split path (C14)', async () => {
    await t.query(`ALTER TABLE audit_log ADD CONSTRAINT test_poison2 CHECK (tool_name <> 'poison')`);
    try {
      const prefix = 'c1400002';
      const entries = Array.from({ length: 40 }, (_, i) =>
        entry(line(id(prefix, i), { tool_name: i === 7 ? 'poison' : 'sql.query' })),
      );
      const notes: string[] = [];
      const listener = new pg.Client({ connectionString: t.url });
      await listener.connect();
      await listener.query('LISTEN audit_log');
      listener.on('notification', (n) => notes.push(n.payload ?? ''));
      const out = await new BatchWriter(t.pool, silentLogger(), { copyMinRows: 16 }).write(entries, []);
      expect(out.path).toBe('copy');
      expect([...out.refused.keys()]).toEqual([7]);
      expect(out.stored).toBe(39);
      const ids = await t.query<{ n: number; max: string }>(
        `SELECT count(*)::int AS n, max(id)::text AS max FROM audit_log WHERE request_id::text LIKE $1`,
        [`${prefix}%`],
      );
      expect(ids.rows[0]?.n).toBe(39);
      expect(out.maxId).toBe(ids.rows[0]?.max);
      await new Promise((r) => setTimeout(r, 100));
      expect(notes).toContain(ids.rows[0]?.max);
      await listener.end();
    } finally {
      await t.query('ALTER TABLE audit_log DROP CONSTRAINT test_poison2');
    }
  });

  it('never stores a (request_id, timestamp) twice: first one wins, on both paths (C15)', async () => {
    for (const copyMinRows of [1, 1_000_000]) {
      const prefix = copyMinRows === 1 ? 'c1500000' : 'c1500001';
      const batch = [
        entry(line(id(prefix, 1))),
        entry(line(id(prefix, 1))),
        entry(line(id(prefix, 1), { latency_ms: 999 })),
        entry(line(id(prefix, 2), { timestamp: '2024-05-01T12:00:01Z' })),
      ];
      const w = new BatchWriter(t.pool, silentLogger(), { copyMinRows });
      const first = await w.write(batch, []);
      expect(first.stored).toBe(2);
      expect(first.duplicates).toBe(2);
      // the same batch again (a retry after an unknown commit outcome, or a resend)
      const again = await w.write(batch, []);
      expect(again.stored).toBe(0);
      expect(again.duplicates).toBe(4);
      const r = await t.query(
        `SELECT request_id::text, latency_ms::int FROM audit_log WHERE request_id::text LIKE $1 ORDER BY 1`,
        [`${prefix}%`],
      );
      expect(r.rows).toEqual([
        { request_id: id(prefix, 1), latency_ms: 12 },
        { request_id: id(prefix, 2), latency_ms: 12 },
      ]);
    }
  });

  it('logs a repeat with a different body as a conflict showing both versions, an identical repeat not (C15)', async () => {
    const lines: { msg: string; stored?: { latency_ms: number }; dropped?: { latency_ms: number } }[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()));
        cb();
      },
    });
    const w = new BatchWriter(t.pool, pino({ level: 'warn' }, sink), { copyMinRows: 1 });
    await w.write([entry(line(id('c1500002', 1)))], []);
    await w.write([entry(line(id('c1500002', 1))), entry(line(id('c1500002', 1), { latency_ms: 999 }))], []);
    const conflicts = lines.filter((l) => l.msg.startsWith('conflict:'));
    expect(conflicts).toHaveLength(1);
    expect(conflicts[0]?.stored?.latency_ms).toBe(12);
    expect(conflicts[0]?.dropped?.latency_ms).toBe(999);
  });

  it('writes a large batch by INSERT without the bind-parameter limit (C24)', async () => {
    const w = new BatchWriter(t.pool, silentLogger(), { copyMinRows: 1_000_000 });
    const entries = Array.from({ length: 7000 }, (_, i) => entry(line(id('c2400000', i))));
    const out = await w.write(entries, []);
    expect(out.path).toBe('insert');
    expect(out.stored).toBe(7000);
    const r = await t.query(
      `SELECT count(*)::int AS n FROM audit_log WHERE request_id::text LIKE 'c2400000%'`,
    );
    expect(r.rows[0]?.n).toBe(7000);
  });

  it("sends NOTIFY audit_log with the batch's highest id after the commit", async () => {
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    try {
      const got: string[] = [];
      listener.on('notification', (n) => got.push(n.payload ?? ''));
      await listener.query('LISTEN audit_log');
      for (const copyMinRows of [1, 1_000_000]) {
        const prefix = copyMinRows === 1 ? 'd0000000' : 'd0000001';
        const w = new BatchWriter(t.pool, silentLogger(), { copyMinRows });
        const out = await w.write(
          Array.from({ length: 5 }, (_, i) => entry(line(id(prefix, i)))),
          [],
        );
        const max = await t.query(`SELECT max(id)::text AS m FROM audit_log WHERE request_id::text LIKE $1`, [
          `${prefix}%`,
        ]);
        expect(out.maxId).toBe(max.rows[0]?.m);
        await new Promise((r) => setTimeout(r, 100));
        expect(got.at(-1)).toBe(max.rows[0]?.m);
      }
    } finally {
      await listener.end();
    }
  });
});
