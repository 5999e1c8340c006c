/**
 * Works on JSON *text* rather than on parsed values, so that `request_args` and `extra` keep every
 * digit of their numbers (CONTRACT.md §3: "nothing passes through a JS number").
 *
 * The input is always text that `JSON.parse` has already accepted, so these scanners check nothing:
 * they only find spans and rewrite string literals.
 */

/** A `[start, end)` character range of a value inside the JSON text. */
export interface Span {
  start: number;
  end: number;
}

/** True for JSON whitespace: space, tab, LF, CR. */
function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function skipWs(text: string, i: number): number {
  while (i < text.length && isWs(text.charCodeAt(i))) i++;
  return i;
}

/** Index just past the string literal whose opening quote is at `i`. */
function skipString(text: string, i: number): number {
  i++;
  for (;;) {
    const q = text.indexOf('"', i);
    // Count the backslashes right before the quote: an odd count escapes it.
    let bs = 0;
    for (let j = q - 1; text.charCodeAt(j) === 0x5c; j--) bs++;
    if (bs % 2 === 0) return q + 1;
    i = q + 1;
  }
}

/** Index just past the value that starts at `i` (after whitespace). */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x22) return skipString(text, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < text.length) {
      const d = text.charCodeAt(i);
      if (d === 0x22) {
        i = skipString(text, i);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    return i;
  }
  // number, true, false, null
  while (i < text.length) {
    const d = text.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    i++;
  }
  return i;
}

/** Decodes a JSON string literal's raw text (quotes included) to its value. */
function decodeKey(raw: string): string {
  return raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
}

/**
 * The members of the top-level JSON object in `text`, by decoded key, each with the span of its
 * value. A key that occurs twice keeps its last value, as `JSON.parse` does.
 */
export function topLevelMembers(text: string): Map<string, Span> {
  const out = new Map<string, Span>();
  let i = skipWs(text, 0) + 1; // past '{'
  for (;;) {
    i = skipWs(text, i);
    if (text.charCodeAt(i) !== 0x22) return out; // '}'
    const keyEnd = skipString(text, i);
    const key = decodeKey(text.slice(i, keyEnd));
    i = skipWs(text, keyEnd) + 1; // past ':'
    const start = skipWs(text, i);
    const end = skipValue(text, start);
    out.delete(key);
    out.set(key, { start, end });
    i = skipWs(text, end);
    if (text.charCodeAt(i) === 0x2c) i++;
  }
}

/** Result of {@link rewriteJson}. */
export interface Rewritten {
  /** The JSON text to store. */
  text: string;
  /** JSON paths (`$.a[0].b`) where U+0000 or a lone surrogate was replaced by U+FFFD. */
  sanitizedPaths: string[];
  /** How many values were replaced by `"[REDACTED]"`. */
  redacted: number;
}

/** The redaction marker of CONTRACT.md §6. */
export const REDACTED_JSON = '"[REDACTED]"';

const HEX4 = /^[0-9a-fA-F]{4}$/;

/**
 * Rewrites JSON text: in every string literal (keys included), a `\u0000` escape or an unpaired
 * surrogate escape becomes `\ufffd` (C01, C03); the value of every object member whose key, compared
 * case-insensitively, is in `redactKeys` becomes `"[REDACTED]"`, at any depth and inside arrays
 * (CONTRACT.md §6). All other text, numbers included, is kept byte for byte.
 *
 * @param text JSON text already accepted by `JSON.parse`.
 * @param redactKeys lower-cased keys, or null for no redaction.
 * @throws RangeError when the nesting is too deep for the call stack.
 */
