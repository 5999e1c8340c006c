/**
 * The audit sender of `wrap` (CONTRACT.md §11): sends entry lines to `serve`'s socket with the ack
 * handshake of §4 and never blocks the tool traffic.
 *
 * - **Asynchronous and bounded.** {@link AuditSender.send} only queues. At most `maxInMemory` entries
 *   wait in memory (queued or sent and not yet acked); past that, new ones go to the local spool.
 * - **Acked.** The first line is `{"ack":true}`; each later line gets `{"seq":N,"ok":…}` in order
 *   (§4). An entry leaves memory only when acked (`ok:false` means serve stored it in
 *   `audit_reject`: durable too, and logged).
 * - **Local spool while serve is unreachable.** Entries that cannot be sent, and those unacked when
 *   the connection breaks or acks stop coming for `ackTimeoutMs`, go to a spool directory in the
 *   format of src/ingest/spool.ts (so `replay` reads it too): written in groups and fsynced. Each
 *   wrap run spools into `<spool dir>/<session>/`, which holds `owner.pid` while the run lives. On
 *   every (re)connection, the run's own spool is sent (each file deleted once all its entries are
 *   acked), and so are spools that runs which ended left behind: a run adopts one by renaming it,
 *   so no two runs send the same one. An entry sent twice (acked by serve, then the connection broke
 *   before the ack arrived) is stored once: (request_id, timestamp) is unique (§4).
 * - Spooled entries are validated and redacted like serve does (`redactKeys`, §6) before they reach
 *   the disk; their COPY line is turned back into a wire line to be sent.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { RejectRecord, WriteEntry } from '../db/writer.js';
import { encodeCopyRow } from '../entry/copyText.js';
import { parseEntry } from '../entry/parse.js';
import { messageOf } from '../errors.js';
import { Spool, type SpooledBatch, SpoolFullError } from '../ingest/spool.js';
import type { Logger } from '../log.js';
import { wireFromCopy } from './entry.js';

/** Options of {@link AuditSender}. */
export interface SenderOptions {
  /** `serve`'s Unix socket. */
  socket: string;
  /** The root of wrap spools; this run uses `<spoolRoot>/<session>/`. */
  spoolRoot: string;
  session: string;
  /** Lower-cased `request_args` keys redacted before an entry is spooled (CONTRACT.md §6). */
  redactKeys: ReadonlySet<string>;
  /** Entries held in memory at most, queued or unacked (default 10,000). */
  maxInMemory?: number;
  /** Cap of the run's spool, bytes (default 1 GiB). */
  maxSpoolBytes?: number;
  /** An unacked entry older than this, ms, means serve is not acking: reconnect (default 10 s). */
  ackTimeoutMs?: number;
  /** Longest wait between reconnection attempts, ms (default 5 s). */
  maxBackoffMs?: number;
  /** Entries are written to serve at most this often, together, ms (default 50: audit entries need no haste, and fewer writes mean fewer wake-ups of wrap and serve). */
  coalesceMs?: number;
  log: Logger;
}

/** Counts, for the log line at the end and for tests. */
export interface SenderCounts {
  /** Entries handed to {@link AuditSender.send}. */
  entries: number;
  /** Acks with ok:true / ok:false. */
  acked: number;
  refused: number;
  /** Entries written to the local spool. */
  spooled: number;
  /** Entries lost because even the spool could not take them (full disk, spool cap). */
  lost: number;
}

interface Sent {
  line: string;
  at: number;
  /** Set for entries sent from a spool file: they stay in it until the whole file is acked. */
  fromSpool?: { resolve: () => void; reject: (e: Error) => void; last: boolean };
}

