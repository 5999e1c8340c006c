/**
 * Writes batches of entries into `audit_log` (CONTRACT.md §4, §8).
 *
 * - A batch of at least `copyMinRows` entries is written with `COPY audit_log (…) FROM STDIN` in text
 *   format (pg-copy-streams, on a dedicated client, never `pool.query`); a smaller one with one
 *   `INSERT … SELECT FROM unnest($1::uuid[], …)`: one array per column, so no batch size can reach
 *   the 65,535 bind-parameter limit (known-traps C24). Both send the same column texts (the INSERT
 *   path decodes the entry's COPY line), so both store identical rows (C02, C23).
 * - Exactly once: (request_id, timestamp) is unique. The INSERT path says `ON CONFLICT DO NOTHING`;
 *   when a COPY meets a stored key (SQLSTATE 23505: a retried batch whose commit outcome was
 *   unknown, a replayed file, a client's resend) the batch is written again by the INSERT path, so
 *   the first stored copy wins and nothing is stored twice (C15).
 * - A batch that Postgres refuses for its data (SQLSTATE classes 22, 23, 54) is split in halves until
 *   the offending entries are isolated; the others are stored and each offending one goes to
 *   `audit_reject` with the server's message (C14).
 * - Before a batch is written, the partitions of its UTC days are made when missing (CONTRACT.md §10,
 *   db/partitions.ts); "no partition of relation … found for row" is never a data error: the days
 *   are made again from every timestamp of the batch and the batch is written again.
 * - Connection and resource errors are thrown to the caller, which retries the whole batch (safe:
 *   see exactly once); the failed client is destroyed, not returned to the pool (C16).
 * - A batch of COPY size without validation rejects is `BEGIN`, the COPY, then
 *   `SELECT currval(…), pg_notify('audit_log', '<highest id in the batch>')` and `COMMIT`. Once the
 *   COPY is done its rows have their ids, so a caller that pipelines writes ({@link WriteOrder}) may
 *   start the next batch's COPY on another connection while this one commits: the next batch's ids
 *   are still higher, and the commit's WAL flush overlaps the next COPY.
 * - With a chain id (CONTRACT.md §9), every transaction that stores rows also appends a batch
 *   record to the writer's chain before its COMMIT ({@link appendBatch}): its rows' Merkle leaves,
 *   computed by Postgres from the rows as stored, and the link to the previous record. A write
 *   takes its turn on the chain when its rows have their ids, so records follow the order of ids.
 *   Rows skipped as duplicates are in no batch; a rolled-back transaction leaves no record.
 *   No path uses a savepoint: the batch's own rows are found by their xmin.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { decodeCopyRow } from '../entry/copyDecode.js';
import { ENTRY_COLUMNS } from '../entry/parse.js';
import { sanitizeString } from '../entry/sanitize.js';
import { isDataError, messageOf, sqlState } from '../errors.js';
import type { Logger } from '../log.js';
import { appendBatch, ChainBroken, ensureChain, idFloorSql } from './chain.js';
import { copyTimestamp, isMissingPartition, PartitionKeeper } from './partitions.js';

/**
 * One entry to store, with what is needed to reject it: its raw bytes and where it came from.
 * The entry itself is held as its COPY text line (bytes, newline included): a queued entry is one
 * small off-heap Buffer rather than a dozen strings, which keeps the daemon's heap and its garbage
 * collection small under a full queue. The INSERT path decodes it back into column texts.
 */
export interface WriteEntry {
  copy: Buffer;
  raw: Buffer;
  source: string;
}

/** The column texts of an entry, in ENTRY_COLUMNS order (the COPY line decoded). */
export function columnsOf(e: WriteEntry): (string | null)[] {
  return decodeCopyRow(e.copy.subarray(0, e.copy.length - 1));
}

/** The request_id of an entry, for logs (the first COPY column). */
export function requestIdOf(e: WriteEntry): string {
  return e.copy.subarray(0, e.copy.indexOf(9)).toString('utf8');
}

