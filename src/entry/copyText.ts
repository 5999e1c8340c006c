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
