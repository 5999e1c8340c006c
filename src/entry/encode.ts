/**
 * One wire line → its COPY text line (CONTRACT.md §3, §6; PostgreSQL docs, "COPY", "Text Format"),
 * in one pass over the line's bytes for the common entry, with {@link parseEntry} as the reference
 * for everything else.
 *
 * The fast path ({@link EntryEncoder.fast}) validates the JSON syntax of the whole line, finds the
 * top-level members, checks the fields, redacts `request_args` and writes the COPY line straight into
 * a reused buffer: no `JSON.parse`, no JS values for `request_args`, no intermediate strings. It
 * declines (returns null) whenever the line is not a plain, valid entry: invalid UTF-8 or JSON, a
 * missing or ill-typed field, anything that needs sanitising (`\u0000`, a lone surrogate), a
 * top-level key written with escapes, deep nesting, an unusual number. A repeated top-level key is
 * taken (the last one counts, as with JSON.parse); {@link EntryEncoder.encode} repairs invalid UTF-8
 * (U+FFFD) before the fast path, as the reference does. A declined line
 * goes through {@link parseEntry} and {@link encodeCopyRow}, which give the same COPY text for every
 * line the fast path accepts (test/unit/encode.test.ts checks that on the corpus and on mutations of
 * it) and the reject reason for the others.
 */
import { isUtf8 } from 'node:buffer';
import { encodeCopyRow } from './copyText.js';
import {
  BIGINT_MAX,
  ENTRY_COLUMNS,
  epochMsBytes,
  isUuidBytes,
  REDACTED_JSON,
  rfc3339FaultBytes,
  type TextFieldRule,
  textRule,
} from './grammar.js';
import { decodeStringLiteral } from './jsonText.js';
import { type ParseOptions, parseEntry, type RejectCode } from './parse.js';

/** The outcome of {@link EntryEncoder.encode}. */
export type EncodeResult =
  | {
      ok: true;
      /** The entry's COPY text line, newline included, columns in ENTRY_COLUMNS order. */
      copy: Buffer;
      /** Field paths where a character was replaced by U+FFFD (empty when none). */
      sanitized: readonly string[];
      /** Values replaced by `"[REDACTED]"`. */
      redacted: number;
      /** The entry's request_id, when it had to be sanitised (for the log line that says so). */
      requestId?: string;
    }
  | { ok: false; code: RejectCode; reason: string };

const NONE: readonly string[] = Object.freeze([]);
const INVALID_UTF8: readonly string[] = Object.freeze(['(invalid UTF-8)']);

// Top-level fields, by their index in ENTRY_COLUMNS (extra, index 10, is everything else).
const F_REQUEST_ID = 0;
const F_TIMESTAMP = 1;
const F_SUBJECT = 2;
const F_ROLE = 3;
const F_TOOL = 4;
const F_BACKEND = 5;
const F_ARGS = 6;
const F_STATUS = 7;
const F_ERROR = 8;
const F_LATENCY = 9;
const R_SUBJECT = textRule('client_subject');
const R_ROLE = textRule('client_role');
const R_TOOL = textRule('tool_name');
const R_BACKEND = textRule('backend_name');
const R_STATUS = textRule('response_status');
const R_ERROR = textRule('error_message');
/** The known top-level field names, as bytes, by index (every ENTRY_COLUMNS column but `extra`). */
const FIELDS = ENTRY_COLUMNS.filter((c) => c !== 'extra').map((f) => Buffer.from(f, 'latin1'));

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
/** Deeper values are left to the reference path (which rejects what the stack cannot hold). */
const MAX_DEPTH = 64;
const REDACTED = Buffer.from(REDACTED_JSON, 'latin1');
const NULL_COPY = Buffer.from('\\N', 'latin1');
/** The largest bigint as digits, for 19-digit latency_ms values. */
const BIGINT_MAX_DIGITS = Buffer.from(BIGINT_MAX.toString(), 'latin1');
/** Spans at least this long are copied with Buffer#copy (memcpy) instead of a loop. */
const NATIVE_COPY = 48;
/** 1 for the bytes COPY text writes as they are (all but backslash, tab, LF, CR). */
const COPY_PLAIN = new Uint8Array(256).fill(1);
COPY_PLAIN[BACKSLASH] = 0;
COPY_PLAIN[TAB] = 0;
COPY_PLAIN[LF] = 0;
COPY_PLAIN[CR] = 0;
/** Unknown top-level keys compared one by one before a Set takes over (see `unknown`). */
const LINEAR_KEYS = 8;
/** Size of the output slabs; an entry needs about 300 bytes. */
const SLAB_BYTES = 64 * 1024;

