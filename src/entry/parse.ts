/**
 * One wire line → one validated, sanitised, redacted entry row, or a reject with a reason that names
 * the field (CONTRACT.md §3, §6). Pure: no I/O.
 */
import { isUtf8 } from 'node:buffer';
import {
  BIGINT_MAX,
  ENTRY_COLUMNS,
  epochMsBytes,
  isUuidBytes,
  KNOWN_FIELDS,
  MAX_JSON_DEPTH,
  MAX_REPORTED_PATHS,
  rfc3339FaultBytes,
  TEXT_FIELDS,
} from './grammar.js';
import { rewriteJson, scanMembers } from './jsonText.js';
import { decodeUtf8, sanitizeString } from './sanitize.js';

export {
  BIGINT_MAX,
  DAYS_IN_MONTH,
  ENTRY_COLUMNS,
  MAX_EPOCH_MS,
  REDACTED_JSON,
  timestampFault,
} from './grammar.js';

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

/** Checked at compile time: ENTRY_COLUMNS names exactly the fields of EntryRow. */
const _columnsMatch: readonly (keyof EntryRow)[] = ENTRY_COLUMNS;
void _columnsMatch;

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

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function reject(code: RejectCode, reason: string): ParseResult {
  return { ok: false, code, reason };
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
  // The bytes every span refers to: the line itself, or its text re-encoded once invalid UTF-8
  // became U+FFFD.
  const b = isUtf8(line) ? line : Buffer.from(text, 'utf8');
  const sanitized: string[] = decoded.replaced ? ['(invalid UTF-8)'] : [];
  // Depth first (one linear pass): a deep value is refused before JSON.parse spends time on it.
  const scan = scanMembers(b);
  if (!scan.ok) {
    const where = scan.field === null ? 'line' : sanitizeString(scan.field);
    return reject('too_deep', `${where}: nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
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
  // The byte span of each top-level member's value: request_args, extra, latency_ms and epoch
  // timestamps are taken from their own text.
  const members = scan.members;

  // request_id
  const rid = o.request_id;
  if (rid === undefined || rid === null) return reject('missing_field', 'request_id: missing (required)');
  if (typeof rid !== 'string') {
    return reject('wrong_type', `request_id: expected a string, got ${typeName(rid)}`);
  }
  const ridBytes = Buffer.from(rid, 'utf8');
  if (!isUuidBytes(ridBytes, 0, ridBytes.length)) return reject('bad_uuid', 'request_id: not a UUID');

  // timestamp
  const ts = o.timestamp;
  let timestamp: string;
  if (ts === undefined || ts === null) return reject('missing_field', 'timestamp: missing (required)');
  if (typeof ts === 'string') {
    const tb = Buffer.from(ts, 'utf8');
    const fault = rfc3339FaultBytes(tb, 0, tb.length);
    if (fault) return reject('bad_timestamp', `timestamp: ${fault}`);
    timestamp = ts;
  } else if (typeof ts === 'number') {
    const span = members.get('timestamp')!;
    const ms = epochMsBytes(b, span.start, span.end);
    if (typeof ms === 'string') return reject('bad_timestamp', `timestamp: ${ms}`);
    timestamp = new Date(ms).toISOString();
  } else {
    return reject(
      'wrong_type',
      `timestamp: expected an RFC 3339 string or epoch milliseconds, got ${typeName(ts)}`,
    );
  }

  // Text fields: sanitise first, then measure (lengths count UTF-8 bytes after sanitising).
  const texts = new Map<string, string | null>();
  for (const rule of TEXT_FIELDS) {
    const field = rule.name;
    const v = o[field];
    if (v === undefined || (v === null && !rule.required)) {
      if (rule.required) return reject('missing_field', `${field}: missing (required)`);
      texts.set(field, null);
      continue;
    }
    if (typeof v !== 'string') {
      return reject('wrong_type', `${field}: expected a string, got ${typeName(v)}`);
    }
    const clean = sanitizeString(v);
    if (clean !== v) sanitized.push(field);
    const bytes = Buffer.byteLength(clean, 'utf8');
    if (bytes < rule.minBytes) {
      return reject('empty', `${field}: empty (at least ${rule.minBytes} byte needed)`);
    }
    if (bytes > rule.maxBytes) {
      return reject('too_long', `${field}: longer than ${rule.maxBytes} bytes (${bytes})`);
    }
    texts.set(field, clean);
  }

  // latency_ms
  let latency: string | null = null;
  const lat = o.latency_ms;
  if (lat !== undefined && lat !== null) {
    if (typeof lat !== 'number') {
      return reject('wrong_type', `latency_ms: expected an integer >= 0 or null, got ${typeName(lat)}`);
    }
    const span = members.get('latency_ms')!;
    const raw = b.toString('latin1', span.start, span.end);
    if (/^\d+$/.test(raw)) {
      if (BigInt(raw) > BIGINT_MAX)
        return reject('bad_latency', `latency_ms: larger than a bigint holds (${raw})`);
      latency = BigInt(raw).toString();
    } else if (Number.isSafeInteger(lat) && lat >= 0) {
      latency = String(lat);
    } else {
      return reject('bad_latency', `latency_ms: not an integer >= 0 (${raw.slice(0, 64)})`);
    }
  }

  // request_args and extra, from their own JSON text
  let requestArgs: string | null = null;
  let redacted = 0;
  let more = 0;
  const extraParts: string[] = [];
  /** Reports sanitised paths: the first MAX_REPORTED_PATHS of the entry, and how many more. */
  const note = (paths: string[], count: number) => {
    let listed = 0;
    for (const p of paths) {
      if (sanitized.length >= MAX_REPORTED_PATHS) break;
      sanitized.push(p);
      listed++;
    }
    more += count - listed;
  };
  let extraKeyFaults = 0;
  for (const [key, span] of members) {
    if (key === 'request_args') {
      if (o.request_args === null) continue;
      const r = rewriteJson(b, span.start, span.end, 'request_args', options.redactKeys);
      requestArgs = r.text;
      redacted += r.redacted;
      note(r.sanitizedPaths, r.sanitizedCount);
    } else if (!KNOWN_FIELDS.has(key) && !options.ignoreFields?.has(key)) {
      const cleanKey = sanitizeString(key);
      if (cleanKey !== key) extraKeyFaults++;
      const r = rewriteJson(b, span.start, span.end, cleanKey, null);
      note(r.sanitizedPaths, r.sanitizedCount);
      extraParts.push(`${JSON.stringify(cleanKey)}:${r.text}`);
    }
  }
  if (extraKeyFaults > 0) note(['extra{key}'], extraKeyFaults);
  if (more > 0) sanitized.push(`(and ${more} more)`);

  return {
    ok: true,
    row: {
      request_id: rid,
      timestamp,
      client_subject: texts.get('client_subject')!,
      client_role: texts.get('client_role') ?? null,
      tool_name: texts.get('tool_name')!,
      backend_name: texts.get('backend_name') ?? null,
      request_args: requestArgs,
      response_status: texts.get('response_status')!,
      error_message: texts.get('error_message') ?? null,
      latency_ms: latency,
      extra: extraParts.length > 0 ? `{${extraParts.join(',')}}` : null,
    },
    sanitized,
    redacted,
  };
}