/**
 * Pipelining of consecutive writes on separate connections without changing the order of ids:
 * the writer calls `ordered` once every row of this write has its id (after the COPY, before the
 * COMMIT), and the caller may then start the next write. On any other path (INSERT, fallback,
 * split, error) it never calls `ordered`: the caller goes on when the write has ended.
 */
export interface WriteOrder {
  /** This write's rows have their ids: the next write may start inserting. */
  ordered(): void;
  /**
   * The previous write's outcome: this write commits only after it resolved, and rolls back with
   * {@link PreviousWriteFailed} when it rejects, so that no write commits ahead of the retry of one
   * before it (ids stay in arrival order even when a COMMIT fails).
   */
  beforeCommit?: Promise<void>;
}

/** Thrown by a write rolled back because the write before it failed; retry it after that one. */
export class PreviousWriteFailed extends Error {
  constructor() {
    super('the previous write failed; this one is rolled back and retried after it');
  }
}

/** One `audit_reject` row (CONTRACT.md §3). */
export interface RejectRecord {
  source: string;
  reason: string;
  /** The raw bytes of the line, cut at `--max-line-bytes`. */
  raw: Buffer;
  /**
   * The reject's identity (a UUID): a retried write stores it once (`audit_reject.reject_key`,
   * migration 1764400000003). The daemon gives each rejected line a random one; without it the key
   * is {@link rejectKeyOf} its source, reason and raw bytes (replay: the same line of a file).
   */
  key?: string;
}

/** The key of a reject that has none: a UUID of the SHA-256 of source, reason and raw bytes. */
export function rejectKeyOf(r: RejectRecord): string {
  if (r.key) return r.key;
  const h = createHash('sha256');
  for (const part of [Buffer.from(r.source), Buffer.from(r.reason), r.raw]) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(part.length);
    h.update(len).update(part);
  }
  const x = h.digest('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** What happened to a batch; `refused` maps an index in the batch to the server's message. */
export interface BatchOutcome {
  stored: number;
  /** Entries whose (request_id, timestamp) was already stored: skipped, counted, not an error. */
  duplicates: number;
  refused: Map<number, string>;
  /** Highest `audit_log.id` written, or null when none was. */
  maxId: string | null;
  /** `copy` or `insert`: how the rows went in (the first attempt). */
  path: 'copy' | 'insert';
}

/** Options of {@link BatchWriter}. */
export interface WriterOptions {
  /** Batches with at least this many entries use COPY; smaller ones INSERT (default 16). */
  copyMinRows?: number;
  /** Channel of the NOTIFY after each commit (CONTRACT.md §4: `audit_log`). */
  channel?: string;
  /**
   * The writer's chain (CONTRACT.md §9 `--writer-id`): every committed batch gets a record on it.
   * Without it no record is written (benchmarks' reference only).
   */
  chainId?: string;
  /** Makes the partitions of a batch's days before it is written (default: one of its own). */
  partitions?: PartitionKeeper;
}

const COLS = ENTRY_COLUMNS.map((c) => (c === 'timestamp' ? '"timestamp"' : c)).join(', ');
const COPY_SQL = `COPY audit_log (${COLS}) FROM STDIN`;
const TYPES = [
  'uuid',
  'timestamptz',
  'text',
  'text',
  'text',
  'text',
  'jsonb',
  'text',
  'text',
  'bigint',
  'jsonb',
];
const INSERT_SQL = `INSERT INTO audit_log (${COLS})
  SELECT * FROM unnest(${TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(', ')})
  ON CONFLICT (request_id, "timestamp") DO NOTHING
  RETURNING id`;
/** Repeats of a stored key whose body differs from the stored row (at most 20 per batch). */
const CONFLICT_SQL = `SELECT a.request_id::text, to_jsonb(a) - 'id' - 'received_at' AS stored, to_jsonb(u) AS dropped
  FROM unnest(${TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(', ')}) AS u(${COLS})
  JOIN audit_log a ON a.request_id = u.request_id AND a."timestamp" = u."timestamp"
  WHERE (a.client_subject, a.client_role, a.tool_name, a.backend_name, a.request_args, a.response_status,
         a.error_message, a.latency_ms, a.extra)
    IS DISTINCT FROM (u.client_subject, u.client_role, u.tool_name, u.backend_name, u.request_args,
         u.response_status, u.error_message, u.latency_ms, u.extra)
  LIMIT 20`;
/** The highest id this session drew (the batch's last row) and its NOTIFY, in one round trip. */
const NOTIFY_SQL = 'SELECT currval($1)::text AS id, pg_notify($2, currval($1)::text)';
/** Rejects exactly once: a retry after an unknown outcome (a write timeout) finds its keys stored. */
const REJECT_SQL = `INSERT INTO audit_reject (source, reason, raw, reject_key)
  SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::uuid[])
  ON CONFLICT (reject_key) DO NOTHING`;

/** Bytes of COPY data per write to the COPY stream. */
const CHUNK_BYTES = 256 * 1024;

/** Joins the entries' COPY lines into chunks of about {@link CHUNK_BYTES}. */
function* copyChunks(rows: WriteEntry[]): Generator<Buffer> {
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < rows.length; i++) {
    bytes += rows[i]!.copy.length;
    if (bytes >= CHUNK_BYTES) {
      yield Buffer.concat(
        rows.slice(start, i + 1).map((r) => r.copy),
        bytes,
      );
      start = i + 1;
      bytes = 0;
    }
  }
  if (bytes > 0)
    yield Buffer.concat(
      rows.slice(start).map((r) => r.copy),
      bytes,
    );
}