function isDigit(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x39;
}

/** Value of a hex digit, or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * Encodes wire lines for the writer; one instance per option set, reused for every line (it keeps
 * its output buffer). Not reentrant.
 */
export class EntryEncoder {
  /** Redact keys by length, lower-cased bytes; null when a key is not plain ASCII (fast path off). */
  private readonly redactByLength: Map<number, Buffer[]> | null;
  private readonly redactOn: boolean;
  private readonly ignore: ReadonlySet<string> | null;

  // Per-line state of the fast path.
  private b: Buffer = Buffer.alloc(0);
  /**
   * Where COPY lines are written: a slab shared by consecutive entries, each entry's line a view of
   * it (no copy, no allocation per entry). A full slab is left to the entries that hold views of it
   * and freed with the last of them; entries leave the queue in order, so slabs do too.
   */
  private out: Buffer = Buffer.allocUnsafeSlow(SLAB_BYTES);
  /** Next free byte of `out`. */
  private used = 0;
  /** Write position while a line is being encoded. */
  private o = 0;
  /** Set by scanString: the literal holds an escape / a byte ≥ 0x80. */
  private esc = false;
  private high = false;
  private readonly start = new Int32Array(10);
  private readonly end = new Int32Array(10);
  private readonly escaped = new Uint8Array(10);
  /** Unknown members: key start, key end, value start, value end, per member. */
  private extras: number[] = [];
  /** Spans of request_args values to redact: start, end, per value. */
  private redactions: number[] = [];
  /** Extras replaced by a later member of the same key. */
  private dead = 0;
  /** Hash table of the extras' keys (index + 1 per slot, 0 empty), once a line has many. */
  private slots: Int32Array = new Int32Array(0);

  constructor(private readonly options: ParseOptions) {
    this.redactOn = options.redactKeys.size > 0;
    let byLength: Map<number, Buffer[]> | null = new Map();
    for (const k of options.redactKeys) {
      if (!/^[\x20-\x7e]*$/.test(k) || k.includes('"') || k.includes('\\')) {
        byLength = null;
        break;
      }
      const list = byLength.get(k.length) ?? [];
      // As given: ParseOptions.redactKeys holds lower-cased keys, and the reference compares
      // key.toLowerCase() with them; an upper-case key in the set matches nothing on either path.
      list.push(Buffer.from(k, 'latin1'));
      byLength.set(k.length, list);
    }
    this.redactByLength = byLength;
    this.ignore = options.ignoreFields && options.ignoreFields.size > 0 ? options.ignoreFields : null;
  }

