/**
 * `retention` (CONTRACT.md §10): removes every daily partition of `audit_log` whose entries are all
 * older than a cut-off, archiving each one first when asked.
 *
 * Per partition, oldest first, in one transaction on one connection:
 * 1. `LOCK TABLE <partition> IN SHARE MODE` (with `lock_timeout`, retried): nothing can be written
 *    into the partition from now on (an entry for that day waits, then, once the partition is gone,
 *    goes into a partition made again for its day: stored, never lost), while reads go on.
 * 2. count, first and last timestamp, lowest and highest id.
 * 3. With an archive directory: the partition's entries are exported on a second connection by the
 *    `export` code path (read/stream.ts, NDJSON, oldest first) into
 *    `DIR/audit_log-YYYY-MM-DD.ndjson.gz`, written beside its final name with mode 0600, fsynced,
 *    read back (gunzip, count lines, SHA-256 of the file) and checked against the partition's count
 *    and the SHA-256 computed while writing, then renamed into place (CONTRACT.md §7: whole or not
 *    at all). A file of that name that an earlier retention recorded is kept: the new one takes a
 *    suffix (`audit_log-YYYY-MM-DD.2.ndjson.gz`).
 * 4. A row in `audit_retention` (day, partition, cut-off, count, first/last timestamp, id range,
 *    archive file name, SHA-256 and size, who removed it).
 * 5. `ALTER TABLE audit_log DETACH PARTITION …` and `DROP TABLE …` under a short `lock_timeout`,
 *    retried (they need ACCESS EXCLUSIVE on audit_log: a short lock timeout keeps writers from
 *    queueing behind a waiting DETACH for long), then COMMIT.
 *
 * A failure at any step rolls the transaction back: the partition stays, its rows stay, and the
 * archive file (if already renamed into place) is a complete, checked copy that the next run
 * replaces.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type pg from 'pg';
import { type Database, unreachable } from '../db/connect.js';
import { AuditGatewayError, messageOf, sqlState } from '../errors.js';
import type { Logger } from '../log.js';
import { streamEntries } from '../read/stream.js';

/** One daily partition of audit_log: its name, UTC day and range [from, to). */
export interface DayPartition {
  name: string;
  /** `YYYY-MM-DD` (UTC). */
  day: string;
  /** RFC 3339 UTC bounds of the partition: from inclusive, to exclusive. */
  from: string;
  to: string;
}

/** What was (or, with `dryRun`, would be) removed of one partition. */
export interface RetentionResult extends DayPartition {
  entries: number;
  /** The archive's path, SHA-256 (hex) and size in bytes; null without `--archive`. */
  archive: { path: string; sha256: string; bytes: number } | null;
  /** False for `--dry-run`. */
  removed: boolean;
}

/** Options of {@link runRetention}. */
export interface RetentionOptions {
  /** Entries older than this instant go (partitions whose upper bound is at or before it). */
  cutoff: Date;
  /** Where archives are written; undefined: no archive. */
  archiveDir?: string | undefined;
  /** List what would go, change nothing. */
  dryRun?: boolean | undefined;
  /** `lock_timeout` of the LOCK and DETACH steps, ms (default 500). */
  lockTimeoutMs?: number | undefined;
  /** How many times a lock timeout or deadlock is retried per step (default 20). */
  tries?: number | undefined;
  /** Called after each partition. */
  onPartition?: ((r: RetentionResult) => void) | undefined;
}

const LOCK_NOT_AVAILABLE = '55P03';
const DEADLOCK = '40P01';

/**
 * The daily partitions of audit_log (named by migration 1764400000005: `audit_log_pYYYYMMDD`) whose
 * range ends at or before `cutoff`, oldest first. Other partitions (none are made by this project)
 * are never touched.
 */
