/**
 * The bounded queue between the sockets and Postgres (CONTRACT.md §4 "Batching", "Backpressure").
 *
 * Items (entries and validation rejects, in arrival order) are cut into batches of `batchSize`, or
 * sealed `flushMs` after a batch's first item, whichever comes first. One writer loop stores batch
 * after batch, in order, so each connection's entries keep their order and every ack is sent in
 * order. While more than `maxQueue` entries or `maxQueueBytes` bytes wait, {@link IngestQueue.full}
 * is true and the daemon stops reading its sockets; it resumes below half of each limit.
 *
 * A batch that fails for a connection or resource reason is retried whole, with capped exponential
 * backoff and jitter, until it is stored: retrying is safe because the writer stores each
 * (request_id, timestamp) once.
 */
import type { BatchOutcome, RejectRecord, WriteEntry } from '../db/writer.js';
import { isRetryable, messageOf } from '../errors.js';
import type { Logger } from '../log.js';

/** The outcome reported to an item's owner (for the ack line of CONTRACT.md §4). */
export type ItemResult = { ok: true } | { ok: false; error: string };

/** One queued item: an entry to store or a reject to record; `bytes` is its size on the wire. */
export type QueueItem = ({ kind: 'entry'; entry: WriteEntry } | { kind: 'reject'; reject: RejectRecord }) & {
  bytes: number;
  /** Called once the item is committed (or recorded as rejected). */
  done?: (result: ItemResult) => void;
};

/** Where batches go: {@link import('../db/writer.js').BatchWriter} in production. */
export interface BatchSink {
  write(entries: WriteEntry[], rejects: RejectRecord[]): Promise<BatchOutcome>;
}

/** Limits of the queue (CONTRACT.md §4 defaults: 1000 entries, 50 ms, 100000 entries). */
export interface QueueOptions {
  batchSize: number;
  flushMs: number;
  maxQueue: number;
  /** Bytes of queued lines; bounds memory when lines are large (known-traps C18). */
  maxQueueBytes: number;
  /** First retry delay and cap, in ms. */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

/** Running totals, for logs, metrics and tests. */
export interface QueueCounters {
  stored: number;
  duplicates: number;
  rejected: number;
  refused: number;
  batches: number;
  retries: number;
}

interface Batch {
  items: QueueItem[];
  bytes: number;
}

/** The queue and its writer loop; see the module header. */
export class IngestQueue {
  readonly counters: QueueCounters = {
    stored: 0,
    duplicates: 0,
    rejected: 0,
    refused: 0,
    batches: 0,
    retries: 0,
  };
  private open: Batch = { items: [], bytes: 0 };
  private sealed: Batch[] = [];
  private timer: NodeJS.Timeout | null = null;
  private queuedItems = 0;
  private queuedBytes = 0;
  private writing: Promise<void> | null = null;
  private wasFull = false;
  private idleWaiters: (() => void)[] = [];
  private stopRetrying = false;

  /** Called when the queue drops below its low-water marks after having been full. */
  onRoom: () => void = () => {};

  constructor(
    private readonly sink: BatchSink,
    private readonly options: QueueOptions,
    private readonly log: Logger,
  ) {}

  /** Entries and rejects waiting or being written. */
  get depth(): number {
    return this.queuedItems;
  }

  /** True while the daemon should not read more input. */
  get full(): boolean {
    return this.queuedItems >= this.options.maxQueue || this.queuedBytes >= this.options.maxQueueBytes;
  }

  /** Adds an item; seals the open batch when it reaches `batchSize`. */
  push(item: QueueItem): void {
    this.open.items.push(item);
    this.open.bytes += item.bytes;
    this.queuedItems++;
    this.queuedBytes += item.bytes;
    if (this.full) this.wasFull = true;
    if (this.open.items.length >= this.options.batchSize) this.seal();
    else if (!this.timer) this.timer = setTimeout(() => this.seal(), this.options.flushMs);
  }