  /**
   * Validates, sanitises and redacts one wire line (without its line ending) and encodes it as a
   * COPY text line. Never throws: a bad line comes back as `{ ok: false, code, reason }` with the
   * reason of {@link parseEntry}.
   */
  encode(line: Buffer): EncodeResult {
    if (!isUtf8(line)) {
      // Invalid UTF-8 becomes U+FFFD (CONTRACT.md §3), as the reference decodes it; the repaired
      // bytes then take the fast path like any line.
      const repaired = Buffer.from(line.toString('utf8'), 'utf8');
      const copy = this.fast(repaired);
      if (copy !== null) {
        const s = this.start[F_REQUEST_ID]!;
        return {
          ok: true,
          copy,
          sanitized: INVALID_UTF8,
          redacted: this.redactions.length / 2,
          requestId: repaired.toString('latin1', s + 1, this.end[F_REQUEST_ID]! - 1),
        };
      }
    } else {
      const copy = this.fast(line);
      if (copy !== null) return { ok: true, copy, sanitized: NONE, redacted: this.redactions.length / 2 };
    }
    const r = parseEntry(line, this.options);
    if (!r.ok) return r;
    return {
      ok: true,
      copy: Buffer.from(encodeCopyRow(r.row), 'utf8'),
      sanitized: r.sanitized,
      redacted: r.redacted,
      requestId: r.row.request_id,
    };
  }

  /**
   * The fast path: the COPY line of a plain, valid entry, or null to leave the line to
   * {@link parseEntry} (see the module header for what it declines).
   */
  fast(line: Buffer): Buffer | null {
    if (this.redactOn && this.redactByLength === null) return null;
    if (!isUtf8(line)) return null;
    this.b = line;
    this.extras.length = 0;
    this.dead = 0;
    this.redactions.length = 0;
    this.start.fill(-1);
    if (!this.scanTop()) return null;
    const s = this.start;
    // Required fields; types are checked when written.
    if (s[F_REQUEST_ID]! < 0 || s[F_TIMESTAMP]! < 0 || s[F_SUBJECT]! < 0) return null;
    if (s[F_TOOL]! < 0 || s[F_STATUS]! < 0) return null;
    // Worst case: every byte doubled by escaping, each redaction 12 bytes, an epoch timestamp, nulls.
    this.reserve(2 * line.length + 12 * (this.redactions.length / 2) + 128);
    const o0 = this.used;
    this.o = o0;
    const b = line;
    // request_id: a UUID as uuid_in reads it, written as sent.
    if (!this.plainString(F_REQUEST_ID) || !isUuidBytes(b, s[F_REQUEST_ID]! + 1, this.end[F_REQUEST_ID]! - 1))
      return null;
    this.copyRaw(s[F_REQUEST_ID]! + 1, this.end[F_REQUEST_ID]! - 1);
    this.tab();
    if (!this.timestamp()) return null;
    this.tab();
    if (!this.text(F_SUBJECT, R_SUBJECT)) return null;
    this.tab();
    if (!this.text(F_ROLE, R_ROLE)) return null;
    this.tab();
    if (!this.text(F_TOOL, R_TOOL)) return null;
    this.tab();
    if (!this.text(F_BACKEND, R_BACKEND)) return null;
    this.tab();
    const a = s[F_ARGS]!;
    if (a < 0 || b[a] === 0x6e /* null */) this.nullValue();
    else this.jsonText(a, this.end[F_ARGS]!, true);
    this.tab();
    if (!this.text(F_STATUS, R_STATUS)) return null;
    this.tab();
    if (!this.text(F_ERROR, R_ERROR)) return null;
    this.tab();
    if (!this.latency()) return null;
    this.tab();
    this.extra();
    this.out[this.o++] = LF;
    this.used = this.o;
    return this.out.subarray(o0, this.o);
  }

  // ---- pass 1: syntax and spans -------------------------------------------------------------

