/**
 * End to end: the known traps (test/fixtures/known-traps.md, a copy of /work/shared/cases) that concern
 * `serve`, each with the document's exact input, sent to the built binary, checked in Postgres.
 *
 * Three databases, each with its own daemon:
 * - `main`: default flags (`--copy-min-rows 16`), for the cases that do not depend on the write path;
 * - `copy`: `--copy-min-rows 1`, so every batch is written with COPY;
 * - `insert`: `--copy-min-rows 1000000`, so every batch is written with INSERT.
 * The cases whose right behaviour must not depend on the path (C01, C02, C03, C12, C14, C23) run on
 * both, and their rows are compared across the two databases.
 * Cases that need their own flags or counters start a daemon of their own.
 */
import { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  canonicalUuid,
  cleanupServes,
  expectedRow,
  freePort,
  type LogLine,
  ROW_SQL,
  rssBytes,
  runBash,
  type ServeProcess,
  type StoredRow,
  send,
  sleep,
  startServe,
  timestampMatches,
  trapBlocks,
  trapLines,
  trapVars,
  waitFor,
  withoutTs,
} from '../helpers/serve.js';

const POISON = `ALTER TABLE audit_log ADD CONSTRAINT test_poison CHECK (tool_name <> 'poison')`;

let main: TestDatabase;
let copyDb: TestDatabase;
let insertDb: TestDatabase;
let d: ServeProcess;
let dCopy: ServeProcess;
let dInsert: ServeProcess;

beforeAll(async () => {
  [main, copyDb, insertDb] = await Promise.all([
    createTestDatabase('e2e_traps'),
    createTestDatabase('e2e_traps_copy'),
    createTestDatabase('e2e_traps_insert'),
  ]);
  await Promise.all([main.query(POISON), copyDb.query(POISON), insertDb.query(POISON)]);
  [d, dCopy, dInsert] = await Promise.all([
    startServe({ databaseUrl: main.url }),
    startServe({ databaseUrl: copyDb.url, args: ['--copy-min-rows', '1'] }),
    startServe({ databaseUrl: insertDb.url, args: ['--copy-min-rows', '1000000'] }),
  ]);
});

afterAll(async () => {
  await Promise.all([d, dCopy, dInsert].map((s) => (s?.alive ? s.stop() : undefined)));
  await cleanupServes();
  await Promise.all([main?.drop(), copyDb?.drop(), insertDb?.drop()]);
});

/** Rows whose request_id starts with the case's prefix (`c0100000-`), in request_id order. */
async function caseRows(db: TestDatabase, caseId: string): Promise<StoredRow[]> {
  const prefix = `c${caseId.slice(1)}00000-`;
  return (
    await db.query<StoredRow>(`${ROW_SQL} WHERE request_id::text LIKE $1 ORDER BY request_id`, [`${prefix}%`])
  ).rows;
}

/** Polls until the case has `n` rows (or the timeout passes), then returns them. */
async function waitRows(
  db: TestDatabase,
  caseId: string,
  n: number,
  timeoutMs = 10_000,
): Promise<StoredRow[]> {
  let rows: StoredRow[] = [];
  await waitFor(
    async () => {
      rows = await caseRows(db, caseId);
      return rows.length >= n;
    },
    `${n} rows of ${caseId}`,
    timeoutMs,
  ).catch(() => {});
  return rows;
}

/** Checks that a stored row equals its input line under the contract (CONTRACT.md §3, §6). */
function expectRowEqualsLine(row: StoredRow | undefined, line: string): void {
  const input = JSON.parse(line) as Record<string, unknown>;
  expect(row, `row for ${String(input.request_id)}`).toBeDefined();
  expect(withoutTs(row!)).toEqual(expectedRow(input));
  expect(timestampMatches(row!.ts_us, input.timestamp as string)).toBe(true);
}

/** Sanitisation warnings the daemon logged for one request_id. */
function sanitizeWarnings(s: ServeProcess, requestId: string): LogLine[] {
  return s.logs().filter((l) => l.level === 40 && l.request_id === requestId && Array.isArray(l.fields));
}

/** The ndjson block as one write (each line ends with one LF). */
function oneWrite(lines: string[]): string {
  return lines.map((l) => `${l}\n`).join('');
}

type PathName = 'copy' | 'insert';
const PATHS: PathName[] = ['insert', 'copy'];

