/**
 * Finds the lines of an MCP stdio stream (messages are delimited by newlines and hold none: MCP
 * 2025-06-18 "Transports" § stdio) for inspection, on raw bytes, without holding up the bytes
 * themselves: the proxy forwards every chunk as it came, and this only keeps a copy of the current
 * line, up to a limit. A line past the limit is reported as overlong (its bytes have passed anyway);
 * a line that nobody wants to look at ({@link LineSplitter} `want`) is not copied at all.
 */

/** What is kept of a line past the limit: its first and last bytes, and its size. */
export interface Overlong {
  head: Buffer;
  tail: Buffer;
  size: number;
}

/**
 * Receives each complete line (LF removed; a CR before it kept), or null for one past the limit
 * (then `overlong` holds its ends). The buffer may be a view of the pushed chunk: copy it to keep
 * it past the call.
 */
export type LineSink = (line: Buffer | null, overlong?: Overlong) => void;

const LF = 0x0a;
/** Bytes kept at each end of an overlong line (enough for the `jsonrpc`, `id`, `method` members). */
export const OVERLONG_ENDS = 4096;

/** Incremental line finder with a byte limit; see the module header. */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  /** The current line is not being kept: not wanted, or past the limit. */
  private skipping = false;
  private overlong: Overlong | null = null;
  private atLineStart = true;

  /**
   * @param maxBytes the longest line kept for inspection, bytes.
   * @param want asked at the start of each line: false skips that line (no copy, no sink call).
   */
  constructor(
    private readonly maxBytes: number,
    private readonly want: () => boolean = () => true,
  ) {}

  /** Feeds one chunk; calls `sink` for each line it completes. */
  push(chunk: Buffer, sink: LineSink): void {
    let start = 0;
    while (start < chunk.length) {
      if (this.atLineStart) {
        this.atLineStart = false;
        this.skipping = !this.want();
        this.overlong = null;
      }
      const nl = chunk.indexOf(LF, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.overlong) {
        this.keepTail(chunk.subarray(start, end));
      } else if (!this.skipping) {
        if (this.size + (end - start) > this.maxBytes) {
          const held = Buffer.concat([...this.parts, chunk.subarray(start, end)]);
          this.overlong = {
            head: Buffer.from(held.subarray(0, OVERLONG_ENDS)),
            tail: Buffer.alloc(0),
            size: 0,
          };
          this.keepTail(held);
          this.parts = [];
          this.size = 0;
          this.skipping = true;
        } else if (end > start) {
          // A line whole in this chunk is handed out as a view of it (the sink runs before push
          // returns); a piece of a line that goes on in a later chunk is copied.
          this.parts.push(nl >= 0 ? chunk.subarray(start, end) : Buffer.from(chunk.subarray(start, end)));
          this.size += end - start;
        }
      }
      if (nl < 0) return;
      this.endLine(sink);
      start = nl + 1;
    }
  }

  private keepTail(piece: Buffer): void {
    const o = this.overlong!;
    o.size += piece.length;
    o.tail =
      piece.length >= OVERLONG_ENDS
        ? Buffer.from(piece.subarray(piece.length - OVERLONG_ENDS))
        : Buffer.concat([o.tail, piece]).subarray(-OVERLONG_ENDS);
  }

  /** The stream ended: a last line without a newline counts. */
  end(sink: LineSink): void {
    if (!this.atLineStart) this.endLine(sink);
  }

  private endLine(sink: LineSink): void {
    const overlong = this.overlong;
    const wanted = !this.skipping || overlong !== null;
    const line =
      overlong !== null
        ? null
        : this.parts.length === 1
          ? this.parts[0]!
          : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.overlong = null;
    this.atLineStart = true;
    if (wanted) sink(line, overlong ?? undefined);
  }
}
