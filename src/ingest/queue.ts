/**
 * The bounded queue between the sockets and Postgres (CONTRACT.md §4 "Batching", "Backpressure",
 * "Postgres down or failing").
 *
 * Items (entries and validation rejects, in arrival order) are cut into batches of `batchSize`, or
 * sealed `flushMs` after a batch's first item, whichever comes first. One writer loop stores batch
 * after batch, in order, so each connection's entries keep their order and every ack is sent in
 * order. When Postgres falls behind, the sealed batches waiting for the writer are written together,
 * in order, in one COPY of at most `maxWriteEntries` entries (group commit): per entry a 1000-entry
 * COPY costs the server and the daemon more than a 10,000-entry one (bench/RESULTS.md), so the
 * writer catches up instead of falling further behind. Under a light load each batch is still
 * written on its own as soon as it is sealed. While more than `maxQueue` entries or `maxQueueBytes` bytes wait, {@link IngestQueue.full}
 * is true and the daemon stops reading its sockets; it resumes below half of each limit.
 *
 * Retry policy: a batch that fails for a connection or resource reason (SQLSTATE classes 08, 53,
 * 57, 40, socket errors: `isRetryable`) is never rejected. With a spool, the queue switches to
 * spool mode: this batch and the following ones are appended to the spool (fsynced, then acked)
 * while a recovery loop probes Postgres with capped exponential backoff and jitter; once Postgres
 * answers, the spool is loaded oldest first and live writing resumes only when it is empty, so
 * order is kept. Without a spool (or while the spool is full) the batch is retried in place and the
 * bounded queue pushes back on the sockets. Retrying is safe because the writer stores each
 * (request_id, timestamp) once.
 */