/** Sends a case's lines on one path: INSERT, each line on its own connection; COPY, all in one write. */
async function sendOn(path: PathName, lines: string[]): Promise<void> {
  if (path === 'copy') await send(dCopy.socket, oneWrite(lines));
  else for (const l of lines) await send(dInsert.socket, `${l}\n`);
}

function dbOf(path: PathName): TestDatabase {
  return path === 'copy' ? copyDb : insertDb;
}

function daemonOf(path: PathName): ServeProcess {
  return path === 'copy' ? dCopy : dInsert;
}

/** Runs a bash block of known-traps.md with $SOCK set to the main daemon's socket. */
async function bashOnMain(script: string, timeoutMs = 60_000) {
  const r = await runBash(script, { SOCK: d.socket }, timeoutMs);
  expect(r.code, `bash block failed: ${r.stderr}`).toBe(0);
  return r;
}

const hex = (s: string) => Buffer.from(s, 'utf8').toString('hex');

describe('C01, C02, C03, C12, C14, C23 on both write paths', () => {
  for (const path of PATHS) {
    it(`C01 — NUL inside request_args (${path} path)`, async () => {
      const lines = trapLines('C01');
      await sendOn(path, lines);
      const rows = await waitRows(dbOf(path), 'C01', 2);
      expect(rows).toHaveLength(2);
      expect(rows[0]!.request_args).toEqual({ path: '/tmp/a\ufffdb.txt', 'k\ufffdey': 1 });
      expectRowEqualsLine(rows[0], lines[0]!);
      expectRowEqualsLine(rows[1], lines[1]!);
      const [{ p }] = (
        await dbOf(path).query<{ p: string }>(
          `SELECT request_args->>'path' AS p FROM audit_log WHERE request_id = 'c0100000-0000-4000-8000-000000000001'`,
        )
      ).rows as [{ p: string }];
      expect(p).toBe('/tmp/a\ufffdb.txt');
      // one warning naming the request_id and both field paths; none for the clean row
      const w = sanitizeWarnings(daemonOf(path), 'c0100000-0000-4000-8000-000000000001');
      expect(w).toHaveLength(1);
      const fields = w[0]!.fields as string[];
      expect(fields.some((f) => f.startsWith('request_args') && f.includes('path'))).toBe(true);
      expect(fields.filter((f) => f.startsWith('request_args'))).toHaveLength(2);
      expect(sanitizeWarnings(daemonOf(path), 'c0100000-0000-4000-8000-000000000002')).toHaveLength(0);
    });

    it(`C02 — NUL inside a text column (${path} path)`, async () => {
      const lines = trapLines('C02');
      await sendOn(path, lines);
      const rows = await waitRows(dbOf(path), 'C02', 2);
      expect(rows).toHaveLength(2);
      expectRowEqualsLine(rows[0], lines[0]!);
      expectRowEqualsLine(rows[1], lines[1]!);
      const r = (
        await dbOf(path).query<{ em: string; cs: string }>(
          `SELECT encode(convert_to(error_message,'UTF8'),'hex') AS em, encode(convert_to(client_subject,'UTF8'),'hex') AS cs
             FROM audit_log WHERE request_id = 'c0200000-0000-4000-8000-000000000001'`,
        )
      ).rows[0]!;
      expect(r.em).toBe(hex('upstream sent \ufffd then closed'));
      expect(r.cs).toBe(hex('user:ada\ufffd.example'));
      const w = sanitizeWarnings(daemonOf(path), 'c0200000-0000-4000-8000-000000000001');
      expect(w).toHaveLength(1);
      expect(w[0]!.fields).toEqual(expect.arrayContaining(['client_subject', 'error_message']));
    });

    it(`C03 — lone UTF-16 surrogates (${path} path)`, async () => {
      const lines = trapLines('C03');
      await sendOn(path, lines);
      const rows = await waitRows(dbOf(path), 'C03', 3);
      expect(rows).toHaveLength(3);
      for (let i = 0; i < 3; i++) expectRowEqualsLine(rows[i], lines[i]!);
      expect(rows[0]!.request_args).toEqual({ q: 'abc\ufffd' });
      expect(rows[0]!.error_message).toBe('bad \ufffd tail');
      expect(rows[2]!.request_args).toEqual({ q: '\ufffd\ufffd' });
      const q2 = (
        await dbOf(path).query<{ h: string }>(
          `SELECT encode(convert_to(request_args->>'q','UTF8'),'hex') AS h FROM audit_log
            WHERE request_id = 'c0300000-0000-4000-8000-000000000002'`,
        )
      ).rows[0]!.h;
      expect(q2).toBe(hex('smile ') + 'f09f9880');
      expect(sanitizeWarnings(daemonOf(path), 'c0300000-0000-4000-8000-000000000001')).toHaveLength(1);
      expect(sanitizeWarnings(daemonOf(path), 'c0300000-0000-4000-8000-000000000002')).toHaveLength(0);
      expect(sanitizeWarnings(daemonOf(path), 'c0300000-0000-4000-8000-000000000003')).toHaveLength(1);
    });

    it(`C12 — COPY text escaping of backslash, tab, newline, quotes, \\. (${path} path)`, async () => {
      const lines = trapLines('C12');
      await sendOn(path, lines);
      const rows = await waitRows(dbOf(path), 'C12', 2);
      expect(rows).toHaveLength(2);
      expectRowEqualsLine(rows[0], lines[0]!);
      expectRowEqualsLine(rows[1], lines[1]!);
      const r = (
        await dbOf(path).query<{ em: boolean; tn: boolean; p: boolean; m: boolean }>(
          `SELECT error_message = E'line1\\nline2\\tcol2\\\\share\\r\\n\\\\.\\n\\\\N' AS em,
                  tool_name = E'a,b;"c"\\t|d' AS tn,
                  request_args->>'path' = 'C:\\temp\\new' AS p,
                  request_args->>'msg' = E'say "hi"\\ttab' AS m
             FROM audit_log WHERE request_id = 'c1200000-0000-4000-8000-000000000001'`,
        )
      ).rows[0]!;
      expect(r).toEqual({ em: true, tn: true, p: true, m: true });
      expect(rows[1]!.latency_ms).toBe('13');
    });

    it(`C14 — one bad row must not sink the batch (${path} path, one write)`, async () => {
      const lines = trapLines('C14');
      const db = dbOf(path);
      // the trap: everything in a single write, so that the lines share a batch
      await send(daemonOf(path).socket, oneWrite(lines));
      const rows = await waitRows(db, 'C14', 3);
      expect(rows.map((r) => r.request_id)).toEqual([
        'c1400000-0000-4000-8000-000000000001',
        'c1400000-0000-4000-8000-000000000003',
        'c1400000-0000-4000-8000-000000000005',
      ]);
      for (const i of [0, 2, 4]) expectRowEqualsLine(rows[i / 2], lines[i]!);
      const rejects = async (line: string) =>
        (
          await db.query<{ reason: string; raw: Buffer }>(
            'SELECT reason, raw FROM audit_reject WHERE raw = $1 ORDER BY id',
            [Buffer.from(line, 'utf8')],
          )
        ).rows;
      const r2 = await waitFor(async () => {
        const r = await rejects(lines[1]!);
        return r.length > 0 && r;
      }, 'the reject of line 2');
      expect(r2).toHaveLength(1);
      expect(r2[0]!.reason).toBe('request_id: not a UUID');
      const r4 = await waitFor(async () => {
        const r = await rejects(lines[3]!);
        return r.length > 0 && r;
      }, 'the reject of line 4');
      expect(r4).toHaveLength(1);
      expect(r4[0]!.reason).toContain('test_poison');
      expect(Buffer.compare(r4[0]!.raw, Buffer.from(lines[3]!, 'utf8'))).toBe(0);
      expect(daemonOf(path).alive).toBe(true);
    });

    it(`C23 — request_args that is not an object (${path} path)`, async () => {
      const lines = trapLines('C23');
      await sendOn(path, lines);
      const db = dbOf(path);
      const rows = await waitRows(db, 'C23', 6);
      expect(rows).toHaveLength(6);
      for (let i = 0; i < 6; i++) expectRowEqualsLine(rows[i], lines[i]!);
      const t = (
        await db.query<{ t: string | null; isnull: boolean; txt: string | null }>(
          `SELECT jsonb_typeof(request_args) AS t, request_args IS NULL AS isnull, request_args::text AS txt
             FROM audit_log WHERE request_id::text LIKE 'c2300000-%' ORDER BY request_id`,
        )
      ).rows;
      expect(t.map((r) => r.t)).toEqual(['array', 'string', 'number', null, null, 'object']);
      expect(t[3]!.isnull).toBe(true); // JSON null → SQL NULL
      expect(t[4]!.isnull).toBe(true); // key absent → SQL NULL
      expect(t[5]!.txt).toBe('{}');
      expect(t[0]!.txt).toBe('["a", 1, {"k": null}]');
      expect(daemonOf(path).stderrLines.join('\n')).not.toContain('invalid input syntax for type json');
    });
  }

  it('C01, C02, C03, C12, C14, C23: the COPY path and the INSERT path store identical rows', async () => {
    const all = `${ROW_SQL} WHERE request_id::text ~ '^c(01|02|03|12|14|23)00000-' ORDER BY request_id`;
    const hexSql = `SELECT request_id::text, encode(convert_to(coalesce(error_message,''),'UTF8'),'hex') AS em,
        encode(convert_to(client_subject,'UTF8'),'hex') AS cs, request_args::text AS ra
        FROM audit_log WHERE request_id::text ~ '^c(01|02|03|12|14|23)00000-' ORDER BY request_id`;
    const [a, b, ha, hb] = await Promise.all([
      copyDb.query<StoredRow>(all),
      insertDb.query<StoredRow>(all),
      copyDb.query(hexSql),
      insertDb.query(hexSql),
    ]);
    expect(a.rows.length).toBe(2 + 2 + 3 + 2 + 3 + 6);
    expect(a.rows).toEqual(b.rows);
    expect(ha.rows).toEqual(hb.rows);
  });
});