  /** Seals the open batch now (e.g. at shutdown) and resolves when every batch is written. */
  async drain(): Promise<void> {
    this.seal();
    if (!this.writing && this.sealed.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops retrying failed batches: the writer loop returns after its current attempt (shutdown). */
  abandon(): void {
    this.stopRetrying = true;
  }

  /** Items not yet written, oldest first (for the spool at a forced shutdown). */
  pending(): QueueItem[] {
    return [...this.sealed.flatMap((b) => b.items), ...this.open.items];
  }

  private seal(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.open.items.length > 0) {
      this.sealed.push(this.open);
      this.open = { items: [], bytes: 0 };
    }
    this.kick();
  }

  /** Starts the writer loop unless it runs; wakes `drain` waiters when nothing is left to do. */
  private kick(): void {
    if (this.writing) return;
    if (this.sealed.length === 0 || this.stopRetrying) {
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    this.writing = this.loop().finally(() => {
      this.writing = null;
      this.kick();
    });
  }

  private async loop(): Promise<void> {
    while (this.sealed.length > 0) {
      const batch = this.sealed[0]!;
      const ok = await this.writeWithRetry(batch);
      if (!ok) return;
      this.sealed.shift();
      this.queuedItems -= batch.items.length;
      this.queuedBytes -= batch.bytes;
      if (
        this.wasFull &&
        this.queuedItems < this.options.maxQueue / 2 &&
        this.queuedBytes < this.options.maxQueueBytes / 2
      ) {
        this.wasFull = false;
        this.onRoom();
      }
    }
  }

  /** Writes one batch, retrying connection and resource errors; false if abandoned. */
  private async writeWithRetry(batch: Batch): Promise<boolean> {
    const entries: WriteEntry[] = [];
    const entryItems: QueueItem[] = [];
    const rejects: RejectRecord[] = [];
    for (const item of batch.items) {
      if (item.kind === 'entry') {
        entries.push(item.entry);
        entryItems.push(item);
      } else rejects.push(item.reject);
    }
    const base = this.options.retryBaseMs ?? 100;
    const cap = this.options.retryMaxMs ?? 5000;
    for (let attempt = 0; ; attempt++) {
      try {
        const outcome = await this.sink.write(entries, rejects);
        this.settle(batch, entryItems, outcome);
        if (attempt > 0) this.log.warn({ attempts: attempt + 1 }, 'batch stored after retrying');
        return true;
      } catch (err) {
        if (!isRetryable(err)) {
          // Not a data error (those are handled in the writer) and not a known transient one:
          // keep the batch and retry slowly rather than lose it; an operator must look.
          this.log.error(
            { err: messageOf(err), entries: entries.length },
            'unexpected error writing a batch; retrying',
          );
        } else if (attempt === 0) {
          this.log.warn(
            { err: messageOf(err), entries: entries.length },
            'Postgres unavailable; retrying the batch',
          );
        }
        if (this.stopRetrying) return false;
        this.counters.retries++;
        const delay = Math.min(cap, base * 2 ** Math.min(attempt, 16));
        await new Promise((r) => setTimeout(r, delay / 2 + Math.random() * (delay / 2)));
        if (this.stopRetrying) return false;
      }
    }
  }

  private settle(batch: Batch, entryItems: QueueItem[], outcome: BatchOutcome): void {
    this.counters.batches++;
    this.counters.stored += outcome.stored;
    this.counters.duplicates += outcome.duplicates;
    this.counters.refused += outcome.refused.size;
    const refusedItems = new Map<QueueItem, string>();
    for (const [i, reason] of outcome.refused) refusedItems.set(entryItems[i]!, reason);
    for (const item of batch.items) {
      if (item.kind === 'reject') {
        this.counters.rejected++;
        item.done?.({ ok: false, error: item.reject.reason });
        continue;
      }
      const refused = refusedItems.get(item);
      if (refused !== undefined) {
        this.counters.rejected++;
        item.done?.({ ok: false, error: `db_refused: ${refused}` });
      } else item.done?.({ ok: true });
    }
  }
}