  /** Scans the top-level object; fills start/end/escaped and extras. False to decline. */
  private scanTop(): boolean {
    const b = this.b;
    const n = b.length;
    let i = this.ws(0);
    if (b[i] !== 0x7b) return false;
    i = this.ws(i + 1);
    if (b[i] === 0x7d) return false; // {} lacks the required fields
    for (;;) {
      if (b[i] !== QUOTE) return false;
      const ks = i;
      i = this.scanString(i);
      if (i < 0 || this.esc) return false;
      const ke = i;
      i = this.ws(i);
      if (b[i] !== 0x3a) return false;
      i = this.ws(i + 1);
      const vs = i;
      const field = this.field(ks + 1, ke - 1);
      if (field === F_ARGS) {
        this.redactions.length = 0; // a repeated request_args: only the last one's count
        i = this.scanValue(i, 1, this.redactOn);
      } else if (b[i] === QUOTE) {
        i = this.scanString(i);
        if (field >= 0) this.escaped[field] = this.esc ? 1 : 0;
      } else i = this.scanValue(i, 1, false);
      if (i < 0) return false;
      if (field >= 0) {
        // A repeated key: the last one counts, as with JSON.parse.
        this.start[field] = vs;
        this.end[field] = i;
      } else this.unknown(ks, ke, vs, i);
      i = this.ws(i);
      if (b[i] === 0x2c) {
        i = this.ws(i + 1);
        continue;
      }
      if (b[i] !== 0x7d) return false;
      return this.ws(i + 1) === n;
    }
  }

  /**
   * Records an unknown top-level member for `extra`. A repeated key replaces the earlier member,
   * which is marked dead (value start -1): the last value counts and takes the last place, as with
   * `JSON.parse` and a Map. The first few keys are compared directly; past {@link LINEAR_KEYS}, an
   * open-addressing table of key hashes (FNV-1a over the key's bytes, compared byte for byte on a
   * hash match) finds repeats: tens of thousands of keys cost linear time, and no string per key.
   */
  private unknown(ks: number, ke: number, vs: number, ve: number): void {
    const b = this.b;
    if (this.ignore?.has(b.toString('utf8', ks + 1, ke - 1))) return;
    const x = this.extras;
    const count = x.length / 4;
    if (count < LINEAR_KEYS) {
      for (let k = 0; k < x.length; k += 4) {
        if (x[k + 2]! >= 0 && x[k + 1]! - x[k]! === ke - ks && b.compare(b, ks, ke, x[k], x[k + 1]) === 0) {
          x[k + 2] = -1;
          this.dead++;
        }
      }
    } else {
      if (count === LINEAR_KEYS || 2 * (count + 1) > this.slots.length) this.rehash(count);
      const earlier = this.insertKey(ks, ke, count);
      if (earlier >= 0) {
        x[4 * earlier + 2] = -1;
        this.dead++;
      }
    }
    x.push(ks, ke, vs, ve);
  }

