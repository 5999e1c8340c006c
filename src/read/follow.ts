/**
 * `tail`: the newest N matching entries, then every new one as it commits (CONTRACT.md §5), never
 * skipping one and never giving one twice, with several writers and out-of-order timestamps.
 *
 * Following goes by `id` (the bigserial), not by timestamp. Ids are handed out by `nextval` before
 * commit, so concurrent transactions can make a lower id visible after a higher one. The loop
 * therefore keeps a *horizon* `lo` — every id at or below it is final: visible now or never — and
 * the set of ids above `lo` it has already given out, and each poll reads every matching entry above
 * `lo`, giving out the ones not given yet.
 *
 * The horizon comes from checkpoints. A checkpoint is the sequence's last value L, read first, and
 * then the set V of transactions (virtual xids) holding a lock on the sequence: `nextval` locks it
 * until its transaction ends, so every id ≤ L belongs to a transaction that had ended when V was
 * read, or to one in V. Once none of V holds the lock any more, ids ≤ L are final, and the next
 * read sees all of them. This stays exact when a transaction has taken an id but has no xid yet,
 * which an xmin/`pg_snapshot_xmin` horizon would miss. (It assumes the sequence's default CACHE 1,
 * so a session cannot keep ids between transactions.)
 *
 * Start: a checkpoint is taken and its transactions are waited for (normally none, or a writer's
 * batch that commits within milliseconds), so all ids ≤ L are final; then, in one REPEATABLE READ
 * snapshot, the newest N entries are read, and the ids of every matching entry above L are noted as
 * given (the older ones were before the start and are not to be followed).
 *
 * Wake-ups: `LISTEN audit_log` (the writer's `NOTIFY audit_log, '<id>'` after each commit), or every
 * `pollMs` when no notification comes (a lost NOTIFY, an INSERT without one). Notifications only
 * trigger a poll; what is read never depends on them. A dropped connection is re-made with capped
 * backoff and the state (`lo`, given ids, checkpoints) carries over, so nothing is missed.
 */
import pg from 'pg';
import { type Database, unreachable } from '../db/connect.js';
import type { Filters } from '../db/filter.js';
import {
  type EntryRow,
  entriesAfter,
  idSequence,
  matchingIdsAfter,
  newestEntries,
  sequenceHolders,
  sequenceLastValue,
} from '../db/queries.js';
import { DatabaseUnavailableError, isRetryable, messageOf } from '../errors.js';
import type { Logger } from '../log.js';

/** The notification channel the writer signals after each commit (CONTRACT.md §4). */
export const NOTIFY_CHANNEL = 'audit_log';

/** Options of {@link tailEntries}. */
export interface TailOptions {
  filters: Filters;
  /** How many of the newest matching entries to give first (0: none). */
  initial: number;
  /** Keep following new entries until `signal` aborts. */
  follow: boolean;
  /** Receives entries in the order to print: the first page oldest first, then in commit order. */
  onRows(rows: EntryRow[]): Promise<void> | void;
  /** Called once the first page is out, with its number of entries (0: none matched). */
  onFirstPage?: ((count: number) => void) | undefined;
  /** Stops following; the promise of {@link tailEntries} then resolves. */
  signal: AbortSignal;
  log: Logger;
  /** Poll when no notification came for this long, in ms. @default 1000 */
  pollMs?: number;
  /** Rows read per follow query. @default 1000 */
  pageSize?: number;
}

interface Checkpoint {
  last: bigint;
  holders: Set<string>;
}

/** A sleep that ends early on a wake-up or on abort. */
class Waker {
  private wake: (() => void) | null = null;
  private pending = false;

  /** Ends the current (or next) {@link sleep} now. */
  poke(): void {
    this.pending = true;
    this.wake?.();
  }

  sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = null;
        this.pending = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }
}

/**
 * Runs tail: gives the newest `initial` entries, then (with `follow`) every new matching entry
 * until `signal` aborts.
 * @throws {DatabaseUnavailableError} when Postgres cannot be reached at the start
 * @throws whatever `onRows` throws (e.g. a closed stdout), and non-connection database errors
 */