export function rewriteJson(text: string, redactKeys: ReadonlySet<string> | null): Rewritten {
  const result: Rewritten = { text, sanitizedPaths: [], redacted: 0 };
  if (!mayNeedRewrite(text, redactKeys)) return result;
  const out: string[] = [];
  let copied = 0; // text[copied, i) is not yet in `out`
  const flush = (to: number) => {
    if (to > copied) out.push(text.slice(copied, to));
    copied = to;
  };

  /** Rewrites the string literal at `i`; returns its end. */
  const string = (i: number, path: string): number => {
    const end = skipString(text, i);
    let j = text.indexOf('\\u', i);
    if (j < 0 || j >= end) return end;
    let changed = false;
    while (j >= 0 && j < end) {
      // Make sure this backslash is not itself escaped.
      let bs = 0;
      for (let k = j - 1; text.charCodeAt(k) === 0x5c; k--) bs++;
      if (bs % 2 === 1) {
        j = text.indexOf('\\u', j + 1);
        continue;
      }
      const hex = text.slice(j + 2, j + 6);
      const code = HEX4.test(hex) ? Number.parseInt(hex, 16) : -1;
      let bad = false;
      let width = 6;
      if (code === 0) bad = true;
      else if (code >= 0xd800 && code <= 0xdbff) {
        const next = text.slice(j + 6, j + 12);
        const low =
          next.startsWith('\\u') && HEX4.test(next.slice(2)) ? Number.parseInt(next.slice(2), 16) : -1;
        if (low >= 0xdc00 && low <= 0xdfff) width = 12;
        else bad = true;
      } else if (code >= 0xdc00 && code <= 0xdfff) bad = true;
      if (bad) {
        flush(j);
        out.push('\\ufffd');
        copied = j + 6;
        changed = true;
      }
      j = text.indexOf('\\u', j + width);
    }
    if (changed) result.sanitizedPaths.push(path);
    return end;
  };

  const value = (i: number, path: string, depth: number): number => {
    const c = text.charCodeAt(i);
    if (c === 0x22) return string(i, path);
    if (c === 0x7b) {
      i = skipWs(text, i + 1);
      while (text.charCodeAt(i) === 0x22) {
        const keyStart = i;
        const keyEnd = string(i, `${path}{key}`);
        const key = decodeKey(text.slice(keyStart, keyEnd));
        i = skipWs(text, skipWs(text, keyEnd) + 1);
        const childPath = `${path}.${key}`;
        let end: number;
        if (redactKeys?.has(key.toLowerCase())) {
          end = skipValue(text, i);
          flush(i);
          out.push(REDACTED_JSON);
          copied = end;
          result.redacted++;
        } else {
          end = value(i, childPath, depth + 1);
        }
        i = skipWs(text, end);
        if (text.charCodeAt(i) === 0x2c) i = skipWs(text, i + 1);
      }
      return i + 1; // past '}'
    }
    if (c === 0x5b) {
      i = skipWs(text, i + 1);
      let n = 0;
      while (text.charCodeAt(i) !== 0x5d) {
        const end = value(i, `${path}[${n++}]`, depth + 1);
        i = skipWs(text, end);
        if (text.charCodeAt(i) === 0x2c) i = skipWs(text, i + 1);
      }
      return i + 1;
    }
    return skipValue(text, i);
  };

  value(skipWs(text, 0), '$', 0);
  if (out.length === 0) return result;
  flush(text.length);
  result.text = out.join('');
  return result;
}

/** Cheap pre-check: without a `\u` escape and without any redact key as a substring, nothing changes. */
function mayNeedRewrite(text: string, redactKeys: ReadonlySet<string> | null): boolean {
  if (text.includes('\\u')) return true;
  if (!redactKeys || redactKeys.size === 0) return false;
  return keyPattern(redactKeys).test(text);
}

const patterns = new WeakMap<ReadonlySet<string>, RegExp>();
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A case-insensitive pattern matching any redact key written as an object key (`"key"` then `:`).
 * Keys written with escapes are caught by the `\u` check before it. Cached per set.
 */
function keyPattern(keys: ReadonlySet<string>): RegExp {
  let re = patterns.get(keys);
  if (!re) {
    // 'u': case-insensitive by Unicode case folding, as the check's toLowerCase() (U+212A KELVIN
    // SIGN matches k).
    re = new RegExp(`"(?:${[...keys].map(escapeRe).join('|')})"\\s*:`, 'iu');
    patterns.set(keys, re);
  }
  return re;
}