  /** FNV-1a of b[s, e). */
  private hashKey(s: number, e: number): number {
    const b = this.b;
    let h = 0x811c9dc5;
    for (let i = s; i < e; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
    return h >>> 0;
  }

  /**
   * Puts the key b[ks, ke) of extras member `member` in the hash table.
   * @returns the live member with an equal key that it replaces, or -1
   */
  private insertKey(ks: number, ke: number, member: number): number {
    const slots = this.slots;
    const mask = slots.length - 1;
    const b = this.b;
    const x = this.extras;
    for (let at = this.hashKey(ks, ke) & mask; ; at = (at + 1) & mask) {
      const m = slots[at]! - 1;
      if (m < 0) {
        slots[at] = member + 1;
        return -1;
      }
      const os = x[4 * m]!;
      const oe = x[4 * m + 1]!;
      if (oe - os === ke - ks && b.compare(b, ks, ke, os, oe) === 0) {
        slots[at] = member + 1;
        return m;
      }
    }
  }

  /** A table with room for twice `count` keys more, holding the first `count` extras' keys. */
  private rehash(count: number): void {
    let size = 64;
    while (size < 4 * (count + 1)) size *= 2;
    this.slots = new Int32Array(size);
    for (let m = 0; m < count; m++) {
      if (this.extras[4 * m + 2]! >= 0) this.insertKey(this.extras[4 * m]!, this.extras[4 * m + 1]!, m);
    }
  }

  /** Index of a known top-level field named by b[s, e), or -1. */
  private field(s: number, e: number): number {
    const b = this.b;
    let f: number;
    // Length and first byte tell the candidates apart; then the bytes are compared.
    switch (e - s) {
      case 9:
        f = b[s] === 0x74 ? (b[s + 1] === 0x69 ? F_TIMESTAMP : F_TOOL) : -1;
        break;
      case 10:
        f = b[s] === 0x72 ? F_REQUEST_ID : b[s] === 0x6c ? F_LATENCY : -1;
        break;
      case 11:
        f = F_ROLE;
        break;
      case 12:
        f = b[s] === 0x72 ? F_ARGS : F_BACKEND;
        break;
      case 13:
        f = F_ERROR;
        break;
      case 14:
        f = F_SUBJECT;
        break;
      case 15:
        f = F_STATUS;
        break;
      default:
        return -1;
    }
    if (f < 0) return -1;
    const name = FIELDS[f]!;
    for (let k = 0; k < name.length; k++) if (b[s + k] !== name[k]) return -1;
    return f;
  }

  private ws(i: number): number {
    const b = this.b;
    for (;;) {
      const c = b[i];
      if (c !== 0x20 && c !== LF && c !== CR && c !== TAB) return i;
      i++;
    }
  }

  /**
   * Scans the string literal whose quote is at `i`; returns the index past it, or -1 when it is not
   * valid JSON or holds an escape that needs sanitising (`\u0000`, a lone surrogate). Sets
   * `esc` (any escape) and `high` (any byte ≥ 0x80).
   */
  private scanString(i: number): number {
    const b = this.b;
    const n = b.length;
    let esc = false;
    let high = false;
    i++;
    while (i < n) {
      const c = b[i]!;
      if (c === QUOTE) {
        this.esc = esc;
        this.high = high;
        return i + 1;
      }
      if (c === BACKSLASH) {
        esc = true;
        const d = b[i + 1];
        if (d === 0x75) {
          const u = this.hex4(i + 2);
          if (u <= 0) return -1; // bad hex or \u0000
          if (u >= 0xd800 && u <= 0xdbff) {
            if (b[i + 6] !== BACKSLASH || b[i + 7] !== 0x75) return -1;
            const lo = this.hex4(i + 8);
            if (lo < 0xdc00 || lo > 0xdfff) return -1;
            i += 12;
          } else if (u >= 0xdc00 && u <= 0xdfff) return -1;
          else i += 6;
          continue;
        }
        if (
          d === QUOTE ||
          d === BACKSLASH ||
          d === 0x2f ||
          d === 0x62 ||
          d === 0x66 ||
          d === 0x6e ||
          d === 0x72 ||
          d === 0x74
        ) {
          i += 2;
          continue;
        }
        return -1;
      }
      if (c < 0x20) return -1;
      if (c >= 0x80) high = true;
      i++;
    }
    return -1;
  }

  /** The value of the 4 hex digits at `i`, or -1. */
  private hex4(i: number): number {
    const b = this.b;
    const a = hexValue(b[i] ?? 0);
    const c = hexValue(b[i + 1] ?? 0);
    const d = hexValue(b[i + 2] ?? 0);
    const e = hexValue(b[i + 3] ?? 0);
    if (a < 0 || c < 0 || d < 0 || e < 0) return -1;
    return (a << 12) | (c << 8) | (d << 4) | e;
  }

  /**
   * Scans the JSON value at `i` (no leading whitespace); returns the index past it or -1. With
   * `redact`, the values of object members whose key is a redact key are recorded in `redactions`.
   */
  private scanValue(i: number, depth: number, redact: boolean): number {
    const b = this.b;
    const c = b[i];
    if (c === QUOTE) return this.scanString(i);
    if (c === 0x7b) {
      if (depth > MAX_DEPTH) return -1;
      i = this.ws(i + 1);
      if (b[i] === 0x7d) return i + 1;
      for (;;) {
        if (b[i] !== QUOTE) return -1;
        const ks = i;
        i = this.scanString(i);
        if (i < 0) return -1;
        let hit = false;
        if (redact) {
          // A key with escapes or non-ASCII bytes may lower-case to a redact key (U+212A KELVIN
          // SIGN is a k): decoded and compared as the reference does; a plain key on bytes.
          hit =
            this.esc || this.high
              ? this.options.redactKeys.has(decodeStringLiteral(b, ks, i).toLowerCase())
              : this.isRedactKey(ks + 1, i - 1);
        }
        i = this.ws(i);
        if (b[i] !== 0x3a) return -1;
        i = this.ws(i + 1);
        const vs = i;
        i = this.scanValue(i, depth + 1, redact && !hit);
        if (i < 0) return -1;
        if (hit) this.redactions.push(vs, i);
        i = this.ws(i);
        if (b[i] === 0x2c) {
          i = this.ws(i + 1);
          continue;
        }
        return b[i] === 0x7d ? i + 1 : -1;
      }
    }
    if (c === 0x5b) {
      if (depth > MAX_DEPTH) return -1;
      i = this.ws(i + 1);
      if (b[i] === 0x5d) return i + 1;
      for (;;) {
        i = this.scanValue(i, depth + 1, redact);
        if (i < 0) return -1;
        i = this.ws(i);
        if (b[i] === 0x2c) {
          i = this.ws(i + 1);
          continue;
        }
        return b[i] === 0x5d ? i + 1 : -1;
      }
    }
    if (c === 0x74) return this.literal(i, 'true');
    if (c === 0x66) return this.literal(i, 'false');
    if (c === 0x6e) return this.literal(i, 'null');
    return this.scanNumber(i);
  }

  private literal(i: number, word: string): number {
    for (let k = 0; k < word.length; k++) if (this.b[i + k] !== word.charCodeAt(k)) return -1;
    return i + word.length;
  }

  /** JSON number grammar (RFC 8259 §6); returns the index past it or -1. */
  private scanNumber(i: number): number {
    const b = this.b;
    const digit = (k: number) => isDigit(b[k]);
    if (b[i] === 0x2d) i++;
    if (b[i] === 0x30) i++;
    else if (digit(i)) while (digit(i)) i++;
    else return -1;
    if (b[i] === 0x2e) {
      i++;
      if (!digit(i)) return -1;
      while (digit(i)) i++;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === 0x2d) i++;
      if (!digit(i)) return -1;
      while (digit(i)) i++;
    }
    return i;
  }

