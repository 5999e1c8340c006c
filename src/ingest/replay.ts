/**
 * `replay` (CONTRACT.md §5): loads NDJSON files (an export, a gateway's fallback file) or spool
 * segments into Postgres through the same validate → batch → write path as `serve`, idempotently:
 * an entry whose (request_id, timestamp) is already stored is skipped, so replaying a file twice
 * stores it once. gzip is detected by content (1f 8b), a spool segment by its AGSPOOL1 header.
 * `id` and `received_at` of an export are ignored (the database gives new ones).
 */
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { BatchWriter, RejectRecord, WriteEntry } from '../db/writer.js';
import { EntryEncoder } from '../entry/encode.js';
import { LineFramer } from '../entry/framing.js';
import type { ParseOptions } from '../entry/parse.js';
import { readSegment, SPOOL_MAGIC } from './spool.js';

/** Counts of CONTRACT.md §5: read / stored / skipped / rejected. */
export interface ReplayCounts {
  read: number;
  stored: number;
  skipped: number;
  rejected: number;
  /** Damaged spool records that could not be read. */
  damaged: number;
}

/** Options of {@link replayStream}. */
export interface ReplayOptions {
  parse: ParseOptions;
  maxLineBytes: number;
  batchSize: number;
  /** Called after each batch with the running counts (for a progress line). */
  progress?: (counts: ReplayCounts) => void;
}

const GZIP = Buffer.from([0x1f, 0x8b]);

/**
 * Replays one source (a file path, or `-` for stdin) into `counts`.
 * @throws the file system error when the file cannot be read; Postgres errors from the writer.
 */
export async function replaySource(
  name: string,
  writer: BatchWriter,
  options: ReplayOptions,
  counts: ReplayCounts,
  stdin: Readable = process.stdin,
): Promise<void> {
  const source = name === '-' ? 'replay:stdin' : `replay:${name}`;
  let entries: WriteEntry[] = [];
  let rejects: RejectRecord[] = [];
  const flush = async () => {
    if (entries.length === 0 && rejects.length === 0) return;
    const out = await writer.write(entries, rejects);
    counts.stored += out.stored;
    counts.skipped += out.duplicates;
    counts.rejected += rejects.length + out.refused.size;
    entries = [];
    rejects = [];
    options.progress?.(counts);
  };

  // A spool segment is read whole (its records are checksummed batches).
  if (name !== '-') {
    const head = Buffer.alloc(SPOOL_MAGIC.length);
    const fh = await open(name, 'r');
    try {
      await fh.read(head, 0, head.length, 0);
    } finally {
      await fh.close();
    }
    if (head.equals(SPOOL_MAGIC)) {
      const { batches, skipped } = readSegment(await readFile(name), source);
      counts.damaged += skipped;
      for (const b of batches) {
        counts.read += b.entries.length + b.rejects.length;
        entries = b.entries;
        rejects = b.rejects;
        await flush();
      }
      return;
    }
  }

  const raw: AsyncIterable<Buffer> = name === '-' ? stdin : createReadStream(name);
  const iterator = raw[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return;
  const firstChunk = first.value;
  // Put the first chunk back in front of the rest.
  async function* all(): AsyncGenerator<Buffer> {
    yield firstChunk;
    for (let r = await iterator.next(); !r.done; r = await iterator.next()) yield r.value;
  }
  let input: AsyncIterable<Buffer> = all();
  if (firstChunk.length >= 2 && firstChunk.subarray(0, 2).equals(GZIP)) {
    const gunzip = createGunzip();
    // An error on either side destroys gunzip, which ends the loop below with that error.
    pipeline(Readable.from(all()), gunzip).catch(() => {});
    input = gunzip;
  }

  const framer = new LineFramer(options.maxLineBytes);
  const encoder = new EntryEncoder(options.parse);
  let line = 0;
  const onFrame = (frame: Parameters<Parameters<LineFramer['push']>[1]>[0]) => {
    line++; // physical line numbers: blank lines count too
    if (frame.kind === 'blank') return;
    counts.read++;
    const at = `${source}:${line}`;
    if (frame.kind === 'oversized') {
      rejects.push({
        source: at,
        reason: `line: longer than max_line_bytes=${options.maxLineBytes} (${frame.size} bytes seen)`,
        raw: frame.head,
      });
      return;
    }
    const r = encoder.encode(frame.line);
    if (r.ok) entries.push({ copy: r.copy, raw: Buffer.from(frame.line), source: at });
    else rejects.push({ source: at, reason: r.reason, raw: Buffer.from(frame.line) });
  };
  for await (const chunk of input) {
    framer.push(chunk, onFrame);
    if (entries.length + rejects.length >= options.batchSize) await flush();
  }
  framer.end(onFrame);
  await flush();
}
