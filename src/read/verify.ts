/**
 * `verify` (CONTRACT.md §9): recomputes every row's leaf, every batch's Merkle root and hash, every
 * chain link, and checks every checkpoint's signature and the heads it signs. Each fault names its
 * chain, batch (seq) and row id.
 *
 * Steps: (1) chains and batch records, in (chain, seq) order: seq without gaps from 1, each
 * prev_hash the previous record's hash, each hash recomputed, each root recomputed from the stored
 * leaves, the head row equal to the last record; (2) the rows, streamed by `COPY … TO STDOUT` in id
 * order, each row's leaf (computed by Postgres from the row as stored) compared with the leaf its
 * batch recorded at its place; ids that a batch lists and no row has are deleted rows (unless a
 * retention record lists them), rows that no batch lists are rows without a batch; (3) checkpoints,
 * from the database and from `--checkpoints FILE`: signature, key (pinned with `--public-key`),
 * and every head they sign against the chain.
 *
 * Incremental: with a cursor (what a previous run checked), batches at or below the cursor's seq
 * are checked only for their links and hashes (cheap), and rows only from the lowest id a newer
 * batch holds; the cursor's records must still have the hashes it saw.
 */
import type { KeyObject } from 'node:crypto';
import type pg from 'pg';
import { BATCH_COLUMNS, leafSql, type StoredBatch, toStoredBatch } from '../db/chain.js';
import type { Database } from '../db/connect.js';
import { copyOut } from '../db/copyOut.js';
import {
  type Checkpoint,
  checkpointSignatureValid,
  parseCheckpoint,
  rawPublicKey,
} from '../integrity/checkpoint.js';
import {
  batchHash,
  GENESIS_HASH,
  HASH_BYTES,
  merkleRoot,
  parseIdRanges,
  rangesCount,
} from '../integrity/merkle.js';
import type { Logger } from '../log.js';

/** One fault found by verify. */
export interface Fault {
  /** What was found; stable names for scripts. */
  kind:
    | 'row_changed'
    | 'row_deleted'
    | 'row_without_batch'
    | 'row_in_two_batches'
    | 'batch_changed'
    | 'batch_missing'
    | 'link_broken'
    | 'head_mismatch'
    | 'batches_cut'
    | 'checkpoint_bad_signature'
    | 'checkpoint_unknown_key'
    | 'checkpoint_malformed'
    | 'checkpoint_mismatch'
    | 'cursor_mismatch';
  chain?: string;
  seq?: string;
  rowId?: string;
  message: string;
}

/** A verify run's result. */
export interface VerifyReport {
  ok: boolean;
  chains: number;
  batches: number;
  rows: number;
  /** Rows whose absence a retention record explains. */
  removedByRetention: number;
  checkpoints: number;
  /** `pinned` with --public-key; `database` when the keys were read from the database. */
  keys: 'pinned' | 'database';
  mode: 'full' | 'incremental';
  faults: Fault[];
  /** The cursor for the next incremental run (only when no fault was found). */
  cursor: VerifyCursor | null;
}

/** What an incremental run starts from: each chain's checked head and the highest row id seen. */
export interface VerifyCursor {
  v: 1;
  chains: Record<string, { seq: string; hash: string }>;
  maxRowId: string;
}

/** Options of {@link verifyDatabase}. */
export interface VerifyOptions {
  /** Pinned public keys (--public-key): checkpoints signed by any other key are faults. */
  publicKeys?: KeyObject[];
  /** Lines of a checkpoint file kept elsewhere (--checkpoints FILE). */
  checkpointLines?: string[];
  cursor?: VerifyCursor | null;
  /**
   * --since/--until (RFC 3339): only batches committed in [since, until) have their rows checked
   * (and the rows in their id span); chains, links and checkpoints are always checked whole.
   */
  since?: string;
  until?: string;
  /** Called with rows checked so far (about every 100k rows). */
  onProgress?: (rows: number) => void;
  /** At most this many faults of one kind are listed (the rest counted in one more fault). */
  maxFaultsPerKind?: number;
}

interface Interval {
  start: bigint;
  end: bigint;
  batch: StoredBatch;
  /** Place of `start` among the batch's leaves. */
  offset: number;
}

/**
 * Verifies the database.
 * @throws pg errors when the database cannot be read (the caller exits 1).
 */
