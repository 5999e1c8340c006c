/**
 * Decoding of COPY text format as `COPY … TO STDOUT` writes it (PostgreSQL docs, "COPY", section
 * "Text Format") — the inverse of copyText.ts.
 *
 * A row ends with a newline byte and its columns are separated by tab bytes; since the server
 * escapes every newline, carriage return, tab and backslash inside a value, a raw 0x0A always ends a
 * row and a raw 0x09 always ends a column. In a value, `\N` alone is SQL NULL (an empty value is the
 * empty string, so NULL and `""` stay apart); `\b \f \n \r \t \v` are the control characters, `\` and
 * one to three octal digits or `x` and one or two hex digits is a byte, and a backslash before any
 * other character stands for that character (`\\` is a backslash). Bytes are unescaped first and
 * decoded as UTF-8 afterwards, so an escaped byte sequence and a character split across chunks both
 * come out right. Pure: no I/O.
 */

const BS = 0x5c;
const TAB = 0x09;
const LF = 0x0a;
const SIMPLE: Record<number, number> = {
  98: 0x08, // \b
  102: 0x0c, // \f
  110: 0x0a, // \n
  114: 0x0d, // \r
  116: 0x09, // \t
  118: 0x0b, // \v
};

function isOctal(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x37;
}

function hexValue(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Unescapes one COPY text value (the bytes between two separators) and decodes it as UTF-8.
 * @returns the text, or null for `\N`
 */
export function decodeCopyValue(raw: Uint8Array): string | null {
  if (raw.length === 2 && raw[0] === BS && raw[1] === 0x4e) return null;
  if (raw.indexOf(BS) < 0) return Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString('utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== BS || i + 1 >= raw.length) {
      out[o++] = c;
      continue;
    }
    const n = raw[++i]!;
    const simple = SIMPLE[n];
    if (simple !== undefined) {
      out[o++] = simple;
    } else if (isOctal(n)) {
      let v = n - 0x30;
      for (let k = 0; k < 2 && isOctal(raw[i + 1]); k++) v = v * 8 + (raw[++i]! - 0x30);
      out[o++] = v & 0xff;
    } else if (n === 0x78 && hexValue(raw[i + 1]) >= 0) {
      let v = hexValue(raw[++i]);
      if (hexValue(raw[i + 1]) >= 0) v = v * 16 + hexValue(raw[++i]);
      out[o++] = v;
    } else {
      out[o++] = n;
    }
  }
  return out.toString('utf8', 0, o);
}

/** Splits one COPY text row (without its newline) into its decoded column values. */
export function decodeCopyRow(line: Uint8Array): (string | null)[] {
  const values: (string | null)[] = [];
  let start = 0;
  for (;;) {
    const tab = line.indexOf(TAB, start);
    const end = tab < 0 ? line.length : tab;
    values.push(decodeCopyValue(line.subarray(start, end)));
    if (tab < 0) return values;
    start = tab + 1;
  }
}

/**
 * Collects chunks of a COPY text stream and hands out whole rows (newline removed), however the
 * chunks cut them. Holds at most one partial row between calls.
 */
export class CopyRowSplitter {
  private pending: Buffer | null = null;

  /** Adds a chunk; returns the rows it completes, each without its trailing newline. */
  push(chunk: Buffer): Buffer[] {
    const data = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    const rows: Buffer[] = [];
    let start = 0;
    for (;;) {
      const lf = data.indexOf(LF, start);
      if (lf < 0) break;
      rows.push(data.subarray(start, lf));
      start = lf + 1;
    }
    this.pending = start < data.length ? Buffer.from(data.subarray(start)) : null;
    return rows;
  }

  /** The bytes of an unterminated last row, if any (COPY always ends rows, so normally none). */
  end(): Buffer | null {
    const rest = this.pending;
    this.pending = null;
    return rest;
  }
}
