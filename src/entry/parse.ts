/**
 * One wire line → one validated, sanitised, redacted entry row, or a reject with a reason that names
 * the field (CONTRACT.md §3, §6). Pure: no I/O.
 */
import { rewriteJson, topLevelMembers } from './jsonText.js';
import { decodeUtf8, sanitizeString } from './sanitize.js';

/**
 * An entry ready for storage: every value is the text Postgres reads for its column (or null), in
 * the order of {@link ENTRY_COLUMNS}. The COPY path and the INSERT path both send these same texts,
 * so both store identical rows.
 */
export interface EntryRow {
  request_id: string;
  /** RFC 3339 text as sent, or an ISO string made from epoch milliseconds. */
  timestamp: string;
  client_subject: string;
  client_role: string | null;
  tool_name: string;
  backend_name: string | null;
  /** JSON text after sanitising and redaction; null for a missing or null `request_args`. */
  request_args: string | null;
  response_status: string;
  error_message: string | null;
  /** Decimal digits (exact, never through a JS number when sent as plain digits). */
  latency_ms: string | null;
  /** JSON object text of the unknown top-level fields, or null when there are none. */
  extra: string | null;
}

/** The `audit_log` columns the writer fills, in COPY order. */
export const ENTRY_COLUMNS = [
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
  'extra',
] as const satisfies readonly (keyof EntryRow)[];

/** A bounded set of reject codes, for metrics and logs (style.md rule 3). */
export type RejectCode =
  | 'invalid_json'
  | 'not_object'
  | 'missing_field'
  | 'wrong_type'
  | 'bad_uuid'
  | 'bad_timestamp'
  | 'too_long'
  | 'empty'
  | 'bad_latency'
  | 'too_deep'
  | 'oversized'
  | 'db_refused';

/** The outcome of {@link parseEntry}. */
export type ParseResult =
  | {
      ok: true;
      row: EntryRow;
      /** Field paths where a character was replaced by U+FFFD (empty when none). */
      sanitized: string[];
      /** Values replaced by `"[REDACTED]"`. */
      redacted: number;
    }
  | { ok: false; code: RejectCode; reason: string };

/** Options of {@link parseEntry}. */
export interface ParseOptions {
  /** Lower-cased keys whose values in `request_args` are redacted (§6); empty for none. */
  redactKeys: ReadonlySet<string>;
  /** Top-level fields to drop instead of keeping in `extra` (`replay` drops `id`, `received_at`). */
  ignoreFields?: ReadonlySet<string>;
}

/** The default `--redact-keys` of CONTRACT.md §6. */
export const DEFAULT_REDACT_KEYS = [
  'password',
  'passwd',
  'secret',
  'token',
  'api_key',
  'apikey',
  'authorization',
  'cookie',
  'private_key',
  'access_key',
  'client_secret',
  'refresh_token',
] as const;

/** Parses a `--redact-keys` value: comma-separated, case-insensitive; `''` turns redaction off. */
export function parseRedactKeys(value: string): Set<string> {
  return new Set(
    value
      .split(',')
      .map((k) => k.trim().toLowerCase())
      .filter((k) => k.length > 0),
  );
}

const KNOWN = new Set<string>(ENTRY_COLUMNS.filter((c) => c !== 'extra'));
/** Postgres' uuid_in: 32 hex digits, an optional '-' after any group of four, optional braces. */
const UUID = /^(\{)?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}(\})?$/;
/** RFC 3339 date-time with a zone (a space may stand for `T`, as RFC 3339 §5.6 notes). */
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
/** ±8.64e15 ms is the range of an ECMAScript Date; Postgres holds all of it. */
export const MAX_EPOCH_MS = 8.64e15;
/** The largest `bigint` (latency_ms). */
export const BIGINT_MAX = 9223372036854775807n;
/** Days per month, February in a leap year (RFC 3339 §5.7). */
export const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function reject(code: RejectCode, reason: string): ParseResult {
  return { ok: false, code, reason };
}

/** Checks a timestamp's text (CONTRACT.md §3: RFC 3339 with a zone); returns the fault, or null when it is valid. */
export function timestampFault(s: string): string | null {
  const m = RFC3339.exec(s);
  if (!m) return 'not an RFC 3339 time with zone';
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  if (year === 0) return 'year 0000 is out of range';
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (month < 1 || month > 12) return 'month out of range';
  if (day < 1 || day > (month === 2 && !leap ? 28 : DAYS_IN_MONTH[month - 1]!)) return 'day out of range';
  if (hour > 23 || minute > 59 || second > 60) return 'time of day out of range';
  if (m[7] && (Number(m[8]) > 15 || Number(m[9]) > 59)) return 'zone offset out of range';
  return null;
}

/**
 * Validates one wire line (without its line ending) and turns it into an {@link EntryRow}.
 *
 * Never throws: every fault comes back as `{ ok: false, code, reason }`, where `reason` starts with
 * the field name (`timestamp: not an RFC 3339 time with zone`), or with `line:` for the line itself.
 */
