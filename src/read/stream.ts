/**
 * Streams matching entries out as NDJSON, a JSON array or CSV (CONTRACT.md §5, `export` and
 * `search`'s machine formats), in constant memory: `COPY (SELECT …) TO STDOUT` in text format,
 * rows split and unescaped on the client (entry/copyDecode.ts), formatted and piped on with
 * backpressure to the destination streams.
 *
 * NDJSON lines are the JSON text Postgres built (db/queries.ts `ENTRY_JSON_SQL`), so `request_args`
 * keeps every digit and `replay` reads back the same entries. CSV is RFC 4180 through csv-stringify:
 * CRLF line ends, a header row, fields quoted when they hold a comma, quote or line break, the empty
 * string as `""` and SQL NULL as an empty field.
 */
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { stringify } from 'csv-stringify/sync';
import type pg from 'pg';
import type { Database } from '../db/connect.js';
import { copyOut } from '../db/copyOut.js';
import type { Filters } from '../db/filter.js';
import { CSV_COLUMNS, entriesCopySql, type Order } from '../db/queries.js';
import { CopyRowSplitter, decodeCopyRow, decodeCopyValue } from '../entry/copyDecode.js';
import type { Logger } from '../log.js';

/** Machine formats: NDJSON, one JSON array, or CSV. */
export type StreamFormat = 'ndjson' | 'json' | 'csv';

/** csv-stringify options for RFC 4180 with NULL (empty field) apart from `""` (quoted). */
const CSV_OPTIONS = { record_delimiter: '\r\n', quoted_match: /^$/ } as const;

/** Options of {@link streamEntries}. */
export interface StreamOptions {
  filters: Filters;
  format: StreamFormat;
  order: Order;
  /** At most this many entries; undefined for all. */
  limit?: number | undefined;
  /** Where the text goes, in pipe order (e.g. `[gzip, file]` or `[process.stdout]`). */
  destinations: [Writable, ...Writable[]];
  /** End the last destination when done (false for stdout). */
  end: boolean;
  /** Called with the running row count after each chunk. */
  onProgress?: ((rows: number) => void) | undefined;
}

/** What {@link formatChunks} counted. */
interface ChunkCount {
  rows: number;
  /** More rows matched than the limit let through. */
  more: boolean;
}

/**
 * Turns COPY text chunks into output text, one string per chunk. Nothing is yielded before the
 * COPY's first row or its end: a query that fails at the start leaves stdout empty (no lone `[`,
 * no CSV header; issue 12). Rows past `limit` are counted as `more` and not written (the COPY asks
 * for one row more than the limit, to know).
 */
async function* formatChunks(
  source: AsyncIterable<Buffer>,
  format: StreamFormat,
  limit: number | undefined,
  count: ChunkCount,
  progress: (rows: number) => void,
): AsyncGenerator<string> {
  const splitter = new CopyRowSplitter();
  let started = false;
  const prefix = (): string => {
    if (started) return '';
    started = true;
    return format === 'csv' ? stringify([[...CSV_COLUMNS]], CSV_OPTIONS) : format === 'json' ? '[' : '';
  };
  for await (const chunk of source) {
    let lines = splitter.push(chunk);
    if (lines.length === 0) continue;
    if (limit !== undefined && count.rows + lines.length > limit) {
      count.more = true;
      lines = lines.slice(0, Math.max(0, limit - count.rows));
      if (lines.length === 0) continue;
    }
    let out = prefix();
    if (format === 'csv') {
      out += stringify(lines.map(decodeCopyRow), CSV_OPTIONS);
    } else {
      for (const line of lines) {
        const json = decodeCopyValue(line) ?? 'null';
        out += format === 'ndjson' ? `${json}\n` : `${count.rows === 0 ? '\n' : ',\n'}${json}`;
        count.rows++;
      }
    }
    if (format === 'csv') count.rows += lines.length;
    progress(count.rows);
    yield out;
  }
  const head = prefix();
  if (format === 'json') yield `${head}${count.rows === 0 ? ']\n' : '\n]\n'}`;
  else if (head !== '') yield head;
}

/** What {@link streamEntries} wrote. */
export interface StreamResult {
  /** Entries written. */
  rows: number;
  /** More entries matched than `limit` let through (CONTRACT.md §5: search notes it on stderr). */
  more: boolean;
}

/**
 * Streams every matching entry to the destinations.
 * @returns the number of entries written and whether the limit cut the result
 * @throws {DatabaseUnavailableError} when Postgres cannot be reached; any stream error (e.g. EPIPE
 *   of a closed stdout) after the COPY has been cancelled
 */
export async function streamEntries(
  pool: pg.Pool,
  db: Database,
  log: Logger,
  opts: StreamOptions,
): Promise<StreamResult> {
  const sql = entriesCopySql(opts.filters, opts.format === 'csv' ? 'csv' : 'ndjson', {
    order: opts.order,
    limit: opts.limit === undefined ? undefined : opts.limit + 1,
  });
  const count: ChunkCount = { rows: 0, more: false };
  await copyOut(pool, db, log, sql, async (stream) => {
    const text = Readable.from(
      formatChunks(stream, opts.format, opts.limit, count, (n) => opts.onProgress?.(n)),
    );
    await pipeline([text, ...opts.destinations], { end: opts.end });
  });
  return { rows: count.rows, more: count.more };
}
