/**
 * COPY text-format encoding (PostgreSQL docs, "COPY", section "Text Format").
 *
 * Columns are separated by a tab and rows end with a newline; in a value, backslash, newline,
 * carriage return and tab are written as `\\`, `\n`, `\r`, `\t`; SQL NULL is `\N`. Because every
 * backslash is doubled, a value such as `\.` or `\N` can never be read as the end-of-data marker or as
 * NULL (known-traps C12). Values never hold U+0000: they are sanitised first.
 */
import type { EntryRow } from './parse.js';

const SPECIAL = /[\\\n\r\t]/;
const SPECIAL_G = /[\\\n\r\t]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Encodes one value for COPY text format; null becomes `\N`. */
export function encodeCopyValue(value: string | null): string {
  if (value === null) return '\\N';
  if (!SPECIAL.test(value)) return value;
  return value.replace(SPECIAL_G, (c) => ESCAPES[c]!);
}

/** Encodes one entry as a COPY text line (newline included), columns in {@link ENTRY_COLUMNS} order. */
export function encodeCopyRow(row: EntryRow): string {
  const e = encodeCopyValue;
  return `${e(row.request_id)}\t${e(row.timestamp)}\t${e(row.client_subject)}\t${e(row.client_role)}\t${e(row.tool_name)}\t${e(row.backend_name)}\t${e(row.request_args)}\t${e(row.response_status)}\t${e(row.error_message)}\t${e(row.latency_ms)}\t${e(row.extra)}\n`;
}

/**
 * Encodes rows as COPY text straight into byte chunks of about `chunkBytes` (UTF-8), one
 * `Buffer.write` per row: no large intermediate string is built and flattened. A chunk is handed
 * out whole and never written again (the socket may still hold it), so each chunk is new.
 */
export function* encodeCopyChunks(rows: Iterable<EntryRow>, chunkBytes = 256 * 1024): Generator<Buffer> {
  let chunk = Buffer.allocUnsafe(chunkBytes);
  let pos = 0;
  for (const row of rows) {
    const line = encodeCopyRow(row);
    // A UTF-16 code unit takes at most 3 UTF-8 bytes: with that much room the write cannot be cut.
    if (pos + line.length * 3 > chunk.length) {
      if (pos > 0) yield chunk.subarray(0, pos);
      chunk = Buffer.allocUnsafe(Math.max(chunkBytes, line.length * 3));
      pos = 0;
    }
    pos += chunk.write(line, pos, 'utf8');
  }
  if (pos > 0) yield chunk.subarray(0, pos);
}
