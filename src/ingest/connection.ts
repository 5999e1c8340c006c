/**
 * One client connection of `serve` (CONTRACT.md §3, §4): frames its bytes into lines, validates
 * each line, queues entries and rejects in order, and, after the `{"ack":true}` handshake, writes
 * one response line per entry line, in order.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { WriteEntry } from '../db/writer.js';
import type { EntryEncoder } from '../entry/encode.js';
import { type Frame, LineFramer } from '../entry/framing.js';
import type { Logger } from '../log.js';
import type { IngestQueue, ItemOwner, ItemResult } from './queue.js';

/** Counters of what the connections saw (besides what the queue counts). */
export interface SourceCounters {
  received: number;
  blank: number;
  sanitized: number;
  redacted: number;
  /** Partial lines lost when a connection was reset mid-line (known-traps C07). */
  truncated: number;
  invalid: number;
  /** Rejected lines by bounded reason code (RejectCode). */
  rejectedByCode: Record<string, number>;
  /** Connections closed at once because `--max-connections` were open (CONTRACT.md §4). */
  connectionsRefused: number;
  /** Failed accepts (EMFILE: out of file descriptors, …). */
  acceptErrors: number;
  /** TCP clients refused in the TLS handshake (no or a wrong client certificate, not TLS). */
  tlsErrors: number;
}

/** What a connection needs from the daemon. */
export interface ConnectionContext {
  queue: IngestQueue;
  /** Shared by every connection (one thread: a line is encoded at a time). */
  encoder: EntryEncoder;
  maxLineBytes: number;
  counters: SourceCounters;
  log: Logger;
  /**
   * Told the change in bytes held for this connection's unterminated line after each read (and
   * their removal when it closes): they count against `--max-queue-bytes` (CONTRACT.md §4).
   */
  onPartial?: (conn: Connection, delta: number) => void;
}

const ACK_HANDSHAKE_MAX = 64;
/** Bytes a connection reads before it lets the event loop turn (see Connection.onData). */
const YIELD_BYTES = 128 * 1024;
/**
 * Reads smaller than this without a newline are gathered into one buffer of {@link DRIP_CAP} bytes
 * before the framer sees them: a client sending one byte per write made the framer keep one Buffer
 * per byte (~400 B each: 400 KB sent held 160 MB, issue 10).
 */
const DRIP_MAX = 4096;
const DRIP_CAP = 16 * 1024;
/** Unsent ack bytes past which a connection stops reading until its client reads them. */
const ACK_BACKLOG_BYTES = 1024 * 1024;

/** Is this first line the ack handshake `{"ack":true}`? */
function isAckHandshake(line: Buffer): boolean {
  if (line.length > ACK_HANDSHAKE_MAX) return false;
  try {
    const v = JSON.parse(line.toString('utf8')) as unknown;
    return (
      typeof v === 'object' &&
      v !== null &&
      !Array.isArray(v) &&
      (v as { ack?: unknown }).ack === true &&
      Object.keys(v).length === 1
    );
  } catch {
    return false;
  }
}

/** Handles one socket until it closes; see the module header. */
export class Connection implements ItemOwner {
  private readonly framer: LineFramer;
  private firstLine = true;
  private ackMode = false;
  private seq = 0;
  /** Entry lines queued and not yet settled. */
  private inFlight = 0;
  private ended = false;
  private closed = false;
  private pausedByDaemon = false;
  /** Paused because it holds many unfinished bytes while the byte budget is spent (daemon.ts). */
  private pausedForPartial = false;
  /** Bytes of the unterminated line last reported through `onPartial`. */
  private reportedPartial = 0;
  /** Small reads without a newline, gathered for the framer (see {@link DRIP_MAX}). */
  private drip: Buffer | null = null;
  private dripLen = 0;
  /** Bytes read since this connection last let the event loop turn (see {@link onData}). */
  private bytesThisTurn = 0;
  private yielding = false;
  /** True while the client leaves more than {@link ACK_BACKLOG_BYTES} of acks unread. */
  private ackBacklog = false;
  private lastData = Date.now();
  /** Ack lines not yet written (ack mode). */
  private acks = '';
  private ackFlushQueued = false;

