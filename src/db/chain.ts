/**
 * The database side of CONTRACT.md §9's chains: the SQL that computes a stored row's Merkle leaf
 * (the canonical form of src/integrity/merkle.ts, built by Postgres from the row as stored), and
 * the statement that appends a batch record to a writer's chain and moves its head, in the batch's
 * own transaction.
 *
 * Leaves are computed by Postgres from the stored row, so that what is hashed is exactly what is
 * stored (after sanitizing and redaction, `jsonb` text as Postgres prints it, timestamps to the
 * microsecond) without the writer re-implementing `jsonb` normalisation; the writer reads back the
 * 32-byte leaves of its own rows, builds the Merkle root and stores leaves and root in the record.
 */
import type pg from 'pg';
import { type BatchRecord, batchHash, formatIdRanges, HASH_BYTES, merkleRoot } from '../integrity/merkle.js';

/** Microseconds since the epoch of a timestamptz expression, as text (exact: numeric in PG ≥ 14). */
function micros(expr: string): string {
  return `((extract(epoch FROM ${expr}) * 1000000)::bigint)`;
}

/** One field of the canonical form: `<byte length>:<text>`, or `:` for NULL. */
function field(expr: string, text = `${expr}::text`): string {
  return `octet_length(${text}), ':', ${text}`;
}

/**
 * SQL for the Merkle leaf (bytea) of the `audit_log` row aliased `a`: SHA-256(0x00 ‖ canonical
 * form), the canonical form being that of {@link import('../integrity/merkle.js').canonicalRow}.
 */
export function leafSql(a: string): string {
  const parts = [
    field(`${a}.id`),
    field(`${a}.request_id`),
    field(micros(`${a}."timestamp"`)),
    field(`${a}.client_subject`),
    field(`${a}.client_role`),
    field(`${a}.tool_name`),
    field(`${a}.backend_name`),
    field(`${a}.request_args`),
    field(`${a}.response_status`),
    field(`${a}.error_message`),
    field(`${a}.latency_ms`),
    field(micros(`${a}.received_at`)),
    field(`${a}.extra`),
  ];
  return `sha256('\\x00'::bytea || convert_to(concat(${parts.join(', ')}), 'UTF8'))`;
}

/**
 * SQL for the canonical texts of the row aliased `a`, in CANONICAL_COLUMNS order (for verifying
 * in Node without trusting Postgres's sha256, and for `export --proofs`), named c0 … c12.
 */
export function canonicalColumnsSql(a: string): string {
  return [
    `${a}.id::text`,
    `${a}.request_id::text`,
    `${micros(`${a}."timestamp"`)}::text`,
    `${a}.client_subject`,
    `${a}.client_role`,
    `${a}.tool_name`,
    `${a}.backend_name`,
    `${a}.request_args::text`,
    `${a}.response_status`,
    `${a}.error_message`,
    `${a}.latency_ms::text`,
    `${micros(`${a}.received_at`)}::text`,
    `${a}.extra::text`,
  ]
    .map((e, i) => `${e} AS c${i}`)
    .join(', ');
}

/**
 * The leaves of this transaction's own rows with ids above `$1` (the sequence's last value before
 * the transaction wrote; `$2` the sequence), in one row: the leaves concatenated in id order, the
 * count, the lowest and highest id, and the ids themselves only when they are not one contiguous
 * range (another session drew ids meanwhile). Other sessions' rows in that id range are skipped
 * by their `xmin`. Only valid without savepoints (rows of a subtransaction carry its own xid).
 */
export const OWN_LEAVES_SQL = `SELECT string_agg(leaf, ''::bytea ORDER BY id) AS leaves, count(*)::int AS n,
       min(id)::text AS first, max(id)::text AS last,
       CASE WHEN max(id) - min(id) + 1 = count(*) THEN NULL
            ELSE string_agg(id::text, ',' ORDER BY id) END AS ids
  FROM (SELECT a.id, ${leafSql('a')} AS leaf
          FROM audit_log a
         WHERE a.id > $1::bigint AND a.id <= currval($2) AND a.xmin = pg_current_xact_id()::xid) own`;

/** The sequence's last drawn value (every id drawn later is higher), as text. */
export function idFloorSql(sequence: string): string {
  return `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END::text AS v FROM ${sequence}`;
}

/**
 * Appends a batch record to chain `$1` and moves the chain's head, in one statement: the head row
 * is locked (`FOR UPDATE`), so two processes with one writer id queue instead of forking, and the
 * primary key (chain_id, seq) and UNIQUE (chain_id, prev_hash) refuse any fork. The record hash is
 * {@link batchHash}, computed by Postgres from the head it locked. Also sends the NOTIFY of §4.
 * Parameters: chain id, row count, root, ids, first id, last id, leaves, channel, highest id.
 */
