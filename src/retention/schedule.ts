/**
 * The upkeep `serve` runs on its own (CONTRACT.md §10): the partitions of the coming days, made at
 * start and every hour, and, with `serve --retention D`, {@link runRetention} once at start and once
 * per UTC day after that. Failures are logged and tried again at the next tick; they never stop
 * ingest. Runs on a pool of its own, so the writers' connections are never taken.
 */
import type pg from 'pg';
import type { Database } from '../db/connect.js';
import { ensureAhead } from '../db/partitions.js';
import { messageOf, sqlState } from '../errors.js';
import type { Logger } from '../log.js';
import { runRetention } from './retention.js';

/** Options of {@link startUpkeep}. */
export interface UpkeepOptions {
  /** Remove partitions older than this many ms (serve --retention); undefined: never. */
  retentionMs?: number | undefined;
  /** serve --archive-dir: where retention archives each partition first. */
  archiveDir?: string | undefined;
  /** Period of the ticks, ms (default one hour). */
  tickMs?: number | undefined;
}

/** A running upkeep; `stop` ends the timer and waits for a run in progress. */
export interface Upkeep {
  stop(): Promise<void>;
  /** The run in progress or the last one (for tests). */
  readonly current: Promise<void>;
}

/**
 * Starts the upkeep. The first run starts at once (in the background).
 * @param pool a pool of its own (2 connections: the retention transaction and its export)
 */
export function startUpkeep(pool: pg.Pool, db: Database, log: Logger, opts: UpkeepOptions): Upkeep {
  let lastRetentionDay = '';
  let stopped = false;
  let current: Promise<void> = Promise.resolve();
  const tick = async () => {
    try {
      const c = await pool.connect();
      try {
        const made = await ensureAhead(c);
        if (made > 0) log.info({ made }, 'partitions made ahead');
      } finally {
        c.release();
      }
    } catch (err) {
      // 42883: a schema from before §10 (serve --no-migrate): nothing to make.
      if (sqlState(err) === '42883') log.debug({ err: messageOf(err) }, 'audit_log is not partitioned');
      else log.warn({ err: messageOf(err) }, 'could not make the partitions ahead; trying again in an hour');
    }
    const today = new Date().toISOString().slice(0, 10);
    if (opts.retentionMs === undefined || today === lastRetentionDay || stopped) return;
    try {
      const cutoff = new Date(Date.now() - opts.retentionMs);
      const removed = await runRetention(pool, db, log, { cutoff, archiveDir: opts.archiveDir });
      lastRetentionDay = today;
      log.info(
        { partitions: removed.length, entries: removed.reduce((n, r) => n + r.entries, 0), cutoff },
        'retention done',
      );
    } catch (err) {
      log.error({ err: messageOf(err) }, 'retention failed; trying again in an hour');
    }
  };
  current = tick();
  const timer = setInterval(() => {
    current = current.then(tick);
  }, opts.tickMs ?? 3_600_000);
  timer.unref();
  return {
    get current() {
      return current;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await current;
    },
  };
}