/** SQLSTATE unique_violation (PostgreSQL docs, Appendix A). */
const UNIQUE_VIOLATION = '23505';

/** A COPY met a stored key: the transaction is rolled back and the rows go again by INSERT. */
class CopyMetStoredKey extends Error {}

class DataRefused extends Error {
  constructor(override readonly cause: unknown) {
    super(messageOf(cause));
  }
}

/** Writes batches on clients taken from a pool; see the module header for the rules. */
export class BatchWriter {
  private readonly copyMinRows: number;
  private readonly channel: string;
  private sequence: string | null = null;
  private readonly chainId: string | null;
  private chainReady = false;
  /** Resolves when the last write that took a turn has appended its record (or given up). */
  private chainTail: Promise<void> = Promise.resolve();
  /** CONTRACT.md §10: the partitions of each batch's days are made before its COPY. */
  readonly partitions: PartitionKeeper;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    options: WriterOptions = {},
  ) {
    this.copyMinRows = options.copyMinRows ?? 16;
    this.channel = options.channel ?? 'audit_log';
    this.chainId = options.chainId ?? null;
    this.partitions = options.partitions ?? new PartitionKeeper(log);
  }

  /**
   * Takes this write's turn on the chain: the returned `wait` resolves once every earlier write
   * has appended its record, and `done` must be called once this write's record is appended or
   * the write gave up (whatever happens). Turns are taken in the order of ids (see header).
   */
  private takeTurn(): { wait: () => Promise<void>; done: () => void } {
    const prev = this.chainTail;
    let done!: () => void;
    this.chainTail = new Promise<void>((resolve) => {
      done = resolve;
    });
    return { wait: () => prev, done };
  }

  /** BEGIN, and with a chain the id floor of {@link appendBatch}, in one round trip. */
  private async begin(client: pg.PoolClient): Promise<string | null> {
    if (this.chainId === null) {
      await client.query('BEGIN');
      return null;
    }
    if (!this.chainReady) {
      await ensureChain(client, this.chainId);
      this.chainReady = true;
    }
    const r = (await client.query(`BEGIN; ${idFloorSql(this.sequence!)}`)) as unknown as pg.QueryResult[];
    return (r[1]!.rows[0] as { v: string }).v;
  }

  /**
   * Binds the rows this transaction stored into a chain record (and sends the NOTIFY); resolves
   * the highest id stored, or null when none was.
   */
  private async bind(
    client: pg.PoolClient,
    floor: string | null,
    stored: number,
    maxId: string | null,
    turn?: { wait: () => Promise<void>; done: () => void },
  ): Promise<string | null> {
    if (this.chainId === null || floor === null) {
      turn?.done();
      await this.notify(client, maxId);
      return maxId;
    }
    const t = turn ?? this.takeTurn();
    try {
      if (stored === 0) return null;
      const b = await appendBatch(client, this.chainId, this.sequence!, floor, this.channel, t.wait).catch(
        (err: unknown) => {
          // Never a data refusal of the rows (that would split the batch into rejects): a chain that
          // cannot take the record is an error of its own, and the batch is retried whole.
          if (err instanceof ChainBroken || !isDataError(err)) throw err;
          throw new ChainBroken(`chain ${this.chainId}: the batch record was refused (${messageOf(err)})`);
        },
      );
      return b?.maxId ?? null;
    } finally {
      t.done();
    }
  }

  /** Resolves when Postgres answers `SELECT 1`; throws the connection error otherwise. */
  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  /**
   * Stores `entries` and `rejects` (validation rejects that travel with the batch so that acks keep
   * their order). Resolves once everything is committed.
   * @throws the pg or socket error when the connection or the server failed (retry the batch).
   */
  async write(entries: WriteEntry[], rejects: RejectRecord[], order?: WriteOrder): Promise<BatchOutcome> {
    // A missing partition (CONTRACT.md §10) is never a data error: the days are made (again, asking
    // Postgres about every timestamp) and the batch is written again; safe, see exactly once.
    for (let attempt = 0; ; attempt++) {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      try {
        await this.partitions.ensureFor(
          client,
          entries.map((e) => copyTimestamp(e.copy)),
          attempt > 0,
        );
        return await this.writeOn(client, entries, rejects, order);
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
        if (isMissingPartition(err) && attempt < 2) {
          this.log.info(
            { err: messageOf(err) },
            'a partition is missing; making it and writing the batch again',
          );
          continue;
        }
        throw err;
      } finally {
        // A client that failed mid-COPY or lost its connection is destroyed, never reused (C16).
        client.release(broken);
      }
    }
  }

  private async writeOn(
    client: pg.PoolClient,
    entries: WriteEntry[],
    rejects: RejectRecord[],
    order: WriteOrder | undefined,
  ): Promise<BatchOutcome> {
    this.sequence ??= (
      await client.query<{ s: string }>(`SELECT pg_get_serial_sequence('audit_log', 'id') AS s`)
    ).rows[0]!.s;
    const path = entries.length >= this.copyMinRows ? 'copy' : 'insert';
    const outcome: BatchOutcome = { stored: 0, duplicates: 0, refused: new Map(), maxId: null, path };
    if (path === 'copy' && rejects.length === 0) {
      // The common case: BEGIN, COPY, then the highest id with its NOTIFY in one statement, and
      // COMMIT; with `order`, the last two overlap the next write.
      const floor = await this.begin(client);
      let fallback: unknown = null;
      try {
        await this.copy(client, entries);
      } catch (err) {
        if (sqlState(err) !== UNIQUE_VIOLATION && !isDataError(err)) throw err;
        fallback = err;
      }
      if (fallback === null) {
        if (floor === null) {
          order?.ordered();
          const r = await client.query<{ id: string }>(NOTIFY_SQL, [this.sequence, this.channel]);
          await this.commit(client, order?.beforeCommit);
          outcome.maxId = r.rows[0]!.id;
        } else {
          const turn = this.takeTurn();
          order?.ordered();
          outcome.maxId = await this.bind(client, floor, entries.length, null, turn);
          await this.commit(client, order?.beforeCommit);
        }
        outcome.stored = entries.length;
        return outcome;
      }
      // A stored key or refused data: the transactional path below sorts it out.
      await client.query('ROLLBACK');
      this.log.debug(
        { err: messageOf(fallback), entries: entries.length },
        'COPY refused; retrying the batch',
      );
    }
    try {
      await this.storeWithRejects(client, entries, rejects, path, outcome, order?.beforeCommit);
      return outcome;
    } catch (err) {
      if (!(err instanceof DataRefused)) throw err;
      this.log.warn(
        { err: err.message, entries: entries.length },
        'Postgres refused a batch; isolating the bad entries',
      );
    }
    // Split path: find the refused entries, store the rest, then the rejects, each in its own commit.
    outcome.stored = 0;
    outcome.duplicates = 0;
    await this.split(client, entries, 0, entries.length, outcome, order?.beforeCommit);
    const refusedRejects: RejectRecord[] = [...outcome.refused].map(([i, reason]) => ({
      source: entries[i]!.source,
      reason: `db_refused: ${reason}`,
      raw: entries[i]!.raw,
    }));
    await this.transaction(client, order?.beforeCommit, async () => {
      await this.insertRejects(client, [...rejects, ...refusedRejects]);
    });
    return outcome;
  }

  /**
   * One transaction storing `entries` with `rejects`; a COPY that meets a stored key is rolled
   * back and the transaction runs again by INSERT … ON CONFLICT.
   */
  private async storeWithRejects(
    client: pg.PoolClient,
    entries: WriteEntry[],
    rejects: RejectRecord[],
    path: 'copy' | 'insert',
    outcome: BatchOutcome,
    gate: Promise<void> | undefined,
  ): Promise<void> {
    try {
      await this.transaction(client, gate, async (floor) => {
        const r = await this.store(client, entries, path);
        outcome.stored = r.stored;
        outcome.duplicates = entries.length - r.stored;
        await this.insertRejects(client, rejects);
        outcome.maxId = await this.bind(client, floor, r.stored, r.maxId);
      });
    } catch (err) {
      if (!(err instanceof CopyMetStoredKey)) throw err;
      this.log.debug(
        { entries: entries.length },
        'COPY met a stored entry; writing the batch with INSERT … ON CONFLICT',
      );
      await this.storeWithRejects(client, entries, rejects, 'insert', outcome, gate);
    }
  }

  /** Stores entries[lo, hi), halving on data errors; refused single entries go to `outcome.refused`. */
  private async split(
    client: pg.PoolClient,
    entries: WriteEntry[],
    lo: number,
    hi: number,
    outcome: BatchOutcome,
    gate: Promise<void> | undefined,
  ): Promise<void> {
    if (hi <= lo) return;
    try {
      const part: BatchOutcome = { stored: 0, duplicates: 0, refused: new Map(), maxId: null, path: 'copy' };
      await this.storeWithRejects(
        client,
        entries.slice(lo, hi),
        [],
        hi - lo >= this.copyMinRows ? 'copy' : 'insert',
        part,
        gate,
      );
      outcome.stored += part.stored;
      outcome.duplicates += part.duplicates;
      if (part.maxId !== null && (outcome.maxId === null || BigInt(part.maxId) > BigInt(outcome.maxId))) {
        outcome.maxId = part.maxId;
      }
    } catch (err) {
      if (!(err instanceof DataRefused)) throw err;
      if (hi - lo === 1) {
        outcome.refused.set(lo, err.message);
        this.log.warn(
          { request_id: requestIdOf(entries[lo]!), err: err.message },
          'entry refused by Postgres',
        );
        return;
      }
      const mid = lo + Math.ceil((hi - lo) / 2);
      await this.split(client, entries, lo, mid, outcome, gate);
      await this.split(client, entries, mid, hi, outcome, gate);
    }
  }

  /** BEGIN … COMMIT around `fn`; ROLLBACK on a data error (rethrown as {@link DataRefused}). */
  private async transaction(
    client: pg.PoolClient,
    gate: Promise<void> | undefined,
    fn: (floor: string | null) => Promise<void>,
  ): Promise<void> {
    const floor = await this.begin(client);
    try {
      await fn(floor);
    } catch (err) {
      if (err instanceof CopyMetStoredKey) {
        await client.query('ROLLBACK');
        throw err;
      }
      if (err instanceof DataRefused || isDataError(err)) {
        await client.query('ROLLBACK');
        throw err instanceof DataRefused ? err : new DataRefused(err);
      }
      throw err; // connection-level: the client is destroyed by the caller
    }
    await this.commit(client, gate);
  }

  /** COMMIT once `gate` resolved; ROLLBACK and {@link PreviousWriteFailed} when it rejects. */
  private async commit(client: pg.PoolClient, gate: Promise<void> | undefined): Promise<void> {
    if (gate) {
      try {
        await gate;
      } catch {
        await client.query('ROLLBACK');
        throw new PreviousWriteFailed();
      }
    }
    await client.query('COMMIT');
  }

  /**
   * Writes rows by COPY or by INSERT … ON CONFLICT.
   * @throws CopyMetStoredKey when the COPY met a stored key (the caller rolls back and uses INSERT).
   */
  private async store(
    client: pg.PoolClient,
    rows: WriteEntry[],
    path: 'copy' | 'insert',
  ): Promise<{ stored: number; maxId: string | null }> {
    if (rows.length === 0) return { stored: 0, maxId: null };
    if (path === 'copy') {
      try {
        await this.copy(client, rows);
      } catch (err) {
        if (sqlState(err) === UNIQUE_VIOLATION) throw new CopyMetStoredKey();
        throw err;
      }
      const r = await client.query<{ id: string }>('SELECT currval($1)::text AS id', [this.sequence]);
      return { stored: rows.length, maxId: r.rows[0]!.id };
    }
    return this.insert(client, rows);
  }

  private async copy(client: pg.PoolClient, rows: WriteEntry[]): Promise<void> {
    const stream = client.query(copyFrom(COPY_SQL));
    await pipeline(Readable.from(copyChunks(rows), { objectMode: false }), stream);
  }

  private async insert(
    client: pg.PoolClient,
    rows: WriteEntry[],
  ): Promise<{ stored: number; maxId: string | null }> {
    const decoded = rows.map(columnsOf);
    const columns = ENTRY_COLUMNS.map((_, i) => decoded.map((r) => r[i] ?? null));
    const r = await client.query<{ id: string }>(INSERT_SQL, columns);
    let max: bigint | null = null;
    for (const { id } of r.rows) {
      const v = BigInt(id);
      if (max === null || v > max) max = v;
    }
    const stored = r.rowCount ?? r.rows.length;
    if (stored < rows.length) await this.logConflicts(client, columns);
    return { stored, maxId: max === null ? null : max.toString() };
  }

  /**
   * Logs each skipped entry whose body differs from the stored entry with the same
   * (request_id, timestamp): the stored one is kept, both versions are shown (known-traps C15).
   * Identical repeats are only counted as duplicates.
   */
  private async logConflicts(client: pg.PoolClient, columns: (string | null)[][]): Promise<void> {
    const r = await client.query<{ request_id: string; stored: unknown; dropped: unknown }>(
      CONFLICT_SQL,
      columns,
    );
    for (const c of r.rows) {
      this.log.warn(
        { request_id: c.request_id, stored: c.stored, dropped: c.dropped },
        'conflict: an entry repeats a stored (request_id, timestamp) with a different body; the stored one is kept',
      );
    }
  }

  private async insertRejects(client: pg.PoolClient, rejects: RejectRecord[]): Promise<void> {
    if (rejects.length === 0) return;
    // Reasons may quote the input (JSON.parse messages do): sanitise them like any text column.
    await client.query(REJECT_SQL, [
      rejects.map((r) => sanitizeString(r.source)),
      rejects.map((r) => sanitizeString(r.reason)),
      rejects.map((r) => r.raw),
      rejects.map(rejectKeyOf),
    ]);
  }

  private async notify(client: pg.PoolClient, maxId: string | null): Promise<void> {
    if (maxId !== null) await client.query('SELECT pg_notify($1, $2)', [this.channel, maxId]);
  }
}