const APPEND_SQL = `WITH h AS (
    SELECT head_seq, head_hash FROM audit_chain WHERE chain_id = $1::text FOR UPDATE
  ), ins AS (
    INSERT INTO audit_batch (chain_id, seq, prev_hash, row_count, merkle_root, ids, first_id, last_id, leaves, kind, hash)
    SELECT $1::text, h.head_seq + 1, h.head_hash, $2::int, $3::bytea, $4::text, $5::bigint, $6::bigint, $7::bytea, 'write',
           sha256(convert_to(concat_ws(E'\\n', 'audit-gateway batch v1', $1::text, (h.head_seq + 1)::text,
             encode(h.head_hash, 'hex'), $2::text, encode($3::bytea, 'hex'), $4::text, 'write'), 'UTF8'))
      FROM h
    RETURNING seq, hash
  ), upd AS (
    UPDATE audit_chain c SET head_seq = ins.seq, head_hash = ins.hash FROM ins WHERE c.chain_id = $1
    RETURNING c.head_seq
  )
  SELECT ins.seq::text AS seq, ins.hash, (SELECT count(*) FROM upd)::int AS moved, pg_notify($8::text, $9::text) AS n FROM ins`;

/** Thrown when a chain's head row is missing or did not move (a fork or a broken chain). */
export class ChainBroken extends Error {}

/** Creates chain `chainId` (head at seq 0) unless it exists. */
export async function ensureChain(db: pg.Pool | pg.ClientBase, chainId: string): Promise<void> {
  await db.query('INSERT INTO audit_chain (chain_id) VALUES ($1) ON CONFLICT (chain_id) DO NOTHING', [
    chainId,
  ]);
}

/** What {@link appendBatch} wrote. */
export interface AppendedBatch {
  seq: bigint;
  hash: Buffer;
  maxId: string;
}

/**
 * Binds this transaction's rows (ids above `floor`) into a batch record of `chainId`.
 * @param beforeAppend awaited after the leaves are read and before the chain's head is locked
 *   (the writer's turn: records of one writer are appended in the order of its writes).
 * @returns null when the transaction stored no row (nothing to bind).
 * @throws ChainBroken when the head did not move; pg errors (23505 on a fork) as they come.
 */
export async function appendBatch(
  client: pg.ClientBase,
  chainId: string,
  sequence: string,
  floor: string,
  channel: string,
  beforeAppend: () => Promise<void>,
): Promise<AppendedBatch | null> {
  const r = await client.query<{
    leaves: Buffer | null;
    n: number;
    first: string;
    last: string;
    ids: string | null;
  }>({ name: 'audit_gateway_own_leaves', text: OWN_LEAVES_SQL, values: [floor, sequence] }); // planned once per connection
  await beforeAppend();
  const own = r.rows[0];
  if (!own || own.n === 0 || own.leaves === null) return null;
  const leaves: Buffer[] = [];
  for (let i = 0; i < own.n; i++) leaves.push(own.leaves.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES));
  const root = merkleRoot(leaves);
  const ids =
    own.ids === null
      ? own.first === own.last
        ? own.first
        : `${own.first}-${own.last}`
      : formatIdRanges(own.ids.split(',').map(BigInt));
  const a = await client.query<{ seq: string; hash: Buffer; moved: number }>({
    name: 'audit_gateway_append_batch',
    text: APPEND_SQL,
    values: [chainId, own.n, root, ids, own.first, own.last, own.leaves, channel, own.last],
  });
  if (a.rows.length !== 1 || a.rows[0]!.moved !== 1) {
    throw new ChainBroken(`chain ${chainId}: its head row is missing; run 'audit-gateway migrate'`);
  }
  return { seq: BigInt(a.rows[0]!.seq), hash: a.rows[0]!.hash, maxId: own.last };
}

/** A batch record as read back from `audit_batch`. */
export interface StoredBatch extends BatchRecord {
  firstId: bigint;
  lastId: bigint;
  leaves: Buffer;
  hash: Buffer;
  committedAt: Date;
}

/** The columns of `audit_batch` that {@link toStoredBatch} reads. */
export const BATCH_COLUMNS =
  'chain_id, seq::text AS seq, prev_hash, row_count, merkle_root, ids, first_id::text AS first_id, last_id::text AS last_id, leaves, kind, hash, committed_at';

/** Maps a row of {@link BATCH_COLUMNS} to a StoredBatch. */
export function toStoredBatch(r: Record<string, unknown>): StoredBatch {
  return {
    chainId: r.chain_id as string,
    seq: BigInt(r.seq as string),
    prevHash: r.prev_hash as Buffer,
    rowCount: r.row_count as number,
    merkleRoot: r.merkle_root as Buffer,
    ids: r.ids as string,
    kind: r.kind as 'write' | 'adopted',
    firstId: BigInt(r.first_id as string),
    lastId: BigInt(r.last_id as string),
    leaves: r.leaves as Buffer,
    hash: r.hash as Buffer,
    committedAt: r.committed_at as Date,
  };
}

/** Recomputes a record's hash (re-exported for the read side). */
export { batchHash };
