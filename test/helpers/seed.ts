/**
 * Seeds `audit_log` for the read-command tests with plain SQL (no writer code): thousands of
 * generated entries over ten days before `now()`, several subjects, roles, tools, backends and
 * statuses, plus hand-made entries with the hard values — nested args, unicode, backslashes, big
 * numbers, NULL versus empty strings, LIKE metacharacters, extra fields (some named like wire
 * fields), equal timestamps, and timestamps out of id order.
 */
import type { TestDatabase } from './db.js';

/** Subjects of the generated entries (index = g % length). */
export const SUBJECTS = ['alice', 'bob', 'carol', 'user:ada.example', 'dave'] as const;
export const ROLES = ['admin', 'analyst', null] as const;
export const TOOLS = ['fs.read', 'fs.write', 'sql.query', 'http.get'] as const;
export const BACKENDS = ['fs-main', 'pg-reports', 'web-proxy', null] as const;

function sqlArray(values: readonly (string | null)[]): string {
  return `ARRAY[${values.map((v) => (v === null ? 'NULL' : `'${v}'`)).join(', ')}]::text[]`;
}

/** Request ids of the hand-made entries, by name. */
export const SPECIAL = {
  backslash: 'c1200000-0000-4000-8000-000000000001',
  bigNumber: 'c1200000-0000-4000-8000-000000000002',
  nulls: 'c1200000-0000-4000-8000-000000000003',
  empties: 'c1200000-0000-4000-8000-000000000004',
  metachars: 'c1200000-0000-4000-8000-000000000005',
  unicode: 'c1200000-0000-4000-8000-000000000006',
  extra: 'c1200000-0000-4000-8000-000000000007',
  tieA: 'c1200000-0000-4000-8000-000000000008',
  tieB: 'c1200000-0000-4000-8000-000000000009',
  old: 'c1200000-0000-4000-8000-00000000000a',
  scalarArgs: 'c1200000-0000-4000-8000-00000000000b',
  copyEscapes: 'c1200000-0000-4000-8000-00000000000c',
} as const;

/**
 * Inserts `n` generated entries and the {@link SPECIAL} ones.
 * Generated entry g: subject SUBJECTS[g%5], role ROLES[g%3], tool TOOLS[g%4], backend BACKENDS[g%4],
 * status error when g%10=3, denied when g%10=7, timeout when g%25=0, else success; latency
 * (g*37)%2000 ms, NULL when g%50=1; timestamp now() - g*(10 days/n) with microseconds, so
 * ids and timestamps run in opposite directions.
 */
