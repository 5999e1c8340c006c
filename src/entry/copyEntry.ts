/**
 * A spooled entry back to a wire line, so that what is loaded from the spool passes the same
 * validation, sanitising and redaction as a line from a socket (CONTRACT.md §4 "Spool files are
 * input"). The spool keeps each entry as its COPY text line (ingest/spool.ts); a file on disk can be
 * damaged or forged, so its line is decoded column by column (copyDecode.ts) and rebuilt as JSON
 * in which no column can reach beyond its own field: text columns are written with
 * JSON.stringify, `request_args` must be exactly one JSON value, `extra` one JSON object without
 * a known field's key, `latency_ms` plain digits. Whatever the bytes (`\.`, raw newlines, tabs,
 * octal escapes of U+0000), the result is a line for EntryEncoder.encode, or a fault. Pure: no I/O.
 */
import { decodeCopyRow } from './copyDecode.js';
import { ENTRY_COLUMNS, KNOWN_FIELDS } from './grammar.js';

/** The outcome of {@link wireLineOfCopy}. */
export type CopyToWire = { ok: true; line: Buffer } | { ok: false; reason: string };

const LF = 0x0a;

function isJsonValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Rebuilds the wire line of one spooled COPY text line (newline included or not).
 * @returns the line, or the fault that sets the record aside (`reason` names the column)
 */
export function wireLineOfCopy(copy: Buffer): CopyToWire {
  let row = copy;
  if (row.length > 0 && row[row.length - 1] === LF) row = row.subarray(0, row.length - 1);
  if (row.indexOf(LF) >= 0) return { ok: false, reason: 'spool record: a raw newline inside an entry' };
  const cols = decodeCopyRow(row);
  if (cols.length !== ENTRY_COLUMNS.length) {
    return {
      ok: false,
      reason: `spool record: ${cols.length} columns, expected ${ENTRY_COLUMNS.length}`,
    };
  }
  const parts: string[] = [];
  for (let k = 0; k < ENTRY_COLUMNS.length; k++) {
    const name = ENTRY_COLUMNS[k]!;
    const v = cols[k]!;
    if (name === 'extra') {
      if (v === null) continue;
      const obj = isJsonValue(v);
      if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
        return { ok: false, reason: 'extra: not a JSON object' };
      }
      const clash = Object.keys(obj as object).find((key) => KNOWN_FIELDS.has(key));
      if (clash !== undefined) return { ok: false, reason: `extra: holds the known field ${clash}` };
      const inner = v.trim().slice(1, -1).trim();
      if (inner.length > 0) parts.push(inner);
      continue;
    }
    if (v === null) {
      parts.push(`${JSON.stringify(name)}:null`);
    } else if (name === 'request_args') {
      if (isJsonValue(v) === undefined) return { ok: false, reason: 'request_args: not one JSON value' };
      parts.push(`"request_args":${v}`);
    } else if (name === 'latency_ms') {
      if (!/^\d{1,19}$/.test(v)) return { ok: false, reason: 'latency_ms: not an integer >= 0' };
      parts.push(`"latency_ms":${v}`);
    } else {
      parts.push(`${JSON.stringify(name)}:${JSON.stringify(v)}`);
    }
  }
  return { ok: true, line: Buffer.from(`{${parts.join(',')}}`, 'utf8') };
}
