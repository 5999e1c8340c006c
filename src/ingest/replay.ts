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
import { type Frame, LineFramer } from '../entry/framing.js';
import type { ParseOptions } from '../entry/parse.js';
import { AuditGatewayError, messageOf } from '../errors.js';
import { type Damage, SPOOL_MAGIC, scanSegment } from './spool.js';

/** Counts of CONTRACT.md §5: read / stored / skipped / rejected. */
export interface ReplayCounts {
  read: number;
  stored: number;
  skipped: number;
  rejected: number;
  /** Damaged spool records that could not be read. */
  damaged: number;
  /** Spooled entries that failed validation (set aside as rejects, counted in `rejected` too). */
  invalid?: number;
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
 * A batch is written once its lines hold this many bytes, whatever its entry count: 300 rejected
 * lines of 1 MiB each once made one INSERT too large for a JS string ("Invalid string length").
 */
export const MAX_BATCH_BYTES = 8 * 1024 * 1024;

/** The file is not NDJSON (a CSV export, a binary): refused before anything is stored. */
export class NotNdjsonError extends AuditGatewayError {}

/**
 * Replays one source (a file path, or `-` for stdin) into `counts`, in bounded memory: a batch is
 * written at `batchSize` entries or {@link MAX_BATCH_BYTES}, and every line, oversized or bad, goes
 * the encoder's way (the same validation as `serve`; a bad line is a reject, the rest is stored).
 * Refused ({@link NotNdjsonError}, nothing stored) when the first entry line is not a JSON object.
 * With `checkOnly`, stops after that first check.
 * @throws the file system error when the file cannot be read; an AuditGatewayError naming the file
 *   when its gzip stream is damaged (the entries read before the damage are stored first);
 *   Postgres errors from the writer.
 */
export async function replaySource(
  name: string,
  writer: BatchWriter | null,
  options: ReplayOptions,
  counts: ReplayCounts,
  stdin: Readable = process.stdin,
  checkOnly = false,
): Promise<void> {
  const source = name === '-' ? 'replay:stdin' : `replay:${name}`;
  const label = name === '-' ? 'stdin' : name;
  let entries: WriteEntry[] = [];
  let rejects: RejectRecord[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    if (entries.length === 0 && rejects.length === 0) return;
    if (writer === null) throw new Error('replaySource: no writer');
    const out = await writer.write(entries, rejects);
    counts.stored += out.stored;
    counts.skipped += out.duplicates;
    counts.rejected += rejects.length + out.refused.size;
    entries = [];
    rejects = [];
    pendingBytes = 0;
    options.progress?.(counts);
  };

  // A spool segment: its records are checksummed batches, validated entry by entry on the way.
  if (name !== '-') {
    const head = Buffer.alloc(SPOOL_MAGIC.length);
    const fh = await open(name, 'r');
    try {
      await fh.read(head, 0, head.length, 0);
    } finally {
      await fh.close();
    }
    if (head.equals(SPOOL_MAGIC)) {
      if (checkOnly) return;
      const damage: Damage = { damaged: 'none', skipped: 0, invalid: 0 };
      for (const b of scanSegment(await readFile(name), source, damage, options.parse)) {
        counts.read += b.entries.length + b.rejects.length;
        entries = b.entries;
        rejects = b.rejects;
        await flush();
      }
      counts.damaged += damage.skipped;
      counts.invalid = (counts.invalid ?? 0) + damage.invalid;
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
    try {
      yield firstChunk;
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) yield r.value;
    } finally {
      await iterator.return?.(); // closes the file when the read stops early
    }
  }
  let input: AsyncIterable<Buffer> = all();
  let gzipped = false;
  if (firstChunk.length >= 2 && firstChunk.subarray(0, 2).equals(GZIP)) {
    const gunzip = createGunzip();
    gzipped = true;
    // An error on either side destroys gunzip, which ends the loop below with that error.
    pipeline(Readable.from(all()), gunzip).catch(() => {});
    input = gunzip;
  }

  const framer = new LineFramer(options.maxLineBytes);
  const encoder = new EntryEncoder(options.parse);
  let line = 0;
  let checked = false;
  const onFrame = (frame: Frame) => {
    if (frame.kind === 'blank') {
      line += frame.count; // physical line numbers: blank lines count too
      return;
    }
    line++;
    if (!checked) {
      checked = true;
      const fault = notNdjson(frame, encoder);
      if (fault !== null) {
        throw new NotNdjsonError(
          `replay: ${label} is not NDJSON (line ${line}: ${fault}); nothing was stored from it`,
        );
      }
      if (checkOnly) throw STOP;
    }
    counts.read++;
    const at = `${source}:${line}`;
    if (frame.kind === 'oversized') {
      rejects.push({
        source: at,
        reason: `line: longer than max_line_bytes=${options.maxLineBytes} (${frame.size} bytes seen)`,
        raw: frame.head,
      });
      pendingBytes += frame.head.length;
      return;
    }
    const r = encoder.encode(frame.line);
    const copy = Buffer.from(frame.line);
    if (r.ok) {
      entries.push({ copy: r.copy, raw: copy, source: at });
      pendingBytes += r.copy.length + copy.length;
    } else {
      rejects.push({ source: at, reason: r.reason, raw: copy });
      pendingBytes += copy.length;
    }
  };
  try {
    for await (const chunk of input) {
      framer.push(chunk, onFrame);
      if (entries.length + rejects.length >= options.batchSize || pendingBytes >= MAX_BATCH_BYTES) {
        await flush();
      }
    }
  } catch (err) {
    if (err === STOP) return;
    if (err instanceof NotNdjsonError) throw err;
    // A damaged (truncated) gzip stream, or a read error: keep what came before it, then say so.
    if (checkOnly) throw new AuditGatewayError(`replay: ${label}: ${messageOf(err)}`);
    await flush();
    throw new AuditGatewayError(
      `replay: ${label}: ${gzipped ? 'damaged gzip stream' : 'read error'} after line ${line} (${messageOf(err)}); the ${counts.read} lines before it were loaded`,
    );
  }
  if (checkOnly) {
    // Only blank lines (or nothing): nothing to refuse.
    return;
  }
  try {
    framer.end(onFrame);
  } catch (err) {
    if (err === STOP) return;
    throw err;
  }
  await flush();
}

/** Thrown inside the framer's callback to stop a `checkOnly` read. */
const STOP = new Error('stop');

/**
 * Why the first entry line shows the input is not NDJSON, or null: a line that does not begin with
 * `{` (after JSON whitespace), or is valid JSON but not an object, or too long and not an object's
 * beginning. A line that begins like an object and is damaged is an ordinary reject.
 */
function notNdjson(frame: Frame, encoder: EntryEncoder): string | null {
  const bytes = frame.kind === 'line' ? frame.line : frame.kind === 'oversized' ? frame.head : null;
  if (bytes === null) return null;
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0d)) i++;
  if (bytes[i] !== 0x7b) return 'not a JSON object';
  if (frame.kind === 'line') {
    const r = encoder.encode(frame.line);
    if (!r.ok && r.code === 'not_object') return r.reason;
  }
  return null;
}
