/**
 * The filters of the read commands (CONTRACT.md §5), turned into one SQL condition on `audit_log`.
 *
 * No value is ever written into SQL text by this module: each value goes through a {@link Binder},
 * which returns either a bind placeholder (`$3`, the value appended to a parameter list) or, for
 * `COPY (SELECT …) TO STDOUT` — which cannot take bind parameters — a literal quoted by pg's
 * `escapeLiteral`. Every placeholder carries an explicit cast, so both forms mean the same.
 *
 * Index use (migrations/…_indexes-and-rejects.sql): `--since`/`--until` → (`timestamp`, id);
 * `--subject` → (client_subject, `timestamp`); `--tool` → (tool_name, `timestamp`); `--request-id`
 * → UNIQUE (request_id, `timestamp`). `=` is used unless the value holds a `*`, so the plain forms
 * stay index lookups; role, backend, status, `--errors`, `--min-latency`, `--arg` and `--text` have no
 * index of their own and filter the rows the others select.
 */
import pg from 'pg';

/**
 * The filters of CONTRACT.md §5, already validated (the CLI layer does that and names the flag).
 * Absent fields do not filter; every present one is ANDed.
 */
export interface Filters {
  /** client_subject; `*` is a wildcard, `""` is the anonymous caller. */
  subject?: string;
  /** client_role; `*` is a wildcard. */
  role?: string;
  /** tool_name; `*` is a wildcard. */
  tool?: string;
  /** backend_name; `*` is a wildcard. */
  backend?: string;
  /** response_status; `*` is a wildcard. */
  status?: string;
  /** A UUID text, as Postgres reads it. */
  requestId?: string;
  /** Inclusive lower bound on `timestamp`: RFC 3339 text (see util/time.ts). */
  since?: string;
  /** Exclusive upper bound on `timestamp`: RFC 3339 text. */
  until?: string;
  /** Only entries whose response_status is not `success`. */
  errors?: boolean;
  /** Inclusive lower bound on latency_ms, as decimal digits (exact, no JS number). */
  minLatencyMs?: string;
  /** JSON object texts, each contained in request_args (`@>`); see {@link argFilterJson}. */
  args?: string[];
  /** Case-insensitive substring of error_message; every character is literal. */
  text?: string;
}

/** Turns one value into SQL text that stands for it: a placeholder or a quoted literal. */
export type Binder = (value: string) => string;

/** A binder that appends to `params` and returns `$n`. */
export function paramBinder(params: unknown[]): Binder {
  return (value) => {
    params.push(value);
    return `$${params.length}`;
  };
}

/** A binder that returns the value as a quoted SQL literal (pg's `escapeLiteral`), for COPY. */
export const literalBinder: Binder = (value) => pg.escapeLiteral(value);

/** True when a subject/role/tool/backend/status value holds the `*` wildcard. */
export function hasWildcard(value: string): boolean {
  return value.includes('*');
}

/**
 * A LIKE pattern (escape character `\`) for a value where `*` matches any run of characters and
 * `%`, `_` and `\` stand for themselves.
 */
export function wildcardPattern(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%');
}

/** A LIKE pattern matching any text that contains `value` literally. */
export function substringPattern(value: string): string {
  return `%${value.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * The JSON object text for `--arg KEY=VALUE`: `{"KEY": VALUE}` with VALUE's own JSON text when it
 * parses as JSON (so a number keeps every digit), else VALUE as a JSON string.
 * @returns null when the text has no `=` or an empty KEY
 */
export function argFilterJson(spec: string): string | null {
  const eq = spec.indexOf('=');
  if (eq <= 0) return null;
  const key = spec.slice(0, eq);
  const raw = spec.slice(eq + 1);
  let value: string;
  try {
    JSON.parse(raw);
    value = raw.trim();
  } catch {
    value = JSON.stringify(raw);
  }
  return `{${JSON.stringify(key)}:${value}}`;
}

function match(column: string, value: string, bind: Binder): string {
  return hasWildcard(value) ? `${column} LIKE ${bind(wildcardPattern(value))}` : `${column} = ${bind(value)}`;
}

/**
 * The WHERE condition (without `WHERE`) for `filters`, `TRUE` when there are none.
 * Column names are unqualified, for a query on `audit_log` alone.
 */
export function filterCondition(filters: Filters, bind: Binder): string {
  const parts: string[] = [];
  if (filters.since !== undefined) parts.push(`"timestamp" >= ${bind(filters.since)}::timestamptz`);
  if (filters.until !== undefined) parts.push(`"timestamp" < ${bind(filters.until)}::timestamptz`);
  if (filters.subject !== undefined) parts.push(match('client_subject', filters.subject, bind));
  if (filters.tool !== undefined) parts.push(match('tool_name', filters.tool, bind));
  if (filters.requestId !== undefined) parts.push(`request_id = ${bind(filters.requestId)}::uuid`);
  if (filters.role !== undefined) parts.push(match('client_role', filters.role, bind));
  if (filters.backend !== undefined) parts.push(match('backend_name', filters.backend, bind));
  if (filters.status !== undefined) parts.push(match('response_status', filters.status, bind));
  if (filters.errors) parts.push(`response_status <> 'success'`);
  if (filters.minLatencyMs !== undefined) parts.push(`latency_ms >= ${bind(filters.minLatencyMs)}::bigint`);
  for (const arg of filters.args ?? []) parts.push(`request_args @> ${bind(arg)}::jsonb`);
  if (filters.text !== undefined) parts.push(`error_message ILIKE ${bind(substringPattern(filters.text))}`);
  return parts.length === 0 ? 'TRUE' : parts.join(' AND ');
}