export function parseEntry(line: Buffer, options: ParseOptions): ParseResult {
  const decoded = decodeUtf8(line);
  const text = decoded.text;
  const sanitized: string[] = decoded.replaced ? ['(invalid UTF-8)'] : [];
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    return reject('invalid_json', `line: not valid JSON (${(err as Error).message})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    return reject('not_object', `line: not a JSON object (got ${typeName(obj)})`);
  }
  const o = obj as Record<string, unknown>;

  // Text fields: sanitise first, then measure (lengths count UTF-8 bytes after sanitising).
  const str = (
    field: string,
    required: boolean,
    min: number,
    max: number,
  ): { value: string | null } | { fault: ParseResult } => {
    const v = o[field];
    if (v === undefined || (v === null && !required)) {
      return required ? { fault: reject('missing_field', `${field}: missing (required)`) } : { value: null };
    }
    if (typeof v !== 'string') {
      return { fault: reject('wrong_type', `${field}: expected a string, got ${typeName(v)}`) };
    }
    const clean = sanitizeString(v);
    if (clean !== v) sanitized.push(field);
    const bytes = Buffer.byteLength(clean, 'utf8');
    if (bytes < min) return { fault: reject('empty', `${field}: empty (at least ${min} byte needed)`) };
    if (bytes > max) return { fault: reject('too_long', `${field}: longer than ${max} bytes (${bytes})`) };
    return { value: clean };
  };

  // request_id
  const rid = o.request_id;
  if (rid === undefined || rid === null) return reject('missing_field', 'request_id: missing (required)');
  if (typeof rid !== 'string') {
    return reject('wrong_type', `request_id: expected a string, got ${typeName(rid)}`);
  }
  const um = UUID.exec(rid);
  if (!um || Boolean(um[1]) !== Boolean(um[2])) return reject('bad_uuid', 'request_id: not a UUID');

  // timestamp
  const ts = o.timestamp;
  let timestamp: string;
  if (ts === undefined || ts === null) return reject('missing_field', 'timestamp: missing (required)');
  if (typeof ts === 'string') {
    const fault = timestampFault(ts);
    if (fault) return reject('bad_timestamp', `timestamp: ${fault}`);
    timestamp = ts;
  } else if (typeof ts === 'number') {
    if (!Number.isSafeInteger(ts))
      return reject('bad_timestamp', 'timestamp: epoch milliseconds must be an integer');
    if (Math.abs(ts) > MAX_EPOCH_MS)
      return reject('bad_timestamp', 'timestamp: epoch milliseconds out of range');
    timestamp = new Date(ts).toISOString();
  } else {
    return reject(
      'wrong_type',
      `timestamp: expected an RFC 3339 string or epoch milliseconds, got ${typeName(ts)}`,
    );
  }

  const subject = str('client_subject', true, 0, 1024);
  if ('fault' in subject) return subject.fault;
  const role = str('client_role', false, 0, Number.POSITIVE_INFINITY);
  if ('fault' in role) return role.fault;
  const tool = str('tool_name', true, 1, 1024);
  if ('fault' in tool) return tool.fault;
  const backend = str('backend_name', false, 0, Number.POSITIVE_INFINITY);
  if ('fault' in backend) return backend.fault;
  const status = str('response_status', true, 1, 64);
  if ('fault' in status) return status.fault;
  const errMsg = str('error_message', false, 0, Number.POSITIVE_INFINITY);
  if ('fault' in errMsg) return errMsg.fault;

  // The raw text of each top-level member: request_args, extra and latency_ms are taken from it.
  const members = topLevelMembers(text);

  // latency_ms
  let latency: string | null = null;
  const lat = o.latency_ms;
  if (lat !== undefined && lat !== null) {
    if (typeof lat !== 'number') {
      return reject('wrong_type', `latency_ms: expected an integer >= 0 or null, got ${typeName(lat)}`);
    }
    const span = members.get('latency_ms')!;
    const raw = text.slice(span.start, span.end);
    if (/^\d+$/.test(raw)) {
      if (BigInt(raw) > BIGINT_MAX)
        return reject('bad_latency', `latency_ms: larger than a bigint holds (${raw})`);
      latency = BigInt(raw).toString();
    } else if (Number.isSafeInteger(lat) && lat >= 0) {
      latency = String(lat);
    } else {
      return reject('bad_latency', `latency_ms: not an integer >= 0 (${raw})`);
    }
  }

  // request_args and extra, from their own JSON text
  let requestArgs: string | null = null;
  let redacted = 0;
  const extraParts: string[] = [];
  try {
    for (const [key, span] of members) {
      if (key === 'request_args') {
        if (o.request_args === null) continue;
        const r = rewriteJson(text.slice(span.start, span.end), options.redactKeys);
        requestArgs = r.text;
        redacted += r.redacted;
        for (const p of r.sanitizedPaths) sanitized.push(`request_args${p.slice(1)}`);
      } else if (!KNOWN.has(key) && !options.ignoreFields?.has(key)) {
        const r = rewriteJson(text.slice(span.start, span.end), null);
        const cleanKey = sanitizeString(key);
        if (cleanKey !== key) sanitized.push(`extra{key}`);
        for (const p of r.sanitizedPaths) sanitized.push(`${cleanKey}${p.slice(1)}`);
        extraParts.push(`${JSON.stringify(cleanKey)}:${r.text}`);
      }
    }
  } catch (err) {
    if (err instanceof RangeError) return reject('too_deep', 'request_args: nested too deeply');
    throw err;
  }

  return {
    ok: true,
    row: {
      request_id: rid,
      timestamp,
      client_subject: subject.value!,
      client_role: role.value,
      tool_name: tool.value!,
      backend_name: backend.value,
      request_args: requestArgs,
      response_status: status.value!,
      error_message: errMsg.value,
      latency_ms: latency,
      extra: extraParts.length > 0 ? `{${extraParts.join(',')}}` : null,
    },
    sanitized,
    redacted,
  };
}
