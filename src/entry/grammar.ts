/**
 * The entry's grammar, in one place (CONTRACT.md §3, §6): the field table, the UUID forms Postgres
 * reads, RFC 3339 with calendar checks, the epoch limits, the length limits, the JSON depth limit
 * and the redaction marker. The reference parser (parse.ts), the fast encoder (encode.ts), the
 * spool loader, the CLI's filter parsing and the tests all take their rules from here.
 *
 * The checks work on bytes (`[start, end)` of a Uint8Array), so that the encoder runs them on the
 * wire line as it is and the others on `Buffer.from(text)`: one implementation, no regex twin.
 */

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
] as const;

/** A column of {@link ENTRY_COLUMNS}. */
export type EntryColumn = (typeof ENTRY_COLUMNS)[number];

/** One text field's rule (CONTRACT.md §3): required or not, and its length in UTF-8 bytes. */
export interface TextFieldRule {
  name: EntryColumn;
  required: boolean;
  /** Fewest UTF-8 bytes, after sanitising. */
  minBytes: number;
  /** Most UTF-8 bytes, after sanitising (Infinity: no limit but the line's). */
  maxBytes: number;
}

/** The string fields of the entry, in the order they are checked (the first fault is reported). */
export const TEXT_FIELDS: readonly TextFieldRule[] = [
  { name: 'client_subject', required: true, minBytes: 0, maxBytes: 1024 },
  { name: 'client_role', required: false, minBytes: 0, maxBytes: Number.POSITIVE_INFINITY },
  { name: 'tool_name', required: true, minBytes: 1, maxBytes: 1024 },
  { name: 'backend_name', required: false, minBytes: 0, maxBytes: Number.POSITIVE_INFINITY },
  { name: 'response_status', required: true, minBytes: 1, maxBytes: 64 },
  { name: 'error_message', required: false, minBytes: 0, maxBytes: Number.POSITIVE_INFINITY },
];

/** The rule of a text field, by name. */
export function textRule(name: EntryColumn): TextFieldRule {
  const r = TEXT_FIELDS.find((f) => f.name === name);
  if (!r) throw new Error(`${name} is not a text field`);
  return r;
}

/** The known top-level fields (every column but `extra`); any other field goes to `extra`. */
export const KNOWN_FIELDS: ReadonlySet<string> = new Set(ENTRY_COLUMNS.filter((c) => c !== 'extra'));

/** ±8.64e15 ms is the range of an ECMAScript Date; Postgres holds all of it. */
export const MAX_EPOCH_MS = 8.64e15;
/** The largest `bigint` (latency_ms). */
export const BIGINT_MAX = 9223372036854775807n;
/** Days per month, February in a leap year (RFC 3339 §5.7). */
export const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/**
 * The deepest nesting of a JSON value kept (`request_args`, an extra field). Postgres' jsonb input
 * is recursive and refuses a few thousand levels more ("stack depth limit exceeded" at
 * max_stack_depth 2MB: 5,000 levels pass, 20,000 fail); a deeper value is rejected before it costs
 * anything, naming its field.
 */
export const MAX_JSON_DEPTH = 2048;
/** The redaction marker of CONTRACT.md §6, as JSON text. */
export const REDACTED_JSON = '"[REDACTED]"';
/** Sanitised paths reported per entry (the count beyond is reported as one more item). */
export const MAX_REPORTED_PATHS = 8;
/** A reported path is cut to this many characters (a key may be ~1 MiB long). */
export const MAX_PATH_CHARS = 200;