  /** True when b[s, e) equals a redact key, compared case-insensitively (ASCII). */
  private isRedactKey(s: number, e: number): boolean {
    const list = this.redactByLength!.get(e - s);
    if (list === undefined) return false;
    const b = this.b;
    for (const key of list) {
      let k = 0;
      for (; k < key.length; k++) {
        let c = b[s + k]!;
        if (c >= 0x41 && c <= 0x5a) c |= 0x20;
        if (c !== key[k]) break;
      }
      if (k === key.length) return true;
    }
    return false;
  }

  // ---- pass 2: the COPY line -----------------------------------------------------------------

  /** Makes room for `n` bytes at `used`: a fresh slab when this one is short (a line's own if large). */
  private reserve(n: number): void {
    if (this.out.length - this.used >= n) return;
    this.out = Buffer.allocUnsafeSlow(Math.max(n, SLAB_BYTES));
    this.used = 0;
  }

  private tab(): void {
    this.out[this.o++] = TAB;
  }

  private nullValue(): void {
    this.out[this.o++] = NULL_COPY[0]!;
    this.out[this.o++] = NULL_COPY[1]!;
  }

  /** Copies b[s, e) as is (bytes that need no COPY escaping): a loop for short spans, memcpy else. */
  private copyRaw(s: number, e: number): void {
    const b = this.b;
    const out = this.out;
    if (e - s >= NATIVE_COPY) {
      this.o += b.copy(out, this.o, s, e);
      return;
    }
    let o = this.o;
    for (let i = s; i < e; i++) out[o++] = b[i]!;
    this.o = o;
  }

