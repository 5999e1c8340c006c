/**
 * Works on JSON *text* (UTF-8 bytes) rather than on parsed values, so that `request_args` and `extra`
 * keep every digit of their numbers (CONTRACT.md §3: "nothing passes through a JS number").
 *
 * Every function here is iterative and makes one forward pass: time and memory are linear in the
 * text, whatever its shape (deep nesting, tens of thousands of keys or escapes), CONTRACT.md §3 "Any
 * line, any client". No recursion, no rescans, no string per escape (a bad escape is patched in
 * place: `\u0000` and `\ufffd` have the same length).
 *
 * {@link scanMembers} runs before `JSON.parse` (to refuse too deep a value before it costs
 * anything) and must therefore survive any bytes; {@link rewriteJson} is given text that
 * `JSON.parse` has accepted.
 */
import { MAX_JSON_DEPTH, MAX_PATH_CHARS, MAX_REPORTED_PATHS, REDACTED_JSON } from './grammar.js';

/** A `[start, end)` byte range of a value inside the line. */
export interface Span {
  start: number;
  end: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** True for JSON whitespace: space, tab, LF, CR. */
function isWs(c: number | undefined): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function skipWs(b: Uint8Array, i: number, n: number): number {
  while (i < n && isWs(b[i])) i++;
  return i;
}

/** Index just past the string literal whose opening quote is at `i` (at most `n`). */
function skipString(b: Uint8Array, i: number, n: number): number {
  i++;
  while (i < n) {
    const c = b[i]!;
    if (c === QUOTE) return i + 1;
    i += c === BACKSLASH ? 2 : 1;
  }
  return n;
}

/**
 * Index just past the value at `i` (no leading whitespace), or -1 when its nesting passes
 * `maxDepth` containers. Iterative: a counter, not a stack, since only brackets matter here.
 */
function skipValue(b: Uint8Array, i: number, n: number, maxDepth: number): number {
  const c = b[i];
  if (c === QUOTE) return skipString(b, i, n);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < n) {
      const d = b[i]!;
      if (d === QUOTE) {
        i = skipString(b, i, n);
        continue;
      }
      if (d === 0x7b || d === 0x5b) {
        if (++depth > maxDepth) return -1;
      } else if (d === 0x7d || d === 0x5d) {
        if (--depth === 0) return i + 1;
      }
      i++;
    }
    return n;
  }
  // number, true, false, null (or junk, which JSON.parse reports)
  while (i < n) {
    const d = b[i]!;
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    i++;
  }
  return i;
}

/**
 * The decoded text of the string literal b[s, e) (quotes included): read as is when it holds no
 * backslash, else through `JSON.parse` (the literal is valid once the line has parsed).
 */
export function decodeStringLiteral(b: Buffer, s: number, e: number): string {
  let plain = true;
  for (let k = s + 1; k < e - 1; k++) {
    if (b[k] === BACKSLASH) {
      plain = false;
      break;
    }
  }
  const raw = b.toString('utf8', plain ? s + 1 : s, plain ? e - 1 : e);
  if (plain) return raw;
  try {
    return JSON.parse(raw) as string;
  } catch {
    return raw; // only for a line JSON.parse has not accepted; its result is never used
  }
}

/** The result of {@link scanMembers}. */
export type MemberScan =
  | { ok: true; members: Map<string, Span> }
  /** A value nests deeper than MAX_JSON_DEPTH: `field` is its top-level key, or null for the line. */
  | { ok: false; field: string | null };

/**
 * The members of the top-level JSON object in `b`, by decoded key, each with the byte span of its
 * value; a key that occurs twice keeps its last value, as `JSON.parse` does (a Map: hashing, no
 * rescans). Checks the nesting depth of every value on the way ({@link MAX_JSON_DEPTH} levels), and
 * of the whole line when it is not an object. Safe on any bytes; the spans are meaningful once the
 * line parses.
 */
export function scanMembers(b: Buffer, maxDepth: number = MAX_JSON_DEPTH): MemberScan {
  const n = b.length;
  const members = new Map<string, Span>();
  let i = skipWs(b, 0, n);
  if (b[i] !== 0x7b) {
    if (i < n && skipValue(b, i, n, maxDepth) < 0) return { ok: false, field: null };
    return { ok: true, members };
  }
  i++;
  for (;;) {
    i = skipWs(b, i, n);
    if (b[i] !== QUOTE) return { ok: true, members }; // '}', the end, or junk
    const ks = i;
    i = skipString(b, i, n);
    const key = decodeStringLiteral(b, ks, i);
    i = skipWs(b, i, n);
    if (b[i] === 0x3a) i++;
    const start = skipWs(b, i, n);
    if (start >= n) return { ok: true, members };
    const end = skipValue(b, start, n, maxDepth);
    if (end < 0) return { ok: false, field: key };
    members.delete(key);
    members.set(key, { start, end });
    i = skipWs(b, end, n);
    if (b[i] !== 0x2c) return { ok: true, members };
    i++;
  }
}

