/**
 * NDJSON framing on raw bytes (CONTRACT.md §3).
 *
 * Splits a byte stream into lines on the 0x0A byte *before* any UTF-8 decoding, so a multi-byte
 * character split across reads survives (known-traps C04). Rules:
 * - `\n` or `\r\n` ends a line; the CR of a CRLF is dropped, a CR anywhere else is data;
 * - a UTF-8 byte-order mark (EF BB BF) is skipped only when it is the first three bytes of the stream;
 * - lines that are empty or hold only JSON whitespace (space, tab, CR) are `blank`, not entry lines;
 * - a line longer than `maxLineBytes` is reported once as `oversized`, with its first `maxLineBytes`
 *   bytes kept and the rest discarded up to the next LF: memory stays bounded by the limit (C08);
 * - at end of stream, a last line without a newline counts ({@link LineFramer.end}).
 */

/** What the framer found; `line` holds the bytes without the line ending. */
export type Frame =
  | { kind: 'line'; line: Buffer }
  /** `count` blank lines in a row (a run of empty lines is reported at once: linear, not per line). */
  | { kind: 'blank'; count: number }
  | { kind: 'oversized'; head: Buffer; size: number };

/** Receives each frame, in stream order. */
export type FrameSink = (frame: Frame) => void;

/**
 * Memory per kept chunk beyond its bytes (the Buffer object and its socket read), measured in
 * issue 10: 4 connections sending one byte per write, 400 KB in all, added 160 MB (~400 B a chunk).
 */
export const PART_OVERHEAD = 400;

const LF = 0x0a;
const CR = 0x0d;
const BLANK: Frame = Object.freeze({ kind: 'blank', count: 1 });

/** True when every byte is space, tab or CR (JSON whitespace that can occur inside a line). */
function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (b !== 0x20 && b !== 0x09 && b !== CR) return false;
  }
  return true;
}

/**
 * Incremental line splitter with a byte limit per line.
 *
 * `push` and `end` call the sink synchronously. Not thread-safe, one instance per connection.
 */
export class LineFramer {
  /** Bytes of the current, unterminated line (only while not discarding). */
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** While discarding an oversized line: its kept head and the count of bytes seen so far. */
  private discardHead: Buffer | null = null;
  private discardSize = 0;
  private discardEndsInCr = false;
  private atStart = true;

  /** @param maxLineBytes the longest line accepted, in bytes, line ending excluded (≥ 1). */
  constructor(private readonly maxLineBytes: number) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
    }
  }

  /** Bytes held for an unterminated line: what a reset connection would lose (C07 `truncated`). */
  get pendingBytes(): number {
    return this.discardHead ? this.discardSize : this.partsLen;
  }

  /**
   * Memory this framer holds for the unterminated line, in bytes: the line so far (plus
   * {@link PART_OVERHEAD} per chunk it is kept in), or the kept head of an oversized one. What
   * counts against `--max-queue-bytes` (CONTRACT.md §4 "Neighbours").
   */
  get heldBytes(): number {
    return this.discardHead ? this.discardHead.length : this.partsLen + this.parts.length * PART_OVERHEAD;
  }

  /** Feeds one chunk; emits every line it completes. */
  push(chunk: Buffer, sink: FrameSink): void {
    if (this.atStart) {
      // Hold the first bytes until we know whether they are a BOM (it may arrive split).
      if (this.partsLen + chunk.length < 3 && chunk.indexOf(LF) < 0) {
        this.parts.push(chunk);
        this.partsLen += chunk.length;
        return;
      }
      this.atStart = false;
      if (this.partsLen > 0) {
        chunk = Buffer.concat([...this.parts, chunk]);
        this.parts = [];
        this.partsLen = 0;
      }
      if (chunk.length >= 3 && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) {
        chunk = chunk.subarray(3);
      }
    }
    let start = 0;
    while (start < chunk.length) {
      if (this.partsLen === 0 && this.discardHead === null) {
        // A run of empty lines (LF or CR LF) at a line start: counted in one tight loop.
        let j = start;
        let count = 0;
        for (;;) {
          const c = chunk[j];
          if (c === LF) j++;
          else if (c === CR && chunk[j + 1] === LF) j += 2;
          else break;
          count++;
        }
        if (count > 0) {
          sink({ kind: 'blank', count });
          start = j;
          continue;
        }
      }
      const nl = chunk.indexOf(LF, start);
      const end = nl < 0 ? chunk.length : nl;
      this.take(chunk, start, end);
      if (nl < 0) return;
      this.finishLine(sink);
      start = nl + 1;
    }
  }

  /** Ends the stream: a pending last line without a newline is emitted (C07). */
  end(sink: FrameSink): void {
    if (this.atStart && this.partsLen > 0) {
      const held = Buffer.concat(this.parts);
      this.parts = [];
      this.partsLen = 0;
      this.atStart = false;
      const body =
        held.length >= 3 && held[0] === 0xef && held[1] === 0xbb && held[2] === 0xbf
          ? held.subarray(3)
          : held;
      if (body.length > 0) this.take(body, 0, body.length);
    }
    if (this.discardHead || this.partsLen > 0) this.finishLine(sink);
  }

  /** Drops a pending partial line (connection reset) and returns its length in bytes. */
  abort(): number {
    const lost = this.pendingBytes;
    this.parts = [];
    this.partsLen = 0;
    this.discardHead = null;
    this.discardSize = 0;
    return lost;
  }

  private take(chunk: Buffer, start: number, end: number): void {
    const n = end - start;
    if (n === 0) return;
    if (this.discardHead) {
      this.discardSize += n;
      this.discardEndsInCr = chunk[end - 1] === CR;
      return;
    }
    // +1 leaves room for the CR of a CRLF that is not part of the line's length.
    if (this.partsLen + n > this.maxLineBytes + 1) {
      const kept = Buffer.concat([...this.parts, chunk.subarray(start, end)], this.maxLineBytes + 1);
      this.discardHead = Buffer.from(kept.subarray(0, this.maxLineBytes));
      this.discardSize = this.partsLen + n;
      this.discardEndsInCr = chunk[end - 1] === CR;
      this.parts = [];
      this.partsLen = 0;
      return;
    }
    // Copy: the socket's chunk may be reused or be large; keep only what we need.
    this.parts.push(start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end));
    this.partsLen += n;
  }

  private finishLine(sink: FrameSink): void {
    if (this.discardHead) {
      const head = this.discardHead;
      let size = this.discardSize;
      // The CR of a CRLF is framing, not line content.
      if (this.discardEndsInCr) size -= 1;
      this.discardHead = null;
      this.discardSize = 0;
      sink({ kind: 'oversized', head, size });
      return;
    }
    let line: Buffer;
    if (this.parts.length === 1) line = this.parts[0]!;
    else line = Buffer.concat(this.parts, this.partsLen);
    this.parts = [];
    this.partsLen = 0;
    let len = line.length;
    if (len > 0 && line[len - 1] === CR) len -= 1;
    if (len > this.maxLineBytes) {
      sink({ kind: 'oversized', head: Buffer.from(line.subarray(0, this.maxLineBytes)), size: len });
      return;
    }
    if (isBlank(line, 0, len)) {
      sink(BLANK);
      return;
    }
    sink({ kind: 'line', line: line.subarray(0, len) });
  }
}
