/**
 * Every SELECT of the read commands (`tail`, `search`, `export`, `stats`; CONTRACT.md §5).
 *
 * The JSON shape of an entry is built by Postgres, as text, in {@link ENTRY_JSON_SQL}: the wire
 * field names plus `id` and `received_at`, then the fields of `extra` (never those names), every
 * field present, null included, times as RFC 3339 UTC with microseconds. `request_args` and `extra`
 * values are spliced in as Postgres' own jsonb text, so no number passes through a JS number.
 *
 * Order is by `timestamp`, then `id`; `desc` reverses both (CONTRACT.md §5).
 */
import type pg from 'pg';
import { type Filters, filterCondition, literalBinder, paramBinder } from './filter.js';

/** The wire fields of CONTRACT.md §3 in output order, with `id` first and `received_at` last. */
export const ENTRY_FIELDS = [
  'id',
  'request_id',
  'timestamp',
  'client_subject',
  'client_role',
  'tool_name',
  'backend_name',
  'request_args',
  'response_status',
  'error_message',
  'latency_ms',
  'received_at',
] as const;

/** The CSV columns (CONTRACT.md §5): the entry fields, then `extra` as its JSON text. */
export const CSV_COLUMNS = [...ENTRY_FIELDS, 'extra'] as const;

/** `to_char` pattern of RFC 3339 UTC with microseconds, e.g. `2026-11-01T10:00:00.000000Z`. */
const RFC3339_US = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/**
 * SQL for a timestamptz column as RFC 3339 UTC text with microseconds; `infinity` / `-infinity`
 * (which Postgres stores, and `to_char` turns into NULL, making the whole JSON line NULL) as those
 * words, so a forged row is shown as it is instead of breaking the output.
 */
function utcText(column: string): string {
  return `CASE WHEN isfinite(${column}) THEN to_char(${column} AT TIME ZONE 'UTC', ${RFC3339_US}) ELSE ${column}::text END`;
}

/** SQL for a text expression as a JSON value text (`null` for NULL). */
function jsonString(expr: string): string {
  return `COALESCE(to_json(${expr})::text, 'null')`;
}

/** Each entry field as the SQL of its JSON value text. */
const FIELD_JSON: Record<(typeof ENTRY_FIELDS)[number], string> = {
  id: 'id::text',
  request_id: `'"' || request_id::text || '"'`,
  timestamp: `'"' || ${utcText('"timestamp"')} || '"'`,
  client_subject: jsonString('client_subject'),
  client_role: jsonString('client_role'),
  tool_name: jsonString('tool_name'),
  backend_name: jsonString('backend_name'),
  request_args: `COALESCE(request_args::text, 'null')`,
  response_status: jsonString('response_status'),
  error_message: jsonString('error_message'),
  latency_ms: `COALESCE(latency_ms::text, 'null')`,
  received_at: `'"' || ${utcText('received_at')} || '"'`,
};

/** The fields of `extra` as `,"key":value` pairs, leaving out every name of {@link ENTRY_FIELDS}. */
const EXTRA_JSON = `CASE WHEN jsonb_typeof(extra) = 'object' THEN COALESCE((
  SELECT string_agg(',' || to_json(e.key)::text || ':' || e.value::text, '')
    FROM jsonb_each(extra) AS e
   WHERE e.key NOT IN (${ENTRY_FIELDS.map((f) => `'${f}'`).join(', ')})), '') ELSE '' END`;

/** SQL for one entry's JSON object text (one NDJSON line without its newline). */
export const ENTRY_JSON_SQL = `'{' || ${ENTRY_FIELDS.map(
  (f, i) => `'${i === 0 ? '' : ','}"${f}":' || ${FIELD_JSON[f]}`,
).join(' || ')} || ${EXTRA_JSON} || '}'`;