export async function seedEntries(t: TestDatabase, n = 4000): Promise<void> {
  await t.query(
    `INSERT INTO audit_log (request_id, "timestamp", client_subject, client_role, tool_name, backend_name,
        request_args, response_status, error_message, latency_ms, received_at, extra)
     SELECT md5('gen' || g)::uuid,
            date_trunc('second', now()) - g * (interval '10 days' / $1) + (g % 997) * interval '1 microsecond',
            (${sqlArray(SUBJECTS)})[1 + g % 5],
            (${sqlArray(ROLES)})[1 + g % 3],
            (${sqlArray(TOOLS)})[1 + g % 4],
            (${sqlArray(BACKENDS)})[1 + g % 4],
            CASE WHEN g % 9 = 0 THEN NULL
                 ELSE jsonb_build_object('path', '/data/' || g, 'n', g, 'opts', jsonb_build_object('deep', g % 3 = 0, 'list', jsonb_build_array(1, 'two', NULL)))
            END,
            CASE WHEN g % 25 = 0 THEN 'timeout' WHEN g % 10 = 3 THEN 'error' WHEN g % 10 = 7 THEN 'denied' ELSE 'success' END,
            CASE WHEN g % 10 = 3 THEN 'upstream failed: code ' || (g % 4) WHEN g % 10 = 7 THEN 'Permission denied for ' || g END,
            CASE WHEN g % 50 = 1 THEN NULL ELSE (g * 37) % 2000 END,
            now(),
            CASE WHEN g % 13 = 0 THEN jsonb_build_object('trace_id', 't-' || g) END
       FROM generate_series(1, $1::int) AS g`,
    [n],
  );
  const rows: unknown[][] = [
    // known-traps C12: backslashes, quotes, tabs, newlines, \. and \N in text and jsonb
    [
      SPECIAL.backslash,
      '2 hours',
      'user:ada.example',
      'analyst',
      'a,b;"c"\t|d',
      'fs-main',
      JSON.stringify({ path: 'C:\\temp\\new', msg: 'say "hi"\ttab', nl: 'x\ny' }),
      'error',
      'line1\nline2\tcol2\\share\r\n\\.\n\\N',
      12,
      null,
    ],
    // numbers past 2^53 keep every digit (request_args text goes in as is)
    [
      SPECIAL.bigNumber,
      '3 hours',
      'alice',
      'admin',
      'sql.query',
      'pg-reports',
      '{"big": 12345678901234567890, "neg": -98765432109876543210.5, "exp": 1e400, "list": [18446744073709551617]}',
      'success',
      null,
      7,
      null,
    ],
    [SPECIAL.nulls, '4 hours', 'bob', null, 'fs.read', null, null, 'success', null, null, null],
    [SPECIAL.empties, '5 hours', '', '', 'fs.read', '', '{}', 'error', '', 0, null],
    // LIKE metacharacters must be literal unless the user typed *
    [
      SPECIAL.metachars,
      '6 hours',
      'x%y_z\\w',
      'ro_le',
      'fs.read',
      'back%end',
      '{"q": "100%_done"}',
      'error',
      '50% done_ok \\ back',
      5,
      null,
    ],
    [
      SPECIAL.unicode,
      '7 hours',
      '中村',
      'анализ',
      'ツール',
      'web-proxy',
      JSON.stringify({ q: 'smile 😀', k: 'naïve', nested: { deeper: [{ é: 'ü' }] } }),
      'success',
      null,
      3,
      null,
    ],
    // extra fields, some named like wire fields or id/received_at: those never replace the real ones
    [
      SPECIAL.extra,
      '8 hours',
      'carol',
      'admin',
      'http.get',
      'web-proxy',
      '{"url": "https://example.invalid/"}',
      'success',
      null,
      40,
      '{"trace_id": "abc", "id": 999, "received_at": "never", "tool_name": "fake", "span": {"n": 12345678901234567890}}',
    ],
    [SPECIAL.tieA, '9 hours', 'alice', 'admin', 'fs.write', 'fs-main', '{"i": 1}', 'success', null, 1, null],
    [SPECIAL.tieB, '9 hours', 'alice', 'admin', 'fs.write', 'fs-main', '{"i": 2}', 'success', null, 1, null],
    // a late-arriving old entry: high id, timestamp 30 days ago
    [
      SPECIAL.old,
      '30 days',
      'alice',
      'admin',
      'fs.read',
      'fs-main',
      '{"late": true}',
      'success',
      null,
      2,
      null,
    ],
    [
      SPECIAL.scalarArgs,
      '10 hours',
      'bob',
      'analyst',
      'batch.run',
      'jobs',
      '["a", 1, {"k": null}]',
      'timeout',
      'timed out after 30s',
      30000,
      null,
    ],
    [
      SPECIAL.copyEscapes,
      '11 hours',
      'bob',
      'analyst',
      'echo',
      'jobs',
      '"plain \\\\ string"',
      'success',
      'ctrl \u0001\u0008\u000b\u000c chars',
      1,
      null,
    ],
  ];
  for (const r of rows) {
    await t.query(
      `INSERT INTO audit_log (request_id, "timestamp", client_subject, client_role, tool_name, backend_name,
          request_args, response_status, error_message, latency_ms, extra)
       VALUES ($1, date_trunc('second', now()) - $2::interval + interval '123456 microseconds', $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11::jsonb)`,
      r,
    );
  }
  await t.query('ANALYZE audit_log');
}