function hexValue(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * True when b[s, e) is a UUID as Postgres' uuid_in reads it: 32 hex digits, an optional `-` after any
 * group of four, and optionally the whole in braces (both or neither).
 */
export function isUuidBytes(b: Uint8Array, s: number, e: number): boolean {
  if (b[s] === 0x7b) {
    if (e - s < 2 || b[e - 1] !== 0x7d) return false;
    s++;
    e--;
  }
  let i = s;
  for (let group = 0; group < 8; group++) {
    if (group > 0 && b[i] === 0x2d) i++;
    for (let k = 0; k < 4; k++) if (i >= e || hexValue(b[i++]) < 0) return false;
  }
  return i === e;
}

/** {@link isUuidBytes} on a string (the CLI's `--request-id`, the reference parser). */
export function isUuid(s: string): boolean {
  if (s.length > 64) return false;
  const b = Buffer.from(s, 'utf8');
  return isUuidBytes(b, 0, b.length);
}

/** Two decimal digits at `i`, or -1. */
function two(b: Uint8Array, i: number): number {
  const x = (b[i] ?? 0) - 0x30;
  const y = (b[i + 1] ?? 0) - 0x30;
  return x >= 0 && x <= 9 && y >= 0 && y <= 9 ? x * 10 + y : -1;
}

/**
 * Checks b[s, e) as an RFC 3339 date-time with a zone (CONTRACT.md §3; RFC 3339 §5.6, a space may
 * stand for `T` as its note allows): `YYYY-MM-DD`, `T`/`t`/space, `HH:MM:SS`, an optional fraction,
 * `Z`/`z` or `±HH:MM`, with the calendar's ranges (§5.7: leap years, a leap second 60).
 * @returns the fault, or null when the time is valid
 */
export function rfc3339FaultBytes(b: Uint8Array, s: number, e: number): string | null {
  const bad = 'not an RFC 3339 time with zone';
  if (e - s < 20) return bad;
  const hi = two(b, s);
  const lo = two(b, s + 2);
  const month = two(b, s + 5);
  const day = two(b, s + 8);
  const hour = two(b, s + 11);
  const minute = two(b, s + 14);
  const second = two(b, s + 17);
  if (hi < 0 || lo < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return bad;
  const t = b[s + 10];
  if (b[s + 4] !== 0x2d || b[s + 7] !== 0x2d || b[s + 13] !== 0x3a || b[s + 16] !== 0x3a) return bad;
  if (t !== 0x54 && t !== 0x74 && t !== 0x20) return bad;
  let i = s + 19;
  if (b[i] === 0x2e) {
    i++;
    const digits = i;
    while (i < e && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
    if (i === digits) return bad;
  }
  let zoneFault = false;
  if (b[i] === 0x5a || b[i] === 0x7a) {
    if (i + 1 !== e) return bad;
  } else {
    if ((b[i] !== 0x2b && b[i] !== 0x2d) || i + 6 !== e || b[i + 3] !== 0x3a) return bad;
    const zh = two(b, i + 1);
    const zm = two(b, i + 4);
    if (zh < 0 || zm < 0) return bad;
    zoneFault = zh > 15 || zm > 59;
  }
  const year = hi * 100 + lo;
  if (year === 0) return 'year 0000 is out of range';
  if (month < 1 || month > 12) return 'month out of range';
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (day < 1 || day > (month === 2 && !leap ? 28 : DAYS_IN_MONTH[month - 1]!)) return 'day out of range';
  if (hour > 23 || minute > 59 || second > 60) return 'time of day out of range';
  if (zoneFault) return 'zone offset out of range';
  return null;
}

/** {@link rfc3339FaultBytes} on a string. */
export function timestampFault(s: string): string | null {
  if (s.length > 64) return 'not an RFC 3339 time with zone';
  const b = Buffer.from(s, 'utf8');
  return rfc3339FaultBytes(b, 0, b.length);
}

/**
 * Checks the JSON number text b[s, e) as epoch milliseconds (CONTRACT.md §3): an integer written as
 * digits (a fraction or an exponent is not an integer, `1700000000000.9999999999` included, which a
 * JS number would round), within ±{@link MAX_EPOCH_MS}.
 * @returns the milliseconds, or the fault as a string
 */
export function epochMsBytes(b: Uint8Array, s: number, e: number): number | string {
  let i = s;
  if (b[i] === 0x2d) i++;
  if (i === e) return 'epoch milliseconds must be an integer';
  for (let k = i; k < e; k++) {
    if (b[k]! < 0x30 || b[k]! > 0x39) return 'epoch milliseconds must be an integer';
  }
  if (e - i > 16) return 'epoch milliseconds out of range';
  const ms = Number(Buffer.from(b.buffer, b.byteOffset + s, e - s).toString('latin1'));
  if (Math.abs(ms) > MAX_EPOCH_MS) return 'epoch milliseconds out of range';
  return ms === 0 ? 0 : ms; // -0 is 0
}