/** Result of {@link rewriteJson}. */
export interface Rewritten {
  /** The JSON text to store. */
  text: string;
  /**
   * Paths (`request_args.a[0].b`, `request_args.a{key}` for a key) where U+0000 or a lone surrogate
   * was replaced by U+FFFD: the first {@link MAX_REPORTED_PATHS}, each cut to {@link MAX_PATH_CHARS}.
   */
  sanitizedPaths: string[];
  /** How many strings were sanitised in all (≥ sanitizedPaths.length). */
  sanitizedCount: number;
  /** How many values were replaced by `"[REDACTED]"`. */
  redacted: number;
}

const REDACTED = Buffer.from(REDACTED_JSON, 'latin1');
const FFFD_ESCAPE = Buffer.from('\\ufffd', 'latin1');

function hexValue(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

function hex4(b: Uint8Array, i: number): number {
  const a = hexValue(b[i]);
  const c = hexValue(b[i + 1]);
  const d = hexValue(b[i + 2]);
  const e = hexValue(b[i + 3]);
  if (a < 0 || c < 0 || d < 0 || e < 0) return -1;
  return (a << 12) | (c << 8) | (d << 4) | e;
}

/**
 * The key b[s, e) (a string literal) for a reported path: at most MAX_PATH_CHARS characters, and
 * only that much of a long plain key is decoded (a key may be most of a 1 MiB line).
 */
function keyForPath(b: Buffer, s: number, e: number): string {
  const cut = Math.min(e - 1, s + 1 + 4 * MAX_PATH_CHARS);
  if (cut < e - 1 && b.subarray(s + 1, cut).indexOf(BACKSLASH) < 0) {
    return b.toString('utf8', s + 1, cut).slice(0, MAX_PATH_CHARS);
  }
  return decodeStringLiteral(b, s, e).slice(0, MAX_PATH_CHARS);
}

/** True when b[s, e) holds a backslash followed by `u` (small values: a loop, no view). */
function hasUnicodeEscape(b: Buffer, s: number, e: number): boolean {
  if (e - s > 256) return b.subarray(s, e).indexOf('\\u') >= 0;
  for (let i = s; i < e - 1; i++) if (b[i] === BACKSLASH && b[i + 1] === 0x75) return true;
  return false;
}

/** Byte length of the redact keys, when every key is ASCII (a non-ASCII key is always decoded). */
function asciiLengths(keys: ReadonlySet<string>): Set<number> {
  const out = new Set<number>();
  for (const k of keys) out.add(Buffer.byteLength(k, 'utf8'));
  return out;
}

/**
 * Rewrites the JSON value b[s, e): in every string literal (keys included), a `\u0000` escape or an
 * unpaired surrogate escape becomes `\ufffd` (known-traps C01, C03); the value of every object
 * member whose key, compared case-insensitively (`toLowerCase`), is in `redactKeys` becomes
 * `"[REDACTED]"`, at any depth and inside arrays (CONTRACT.md §6). All other bytes, numbers and
 * whitespace included, are kept as they are.
 *
 * One forward pass with an explicit stack (no recursion); paths are only built for the first
 * {@link MAX_REPORTED_PATHS} sanitised strings.
 *
 * @param b UTF-8 bytes of a line that `JSON.parse` has accepted.
 * @param root the name paths start with (`request_args`, an extra field's key).
 * @param redactKeys lower-cased keys, or null for no redaction.
 */
export function rewriteJson(
  b: Buffer,
  s: number,
  e: number,
  root: string,
  redactKeys: ReadonlySet<string> | null,
): Rewritten {
  const result: Rewritten = { text: '', sanitizedPaths: [], sanitizedCount: 0, redacted: 0 };
  const redact = redactKeys !== null && redactKeys.size > 0 ? redactKeys : null;
  if (redact === null && !hasUnicodeEscape(b, s, e)) {
    result.text = b.toString('utf8', s, e);
    return result;
  }
  const lengths = redact ? asciiLengths(redact) : null;
  /** Byte offsets of escapes to patch into `\ufffd`. */
  const bad: number[] = [];
  /** Spans (start, end) of values to replace by the marker. */
  const cut: number[] = [];
  // The stack: per open container, kind (0 object, 1 array), array index, current key span.
  const kind: number[] = [];
  const index: number[] = [];
  const keyStart: number[] = [];
  const keyEnd: number[] = [];

  const pathOf = (forKey: boolean): string => {
    let p = root;
    const top = kind.length - 1;
    for (let d = 0; d <= top && p.length < MAX_PATH_CHARS; d++) {
      if (kind[d] === 1) p += `[${index[d]}]`;
      else if (d < top || !forKey) p += `.${keyForPath(b, keyStart[d]!, keyEnd[d]!)}`;
    }
    if (forKey) p += '{key}';
    return p.length > MAX_PATH_CHARS ? `${p.slice(0, MAX_PATH_CHARS)}…` : p;
  };

  /** Scans the string literal at `i`, records its bad escapes; returns its end. */
  const string = (i: number, isKey: boolean): number => {
    const before = bad.length;
    i++;
    for (;;) {
      const c = b[i]!;
      if (c === QUOTE) break;
      if (c !== BACKSLASH) {
        i++;
        continue;
      }
      if (b[i + 1] !== 0x75) {
        i += 2;
        continue;
      }
      const code = hex4(b, i + 2);
      if (code >= 0xd800 && code <= 0xdbff) {
        const low = b[i + 6] === BACKSLASH && b[i + 7] === 0x75 ? hex4(b, i + 8) : -1;
        if (low >= 0xdc00 && low <= 0xdfff) {
          i += 12;
          continue;
        }
        bad.push(i);
      } else if (code === 0 || (code >= 0xdc00 && code <= 0xdfff)) bad.push(i);
      i += 6;
    }
    if (bad.length > before) {
      if (result.sanitizedPaths.length < MAX_REPORTED_PATHS) result.sanitizedPaths.push(pathOf(isKey));
      result.sanitizedCount++;
    }
    return i + 1;
  };

  const isRedactKey = (ks: number, ke: number): boolean => {
    let ascii = true;
    for (let k = ks + 1; k < ke - 1; k++) {
      if (b[k]! >= 0x80 || b[k] === BACKSLASH) {
        ascii = false;
        break;
      }
    }
    if (ascii && !lengths!.has(ke - ks - 2)) return false;
    return redact!.has(decodeStringLiteral(b, ks, ke).toLowerCase());
  };

  let i = skipWs(b, s, e);
  outer: for (;;) {
    // A value starts at i.
    let c = b[i];
    if (c === 0x7b || c === 0x5b) {
      kind.push(c === 0x7b ? 0 : 1);
      index.push(0);
      keyStart.push(-1);
      keyEnd.push(-1);
      i = skipWs(b, i + 1, e);
      if (b[i] === 0x7d || b[i] === 0x5d) {
        pop();
        i++;
      } else if (c === 0x5b) {
        continue; // the first element
      } else {
        const v = member(i);
        if (v >= 0) {
          i = v;
          continue;
        }
        i = -v - 1; // the member's value was redacted: i is past it
      }
    } else if (c === QUOTE) i = string(i, false);
    else i = skipValue(b, i, e, Number.POSITIVE_INFINITY);
    // After a value: close containers, or go on to the next element or member.
    for (;;) {
      i = skipWs(b, i, e);
      if (kind.length === 0 || i >= e) break outer;
      c = b[i];
      if (c === 0x2c) {
        i = skipWs(b, i + 1, e);
        const top = kind.length - 1;
        if (kind[top] === 1) {
          index[top] = index[top]! + 1;
          continue outer;
        }
        const v = member(i);
        if (v >= 0) {
          i = v;
          continue outer;
        }
        i = -v - 1;
        continue;
      }
      pop(); // '}' or ']'
      i++;
    }
  }

  function pop(): void {
    kind.pop();
    index.pop();
    keyStart.pop();
    keyEnd.pop();
  }

  /**
   * Handles the member whose key starts at `k`: returns where its value starts, or -(end+1) when
   * the value was redacted and skipped (then `end` is past the value).
   */
  function member(k: number): number {
    const top = kind.length - 1;
    const ke = string(k, true);
    keyStart[top] = k;
    keyEnd[top] = ke;
    let v = skipWs(b, ke, e) + 1; // past ':'
    v = skipWs(b, v, e);
    if (redact !== null && isRedactKey(k, ke)) {
      const end = skipValue(b, v, e, Number.POSITIVE_INFINITY);
      cut.push(v, end);
      result.redacted++;
      return -(end + 1);
    }
    return v;
  }

  if (bad.length === 0 && cut.length === 0) {
    result.text = b.toString('utf8', s, e);
    return result;
  }
  // Patch the bad escapes in a copy (same length), then splice the redactions in.
  const src = Buffer.from(b.subarray(s, e));
  for (const at of bad) FFFD_ESCAPE.copy(src, at - s);
  if (cut.length === 0) {
    result.text = src.toString('utf8');
    return result;
  }
  const out = Buffer.allocUnsafe(src.length + REDACTED.length * (cut.length / 2));
  let o = 0;
  let from = 0;
  for (let k = 0; k < cut.length; k += 2) {
    o += src.copy(out, o, from, cut[k]! - s);
    o += REDACTED.copy(out, o);
    from = cut[k + 1]! - s;
  }
  o += src.copy(out, o, from, src.length);
  result.text = out.toString('utf8', 0, o);
  return result;
}