  /** True when the field is a string literal without escapes or non-ASCII bytes. */
  private plainString(f: number): boolean {
    const s = this.start[f]!;
    if (this.b[s] !== QUOTE || this.escaped[f]) return false;
    for (let i = s + 1; i < this.end[f]! - 1; i++) if (this.b[i]! >= 0x80) return false;
    return true;
  }

  /** The timestamp column: an RFC 3339 string as sent, or epoch milliseconds as ISO 8601 UTC. */
  private timestamp(): boolean {
    const s = this.start[F_TIMESTAMP]!;
    const e = this.end[F_TIMESTAMP]!;
    const b = this.b;
    if (b[s] === QUOTE) {
      if (!this.plainString(F_TIMESTAMP) || rfc3339FaultBytes(b, s + 1, e - 1) !== null) return false;
      this.copyRaw(s + 1, e - 1);
      return true;
    }
    // Epoch milliseconds: an integer written without fraction or exponent (grammar.ts).
    const ms = epochMsBytes(b, s, e);
    if (typeof ms === 'string') return false;
    this.o += this.out.write(new Date(ms).toISOString(), this.o, 'latin1');
    return true;
  }

  /**
   * A text column: a JSON string decoded and COPY-escaped, or `\N` for a missing or null optional
   * field. False (decline) for another type or a length outside [min, max] UTF-8 bytes.
   */
  private text(f: number, rule: TextFieldRule): boolean {
    const required = rule.required;
    const min = rule.minBytes;
    const max = rule.maxBytes;
    const s = this.start[f]!;
    const b = this.b;
    if (s < 0 || b[s] === 0x6e) {
      if (required) return false;
      this.nullValue();
      return true;
    }
    if (b[s] !== QUOTE) return false;
    const e = this.end[f]! - 1;
    const o0 = this.o;
    if (!this.escaped[f]) {
      // No escape: no backslash and (valid JSON) no control character, so nothing to COPY-escape.
      this.copyRaw(s + 1, e);
      return e - s - 1 >= min && e - s - 1 <= max;
    }
    let extraBytes = 0; // output bytes that are COPY escapes, not value bytes
    const out = this.out;
    let o = this.o;
    for (let i = s + 1; i < e; ) {
      const c = b[i]!;
      if (c !== BACKSLASH) {
        if (c === TAB) {
          out[o++] = BACKSLASH;
          out[o++] = 0x74;
          extraBytes++;
        } else out[o++] = c;
        i++;
        continue;
      }
      const d = b[i + 1]!;
      i += 2;
      let cp: number;
      if (d === 0x75) {
        cp = this.hex4(i);
        i += 4;
        if (cp >= 0xd800 && cp <= 0xdbff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (this.hex4(i + 2) - 0xdc00);
          i += 6;
        }
      } else if (d === 0x6e) cp = LF;
      else if (d === 0x74) cp = TAB;
      else if (d === 0x72) cp = CR;
      else if (d === 0x62) cp = 0x08;
      else if (d === 0x66) cp = 0x0c;
      else cp = d; // " \ /
      if (cp === BACKSLASH || cp === LF || cp === CR || cp === TAB) {
        out[o++] = BACKSLASH;
        out[o++] = cp === BACKSLASH ? BACKSLASH : cp === LF ? 0x6e : cp === CR ? 0x72 : 0x74;
        extraBytes++;
      } else if (cp < 0x80) out[o++] = cp;
      else if (cp < 0x800) {
        out[o++] = 0xc0 | (cp >> 6);
        out[o++] = 0x80 | (cp & 0x3f);
      } else if (cp < 0x10000) {
        out[o++] = 0xe0 | (cp >> 12);
        out[o++] = 0x80 | ((cp >> 6) & 0x3f);
        out[o++] = 0x80 | (cp & 0x3f);
      } else {
        out[o++] = 0xf0 | (cp >> 18);
        out[o++] = 0x80 | ((cp >> 12) & 0x3f);
        out[o++] = 0x80 | ((cp >> 6) & 0x3f);
        out[o++] = 0x80 | (cp & 0x3f);
      }
    }
    this.o = o;
    const bytes = o - o0 - extraBytes;
    return bytes >= min && bytes <= max;
  }