describe('known traps on the default daemon', () => {
  it('C04 — multi-byte UTF-8 split across reads; invalid UTF-8 (stored with U+FFFD, counted as sanitized)', async () => {
    await bashOnMain(trapBlocks('C04', 'bash')[0]!);
    const rows = await waitRows(main, 'C04', 2);
    expect(rows).toHaveLength(2);
    expect(rows[0]!.client_subject).toBe('user:中村.example');
    const h = (
      await main.query<{ h: string }>(
        `SELECT encode(convert_to(client_subject,'UTF8'),'hex') AS h FROM audit_log
          WHERE request_id = 'c0400000-0000-4000-8000-000000000001'`,
      )
    ).rows[0]!.h;
    expect(h).toContain('e4b8ade69d91');
    expect(h).not.toContain('efbfbd');
    expect(sanitizeWarnings(d, 'c0400000-0000-4000-8000-000000000001')).toHaveLength(0);
    // our policy: invalid UTF-8 becomes U+FFFD (one per maximal subpart: C3 alone), stored and flagged
    expect(rows[1]!.client_subject).toBe('user:\ufffd(');
    expect(rows[1]!.request_args).toEqual({ q: 'select 2' });
    expect(sanitizeWarnings(d, 'c0400000-0000-4000-8000-000000000002')).toHaveLength(1);
    expect(d.alive).toBe(true);
  });

  it('C05 — one JSON object across several writes; several objects in one write', async () => {
    const rejectsBefore = await main.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_reject WHERE position(convert_to('c0500000','UTF8') in raw) > 0`,
    );
    await bashOnMain(trapBlocks('C05', 'bash')[0]!);
    const rows = await waitRows(main, 'C05', 3);
    expect(rows.map((r) => r.latency_ms)).toEqual(['12', '13', '14']);
    const v = trapVars('C05');
    expectRowEqualsLine(rows[0], v.A!);
    expectRowEqualsLine(rows[1], v.B!);
    expectRowEqualsLine(rows[2], v.C!);
    await sleep(200);
    const rejectsAfter = await main.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_reject WHERE position(convert_to('c0500000','UTF8') in raw) > 0`,
    );
    expect(rejectsAfter.rows[0]!.n).toBe(rejectsBefore.rows[0]!.n);
    expect(d.logs().filter((l) => l.msg === 'rejected a line' && String(l.reason).includes('c05'))).toEqual(
      [],
    );
  });

  it('C06 — UTF-8 BOM and CRLF line endings', async () => {
    await bashOnMain(trapBlocks('C06', 'bash')[0]!);
    const rows = await waitRows(main, 'C06', 3);
    expect(rows).toHaveLength(3);
    const v = trapVars('C06');
    expectRowEqualsLine(rows[0], v.L1!);
    expectRowEqualsLine(rows[1], v.L2!);
    expect(rows[1]!.error_message).toBe('a\rb');
    expect(rows[2]!.error_message).toBe('x\ufeffy');
    const cr = await main.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'c0600000-%' AND (
         client_subject LIKE E'%\\r' OR client_role LIKE E'%\\r' OR tool_name LIKE E'%\\r' OR
         backend_name LIKE E'%\\r' OR response_status LIKE E'%\\r' OR error_message LIKE E'%\\r' OR
         request_args::text LIKE E'%\\r%' OR extra IS NOT NULL)`,
    );
    expect(cr.rows[0]!.n).toBe('0');
  });

  it('C08 — oversized line: rejected naming max_line_bytes=1048576 and the size, raw cut at the limit, next line stored', async () => {
    const block = trapBlocks('C08', 'bash')[0]!;
    // the first command of the block (the variant follows, in its own test below)
    const first = block.slice(0, block.indexOf('# variant'));
    await bashOnMain(first, 120_000);
    const rows = await waitRows(main, 'C08', 1);
    expect(rows.map((r) => r.request_id)).toEqual(['c0800000-0000-4000-8000-000000000002']);
    expectRowEqualsLine(rows[0], trapVars('C08').V!);
    const prefix = /printf '%s' '(\{"request_id":"c0800000-0000-4000-8000-000000000001".*)'\n/.exec(
      first,
    )![1]!;
    const suffix = /printf '%s\\n' '("\},"response_status".*)'\n/.exec(first)![1]!;
    const size = prefix.length + 20_971_520 + suffix.length;
    const rej = await waitFor(async () => {
      const r = await main.query<{ reason: string; len: number; head: Buffer }>(
        `SELECT reason, length(raw) AS len, substring(raw from 1 for 300) AS head FROM audit_reject
          WHERE position(convert_to('c0800000-0000-4000-8000-000000000001','UTF8') in raw) > 0`,
      );
      return r.rows.length > 0 && r.rows;
    }, 'the reject of the oversized line');
    expect(rej).toHaveLength(1);
    expect(rej[0]!.reason).toContain('max_line_bytes=1048576');
    expect(rej[0]!.reason).toContain(String(size));
    expect(rej[0]!.len).toBe(1_048_576);
    const expectedHead = Buffer.from(prefix + 'a'.repeat(300), 'utf8').subarray(0, 300);
    expect(Buffer.compare(rej[0]!.head, expectedHead)).toBe(0);
    const tail = await main.query<{ ok: boolean }>(
      `SELECT raw = (convert_to($1, 'UTF8') || convert_to(repeat('a', 1048576 - $2::int), 'UTF8')) AS ok
         FROM audit_reject WHERE position(convert_to('c0800000-0000-4000-8000-000000000001','UTF8') in raw) > 0`,
      [prefix, Buffer.byteLength(prefix)],
    );
    expect(tail.rows[0]!.ok).toBe(true);
  });

  it('C15 — duplicates from a resend: exactly 2 rows, the first one wins', async () => {
    const lines = trapLines('C15');
    await send(d.socket, oneWrite(lines));
    await waitRows(main, 'C15', 2);
    await send(d.socket, oneWrite(lines)); // resend on a new connection
    await sleep(200);
    const rows = await caseRows(main, 'C15');
    expect(rows.map((r) => [r.request_id, r.latency_ms])).toEqual([
      ['c1500000-0000-4000-8000-000000000001', '12'],
      ['c1500000-0000-4000-8000-000000000002', '12'],
    ]);
    expectRowEqualsLine(rows[0], lines[0]!);
    expectRowEqualsLine(rows[1], lines[3]!);
    const n = await main.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_reject WHERE position(convert_to('c1500000','UTF8') in raw) > 0`,
    );
    expect(n.rows[0]!.n).toBe('0');
  });

  it('C15 — the repeat with a different body is logged as a conflict that shows both versions', async () => {
    // runs after the test above: the daemon has seen …001 with latency 12 and with latency 999
    const conflict = d
      .logs()
      .filter((l) => (l.level ?? 0) >= 40)
      .map((l) => JSON.stringify(l))
      .filter((t) => t.includes('c1500000-0000-4000-8000-000000000001'));
    expect(conflict.length).toBeGreaterThanOrEqual(1);
    expect(conflict.some((t) => t.includes('999') && t.includes('12'))).toBe(true);
  });

  it('C16 — error mid-COPY: poison rows and cut connections, no hung COPY, no leaked client', async () => {
    const block = trapBlocks('C16', 'bash')[0]!;
    const script = block.slice(0, block.indexOf('psql'));
    const r = await runBash(script, { SOCK: d.socket }, 120_000);
    expect(r.code, r.stderr).toBe(0);
    const count = async () =>
      Number(
        (
          await main.query<{ n: string }>(
            `SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'c1600000-%'`,
          )
        ).rows[0]!.n,
      );
    await waitFor(async () => (await count()) >= 2501, '2501 rows of C16', 5000).catch(() => {});
    expect(await count()).toBe(2501);
    const last = await main.query(
      `SELECT 1 FROM audit_log WHERE request_id = 'c1600000-0000-4000-8000-000000000001'`,
    );
    expect(last.rowCount).toBe(1);
    // the 5 poison lines are rejected with the constraint's name
    const poison = await main.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_reject WHERE reason LIKE '%test_poison%'
          AND position(convert_to('"tool_name":"poison"','UTF8') in raw) > 0
          AND position(convert_to('c1600000','UTF8') in raw) > 0`,
    );
    expect(poison.rows[0]!.n).toBe('5');
    // each of the 5 cut fragments is accounted for (as a rejected last line, or as truncated), never stored
    expect((await main.query(`SELECT 1 FROM audit_log WHERE request_id::text LIKE '%fffe'`)).rowCount).toBe(
      0,
    );
    const fragRejects = Number(
      (
        await main.query<{ n: string }>(
          `SELECT count(*) AS n FROM audit_reject
            WHERE position(convert_to('c1600000-0000-4000-8000-00000000fffe','UTF8') in raw) > 0`,
        )
      ).rows[0]!.n,
    );
    const truncated = d.logs().filter((l) => /mid-line/.test(String(l.msg))).length;
    expect(fragRejects + truncated).toBeGreaterThanOrEqual(5);
    const act = await main.query<{ state: string | null; query: string }>(
      `SELECT state, query FROM pg_stat_activity WHERE application_name = 'audit-gateway' AND datname = current_database()`,
    );
    expect(
      act.rows.filter(
        (a) => a.state === 'idle in transaction' || a.state === 'idle in transaction (aborted)',
      ),
    ).toEqual([]);
    expect(act.rows.filter((a) => a.state === 'active' && /^\s*COPY/i.test(a.query))).toEqual([]);
    const log = d.stderrLines.join('\n');
    expect(log).not.toContain('release called on client which has already been released');
    expect(d.alive).toBe(true);
  });

  it('C17 — DB drops the idle connections: the daemon does not crash, the next entry is stored', async () => {
    const [l1, l2] = trapBlocks('C17', 'bash')[0]!
      .split('\n')
      .filter((l) => l.startsWith("printf '%s\\n' '"));
    await bashOnMain(l1!);
    await waitRows(main, 'C17', 1);
    const pid = d.pid;
    const warnsBefore = d.logs().filter((l) => l.level === 40).length;
    const t = await main.query<{ pg_terminate_backend: boolean }>(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'audit-gateway' AND datname = current_database()`,
    );
    expect(t.rowCount).toBeGreaterThan(0);
    await sleep(1000);
    await bashOnMain(l2!);
    const rows = await waitRows(main, 'C17', 2);
    expect(rows.map((r) => r.request_id)).toEqual([
      'c1700000-0000-4000-8000-000000000001',
      'c1700000-0000-4000-8000-000000000002',
    ]);
    expect(d.alive).toBe(true);
    expect(d.pid).toBe(pid);
    expect(d.logs().filter((l) => l.level === 40).length).toBeGreaterThan(warnsBefore);
    expect(d.logs().filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  });
});