export async function expiredPartitions(client: pg.ClientBase, cutoff: Date): Promise<DayPartition[]> {
  const r = await client.query<{ relname: string }>(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_log'::regclass AND c.relname ~ '^audit_log_p[0-9]{8}$'
      ORDER BY c.relname`,
  );
  const out: DayPartition[] = [];
  for (const { relname } of r.rows) {
    const d = relname.slice('audit_log_p'.length);
    const day = `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;
    const from = new Date(`${day}T00:00:00Z`);
    if (Number.isNaN(from.getTime())) continue;
    const to = new Date(from.getTime() + 86_400_000);
    if (to.getTime() > cutoff.getTime()) continue;
    out.push({ name: relname, day, from: from.toISOString(), to: to.toISOString() });
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `step` in a savepoint, retrying it on lock timeouts and deadlocks with a short backoff. */
async function withLockRetries(
  client: pg.ClientBase,
  tries: number,
  log: Logger,
  what: string,
  step: () => Promise<void>,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await client.query('SAVEPOINT retention_step');
    try {
      await step();
      await client.query('RELEASE SAVEPOINT retention_step');
      return;
    } catch (err) {
      const state = sqlState(err);
      if ((state !== LOCK_NOT_AVAILABLE && state !== DEADLOCK) || attempt >= tries) throw err;
      await client.query('ROLLBACK TO SAVEPOINT retention_step');
      log.debug({ err: messageOf(err), attempt }, `retention: ${what} waited too long; trying again`);
      await sleep(Math.min(2000, 50 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2));
    }
  }
}

/**
 * Removes (or lists, with `dryRun`) every expired partition; see the module header.
 * @returns one result per partition, oldest first
 * @throws {AuditGatewayError} naming the partition or the archive file when one step fails (the
 *   partitions before it are removed, it and those after it are kept)
 */
export async function runRetention(
  pool: pg.Pool,
  db: Database,
  log: Logger,
  opts: RetentionOptions,
): Promise<RetentionResult[]> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw unreachable(db, err);
  }
  const tries = opts.tries ?? 20;
  const lockTimeout = Math.max(1, Math.trunc(opts.lockTimeoutMs ?? 500));
  const results: RetentionResult[] = [];
  let broken: Error | undefined;
  try {
    const parts = await expiredPartitions(client, opts.cutoff);
    if (opts.archiveDir !== undefined && !opts.dryRun) {
      await mkdir(opts.archiveDir, { recursive: true, mode: 0o700 }).catch((err) => {
        throw new AuditGatewayError(`--archive: cannot create '${opts.archiveDir}': ${messageOf(err)}`);
      });
    }
    for (const p of parts) {
      await client.query('BEGIN');
      try {
        await client.query(`SET LOCAL lock_timeout = ${lockTimeout}`);
        if (!opts.dryRun) {
          await withLockRetries(client, tries, log, `LOCK ${p.name}`, async () => {
            await client.query(`LOCK TABLE ${client.escapeIdentifier(p.name)} IN SHARE MODE`);
          });
        }
        const stats = (
          await client.query<{
            n: string;
            first: Date | null;
            last: Date | null;
            min_id: string | null;
            max_id: string | null;
            ids: string;
          }>(
            // ids: the removed rows' ids as ascending ranges (gaps and islands), for verify
            `WITH r AS (SELECT min(id) AS lo, max(id) AS hi
                          FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS g
                                  FROM ${client.escapeIdentifier(p.name)}) s GROUP BY g)
             SELECT (SELECT count(*) FROM ${client.escapeIdentifier(p.name)})::text AS n,
                    (SELECT min("timestamp") FROM ${client.escapeIdentifier(p.name)}) AS first,
                    (SELECT max("timestamp") FROM ${client.escapeIdentifier(p.name)}) AS last,
                    (SELECT min(lo) FROM r)::text AS min_id, (SELECT max(hi) FROM r)::text AS max_id,
                    coalesce((SELECT string_agg(CASE WHEN lo = hi THEN lo::text ELSE lo || '-' || hi END, ','
                                                ORDER BY lo) FROM r), '') AS ids`,
          )
        ).rows[0]!;
        const entries = Number(stats.n);
        const result: RetentionResult = { ...p, entries, archive: null, removed: false };
        if (opts.dryRun) {
          await client.query('ROLLBACK');
          results.push(result);
          opts.onPartition?.(result);
          continue;
        }
        if (opts.archiveDir !== undefined) {
          result.archive = await archivePartition(pool, db, client, log, p, entries, opts.archiveDir);
        }
        await client.query(
          `INSERT INTO audit_retention (day, partition_name, cutoff, entries, first_timestamp, last_timestamp,
             min_id, max_id, archive_file, archive_sha256, archive_bytes, removed_by, ids)
           VALUES ($1::date, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
          [
            p.day,
            p.name,
            opts.cutoff,
            entries,
            stats.first,
            stats.last,
            stats.min_id,
            stats.max_id,
            result.archive ? result.archive.path.split('/').pop() : null,
            result.archive?.sha256 ?? null,
            result.archive?.bytes ?? null,
            `${hostname()} pid ${process.pid}`,
            stats.ids,
          ],
        );
        await withLockRetries(client, tries, log, `DETACH ${p.name}`, async () => {
          await client.query(`ALTER TABLE audit_log DETACH PARTITION ${client.escapeIdentifier(p.name)}`);
          await client.query(`DROP TABLE ${client.escapeIdentifier(p.name)}`);
        });
        await client.query('COMMIT');
        result.removed = true;
        log.info(
          { partition: p.name, entries, archive: result.archive?.path ?? null },
          'retention: partition removed',
        );
        results.push(result);
        opts.onPartition?.(result);
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {
          broken = err instanceof Error ? err : new Error(String(err));
        });
        if (err instanceof AuditGatewayError) throw err;
        throw new AuditGatewayError(`retention: partition ${p.name} (${p.day}) kept: ${messageOf(err)}`, 1, {
          cause: err,
        });
      }
    }
  } finally {
    client.release(broken);
  }
  return results;
}

/** A Transform that passes bytes on and counts and hashes them. */
class Digest extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void) {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/**
 * The final path of a partition's archive: `DIR/audit_log-YYYY-MM-DD.ndjson.gz`, or with a suffix
 * `.N` when a file of that name is an archive that `audit_retention` already records.
 */
async function archivePath(client: pg.ClientBase, dir: string, day: string): Promise<string> {
  for (let n = 1; ; n++) {
    const file = `audit_log-${day}${n === 1 ? '' : `.${n}`}.ndjson.gz`;
    const path = join(dir, file);
    const exists = await lstat(path).then(
      () => true,
      () => false,
    );
    if (!exists) return path;
    const recorded = await client.query('SELECT 1 FROM audit_retention WHERE archive_file = $1 LIMIT 1', [
      file,
    ]);
    if (recorded.rowCount === 0) return path; // left by a run that failed after renaming: replaced
  }
}

/**
 * Writes the partition's entries to its archive and checks it (see the module header, step 3).
 * @throws {AuditGatewayError} naming the file when it cannot be written or does not check out
 */
async function archivePartition(
  pool: pg.Pool,
  db: Database,
  client: pg.ClientBase,
  log: Logger,
  p: DayPartition,
  entries: number,
  dir: string,
): Promise<{ path: string; sha256: string; bytes: number }> {
  const path = await archivePath(client, dir, p.day);
  const tmp = join(dir, `.${path.split('/').pop()}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fail = (why: string) => new AuditGatewayError(`retention: archive ${path} of ${p.name}: ${why}`);
  const digest = new Digest();
  let written: number;
  try {
    const out = createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
    written = (
      await streamEntries(pool, db, log, {
        filters: { since: p.from, until: p.to },
        format: 'ndjson',
        order: 'asc',
        destinations: [createGzip(), digest, out],
        end: true,
      })
    ).rows;
    const fh = await open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    // Read back: the file's SHA-256 and its line count.
    const check = createHash('sha256');
    let lines = 0;
    await pipeline(
      createReadStream(tmp),
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          check.update(chunk);
          cb(null, chunk);
        },
      }),
      createGunzip(),
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
          cb();
        },
      }),
    );
    const sha256 = digest.hash.digest('hex');
    if (written !== entries) throw fail(`exported ${written} entries, the partition holds ${entries}`);
    if (lines !== entries) throw fail(`read back ${lines} lines, expected ${entries}`);
    if (check.digest('hex') !== sha256) throw fail('read back with another SHA-256 than written');
    await rename(tmp, path);
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
    return { path, sha256, bytes: digest.bytes };
  } catch (err) {
    await unlink(tmp).catch(() => {});
    if (err instanceof AuditGatewayError) throw err;
    throw fail(messageOf(err));
  }
}