export async function verifyDatabase(
  pool: pg.Pool,
  db: Database,
  log: Logger,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const faults: Fault[] = [];
  const perKind = new Map<string, number>();
  const limit = options.maxFaultsPerKind ?? 1000;
  const fault = (f: Fault) => {
    const n = (perKind.get(f.kind) ?? 0) + 1;
    perKind.set(f.kind, n);
    if (n <= limit) faults.push(f);
    else if (n === limit + 1)
      faults.push({ kind: f.kind, message: `more faults of kind ${f.kind} not listed` });
  };
  const cursor = options.cursor ?? null;
  const since = options.since === undefined ? null : Date.parse(options.since);
  const until = options.until === undefined ? null : Date.parse(options.until);
  const windowed = since !== null || until !== null;
  const inWindow = (b: StoredBatch) =>
    (since === null || b.committedAt.getTime() >= since) &&
    (until === null || b.committedAt.getTime() < until);

  const chainRows = await pool.query<{ chain_id: string; head_seq: string; head_hash: Buffer }>(
    'SELECT chain_id, head_seq::text AS head_seq, head_hash FROM audit_chain ORDER BY chain_id',
  );
  const batchRows = await pool.query(
    `SELECT ${BATCH_COLUMNS} FROM audit_batch ORDER BY audit_batch.chain_id, audit_batch.seq`,
  );
  const batches = batchRows.rows.map(toStoredBatch);
  const byChain = new Map<string, StoredBatch[]>();
  for (const b of batches) {
    const list = byChain.get(b.chainId) ?? [];
    byChain.set(b.chainId, list);
    list.push(b);
  }

  // (1) Chains and batch records.
  const lastSeq = new Map<string, bigint>();
  const newBatches: StoredBatch[] = [];
  for (const c of chainRows.rows) {
    const list = byChain.get(c.chain_id) ?? [];
    byChain.delete(c.chain_id);
    const from = cursor?.chains[c.chain_id];
    if (from) {
      const at = list.find((b) => b.seq === BigInt(from.seq));
      if (!at?.hash.equals(Buffer.from(from.hash, 'hex'))) {
        fault({
          kind: 'cursor_mismatch',
          chain: c.chain_id,
          seq: from.seq,
          message: `chain ${c.chain_id} batch ${from.seq}: ${at ? 'its hash differs from' : 'missing, unlike'} what the previous verify saw (the cursor)`,
        });
      }
    }
    let expected = 1n;
    let prev: StoredBatch | null = null;
    for (const b of list) {
      const seq = b.seq.toString();
      if (b.seq !== expected) {
        fault({
          kind: 'batch_missing',
          chain: c.chain_id,
          seq: expected.toString(),
          message: `chain ${c.chain_id}: batch${b.seq - expected > 1n ? `es ${expected}–${b.seq - 1n}` : ` ${expected}`} missing (deleted)`,
        });
      } else if (!b.prevHash.equals(prev ? prev.hash : GENESIS_HASH)) {
        fault({
          kind: 'link_broken',
          chain: c.chain_id,
          seq,
          message: `chain ${c.chain_id} batch ${seq}: its prev_hash is not the hash of batch ${b.seq - 1n}`,
        });
      }
      if (!batchHash(b).equals(b.hash)) {
        fault({
          kind: 'batch_changed',
          chain: c.chain_id,
          seq,
          message: `chain ${c.chain_id} batch ${seq}: its record does not hash to its stored hash`,
        });
      }
      const old = (from !== undefined && b.seq <= BigInt(from.seq)) || !inWindow(b);
      if (!old) {
        newBatches.push(b);
        const n = b.leaves.length / HASH_BYTES;
        let ranges: [bigint, bigint][] = [];
        try {
          ranges = parseIdRanges(b.ids);
        } catch {
          ranges = [];
        }
        const leaves: Buffer[] = [];
        for (let i = 0; i < n; i++) leaves.push(b.leaves.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES));
        if (
          n !== b.rowCount ||
          rangesCount(ranges) !== b.rowCount ||
          !merkleRoot(leaves).equals(b.merkleRoot) ||
          (ranges.length > 0 && (ranges[0]![0] !== b.firstId || ranges[ranges.length - 1]![1] !== b.lastId))
        ) {
          fault({
            kind: 'batch_changed',
            chain: c.chain_id,
            seq,
            message: `chain ${c.chain_id} batch ${seq}: its leaves, ids or row count do not match its Merkle root`,
          });
        }
      }
      prev = b;
      expected = b.seq + 1n;
    }
    const last = list.length > 0 ? list[list.length - 1]! : null;
    lastSeq.set(c.chain_id, last ? last.seq : 0n);
    const headSeq = BigInt(c.head_seq);
    if (headSeq !== (last?.seq ?? 0n) || !c.head_hash.equals(last ? last.hash : GENESIS_HASH)) {
      fault({
        kind: headSeq > (last?.seq ?? 0n) ? 'batches_cut' : 'head_mismatch',
        chain: c.chain_id,
        seq: c.head_seq,
        message:
          headSeq > (last?.seq ?? 0n)
            ? `chain ${c.chain_id}: its head is batch ${c.head_seq} but the chain ends at batch ${last?.seq ?? 0n} (newest batches cut off)`
            : `chain ${c.chain_id}: its head (batch ${c.head_seq}) is not its last batch (${last?.seq ?? 0n})`,
      });
    }
  }
  for (const [chain, list] of byChain) {
    fault({
      kind: 'batch_changed',
      chain,
      seq: list[0]!.seq.toString(),
      message: `chain ${chain}: batches of a chain that has no head row`,
    });
  }

  // (2) Rows.
  const intervals: Interval[] = [];
  for (const b of batches) {
    let ranges: [bigint, bigint][];
    try {
      ranges = parseIdRanges(b.ids);
    } catch {
      continue; // reported as batch_changed above
    }
    let offset = 0;
    for (const [start, end] of ranges) {
      intervals.push({ start, end, batch: b, offset });
      offset += Number(end - start + 1n);
    }
  }
  intervals.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < intervals.length; i++) {
    const a = intervals[i - 1]!;
    const b = intervals[i]!;
    if (b.start <= a.end) {
      fault({
        kind: 'row_in_two_batches',
        chain: b.batch.chainId,
        seq: b.batch.seq.toString(),
        rowId: b.start.toString(),
        message: `row ${b.start}: listed by batch ${a.batch.chainId}/${a.batch.seq} and by batch ${b.batch.chainId}/${b.batch.seq}`,
      });
    }
  }
  const retention = await pool.query<{ ids: string }>('SELECT ids FROM audit_retention');
  const retained: [bigint, bigint][] = retention.rows.flatMap((r) => {
    try {
      return parseIdRanges(r.ids);
    } catch {
      return [];
    }
  });
  retained.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  /** True when a retention record lists `id` (binary search over the sorted ranges). */
  const removedByRetention = (id: bigint): boolean => {
    let lo = 0;
    let hi = retained.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [a, b] = retained[mid]!;
      if (id < a) hi = mid - 1;
      else if (id > b) lo = mid + 1;
      else return true;
    }
    return false;
  };

  let scanFrom = 1n;
  let scanTo: bigint | null = null;
  if (cursor || windowed) {
    scanFrom = cursor && !windowed ? BigInt(cursor.maxRowId) + 1n : BigInt('9223372036854775807');
    for (const b of newBatches) if (b.firstId < scanFrom) scanFrom = b.firstId;
  }
  if (windowed) {
    scanTo = 0n;
    for (const b of newBatches) if (b.lastId > scanTo) scanTo = b.lastId;
  }
  let p = 0;
  while (p < intervals.length && intervals[p]!.end < scanFrom) p++;
  let next = p < intervals.length && intervals[p]!.start > scanFrom ? intervals[p]!.start : scanFrom;
  let rows = 0;
  let retained_ = 0;
  let maxRowId = cursor ? BigInt(cursor.maxRowId) : 0n;
  const missing = (iv: Interval, from: bigint, to: bigint) => {
    for (let id = from; id <= to; id++) {
      if (removedByRetention(id)) {
        retained_++;
        continue;
      }
      fault({
        kind: 'row_deleted',
        chain: iv.batch.chainId,
        seq: iv.batch.seq.toString(),
        rowId: id.toString(),
        message: `row ${id} (chain ${iv.batch.chainId} batch ${iv.batch.seq}): deleted`,
      });
    }
  };
  /** Closes intervals that end before `id`, reporting their ids not seen. */
  const advance = (id: bigint) => {
    while (p < intervals.length && intervals[p]!.end < id) {
      const iv = intervals[p]!;
      // biome-ignore lint/complexity/useMathMinMax: bigint (Math.max takes numbers)
      const from = next > iv.start ? next : iv.start;
      if (from <= iv.end) missing(iv, from, iv.end);
      p++;
      if (p < intervals.length && intervals[p]!.start > next) next = intervals[p]!.start;
    }
  };
  const sql = `COPY (SELECT a.id, encode(${leafSql('a')}, 'hex') FROM audit_log a WHERE a.id >= ${scanFrom.toString()}${scanTo === null ? '' : ` AND a.id <= ${scanTo.toString()}`} ORDER BY a.id) TO STDOUT`;
  await copyOut(pool, db, log, sql, async (stream) => {
    let rest = '';
    for await (const chunk of stream) {
      const text = rest + chunk.toString('latin1');
      const lines = text.split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        const tab = line.indexOf('\t');
        const id = BigInt(line.slice(0, tab));
        const leaf = Buffer.from(line.slice(tab + 1), 'hex');
        rows++;
        if (id > maxRowId) maxRowId = id;
        if (rows % 100_000 === 0) options.onProgress?.(rows);
        advance(id);
        const iv = intervals[p];
        if (!iv || id < iv.start) {
          fault({
            kind: 'row_without_batch',
            rowId: id.toString(),
            message: `row ${id}: in no batch (stored outside the chains)`,
          });
          continue;
        }
        if (next < id && next >= iv.start) missing(iv, next, id - 1n);
        next = id + 1n;
        const place = iv.offset + Number(id - iv.start);
        const stored = iv.batch.leaves.subarray(place * HASH_BYTES, (place + 1) * HASH_BYTES);
        if (!stored.equals(leaf)) {
          fault({
            kind: 'row_changed',
            chain: iv.batch.chainId,
            seq: iv.batch.seq.toString(),
            rowId: id.toString(),
            message: `row ${id} (chain ${iv.batch.chainId} batch ${iv.batch.seq}): changed since it was stored`,
          });
        }
      }
    }
  });
  advance(scanTo === null ? BigInt('9223372036854775807') : scanTo + 1n);

  // (3) Checkpoints.
  const pinned = options.publicKeys?.map(rawPublicKey) ?? null;
  const dbCheckpoints = await pool.query<{ id: string; line: string }>(
    'SELECT id::text AS id, line FROM audit_checkpoint ORDER BY audit_checkpoint.id',
  );
  const hashAt = new Map<string, Buffer>();
  for (const b of batches) hashAt.set(`${b.chainId}\u0000${b.seq}`, b.hash);
  let checkpoints = 0;
  const checkCheckpoint = (line: string, where: string) => {
    checkpoints++;
    let c: Checkpoint;
    try {
      c = parseCheckpoint(line);
    } catch (err) {
      fault({
        kind: 'checkpoint_malformed',
        message: `${where}: not a checkpoint (${(err as Error).message})`,
      });
      return;
    }
    if (!checkpointSignatureValid(c)) {
      fault({
        kind: 'checkpoint_bad_signature',
        message: `${where} (${c.madeAt}, writer ${c.writerId}): its signature does not match its content (altered)`,
      });
      return;
    }
    if (pinned && !pinned.includes(c.publicKey)) {
      fault({
        kind: 'checkpoint_unknown_key',
        message: `${where} (${c.madeAt}, writer ${c.writerId}): signed by a key that --public-key does not name`,
      });
      return;
    }
    for (const h of c.heads) {
      if (h.seq === 0n) continue;
      const have = hashAt.get(`${h.chainId}\u0000${h.seq}`);
      const last = lastSeq.get(h.chainId) ?? 0n;
      if (have?.equals(h.hash)) continue;
      if (!have && h.seq > last) {
        fault({
          kind: 'batches_cut',
          chain: h.chainId,
          seq: h.seq.toString(),
          message: `chain ${h.chainId}: ${where} (${c.madeAt}) signed batch ${h.seq}, but the chain ends at batch ${last} (newest batches cut off)`,
        });
      } else {
        fault({
          kind: 'checkpoint_mismatch',
          chain: h.chainId,
          seq: h.seq.toString(),
          message: `chain ${h.chainId} batch ${h.seq}: ${have ? 'its hash differs from' : 'missing, unlike'} what ${where} (${c.madeAt}) signed (rewritten)`,
        });
      }
    }
  };
  for (const r of dbCheckpoints.rows) checkCheckpoint(r.line, `checkpoint ${r.id}`);
  (options.checkpointLines ?? []).forEach((line, i) => {
    if (line.trim() !== '') checkCheckpoint(line, `checkpoint file line ${i + 1}`);
  });

  const ok = faults.length === 0;
  const nextCursor: VerifyCursor | null =
    ok && !windowed
      ? {
          v: 1,
          chains: Object.fromEntries(
            chainRows.rows.map((c) => [c.chain_id, { seq: c.head_seq, hash: c.head_hash.toString('hex') }]),
          ),
          maxRowId: maxRowId.toString(),
        }
      : null;
  return {
    ok,
    chains: chainRows.rows.length,
    batches: batches.length,
    rows,
    removedByRetention: retained_,
    checkpoints,
    keys: pinned ? 'pinned' : 'database',
    mode: cursor || windowed ? 'incremental' : 'full',
    faults,
    cursor: nextCursor,
  };
}
