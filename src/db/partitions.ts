/**
 * The daily partitions of `audit_log` (CONTRACT.md §10), made by this project's own code: the SQL
 * functions of migrations/1764400000005_partitions.sql make one partition per UTC day (CREATE TABLE
 * LIKE audit_log, then ATTACH PARTITION, under one advisory lock), and this module decides when.
 *
 * - Ahead: `serve` (at start and daily) and `migrate` make the partitions of yesterday, today and the
 *   coming days ({@link ensureAhead}).
 * - On demand: before a batch's COPY or INSERT, the writer asks {@link PartitionKeeper.ensureFor}
 *   for the UTC days of the batch's timestamps. Days already known to exist are remembered, so the
 *   common batch costs one scan of its timestamps and no round trip; a new day costs one call of
 *   `audit_log_ensure_partitions`. An entry of any valid timestamp (years old, in the future) is
 *   thus stored, never refused for want of a partition.
 * - Fallback: should a COPY still meet "no partition of relation … found for row" (SQLSTATE 23514;
 *   a partition dropped by `retention` after it was remembered, or a timestamp whose day only
 *   Postgres computes right), the writer forgets what it knew, asks Postgres for the days of every
 *   timestamp of the batch and writes it again ({@link isMissingPartition}, src/errors.ts).
 */
import type pg from 'pg';
import { isMissingPartition, messageOf, sqlState } from '../errors.js';
import type { Logger } from '../log.js';

export { isMissingPartition };

/** How many days ahead of today `serve` and `migrate` make partitions (today included: 8 days). */
export const DAYS_AHEAD = 7;
/** How many times the partition DDL is tried on a lock timeout (the SQL function sets 2 s). */
const DDL_TRIES = 5;
/** SQLSTATE lock_not_available (lock_timeout), undefined_function (schema before §10). */
const LOCK_NOT_AVAILABLE = '55P03';
const UNDEFINED_FUNCTION = '42883';

/** `YYYY-MM-DD` of a UTC day. */
export function dayKey(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * The partition name of a UTC day `YYYY-MM-DD` (the SQL function `audit_log_partition_name`,
 * years 0001–9999).
 */
export function partitionName(day: string): string {
  return `audit_log_p${day.replaceAll('-', '')}`;
}

const STAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

/**
 * The UTC day (`YYYY-MM-DD`) of an RFC 3339 timestamp text as stored in the COPY line, or null when
 * only Postgres can tell it for sure (a leap second, more than 6 fraction digits that may round up
 * to the next day, a year outside 0001–9999, any other form).
 */
export function utcDayOf(text: string): string | null {
  // The common form, already validated by the encoder: `YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`.
  const n = text.length;
  if (
    n >= 20 &&
    n <= 27 &&
    text.charCodeAt(n - 1) === 90 && // Z
    text.charCodeAt(10) === 84 && // T
    text.charCodeAt(4) === 45 && // -
    text.charCodeAt(17) !== 54 && // not a leap second (:60)
    !text.startsWith('0000')
  ) {
    return text.slice(0, 10);
  }
  const m = STAMP.exec(text);
  if (!m || m[6] === '60' || m[1] === '0000') return null;
  if (m[8] === undefined || (m[9] === '00' && m[10] === '00')) return `${m[1]}-${m[2]}-${m[3]}`;
  const sign = m[8] === '-' ? 1 : -1; // local = UTC + offset, so UTC = local - offset
  const ms = Date.UTC(
    Number(m[1]),
    Number(m[2]) - 1,
    Number(m[3]),
    Number(m[4]) + sign * Number(m[9]),
    Number(m[5]) + sign * Number(m[10]),
    Number(m[6]),
  );
  // Date.UTC maps years 0–99 to 1900–1999; those years never get here with an offset that crosses
  // into them in practice, but let Postgres decide.
  if (Number(m[1]) < 100) return null;
  return dayKey(ms);
}

/** The timestamp text of an entry's COPY line (its second column). */
export function copyTimestamp(copy: Buffer): string {
  const a = copy.indexOf(9);
  const b = copy.indexOf(9, a + 1);
  return copy.toString('latin1', a + 1, b);
}

/**
 * Runs `audit_log_ensure_partitions` for timestamp texts: one statement in autocommit (the function
 * sets its own 2 s `lock_timeout`), retried on lock timeouts. Never inside a batch's transaction.
 * @returns how many partitions were made
 * @throws the pg error after {@link DDL_TRIES} lock timeouts, or any other error
 */
export async function ensurePartitionsFor(client: pg.ClientBase, stamps: string[]): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await client.query<{ n: number }>('SELECT audit_log_ensure_partitions($1::text[]) AS n', [
        stamps,
      ]);
      return r.rows[0]!.n;
    } catch (err) {
      if (sqlState(err) !== LOCK_NOT_AVAILABLE || attempt >= DDL_TRIES) throw err;
    }
  }
}

/**
 * Makes the partitions of yesterday, today and the next `days` days (UTC), as `serve` does at start
 * and daily and `migrate` after migrating.
 * @returns how many partitions were made
 */
export async function ensureAhead(
  client: pg.ClientBase,
  days = DAYS_AHEAD,
  now = Date.now(),
): Promise<number> {
  const stamps: string[] = [];
  for (let i = -1; i <= days; i++) stamps.push(`${dayKey(now + i * 86_400_000)}T00:00:00Z`);
  return ensurePartitionsFor(client, stamps);
}

/**
 * Makes sure the partitions of a batch's days exist before its COPY (see the module header).
 * One per writer process; safe to share between concurrent writes.
 */
export class PartitionKeeper {
  private readonly known = new Set<string>();
  private disabled = false;

  constructor(private readonly log: Logger) {}

  /**
   * Ensures the partition of every entry's UTC day.
   * @param stamps the timestamp texts of the batch (as in the COPY lines)
   * @param thorough forget the remembered days and ask Postgres about every timestamp (the
   *   fallback after a missing partition)
   * @throws the pg error when the partitions cannot be made (the caller retries the batch)
   */
  async ensureFor(client: pg.ClientBase, stamps: Iterable<string>, thorough = false): Promise<void> {
    if (this.disabled) return;
    if (thorough) this.known.clear();
    const ask = new Map<string, string>(); // day (or the text itself when only Postgres knows) → text
    for (const t of stamps) {
      const day = thorough ? null : utcDayOf(t);
      if (day === null) ask.set(`?${t}`, t);
      else if (!this.known.has(day) && !ask.has(day)) ask.set(day, t);
    }
    if (ask.size === 0) return;
    try {
      const made = await ensurePartitionsFor(client, [...ask.values()]);
      if (made > 0) this.log.info({ made, days: [...ask.keys()].slice(0, 10) }, 'partitions made on demand');
    } catch (err) {
      if (sqlState(err) === UNDEFINED_FUNCTION) {
        // A schema without §10's partitions: nothing to make.
        this.disabled = true;
        this.log.debug({ err: messageOf(err) }, 'audit_log is not partitioned; no partitions to make');
        return;
      }
      throw err;
    }
    for (const day of ask.keys()) if (!day.startsWith('?')) this.known.add(day);
  }

  /** Forgets the remembered days (after `retention` dropped some). */
  forget(): void {
    this.known.clear();
  }
}