  /**
   * JSON text b[s, e) COPY-escaped, byte for byte otherwise (whitespace included, as the reference
   * path keeps it); with `redact`, the recorded values become `"[REDACTED]"`.
   */
  private jsonText(s: number, e: number, redact: boolean): void {
    const b = this.b;
    const out = this.out;
    let o = this.o;
    const r = redact ? this.redactions : null;
    let next = 0; // index into r
    let at = r && r.length > 0 ? r[0]! : -1;
    for (let i = s; i < e; ) {
      if (i === at) {
        REDACTED.copy(out, o);
        o += REDACTED.length;
        i = r![next + 1]!;
        next += 2;
        at = next < r!.length ? r![next]! : -1;
        continue;
      }
      // A run of bytes that need no COPY escaping, up to the next redaction: copied at once.
      const stop = at >= 0 ? at : e;
      let j = i;
      while (j < stop && COPY_PLAIN[b[j]!] === 1) j++;
      if (j > i) {
        if (j - i >= NATIVE_COPY) o += b.copy(out, o, i, j);
        else for (let k = i; k < j; k++) out[o++] = b[k]!;
        i = j;
        continue;
      }
      const c = b[i++]!;
      if (c === BACKSLASH) {
        out[o++] = BACKSLASH;
        out[o++] = BACKSLASH;
      } else if (c === TAB) {
        out[o++] = BACKSLASH;
        out[o++] = 0x74;
      } else if (c === LF) {
        out[o++] = BACKSLASH;
        out[o++] = 0x6e;
      } else if (c === CR) {
        out[o++] = BACKSLASH;
        out[o++] = 0x72;
      } else out[o++] = c;
    }
    this.o = o;
  }

  /** latency_ms: plain digits within bigint, written as sent; `\N` when missing or null. */
  private latency(): boolean {
    const s = this.start[F_LATENCY]!;
    const b = this.b;
    if (s < 0 || b[s] === 0x6e) {
      this.nullValue();
      return true;
    }
    const e = this.end[F_LATENCY]!;
    for (let i = s; i < e; i++) if (b[i]! < 0x30 || b[i]! > 0x39) return false; // -, ., e, string …
    if (e - s > 19) return false;
    if (e - s === 19 && b.compare(BIGINT_MAX_DIGITS, 0, 19, s, e) > 0) return false;
    this.copyRaw(s, e);
    return true;
  }

  /** The `extra` column: `{"key":value,…}` of the unknown members, or `\N` when there are none. */
  private extra(): void {
    const x = this.extras;
    if (x.length / 4 === this.dead) {
      this.nullValue();
      return;
    }
    // Keys hold no escapes (declined in scanTop), so their text is what JSON.stringify writes.
    this.out[this.o++] = 0x7b;
    let first = true;
    for (let k = 0; k < x.length; k += 4) {
      if (x[k + 2]! < 0) continue; // replaced by a later member of the same key
      if (!first) this.out[this.o++] = 0x2c;
      first = false;
      this.copyRaw(x[k]!, x[k + 1]!);
      this.out[this.o++] = 0x3a;
      this.jsonText(x[k + 2]!, x[k + 3]!, false);
    }
    this.out[this.o++] = 0x7d;
  }
}