import type { BatchOutcome, RejectRecord, WriteEntry, WriteOrder } from '../db/writer.js';
import { isRetryable, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { type Spool, SpoolFullError } from './spool.js';

/** The outcome reported to an item's owner (for the ack line of CONTRACT.md §4). */
export type ItemResult = { ok: true } | { ok: false; error: string };

/** Who is told how an item ended: a connection, to send its ack. */
export interface ItemOwner {
  settled(seq: number, result: ItemResult): void;
}

/** One queued item: an entry to store or a reject to record; `bytes` is its size on the wire. */
export type QueueItem = ({ kind: 'entry'; entry: WriteEntry } | { kind: 'reject'; reject: RejectRecord }) & {
  bytes: number;
  /** Told once the item is committed, spooled, or recorded as rejected (no closure per entry). */
  owner?: ItemOwner;
  /** The item's sequence number for its owner (the ack's `seq`). */
  seq: number;
  /** When the item was queued (ms since epoch), for the oldest-unwritten-age metric. */
  at?: number;
};

/** Where batches go: {@link import('../db/writer.js').BatchWriter} in production. */
export interface BatchSink {
  /** Stores a write; with `order`, pipelined after the previous write ({@link WriteOrder}). */
  write(entries: WriteEntry[], rejects: RejectRecord[], order?: WriteOrder): Promise<BatchOutcome>;
  /** Resolves when Postgres answers a trivial query; throws otherwise. */
  ping(): Promise<void>;
}

/** Limits of the queue (CONTRACT.md §4 defaults: 1000 entries, 50 ms, 100000 entries). */
export interface QueueOptions {
  batchSize: number;
  flushMs: number;
  /**
   * Most entries written in one COPY when sealed batches wait for the writer (whole batches only;
   * a batch is never cut). At most `batchSize` turns merging off. Default 10000.
   */
  maxWriteEntries?: number;
  maxQueue: number;
  /** Bytes of queued lines; bounds memory when lines are large (known-traps C18). */
  maxQueueBytes: number;
  /**
   * A write or a probe of Postgres that has not answered after this many ms counts as failed
   * (Postgres frozen, a network black hole): the batch goes to the spool (default 10000). The
   * write itself is left to finish or fail; if it committed, loading the spool finds its entries
   * stored and skips them.
   */
  writeTimeoutMs?: number;
  /** First retry delay and cap, in ms (defaults 100 and 5000). */
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
  spooled: number;
  unspooled: number;
}

/** Hooks for metrics; all optional. */
export interface QueueObserver {
  batchWritten?(entries: number, ms: number, path: 'copy' | 'insert'): void;
  postgresUp?(up: boolean): void;
}

interface Batch {
  items: QueueItem[];
  bytes: number;
  settled: boolean;
  /** Part of a write in progress (the writer loop skips it). */
  inFlight?: boolean;
}

/** A write in progress. */
interface InFlight {
  /** Resolves once its rows have ids, or once it ended: the writer loop may start the next. */
  ordered: Promise<void>;
  /** Resolves when its first attempt stored it; rejects when that failed (the next one's gate). */
  attempt: Promise<void>;
  /** Resolves once it settled (acked, spooled or rejected). */
  done: Promise<void>;
}

const OK: ItemResult = { ok: true };

/** An unref'd sleep: a backoff never keeps the process alive on its own. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());

/** The queue and its writer loop; see the module header. */
export class IngestQueue {
  readonly counters: QueueCounters = {
    stored: 0,
    duplicates: 0,
    rejected: 0,
    refused: 0,
    batches: 0,
    retries: 0,
    spooled: 0,
    unspooled: 0,
  };
  private open: Batch = { items: [], bytes: 0, settled: false };
  private sealed: Batch[] = [];
  private timer: NodeJS.Timeout | null = null;
  private queuedItems = 0;
  private queuedBytes = 0;
  private writing: Promise<void> | null = null;
  private wasFull = false;
  private idleWaiters: (() => void)[] = [];
  private stopped = false;
  /** True while Postgres is considered down and batches go to the spool. */
  private spoolMode = false;
  private recovering: Promise<void> | null = null;

  /** Called when the queue drops below its low-water marks after having been full. */
  onRoom: () => void = () => {};

  constructor(
    private readonly sink: BatchSink,
    private readonly options: QueueOptions,
    private readonly log: Logger,
    private readonly spool: Spool | null = null,
    private readonly observer: QueueObserver = {},
  ) {}

  /** Entries and rejects waiting or being written. */
  get depth(): number {
    return this.queuedItems;
  }

  /** Bytes of the entries and rejects waiting or being written (each line and its COPY form). */
  get bytes(): number {
    return this.queuedBytes;
  }

  /** True while batches go to the spool instead of Postgres. */
  get spooling(): boolean {
    return this.spoolMode;
  }

  /** Age in ms of the oldest item not yet written or spooled (0 when none). */
  oldestAgeMs(now = Date.now()): number {
    const first = this.sealed[0]?.items[0] ?? this.open.items[0];
    return first?.at ? now - first.at : 0;
  }

  /** True while the daemon should not read more input. */
  get full(): boolean {
    return this.queuedItems >= this.options.maxQueue || this.queuedBytes >= this.options.maxQueueBytes;
  }

  /**
   * Loads leftover spool files at start-up (CONTRACT.md §4): switches to spool mode, so that new
   * entries queue behind them, and starts the recovery loop. A no-op without a spool or files.
   */
  async resumeSpool(): Promise<void> {
    if (!this.spool || (await this.spool.segments()).length === 0) return;
    this.log.info({ bytes: this.spool.bytes }, 'spool: loading leftover files');
    this.spoolMode = true;
    this.startRecovery();
  }

  /** Adds an item; seals the open batch when it reaches `batchSize`. */
  push(item: QueueItem): void {
    item.at ??= Date.now();
    this.open.items.push(item);
    this.open.bytes += item.bytes;
    this.queuedItems++;
    this.queuedBytes += item.bytes;
    if (this.full) this.wasFull = true;
    if (this.open.items.length >= this.options.batchSize) this.seal();
    else if (!this.timer) this.timer = setTimeout(() => this.seal(), this.options.flushMs);
  }

  /** Seals the open batch now and resolves when every batch is written or spooled. */
  async drain(): Promise<void> {
    this.seal();
    if (!this.writing && this.sealed.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Gives up on Postgres (shutdown past its deadline, or a second signal): every batch not yet
   * stored goes to the spool and is acked from there. Without a spool they stay unwritten.
   * @returns the count of items left unwritten and unspooled (data at risk).
   */
  async spill(): Promise<number> {
    this.stopped = true;
    this.seal();
    const batches = this.sealed.filter((b) => !b.settled);
    let left = 0;
    for (const b of batches) {
      if (this.spool) {
        try {
          await this.appendToSpool(b);
          continue;
        } catch (err) {
          this.log.error(
            { err: messageOf(err), items: b.items.length },
            'spool: cannot take a batch at shutdown',
          );
        }
      }
      left += b.items.length;
    }
    for (const w of this.idleWaiters.splice(0)) w();
    return left;
  }

  /**
   * Ends the queue after a stop: the writer loop and the spool recovery loop end at their next
   * step. Whatever is still spooled stays on disk and is loaded at the next start.
   */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private seal(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.open.items.length > 0) {
      this.sealed.push(this.open);
      this.open = { items: [], bytes: 0, settled: false };
    }
    this.kick();
  }

  /** Starts the writer loop unless it runs; wakes `drain` waiters when nothing is left to do. */
  private kick(): void {
    if (this.writing) return;
    if (this.sealed.length === 0 || this.stopped) {
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    this.writing = this.loop().finally(() => {
      this.writing = null;
      this.kick();
    });
  }

  /**
   * The writer loop: at most two writes in flight. A write starts once the previous one's rows have
   * their ids (its COPY is done; it may still be committing) and the one before that has settled,
   * so a write's COMMIT and NOTIFY overlap the next write's COPY while ids, acks and retries keep
   * the order of arrival.
   */
  private async loop(): Promise<void> {
    let prev: InFlight | null = null;
    while (!this.stopped) {
      const group = this.nextGroup();
      if (group.length === 0) break;
      const write = this.startWrite(group, prev);
      await Promise.all([write.ordered, prev?.done]);
      prev = write;
    }
    await prev?.done;
  }

  /**
   * Starts writing a group: one attempt that reports when its rows have ids ({@link WriteOrder});
   * then, if it failed or the queue is in spool mode, the retrying {@link writeGroup} once the
   * previous write has ended. The loop starts the next write only after `ordered`, so a failed write
   * is retried (or spooled) before anything behind it is written; and a write commits only after
   * the one before it has (WriteOrder.beforeCommit), so when that one fails after its COPY, this one
   * rolls back and follows its retry: ids stay in arrival order.
   */
  private startWrite(group: Batch[], prev: InFlight | null): InFlight {
    for (const b of group) b.inFlight = true;
    let markOrdered!: () => void;
    const ordered = new Promise<void>((resolve) => {
      markOrdered = resolve;
    });
    let attemptStored!: () => void;
    let attemptFailed!: (err: Error) => void;
    const attempt = new Promise<void>((resolve, reject) => {
      attemptStored = resolve;
      attemptFailed = reject;
    });
    attempt.catch(() => {}); // only the next write, if any, waits on it
    const done = (async () => {
      try {
        let outcome: BatchOutcome | null = null;
        const { entries, entryItems, rejects } = split(group);
        const t0 = performance.now();
        if (!this.spoolMode) {
          try {
            outcome = await this.timed(
              this.sink.write(entries, rejects, { ordered: markOrdered, beforeCommit: prev?.attempt }),
            );
            attemptStored();
          } catch (err) {
            attemptFailed(err instanceof Error ? err : new Error(String(err)));
            // Retried below, after the previous write: writeGroup logs, spools or backs off. A
            // connection-level failure sends it (and what follows) straight to the spool.
            if (isRetryable(err) && this.spool && !this.spoolMode) this.enterSpoolMode(err);
          }
        }
        const ms = performance.now() - t0;
        await prev?.done; // acks and retries keep the order of the writes
        if (outcome) {
          this.observer.batchWritten?.(entries.length, ms, outcome.path);
          this.observer.postgresUp?.(true);
          this.settle(group, entryItems, outcome);
        } else if (!this.stopped) await this.writeGroup(group);
      } finally {
        for (const b of group) b.inFlight = false;
        attemptFailed(new Error('no first attempt')); // a no-op once it stored or failed
        markOrdered();
      }
    })();
    return { ordered, attempt, done };
  }

  /**
   * The sealed batches to write next: the first unsettled one, then those behind it while their
   * entries and rejects together stay within `maxWriteEntries`. Settled batches at the head (spilled
   * to the spool at shutdown) are dropped first.
   */
  private nextGroup(): Batch[] {
    while (this.sealed[0]?.settled) this.sealed.shift();
    const cap = this.options.maxWriteEntries ?? 10_000;
    const group: Batch[] = [];
    let items = 0;
    for (const b of this.sealed) {
      if (b.inFlight && group.length === 0) continue; // being written
      if (b.settled || b.inFlight) break;
      if (group.length > 0 && items + b.items.length > cap) break;
      group.push(b);
      items += b.items.length;
    }
    return group;
  }

  /** Removes a settled batch from the accounting and resumes the sockets when there is room. */
  private release(batch: Batch): void {
    batch.settled = true;
    this.queuedItems -= batch.items.length;
    this.queuedBytes -= batch.bytes;
    while (this.sealed[0]?.settled) this.sealed.shift();
    if (
      this.wasFull &&
      this.queuedItems < this.options.maxQueue / 2 &&
      this.queuedBytes < this.options.maxQueueBytes / 2
    ) {
      this.wasFull = false;
      this.onRoom();
    }
  }

  /**
   * Writes a group of batches to Postgres in one write, or each to the spool, retrying until one
   * takes them (or the queue stops). A batch settled meanwhile (spilled at shutdown) is left out.
   */
  private async writeGroup(group: Batch[]): Promise<void> {
    const base = this.options.retryBaseMs ?? 100;
    const cap = this.options.retryMaxMs ?? 5000;
    for (let attempt = 0; !this.stopped; attempt++) {
      const pending = group.filter((b) => !b.settled);
      if (pending.length === 0) return;
      if (this.spoolMode && this.spool) {
        try {
          for (const b of pending) await this.appendToSpool(b);
          return;
        } catch (err) {
          if (!(err instanceof SpoolFullError))
            this.log.error({ err: messageOf(err) }, 'spool: append failed');
          else if (attempt === 0)
            this.log.warn({ err: err.message }, 'spool full: holding entries in memory (backpressure)');
        }
      } else {
        const { entries, entryItems, rejects } = split(pending);
        const t0 = performance.now();
        try {
          const outcome = await this.timed(this.sink.write(entries, rejects));
          this.observer.batchWritten?.(entries.length, performance.now() - t0, outcome.path);
          this.observer.postgresUp?.(true);
          this.settle(pending, entryItems, outcome);
          if (attempt > 0) this.log.warn({ attempts: attempt + 1 }, 'batch stored after retrying');
          return;
        } catch (err) {
          if (pending.every((b) => b.settled)) return; // spilled meanwhile
          if (!isRetryable(err)) {
            // Not a data error (the writer handles those) nor a known transient one: keep the batch
            // and retry slowly rather than lose it; an operator must look.
            this.log.error(
              { err: messageOf(err), entries: entries.length },
              'unexpected error writing a batch; retrying',
            );
          } else {
            if (this.spool) {
              this.enterSpoolMode(err);
              continue; // straight to the spool
            }
            this.observer.postgresUp?.(false);
            if (attempt === 0)
              this.log.warn(
                { err: messageOf(err), entries: entries.length },
                'Postgres unavailable; retrying the batch',
              );
          }
        }
      }
      this.counters.retries++;
      const delay = Math.min(cap, base * 2 ** Math.min(attempt, 16));
      await sleep(delay / 2 + Math.random() * (delay / 2));
    }
  }

  /** Postgres is unavailable: batches go to the spool until the recovery loop has loaded it. */
  private enterSpoolMode(err: unknown): void {
    this.observer.postgresUp?.(false);
    this.log.warn({ err: messageOf(err) }, 'Postgres unavailable: spooling batches until it answers');
    this.spoolMode = true;
    this.startRecovery();
  }

  /**
   * `p`, or an ETIMEDOUT error (retryable) once `writeTimeoutMs` has passed without an answer. The
   * promise itself runs on; a late failure of it is ignored.
   */
  private async timed<T>(p: Promise<T>): Promise<T> {
    const ms = this.options.writeTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            Object.assign(new Error(`Postgres did not answer within ${ms} ms (--write-timeout)`), {
              code: 'ETIMEDOUT',
            }),
          ),
        ms,
      );
    });
    p.catch(() => {});
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async appendToSpool(batch: Batch): Promise<void> {
    const { entries, rejects } = split([batch]);
    await this.spool!.append(entries, rejects);
    if (batch.settled) return;
    this.counters.spooled += entries.length;
    for (const item of batch.items) {
      if (item.kind === 'reject') {
        this.counters.rejected++;
        item.owner?.settled(item.seq, { ok: false, error: item.reject.reason });
      } else item.owner?.settled(item.seq, OK);
    }
    this.release(batch);
  }

  /** Probes Postgres with backoff; once it answers, loads the spool and leaves spool mode. */
  private startRecovery(): void {
    this.recovering ??= (async () => {
      const base = this.options.retryBaseMs ?? 100;
      const cap = this.options.retryMaxMs ?? 5000;
      for (let attempt = 0; this.spoolMode && !this.stopped; attempt++) {
        try {
          await this.timed(this.sink.ping());
          this.observer.postgresUp?.(true);
          const t0 = Date.now();
          const n = await this.spool!.load(async (b) => {
            const outcome = await this.timed(this.sink.write(b.entries, b.rejects));
            this.counters.unspooled += b.entries.length;
            this.counters.stored += outcome.stored;
            this.counters.duplicates += outcome.duplicates;
            this.counters.refused += outcome.refused.size;
          });
          if (this.spool!.bytes === 0) {
            this.spoolMode = false;
            this.log.info(
              { entries: n, ms: Date.now() - t0 },
              'Postgres is back: spool loaded; writing directly again',
            );
            this.kick();
            return;
          }
          attempt = -1; // more was spooled meanwhile: load again at once
          continue;
        } catch (err) {
          this.observer.postgresUp?.(false);
          if (attempt === 0) this.log.warn({ err: messageOf(err) }, 'waiting for Postgres to load the spool');
        }
        const delay = Math.min(cap, base * 2 ** Math.min(attempt, 16));
        await sleep(delay / 2 + Math.random() * (delay / 2));
      }
    })().finally(() => {
      this.recovering = null;
    });
  }

  /**
   * Reports a written group's outcome to each item's owner and releases its batches. A batch spilled
   * to the spool while the write ran is already settled; its entries are now stored twice over
   * (Postgres and spool) and the spool's load will skip them as duplicates.
   */
  private settle(group: Batch[], entryItems: QueueItem[], outcome: BatchOutcome): void {
    this.counters.batches++;
    this.counters.stored += outcome.stored;
    this.counters.duplicates += outcome.duplicates;
    this.counters.refused += outcome.refused.size;
    const refusedItems = new Map<QueueItem, string>();
    for (const [i, reason] of outcome.refused) refusedItems.set(entryItems[i]!, reason);
    for (const batch of group) {
      if (batch.settled) continue;
      this.settleItems(batch, refusedItems);
      this.release(batch);
    }
  }

  private settleItems(batch: Batch, refusedItems: Map<QueueItem, string>): void {
    for (const item of batch.items) {
      if (item.kind === 'reject') {
        this.counters.rejected++;
        item.owner?.settled(item.seq, { ok: false, error: item.reject.reason });
        continue;
      }
      const refused = refusedItems.get(item);
      if (refused !== undefined) {
        this.counters.rejected++;
        item.owner?.settled(item.seq, { ok: false, error: `db_refused: ${refused}` });
      } else item.owner?.settled(item.seq, OK);
    }
  }
}

function split(batches: Batch[]): {
  entries: WriteEntry[];
  entryItems: QueueItem[];
  rejects: RejectRecord[];
} {
  const entries: WriteEntry[] = [];
  const entryItems: QueueItem[] = [];
  const rejects: RejectRecord[] = [];
  for (const batch of batches)
    for (const item of batch.items) {
      if (item.kind === 'entry') {
        entries.push(item.entry);
        entryItems.push(item);
      } else rejects.push(item.reject);
    }
  return { entries, entryItems, rejects };
}