/** SQL for the CSV columns, each as text (NULL stays NULL). */
const CSV_SQL: Record<(typeof CSV_COLUMNS)[number], string> = {
  id: 'id::text',
  request_id: 'request_id::text',
  timestamp: utcText('"timestamp"'),
  client_subject: 'client_subject',
  client_role: 'client_role',
  tool_name: 'tool_name',
  backend_name: 'backend_name',
  request_args: 'request_args::text',
  response_status: 'response_status',
  error_message: 'error_message',
  latency_ms: 'latency_ms::text',
  received_at: utcText('received_at'),
  extra: 'extra::text',
};

/** Sort order of CONTRACT.md §5. */
export type Order = 'asc' | 'desc';

/**
 * The ORDER BY list. Columns are qualified with the table name on purpose: a bare name in ORDER BY
 * that matches an output column means the output column (PostgreSQL docs, SELECT, "ORDER BY
 * Clause"), and the selections output `id::text AS id` and `to_char(…) AS timestamp`, which sort as
 * text ("1000" before "991"). A qualified name always means the input column.
 */
function orderBy(order: Order): string {
  return order === 'asc'
    ? `audit_log."timestamp" ASC, audit_log.id ASC`
    : `audit_log."timestamp" DESC, audit_log.id DESC`;
}

/** What a row of {@link selectEntries} and the tail queries holds: the JSON line and fields for people. */
export interface EntryRow {
  /** bigint id as decimal text. */
  id: string;
  /** The entry's JSON object text (the json/ndjson output shape). */
  line: string;
  /** `timestamp` as RFC 3339 UTC with microseconds. */
  ts: string;
  client_subject: string;
  client_role: string | null;
  tool_name: string;
  backend_name: string | null;
  /** request_args as jsonb text, or null. */
  args: string | null;
  response_status: string;
  error_message: string | null;
  /** latency_ms as decimal text, or null. */
  latency_ms: string | null;
}

const ENTRY_ROW_COLUMNS = `id::text AS id, ${ENTRY_JSON_SQL} AS line, ${utcText('"timestamp"')} AS ts,
  client_subject, client_role, tool_name, backend_name, request_args::text AS args,
  response_status, error_message, latency_ms::text AS latency_ms`;

/** Options of the entry selections. */
export interface SelectOptions {
  order: Order;
  /** At most this many rows; undefined for all. */
  limit?: number | undefined;
}

/** A query text and its bind values. */
export interface BoundQuery {
  text: string;
  values: unknown[];
}

/** The SELECT of {@link selectEntries}, with bind parameters (exported for EXPLAIN in tests). */
export function entriesQuery(filters: Filters, opts: SelectOptions): BoundQuery {
  const values: unknown[] = [];
  const where = filterCondition(filters, paramBinder(values));
  const limit = opts.limit === undefined ? '' : ` LIMIT ${Math.trunc(opts.limit)}`;
  return {
    text: `SELECT ${ENTRY_ROW_COLUMNS} FROM audit_log WHERE ${where} ORDER BY ${orderBy(opts.order)}${limit}`,
    values,
  };
}

/**
 * Entries matching `filters`, as {@link EntryRow}s (bind parameters; for `search --output table`
 * and tail's first page).
 */
export async function selectEntries(
  client: pg.ClientBase,
  filters: Filters,
  opts: SelectOptions,
): Promise<EntryRow[]> {
  const q = entriesQuery(filters, opts);
  const res = await client.query<EntryRow>(q.text, q.values);
  return res.rows;
}

/** What a COPY statement of {@link entriesCopySql} yields per row. */
export type CopyShape = 'ndjson' | 'csv';

/**
 * A `COPY (SELECT …) TO STDOUT` statement (text format) for the matching entries: one column, the
 * JSON line, for `ndjson`; the {@link CSV_COLUMNS} as text for `csv`. Values are quoted literals
 * (COPY takes no bind parameters), through {@link literalBinder}.
 */
