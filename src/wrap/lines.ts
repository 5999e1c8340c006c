/**
 * Finds the lines of an MCP stdio stream (messages are delimited by newlines and hold none: MCP
 * 2025-06-18 "Transports" § stdio) for inspection, on raw bytes, without holding up the bytes
 * themselves: the proxy forwards every chunk as it came, and this only keeps a copy of the current
 * line, up to a limit. A line past the limit is reported as overlong (its bytes have passed anyway);
 * a line that nobody wants to look at ({@link LineSplitter} `want`) is not copied at all.
 */

/** Receives each complete line (LF removed; a CR before it kept), or null for one past the limit. */
export type LineSink = (line: Buffer | null) => void;

const LF = 0x0a;

/** Incremental line finder with a byte limit; see the module header. */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  /** The current line is not being kept: not wanted, or past the limit. */
  private skipping = false;
  private overlong = false;
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
        this.overlong = false;
      }
      const nl = chunk.indexOf(LF, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!this.skipping) {
        if (this.size + (end - start) > this.maxBytes) {
          this.parts = [];
          this.size = 0;
          this.skipping = true;
          this.overlong = true;
        } else if (end > start) {
          // A copy: the chunk itself goes on to the other side and may be reused by its stream.
          this.parts.push(Buffer.from(chunk.subarray(start, end)));
          this.size += end - start;
        }
      }
      if (nl < 0) return;
      this.endLine(sink);
      start = nl + 1;
    }
  }

  /** The stream ended: a last line without a newline counts. */
  end(sink: LineSink): void {
    if (!this.atLineStart) this.endLine(sink);
  }

  private endLine(sink: LineSink): void {
    const wanted = !this.skipping || this.overlong;
    const line = this.overlong
      ? null
      : this.parts.length === 1
        ? this.parts[0]!
        : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.atLineStart = true;
    if (wanted) sink(line);
  }
}