describe('known traps that need a daemon of their own', () => {
  it('C07 — blank lines; last line without newline; connection reset mid-line (TCP RST)', async () => {
    const port = await freePort();
    const s = await startServe({ databaseUrl: main.url, args: ['--listen', `127.0.0.1:${port}`] });
    const block = trapBlocks('C07', 'bash')[0]!;
    const v = trapVars('C07');
    // the clean-close command, literally
    const clean = block.split('\n').find((l) => l.startsWith('{ printf'))!;
    const r = await runBash(`A='${v.A}'\nB='${v.B}'\n${clean}`, { SOCK: s.socket }, 30_000);
    expect(r.code, r.stderr).toBe(0);
    // the reset: an RST exists only on TCP (net.Socket.resetAndDestroy throws ERR_INVALID_HANDLE_TYPE on
    // a Unix socket), so the block's node one-liner runs against the TCP listener
    await new Promise<void>((resolveReset, reject) => {
      const c = new Socket();
      c.on('error', () => {});
      c.connect(port, '127.0.0.1', () => {
        c.write(v.C!.slice(0, 60));
        setTimeout(() => {
          c.resetAndDestroy();
          resolveReset();
        }, 200);
      });
      c.once('error', reject);
    });
    await waitFor(
      () => s.logs().some((l) => /mid-line/.test(String(l.msg))),
      'a mid-line warning',
      5000,
    ).catch(() => {});
    const rows = await caseRows(main, 'C07');
    expect(rows.map((x) => x.request_id)).toEqual([
      'c0700000-0000-4000-8000-000000000001',
      'c0700000-0000-4000-8000-000000000002',
    ]);
    expectRowEqualsLine(rows[0], v.A!);
    expectRowEqualsLine(rows[1], v.B!);
    const warn = s.logs().filter((l) => /mid-line/.test(String(l.msg)));
    expect(warn).toHaveLength(1);
    expect(String(warn[0]!.conn)).toMatch(/^tcp#/);
    expect(warn[0]!.bytes).toBe(60);
    const frag = await main.query(
      `SELECT 1 FROM audit_reject WHERE position(convert_to('c0700000-0000-4000-8000-000000000003','UTF8') in raw) > 0`,
    );
    expect(frag.rowCount).toBe(0);
    expect(s.alive).toBe(true);
    expect(await s.stop()).toBe(0);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped')!;
    expect(stopped).toMatchObject({
      blank: 4,
      truncated: 1,
      invalid: 0,
      received: 2,
      stored: 2,
      rejected: 0,
    });
  });

  it('C07 — the literal reset one-liner on the Unix socket: C is not stored', async () => {
    // On a Unix socket the one-liner cannot send an RST; whatever the daemon makes of the 60 bytes
    // (a truncated last line, or a rejected one), they never become a row.
    const s = await startServe({ databaseUrl: main.url });
    const block = trapBlocks('C07', 'bash')[0]!;
    const v = trapVars('C07');
    const nodeLine = block.split('\n').find((l) => l.startsWith('node -e'))!;
    await runBash(`C='${v.C}'\n${nodeLine}`, { SOCK: s.socket }, 30_000);
    await sleep(300);
    expect(
      (await main.query(`SELECT 1 FROM audit_log WHERE request_id = 'c0700000-0000-4000-8000-000000000003'`))
        .rowCount,
    ).toBe(0);
    expect(s.alive).toBe(true);
    expect(await s.stop()).toBe(0);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped')!;
    expect(Number(stopped.truncated) + Number(stopped.rejected)).toBe(1);
    expect(stopped.stored).toBe(0);
  });

  it('C08 — a client that never sends LF: bounded memory, other connections keep working', async () => {
    const limit = 64 * 1024;
    const flood = 200 * 1024 * 1024;
    const s = await startServe({ databaseUrl: main.url, args: ['--max-line-bytes', String(limit)] });
    // warm up: a first entry (pool connections) and a first flood (V8 and libuv settle their buffers;
    // the first 50 MiB grow RSS by ~30 MiB once, later floods of any size by < 2 MiB), then the baseline
    await send(
      s.socket,
      `{"request_id":"c0800000-0000-4000-8000-0000000000a0","timestamp":"2024-05-01T12:00:00Z","client_subject":"u","tool_name":"t","response_status":"ok"}\n`,
    );
    const warm = await runBash(
      `head -c ${50 * 1024 * 1024} /dev/zero | tr '\\0' 'a' | socat -t 5 - UNIX-CONNECT:"$SOCK"`,
      { SOCK: s.socket },
      60_000,
    );
    expect(warm.code, warm.stderr).toBe(0);
    await sleep(300);
    const baseline = (await rssBytes(s.pid))!;
    let peak = baseline;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const r = await rssBytes(s.pid);
        if (r !== null && r > peak) peak = r;
        await sleep(10);
      }
    })();
    const floodRun = runBash(
      `head -c ${flood} /dev/zero | tr '\\0' 'a' | socat -t 5 - UNIX-CONNECT:"$SOCK"`,
      { SOCK: s.socket },
      120_000,
    );
    // while the flood runs, another connection works
    await sleep(100);
    await send(
      s.socket,
      `{"request_id":"c0800000-0000-4000-8000-0000000000a1","timestamp":"2024-05-01T12:00:00Z","client_subject":"u","tool_name":"t","response_status":"ok"}\n`,
    );
    const other = await waitFor(
      async () =>
        (
          await main.query(
            `SELECT 1 FROM audit_log WHERE request_id = 'c0800000-0000-4000-8000-0000000000a1'`,
          )
        ).rowCount === 1,
      'the other connection’s entry',
      10_000,
    ).catch(() => false);
    const fr = await floodRun;
    sampling = false;
    await sampler;
    expect(fr.code, fr.stderr).toBe(0);
    expect(other).toBe(true);
    // the flood connection alone gets the reject, with the limit and the size seen
    const rej = await waitFor(async () => {
      const r = await main.query<{ reason: string; len: number }>(
        `SELECT reason, length(raw) AS len FROM audit_reject WHERE reason LIKE '%max_line_bytes=${limit}%'
          ORDER BY id`,
      );
      return r.rows.length >= 2 && r.rows;
    }, 'the floods’ rejects');
    expect(rej).toHaveLength(2); // the warm-up flood and the measured one
    expect(rej[0]!.reason).toContain(String(50 * 1024 * 1024));
    rej.shift();
    expect(rej[0]!.reason).toContain(String(flood));
    expect(rej[0]!.len).toBe(limit);
    // RSS: baseline + 3 × the limit, plus an allowance for read buffers and GC lag that does not grow
    // with the flood (a daemon that kept the line would grow by ~200 MiB)
    const allowance = 16 * 1024 * 1024;
    expect(peak - baseline).toBeLessThan(3 * limit + allowance);
    expect(s.alive).toBe(true);
    expect(await s.stop()).toBe(0);
  });

  it('C14 — the counters read stored=3, rejected=2, and the daemon keeps running', async () => {
    const s = await startServe({ databaseUrl: main.url });
    await send(s.socket, oneWrite(trapLines('C14')));
    const rows = await waitRows(main, 'C14', 3);
    expect(rows).toHaveLength(3);
    expect(s.alive).toBe(true);
    expect(await s.stop()).toBe(0);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped')!;
    expect(stopped).toMatchObject({ received: 5, stored: 3, rejected: 2, invalid: 1, refused: 1 });
  });

  it('C24 — INSERT fallback over the bind-parameter limit: 7000 rows in one INSERT batch', async () => {
    const s = await startServe({
      databaseUrl: main.url,
      flushMs: 2000,
      args: ['--batch-size', '10000', '--copy-min-rows', '100000'],
    });
    const r = await runBash(trapBlocks('C24', 'bash')[0]!.split('\npsql')[0]!, { SOCK: s.socket }, 60_000);
    expect(r.code, r.stderr).toBe(0);
    const n = async () =>
      Number(
        (
          await main.query<{ n: string }>(
            `SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'c2400000-%'`,
          )
        ).rows[0]!.n,
      );
    await waitFor(async () => (await n()) >= 7000, '7000 rows', 20_000).catch(() => {});
    expect(await n()).toBe(7000);
    expect(await s.stop()).toBe(0);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped')!;
    // one batch of 7000 × 11 columns: the case is only meaningful when the batch was not split
    expect(stopped).toMatchObject({ stored: 7000, batches: 1, retries: 0, rejected: 0 });
    expect(s.stderrLines.join('\n')).not.toMatch(/bind message|prepared statement requires/);
    const sample = await main.query<StoredRow>(`${ROW_SQL} WHERE request_id = $1`, [
      canonicalUuid('c2400000-0000-4000-8000-000000006999'),
    ]);
    expect(sample.rows[0]!.client_subject).toBe('user:ada.example');
  });
});