export function entriesCopySql(filters: Filters, shape: CopyShape, opts: SelectOptions): string {
  const where = filterCondition(filters, literalBinder);
  const columns =
    shape === 'ndjson' ? ENTRY_JSON_SQL : CSV_COLUMNS.map((c) => `${CSV_SQL[c]} AS ${c}`).join(', ');
  const limit = opts.limit === undefined ? '' : ` LIMIT ${Math.trunc(opts.limit)}`;
  return `COPY (SELECT ${columns} FROM audit_log WHERE ${where} ORDER BY ${orderBy(opts.order)}${limit}) TO STDOUT`;
}

/** The newest `n` matching entries, oldest first (tail's first page). */
export async function newestEntries(client: pg.ClientBase, filters: Filters, n: number): Promise<EntryRow[]> {
  const rows = await selectEntries(client, filters, { order: 'desc', limit: n });
  return rows.reverse();
}

/** Ids (decimal text) of the matching entries with an id above `afterId`. */
export async function matchingIdsAfter(
  client: pg.ClientBase,
  filters: Filters,
  afterId: string,
): Promise<string[]> {
  const params: unknown[] = [afterId];
  const where = filterCondition(filters, paramBinder(params));
  const res = await client.query<{ id: string }>(
    `SELECT id::text AS id FROM audit_log WHERE id > $1::bigint AND ${where}`,
    params,
  );
  return res.rows.map((r) => r.id);
}

/** The SELECT of {@link entriesAfter} (exported for EXPLAIN in tests). */
export function entriesAfterQuery(filters: Filters, afterId: string, limit: number): BoundQuery {
  const values: unknown[] = [afterId];
  const where = filterCondition(filters, paramBinder(values));
  return {
    text: `SELECT ${ENTRY_ROW_COLUMNS} FROM audit_log WHERE id > $1::bigint AND ${where} ORDER BY audit_log.id LIMIT ${Math.trunc(limit)}`,
    values,
  };
}

/** Matching entries with an id above `afterId`, by id, at most `limit` (tail's follow query). */
export async function entriesAfter(
  client: pg.ClientBase,
  filters: Filters,
  afterId: string,
  limit: number,
): Promise<EntryRow[]> {
  const q = entriesAfterQuery(filters, afterId, limit);
  const res = await client.query<EntryRow>(q.text, q.values);
  return res.rows;
}

/** The sequence behind `audit_log.id`, as a regclass text. */
export async function idSequence(client: pg.ClientBase): Promise<string> {
  const res = await client.query<{ seq: string | null }>(
    `SELECT pg_get_serial_sequence('audit_log', 'id') AS seq`,
  );
  const seq = res.rows[0]?.seq;
  if (!seq)
    throw new Error('audit_log.id has no sequence (is the schema migrated? run: audit-gateway migrate)');
  return seq;
}

/** The highest id the sequence has handed out (decimal text; "0" when none yet). */
export async function sequenceLastValue(client: pg.ClientBase, seq: string): Promise<string> {
  const res = await client.query<{ v: string | null }>(
    `SELECT pg_sequence_last_value($1::regclass)::text AS v`,
    [seq],
  );
  return res.rows[0]?.v ?? '0';
}

/**
 * The virtual transaction ids of other sessions holding a lock on the id sequence. `nextval` takes
 * a lock on it that lasts until its transaction ends, so this is every open transaction that may
 * hold an id not yet visible (see read/follow.ts).
 */
export async function sequenceHolders(client: pg.ClientBase, seq: string): Promise<string[]> {
  const res = await client.query<{ vxid: string }>(
    `SELECT DISTINCT virtualtransaction AS vxid FROM pg_locks
      WHERE locktype = 'relation' AND relation = $1::regclass
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND pid IS DISTINCT FROM pg_backend_pid()`,
    [seq],
  );
  return res.rows.map((r) => r.vxid);
}

/** A percentile in ms, rounded to microseconds (drops float noise such as 1886.1999999999998). */
function roundMs(v: number | string | null): number | null {
  return v === null ? null : Math.round(Number(v) * 1000) / 1000;
}

/** The `--by` choices of `stats` and their columns. */
export const STATS_GROUPS = {
  tool: 'tool_name',
  subject: 'client_subject',
  backend: 'backend_name',
  status: 'response_status',
  role: 'client_role',
} as const;