  constructor(
    readonly id: string,
    private readonly socket: Socket,
    private readonly ctx: ConnectionContext,
  ) {
    this.framer = new LineFramer(ctx.maxLineBytes);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) => {
      ctx.log.debug({ conn: id, err: err.message }, 'connection error');
    });
    socket.on('close', () => this.onClose());
  }

  /** Milliseconds since the last bytes arrived. */
  get idleMs(): number {
    return Date.now() - this.lastData;
  }

  /** True while the daemon holds this socket paused (backpressure). */
  get isPaused(): boolean {
    return this.pausedByDaemon;
  }

  /** True once the socket closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes held for this connection's unterminated line (see LineFramer.heldBytes). */
  get partialBytes(): number {
    return this.reportedPartial;
  }

  /** True while paused for holding unfinished bytes (see {@link pauseForPartial}). */
  get isPausedForPartial(): boolean {
    return this.pausedForPartial;
  }

  /**
   * Stops reading because this connection holds many unfinished bytes while the queue's byte
   * budget is spent; {@link resumeForPartial} undoes it. Independent of {@link pause}.
   */
  pauseForPartial(): void {
    if (this.pausedForPartial) return;
    this.pausedForPartial = true;
    this.socket.pause();
  }

  /** Reads again after {@link pauseForPartial} (unless held for another reason). */
  resumeForPartial(): void {
    if (!this.pausedForPartial) return;
    this.pausedForPartial = false;
    this.resumeIfFree();
  }

  /** Reports the change of the held unfinished bytes to the daemon. */
  private reportPartial(): void {
    const now = this.closed || this.ended ? 0 : this.framer.heldBytes + this.dripLen;
    const delta = now - this.reportedPartial;
    if (delta === 0) return;
    this.reportedPartial = now;
    this.ctx.onPartial?.(this, delta);
  }

  /** Stops reading (backpressure); the kernel buffers fill and the client blocks. */
  pause(): void {
    if (this.pausedByDaemon) return;
    this.pausedByDaemon = true;
    this.socket.pause();
  }

  /** Reads again (unless the connection was stopped, or is held for its own reasons). */
  resume(): void {
    if (!this.pausedByDaemon) return;
    this.pausedByDaemon = false;
    this.lastData = Date.now();
    this.resumeIfFree();
  }

  /** Resumes reading when nothing holds the socket: backpressure, a yield, unread acks, the end. */
  private resumeIfFree(): void {
    if (this.pausedByDaemon || this.pausedForPartial || this.yielding || this.ackBacklog || this.ended)
      return;
    this.socket.resume();
  }

  /** Stops reading now (shutdown past its grace): what is framed is kept, a partial line is lost. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Stops reading at shutdown as if the client had closed: a partial line is dropped (counted as
   * truncated); the socket closes once every queued line has its ack.
   */
  stopReading(): void {
    if (this.ended) return;
    this.socket.pause();
    this.pausedByDaemon = true;
    this.ended = true;
    const lost = this.framer.abort() + this.dropDrip();
    this.reportPartial();
    if (lost > 0) {
      this.ctx.counters.truncated++;
      this.ctx.log.warn(
        { conn: this.id, bytes: lost },
        'stopped reading mid-line at shutdown; the partial line is not stored',
      );
    }
    this.maybeFinish();
  }

  /**
   * Frames and encodes a chunk. libuv reads up to 32 chunks of 64 KiB in one go when a fast client
   * keeps the socket full: ~16 ms of encoding during which the writer's Postgres replies wait (a
   * BEGIN measured 5 ms). So after {@link YIELD_BYTES} the socket is paused until the next turn
   * of the event loop (setImmediate), unless the daemon paused it meanwhile (backpressure).
   */
  private onData(chunk: Buffer): void {
    this.lastData = Date.now();
    if (chunk.length < DRIP_MAX && chunk.indexOf(0x0a) < 0) {
      if (this.dripLen + chunk.length > DRIP_CAP) this.flushDrip();
      this.drip ??= Buffer.allocUnsafe(DRIP_CAP);
      chunk.copy(this.drip, this.dripLen);
      this.dripLen += chunk.length;
    } else {
      this.flushDrip();
      this.drip = null; // whole lines again: no buffer kept per idle connection
      this.framer.push(chunk, this.handleFrame);
    }
    this.reportPartial();
    this.bytesThisTurn += chunk.length;
    if (this.bytesThisTurn >= YIELD_BYTES && !this.yielding) {
      this.yielding = true;
      this.socket.pause();
      setImmediate(() => {
        this.yielding = false;
        this.bytesThisTurn = 0;
        this.resumeIfFree();
      });
    }
  }

  /** Hands the gathered small reads to the framer (a copy: the framer keeps what it is given). */
  private flushDrip(): void {
    if (this.dripLen === 0) return;
    const bytes = Buffer.from(this.drip!.subarray(0, this.dripLen));
    this.dripLen = 0;
    this.framer.push(bytes, this.handleFrame);
  }

  /** Drops the gathered small reads (reset, stop); returns their length. */
  private dropDrip(): number {
    const n = this.dripLen;
    this.dripLen = 0;
    this.drip = null;
    return n;
  }

  /** One framed line (or blank, or oversized line), in stream order. */
  private readonly handleFrame = (frame: Frame): void => {
    if (frame.kind === 'blank') {
      this.ctx.counters.blank += frame.count;
      return;
    }
    if (frame.kind === 'line' && this.firstLine) {
      this.firstLine = false;
      if (isAckHandshake(frame.line)) {
        this.ackMode = true;
        return;
      }
    }
    this.firstLine = false;
    const seq = ++this.seq;
    this.ctx.counters.received++;
    const source = `${this.id} line ${seq}`;
    if (frame.kind === 'oversized') {
      const reason = `line: longer than max_line_bytes=${this.ctx.maxLineBytes} (${frame.size} bytes seen)`;
      this.ctx.counters.invalid++;
      this.countCode('oversized');
      this.ctx.log.warn({ conn: this.id, seq, size: frame.size }, 'rejected an oversized line');
      this.enqueueReject(seq, source, reason, frame.head);
      return;
    }
    const result = this.ctx.encoder.encode(frame.line);
    if (!result.ok) {
      this.ctx.counters.invalid++;
      this.countCode(result.code);
      this.ctx.log.warn({ conn: this.id, seq, reason: result.reason }, 'rejected a line');
      this.enqueueReject(seq, source, result.reason, frame.line);
      return;
    }
    if (result.sanitized.length > 0) {
      this.ctx.counters.sanitized++;
      this.ctx.log.warn(
        { conn: this.id, seq, request_id: result.requestId, fields: result.sanitized },
        'replaced characters Postgres cannot hold with U+FFFD',
      );
    }
    if (result.redacted > 0) this.ctx.counters.redacted++;
    this.inFlight++;
    const entry: WriteEntry = { copy: result.copy, raw: frame.line, source };
    this.ctx.queue.push({
      kind: 'entry',
      entry,
      // Both buffers stay in memory while the entry waits: the line (for a possible reject) and
      // its COPY line.
      bytes: entry.raw.length + entry.copy.length,
      owner: this,
      seq,
    });
  };

  private countCode(code: string): void {
    const by = this.ctx.counters.rejectedByCode;
    by[code] = (by[code] ?? 0) + 1;
  }

  private enqueueReject(seq: number, source: string, reason: string, raw: Buffer): void {
    this.inFlight++;
    this.ctx.queue.push({
      kind: 'reject',
      // A random key: the reject is stored once however often its write is retried (audit_reject.reject_key).
      reject: { source, reason, raw, key: randomUUID() },
      bytes: raw.length,
      owner: this,
      seq,
    });
  }

  /** An entry or reject of this connection has ended: send its ack (in ack mode). */
  settled(seq: number, r: ItemResult): void {
    this.inFlight--;
    if (this.ackMode && !this.closed) {
      this.acks += r.ok
        ? `{"seq":${seq},"ok":true}\n`
        : `${JSON.stringify({ seq, ok: false, error: r.error })}\n`;
      // The queue settles a whole batch at once: one write per connection per batch, not per entry.
      if (!this.ackFlushQueued) {
        this.ackFlushQueued = true;
        queueMicrotask(this.flushAcks);
      }
      return;
    }
    this.maybeFinish();
  }

  /**
   * Sends the acks gathered for this batch. A client that does not read them would make the daemon
   * hold them without bound: past {@link ACK_BACKLOG_BYTES} unsent, the connection stops reading
   * until the socket drains (backpressure through the acks).
   */
  private readonly flushAcks = (): void => {
    this.ackFlushQueued = false;
    if (this.acks && !this.closed) {
      this.socket.write(this.acks);
      if (this.socket.writableLength > ACK_BACKLOG_BYTES && !this.ackBacklog) {
        this.ackBacklog = true;
        this.socket.pause();
        this.socket.once('drain', () => {
          this.ackBacklog = false;
          this.resumeIfFree();
        });
      }
    }
    this.acks = '';
    this.maybeFinish();
  };

  private onEnd(): void {
    this.ended = true;
    this.flushDrip();
    this.drip = null;
    this.framer.end(this.handleFrame);
    this.reportPartial();
    this.maybeFinish();
  }

  /** Half-closed by the client and every ack sent: close our side too. */
  private maybeFinish(): void {
    if (this.ended && this.inFlight === 0 && !this.closed) this.socket.end();
  }

  private onClose(): void {
    this.closed = true;
    this.reportPartial();
    if (!this.ended) {
      const lost = this.framer.abort() + this.dropDrip();
      if (lost > 0) {
        this.ctx.counters.truncated++;
        this.ctx.log.warn(
          { conn: this.id, bytes: lost },
          'connection closed mid-line; the partial line is not stored',
        );
      }
    }
  }
}