const ACK_HANDSHAKE = '{"ack":true}\n';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** See the module header. */
export class AuditSender {
  readonly counts: SenderCounts = { entries: 0, acked: 0, refused: 0, spooled: 0, lost: 0 };
  private readonly queue: string[] = [];
  private readonly inflight: Sent[] = [];
  private socket: Socket | null = null;
  private connected = false;
  private ackBuf = '';
  private backoffMs = 100;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private ackTimer: NodeJS.Timeout | null = null;
  private pumpTimer: NodeJS.Timeout | null = null;
  private readonly coalesceMs: number;
  private closing = false;
  private warnedSpooling = false;
  private draining = false;
  private spool: Spool | null = null;
  private spoolOpening: Promise<Spool> | null = null;
  private spoolDirty = false;
  private toSpool: string[] = [];
  private spoolTimer: NodeJS.Timeout | null = null;
  private readonly maxInMemory: number;
  private readonly ackTimeoutMs: number;
  private readonly maxBackoffMs: number;
  private readonly dir: string;
  private firstAttempt: Promise<void>;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: SenderOptions) {
    this.maxInMemory = options.maxInMemory ?? 10_000;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.coalesceMs = options.coalesceMs ?? 50;
    this.dir = join(options.spoolRoot, options.session);
    this.firstAttempt = new Promise((resolve) => this.connect(resolve));
  }

  /** Resolves once the first connection attempt has succeeded or failed. */
  ready(): Promise<void> {
    return this.firstAttempt;
  }

  /**
   * True while entries reach serve and are acked: connected, nothing waiting in a spool, and no
   * ack overdue. `--fail-closed` forwards a `tools/call` only then.
   */
  get healthy(): boolean {
    if (!this.connected || this.closing) return false;
    if (this.spoolDirty || this.toSpool.length > 0) return false;
    const oldest = this.inflight[0];
    return !oldest || Date.now() - oldest.at < this.ackTimeoutMs;
  }

  /** Queues one entry line (newline included). Never blocks, never throws. */
  send(line: string): void {
    this.counts.entries++;
    if (this.closing || !this.connected || this.queue.length + this.inflight.length >= this.maxInMemory) {
      this.spoolLater(line);
      return;
    }
    this.queue.push(line);
    this.pump();
  }

  private connect(onFirst?: () => void): void {
    this.reconnectTimer = null;
    if (this.closing) {
      onFirst?.();
      return;
    }
    const s = connect({ path: this.options.socket });
    this.socket = s;
    s.setNoDelay?.(true);
    s.on('connect', () => {
      this.connected = true;
      this.backoffMs = 100;
      this.ackBuf = '';
      s.write(ACK_HANDSHAKE);
      this.options.log.debug({ socket: this.options.socket }, 'wrap: connected to serve');
      onFirst?.();
      onFirst = undefined;
      this.pump();
      void this.drainSpools();
    });
    s.on('data', (d: Buffer) => this.onAcks(d));
    s.on('drain', () => this.writeQueued());
    s.on('error', (err) => {
      if (!this.connected) {
        this.options.log.debug(
          { socket: this.options.socket, err: messageOf(err) },
          'wrap: serve unreachable',
        );
      } else {
        this.options.log.warn(
          { socket: this.options.socket, err: messageOf(err) },
          'wrap: connection to serve failed',
        );
      }
    });
    s.on('close', () => {
      onFirst?.();
      onFirst = undefined;
      this.onDisconnect();
    });
  }

  private onDisconnect(): void {
    const was = this.connected;
    this.connected = false;
    this.socket = null;
    if (this.ackTimer) clearInterval(this.ackTimer);
    this.ackTimer = null;
    // Unacked entries: those of the live queue go to the spool; those read from a spool file are
    // still in it (the file is kept, its load fails and is retried).
    const lost = this.inflight.splice(0);
    for (const s of lost) {
      if (s.fromSpool) {
        if (s.fromSpool.last) s.fromSpool.reject(new Error('connection to serve lost'));
      } else this.spoolLater(s.line);
    }
    for (const line of this.queue.splice(0)) this.spoolLater(line);
    if (was)
      this.options.log.warn(
        { socket: this.options.socket },
        'wrap: serve went away; entries go to the local spool',
      );
    this.settleIdle();
    if (!this.closing) {
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoffMs);
      this.reconnectTimer.unref();
      this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
    }
  }

  /**
   * Writes the queued entries to serve, coalesced: at most one write per `coalesceMs` (a burst of
   * calls costs one syscall here and one read in serve, not one per entry).
   */
  private pump(): void {
    if (this.pumpTimer || !this.connected) return;
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = null;
      this.writeQueued();
    }, this.coalesceMs);
  }

  private writeQueued(): void {
    const s = this.socket;
    if (!s || !this.connected || s.writableNeedDrain || this.queue.length === 0) return;
    const now = Date.now();
    const lines = this.queue.splice(0);
    for (const line of lines) this.inflight.push({ line, at: now });
    s.write(lines.length === 1 ? lines[0]! : lines.join(''));
    this.armAckTimer();
  }

  /** A watchdog (one unref'd interval per connection): an ack overdue means serve is stuck. */
  private armAckTimer(): void {
    if (this.ackTimer) return;
    this.ackTimer = setInterval(
      () => {
        const oldest = this.inflight[0];
        if (oldest && Date.now() - oldest.at >= this.ackTimeoutMs) {
          this.options.log.warn(
            { socket: this.options.socket, waitedMs: Date.now() - oldest.at },
            'wrap: serve does not ack; reconnecting (entries go to the local spool meanwhile)',
          );
          this.socket?.destroy();
        }
      },
      Math.max(10, Math.min(1000, this.ackTimeoutMs / 4)),
    );
    this.ackTimer.unref();
  }

  private onAcks(d: Buffer): void {
    this.ackBuf += d.toString('utf8');
    let nl = this.ackBuf.indexOf('\n');
    while (nl >= 0) {
      const text = this.ackBuf.slice(0, nl);
      this.ackBuf = this.ackBuf.slice(nl + 1);
      nl = this.ackBuf.indexOf('\n');
      if (text.trim() === '') continue;
      let ack: { ok?: unknown; error?: unknown };
      try {
        ack = JSON.parse(text) as typeof ack;
      } catch {
        continue;
      }
      const sent = this.inflight.shift();
      if (!sent) continue;
      if (ack.ok === true) this.counts.acked++;
      else {
        this.counts.refused++;
        this.options.log.warn(
          { error: ack.error },
          'wrap: serve rejected an audit entry (kept in audit_reject)',
        );
      }
      if (sent.fromSpool?.last) sent.fromSpool.resolve();
    }
    this.pump();
    this.settleIdle();
  }

  /** Queues a line for the spool; the group is written and fsynced on the next tick. */
  private spoolLater(line: string): void {
    this.toSpool.push(line);
    if (!this.spoolTimer) {
      this.spoolTimer = setTimeout(() => void this.flushSpool(), 2);
    }
  }

  /** The run's spool, opened (and its owner.pid written) on first use; one instance, even when asked twice at once. */
  private openSpool(): Promise<Spool> {
    this.spoolOpening ??= (async () => {
      await mkdir(this.options.spoolRoot, { recursive: true, mode: 0o700 });
      const spool = await Spool.open(
        { dir: this.dir, maxBytes: this.options.maxSpoolBytes ?? 1024 ** 3 },
        this.options.log,
      );
      writeFileSync(join(this.dir, 'owner.pid'), `${process.pid}\n`, { mode: 0o600 });
      this.spool = spool;
      return spool;
    })();
    return this.spoolOpening;
  }

  /** Writes the queued lines to the spool as one fsynced record. */
  private async flushSpool(): Promise<void> {
    this.spoolTimer = null;
    const lines = this.toSpool.splice(0);
    if (lines.length === 0) return;
    const entries: WriteEntry[] = [];
    const rejects: RejectRecord[] = [];
    for (const line of lines) {
      const raw = Buffer.from(line.endsWith('\n') ? line.slice(0, -1) : line, 'utf8');
      const r = parseEntry(raw, { redactKeys: this.options.redactKeys });
      if (r.ok) entries.push({ copy: Buffer.from(encodeCopyRow(r.row), 'utf8'), raw, source: 'wrap' });
      else rejects.push({ source: 'wrap', reason: r.reason, raw });
    }
    try {
      const spool = await this.openSpool();
      await spool.append(entries, rejects);
      this.spoolDirty = true;
      this.counts.spooled += lines.length;
      if (!this.warnedSpooling) {
        this.warnedSpooling = true;
        this.options.log.warn(
          { socket: this.options.socket, spool: this.dir },
          this.closing
            ? 'wrap: serve did not ack every entry in time; the rest wait in the local spool'
            : 'wrap: serve is not reachable; entries wait in the local spool until it is (start `audit-gateway serve`, or check --socket)',
        );
      }
    } catch (err) {
      this.counts.lost += lines.length;
      this.options.log.error(
        { dir: this.dir, entries: lines.length, err: messageOf(err) },
        err instanceof SpoolFullError
          ? 'wrap: the local spool is full; audit entries lost (raise --max-spool-bytes or start serve)'
          : 'wrap: cannot write the local spool; audit entries lost',
      );
    }
    if (this.connected) void this.drainSpools();
    this.settleIdle();
  }

  /** Sends one spooled batch and resolves when its last entry is acked. */
  private sendBatch(batch: SpooledBatch): Promise<void> {
    const lines = [
      ...batch.entries.map((e) => wireFromCopy(e.copy)),
      ...batch.rejects.map((r) => `${r.raw.toString('utf8')}\n`),
    ];
    if (lines.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const s = this.socket;
      if (!s || !this.connected) {
        reject(new Error('not connected to serve'));
        return;
      }
      lines.forEach((line, i) => {
        const last = i === lines.length - 1;
        this.inflight.push({ line, at: Date.now(), fromSpool: { resolve, reject, last } });
        s.write(line);
      });
      this.armAckTimer();
    });
  }

  /** Sends this run's spool, then those that ended runs left behind. */
  private async drainSpools(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.connected && this.spoolDirty && this.toSpool.length === 0) {
        this.spoolDirty = false;
        const spool = await this.openSpool();
        await spool.load((b) => this.sendBatch(b));
      }
      if (this.connected) await this.adoptOrphans();
    } catch (err) {
      this.spoolDirty = true;
      this.options.log.debug(
        { err: messageOf(err) },
        'wrap: sending the local spool stopped; retried on reconnection',
      );
    } finally {
      this.draining = false;
      this.settleIdle();
    }
  }

  /** Sends the spools of wrap runs that ended (no live owner.pid), each adopted by a rename first. */
  private async adoptOrphans(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.options.spoolRoot);
    } catch {
      return;
    }
    for (const name of names) {
      if (!this.connected) return;
      if (name === this.options.session || name.includes('.adopted-')) continue;
      const dir = join(this.options.spoolRoot, name);
      const pidFile = join(dir, 'owner.pid');
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
      if (pid > 0 && pidAlive(pid)) continue;
      const mine = join(this.options.spoolRoot, `${name}.adopted-${randomUUID()}`);
      try {
        await rename(dir, mine);
      } catch {
        continue; // another run took it first
      }
      try {
        const spool = await Spool.open({ dir: mine, maxBytes: Number.MAX_SAFE_INTEGER }, this.options.log);
        const n = await spool.load((b) => this.sendBatch(b));
        await rm(mine, { recursive: true, force: true });
        this.options.log.info({ dir, entries: n }, 'wrap: sent the spool an ended wrap run left');
      } catch (err) {
        // Give it back for a later run.
        await rename(mine, dir).catch(() => {});
        throw err;
      }
    }
  }

  private isIdle(): boolean {
    return (
      this.queue.length === 0 &&
      this.inflight.length === 0 &&
      this.toSpool.length === 0 &&
      !this.draining &&
      (!this.spoolDirty || !this.connected)
    );
  }

  private settleIdle(): void {
    if (!this.isIdle()) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Ends the sender: waits up to `timeoutMs` for every entry to be acked (and the run's spool to be
   * sent), then spools what is left and closes. The run's spool directory is removed when empty;
   * otherwise its `owner.pid` is, so that a later run sends it (or `replay` loads it).
   */
  async close(timeoutMs: number): Promise<SenderCounts> {
    if (!this.isIdle() && this.connected) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.closing = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    for (const s of this.inflight.splice(0)) if (!s.fromSpool) this.toSpool.push(s.line);
    this.toSpool.push(...this.queue.splice(0));
    if (this.spoolTimer) clearTimeout(this.spoolTimer);
    await this.flushSpool();
    if (this.ackTimer) clearInterval(this.ackTimer);
    this.socket?.destroy();
    if (this.spool) {
      this.spool.closeCurrent();
      const left = await this.spool.segments();
      if (left.length === 0) rmSync(this.dir, { recursive: true, force: true });
      else {
        rmSync(join(this.dir, 'owner.pid'), { force: true });
        this.options.log.warn(
          { spool: this.dir, files: left.length },
          'wrap: entries not yet sent to serve wait in the local spool; the next wrap run sends them (or load them with `audit-gateway replay`)',
        );
      }
    }
    return this.counts;
  }
}