/** A `stats --by` choice. */
export type StatsGroup = keyof typeof STATS_GROUPS;

/** One group of `stats` (CONTRACT.md §5): numbers as JS numbers, latencies in ms (null: none). */
export interface StatsRow {
  group: string | null;
  count: number;
  errors: number;
  /** errors / count, from 0 to 1. */
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}

/** The `stats --sort` keys and the SQL they order by (each descending, NULLs last). */
export const STATS_SORTS = {
  count: 'count(*)',
  errors: `count(*) FILTER (WHERE response_status <> 'success')`,
  error_rate: `count(*) FILTER (WHERE response_status <> 'success')::float8 / count(*)`,
  p50: 'percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)',
  p95: 'percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)',
  p99: 'percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)',
} as const;

/** A `stats --sort` key. */
export type StatsSort = keyof typeof STATS_SORTS;

/**
 * Count, errors (status other than `success`) and latency percentiles (`percentile_cont`, over the
 * entries with a latency) per group, the largest `sort` value first (default count), then by count
 * and group.
 */
export async function statsBy(
  client: pg.ClientBase,
  filters: Filters,
  by: StatsGroup,
  sort: StatsSort = 'count',
): Promise<StatsRow[]> {
  const params: unknown[] = [];
  const where = filterCondition(filters, paramBinder(params));
  const col = STATS_GROUPS[by];
  const res = await client.query<{
    group: string | null;
    count: string;
    errors: string;
    p50: number | string | null;
    p95: number | string | null;
    p99: number | string | null;
  }>(
    `SELECT ${col} AS "group", count(*) AS count,
            count(*) FILTER (WHERE response_status <> 'success') AS errors,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
            percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
       FROM audit_log WHERE ${where}
      GROUP BY ${col} ORDER BY ${STATS_SORTS[sort]} DESC NULLS LAST, count(*) DESC, ${col} ASC NULLS LAST`,
    params,
  );
  return res.rows.map((r) => {
    const count = Number(r.count);
    const errors = Number(r.errors);
    return {
      group: r.group,
      count,
      errors,
      error_rate: count === 0 ? 0 : errors / count,
      p50_ms: roundMs(r.p50),
      p95_ms: roundMs(r.p95),
      p99_ms: roundMs(r.p99),
    };
  });
}

/** One `audit_reject` row for `rejects` (CONTRACT.md §5). */
export interface RejectRow {
  /** bigint id as decimal text. */
  id: string;
  /** RFC 3339 UTC with microseconds. */
  received_at: string;
  source: string;
  reason: string;
  /** The line as received, byte for byte. */
  raw: Buffer;
}

/** Options of {@link selectRejects}. */
export interface RejectFilters {
  /** Inclusive lower bound on received_at (RFC 3339 text). */
  since?: string | undefined;
  /** Exclusive upper bound on received_at. */
  until?: string | undefined;
  /** At most this many rows. */
  limit: number;
}

/**
 * The rejected lines, newest first (received_at, then id, both descending; served by
 * audit_reject_received_at_idx).
 */
export async function selectRejects(client: pg.ClientBase, f: RejectFilters): Promise<RejectRow[]> {
  const values: unknown[] = [];
  const bind = paramBinder(values);
  const parts: string[] = [];
  if (f.since !== undefined) parts.push(`received_at >= ${bind(f.since)}::timestamptz`);
  if (f.until !== undefined) parts.push(`received_at < ${bind(f.until)}::timestamptz`);
  const res = await client.query<RejectRow>(
    `SELECT id::text AS id, ${utcText('received_at')} AS received_at, source, reason, raw
       FROM audit_reject WHERE ${parts.length === 0 ? 'TRUE' : parts.join(' AND ')}
      ORDER BY audit_reject.received_at DESC, audit_reject.id DESC LIMIT ${Math.trunc(f.limit)}`,
    values,
  );
  return res.rows;
}