export async function tailEntries(db: Database, opts: TailOptions): Promise<void> {
  const { filters, log, signal } = opts;
  const pollMs = opts.pollMs ?? 1000;
  const pageSize = opts.pageSize ?? 1000;
  const waker = new Waker();
  let client: pg.Client | null = null;
  let broken = false;

  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client(db.config);
    c.on('error', (err) => {
      // without this listener a dropped connection is an uncaught exception (known-traps C17)
      log.warn({ err: messageOf(err) }, 'tail: the Postgres connection failed; reconnecting');
      broken = true;
      waker.poke();
    });
    c.on('notification', (msg) => {
      if (msg.channel === NOTIFY_CHANNEL) waker.poke();
    });
    try {
      await c.connect();
    } catch (err) {
      c.end().catch(() => {});
      throw unreachable(db, err);
    }
    broken = false;
    if (opts.follow) await c.query(`LISTEN ${NOTIFY_CHANNEL}`);
    return c;
  };

  const close = async () => {
    const c = client;
    client = null;
    if (!c) return;
    // end() of a connection that already died may never settle: give it a second
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      c.end().catch(() => {}),
      new Promise<void>((r) => {
        timer = setTimeout(r, 1000);
      }),
    ]);
    clearTimeout(timer);
  };

  try {
    client = await connect();
    const seq = await idSequence(client);

    // the start checkpoint, and waiting until every id at or below it is final
    const last0 = BigInt(await sequenceLastValue(client, seq));
    let holders0 = new Set(await sequenceHolders(client, seq));
    const waitStart = Date.now();
    let warned = false;
    while (holders0.size > 0 && !signal.aborted) {
      if (!warned && Date.now() - waitStart > 3000) {
        warned = true;
        log.warn(
          { transactions: [...holders0] },
          'tail: waiting for open transactions that hold audit_log ids',
        );
      }
      await new Promise((r) => setTimeout(r, 20));
      const now = new Set(await sequenceHolders(client, seq));
      holders0 = new Set([...holders0].filter((v) => now.has(v)));
    }
    if (signal.aborted) return;

    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    let first: EntryRow[];
    let given: Set<string>;
    try {
      first = opts.initial > 0 ? await newestEntries(client, filters, opts.initial) : [];
      given = new Set(opts.follow ? await matchingIdsAfter(client, filters, last0.toString()) : []);
    } finally {
      await client.query('COMMIT');
    }
    if (first.length > 0) await opts.onRows(first);
    opts.onFirstPage?.(first.length);
    if (!opts.follow) return;

    let lo = last0;
    const checkpoints: Checkpoint[] = [];
    let backoffMs = 250;
    // an error of the consumer (e.g. stdout closed) ends tail; only database errors are retried
    let consumerError: { err: unknown } | null = null;
    const deliver = async (rows: EntryRow[]) => {
      try {
        await opts.onRows(rows);
      } catch (err) {
        consumerError = { err };
        throw err;
      }
    };

    const poll = async (c: pg.Client) => {
      // 1. checkpoint: last value first, then who may still hold ids at or below it
      const last = BigInt(await sequenceLastValue(c, seq));
      const held = new Set(await sequenceHolders(c, seq));
      const prev = checkpoints[checkpoints.length - 1];
      if (prev && sameSet(prev.holders, held)) prev.last = last > prev.last ? last : prev.last;
      else checkpoints.push({ last, holders: held });
      // 2. every checkpoint none of whose transactions holds the lock any more is final
      let horizon = lo;
      for (let i = checkpoints.length - 1; i >= 0; i--) {
        const cp = checkpoints[i]!;
        if ([...cp.holders].some((v) => held.has(v))) continue;
        if (cp.last > horizon) horizon = cp.last;
        checkpoints.splice(0, i + 1); // a later final checkpoint makes every earlier one final
        break;
      }
      // 3. read everything above the old horizon (this read starts after step 1's lock check)
      let cursor = lo.toString();
      for (;;) {
        const rows = await entriesAfter(c, filters, cursor, pageSize);
        const fresh = rows.filter((r) => !given.has(r.id));
        for (const r of fresh) given.add(r.id);
        if (fresh.length > 0) await deliver(fresh);
        if (rows.length < pageSize) break;
        cursor = rows[rows.length - 1]!.id;
      }
      // 4. move the horizon; ids at or below it can never come again
      if (horizon > lo) {
        lo = horizon;
        for (const id of given) if (BigInt(id) <= lo) given.delete(id);
      }
    };

    while (!signal.aborted) {
      try {
        if (!client || broken) {
          await close();
          client = await connect();
          log.info('tail: reconnected');
        }
        await poll(client);
        backoffMs = 250;
      } catch (err) {
        if (consumerError) throw (consumerError as { err: unknown }).err;
        if (signal.aborted) break;
        if (!broken && !isRetryable(err) && !(err instanceof DatabaseUnavailableError)) throw err;
        log.warn({ err: messageOf(err), retryInMs: backoffMs }, 'tail: Postgres is unreachable; retrying');
        broken = true;
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 5000);
        continue;
      }
      await waker.sleep(pollMs, signal);
    }
  } finally {
    await close();
  }
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const v of a) if (!b.has(v)) return false;
  return true;
}
