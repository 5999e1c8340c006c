/**
 * The pure hashing of CONTRACT.md §9: the canonical form of a stored row, its Merkle leaf, the
 * Merkle tree of a batch (root and audit paths), the hash of a batch record and the signed body of
 * a checkpoint. Depends on nothing but node:crypto; the README's "Integrity" section specifies every
 * byte and test/unit/integrity.test.ts checks its test vectors.
 *
 * Tree hashing follows RFC 9162 §2.1.1 (as RFC 6962 §2.1): for n leaves d[0..n),
 * MTH({}) = SHA-256(), MTH({d0}) = SHA-256(0x00 ‖ d0), and for n > 1 with k the largest power of
 * two smaller than n, MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n])). Audit paths follow
 * RFC 9162 §2.1.3.1 and are checked with the algorithm of §2.1.3.2.
 */
import { createHash, hash } from 'node:crypto';

/** Bytes of a SHA-256 hash. */
export const HASH_BYTES = 32;
/** The `prev_hash` of the first batch of every chain: 32 zero bytes. */
export const GENESIS_HASH = Buffer.alloc(HASH_BYTES);

/**
 * The stored columns of a row, in the order of its canonical form, as the texts Postgres gives:
 * `id` and `latency_ms` as decimal integers, `timestamp` and `received_at` as microseconds since
 * 1970-01-01T00:00:00Z (decimal integer), `request_args` and `extra` as the `jsonb` output text,
 * the others as stored; null for SQL NULL.
 */
export const CANONICAL_COLUMNS = [
  'id',
  'request_id',
  'timestamp',
  'client_subject',
  'client_role',
  'tool_name',
  'backend_name',
  'request_args',
  'response_status',
  'error_message',
  'latency_ms',
  'received_at',
  'extra',
] as const;

/**
 * The canonical form of a row (format `v1`): for each of {@link CANONICAL_COLUMNS} in order, the
 * UTF-8 byte length of its text in decimal, `:`, then the text; a NULL is `:` alone. No separator
 * is needed: the lengths delimit the fields, so no two rows share a canonical form.
 * @param fields the column texts in CANONICAL_COLUMNS order (13 of them).
 */
export function canonicalRow(fields: readonly (string | null)[]): Buffer {
  if (fields.length !== CANONICAL_COLUMNS.length) {
    throw new Error(`canonicalRow: expected ${CANONICAL_COLUMNS.length} fields, got ${fields.length}`);
  }
  let s = '';
  for (const f of fields) s += f === null ? ':' : `${Buffer.byteLength(f, 'utf8')}:${f}`;
  return Buffer.from(s, 'utf8');
}

/** The Merkle leaf of an entry's bytes: SHA-256(0x00 ‖ bytes) (RFC 9162 §2.1.1). */
export function leafHash(bytes: Buffer): Buffer {
  return createHash('sha256').update(LEAF_PREFIX).update(bytes).digest();
}

const LEAF_PREFIX = Buffer.from([0]);

/**
 * SHA-256(0x01 ‖ left ‖ right): an interior node (RFC 9162 §2.1.1). One-shot `crypto.hash`: about
 * twice as fast as createHash for 65 bytes, and a batch of n rows hashes n − 1 nodes.
 */
export function nodeHash(left: Buffer, right: Buffer): Buffer {
  const input = Buffer.allocUnsafe(1 + left.length + right.length);
  input[0] = 1;
  left.copy(input, 1);
  right.copy(input, 1 + left.length);
  return hash('sha256', input, 'buffer') as Buffer;
}

/** The largest power of two smaller than n (n ≥ 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The Merkle tree hash (root) of leaf hashes, RFC 9162 §2.1.1. Iterative: the RFC's split rule is
 * the same as hashing complete pairs level by level and carrying an odd last node up unchanged.
 */
export function merkleRoot(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  let level: Buffer[] = leaves.slice();
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
  }
  return level[0]!;
}

/**
 * Every level of the tree, leaves first, root last, built as {@link merkleRoot} does (a last odd
 * node is carried up unchanged): the same tree as RFC 9162's split rule. For many audit paths of
 * one batch ({@link pathFromLevels}) at the cost of one root.
 */
export function treeLevels(leaves: readonly Buffer[]): Buffer[][] {
  const levels: Buffer[][] = [leaves.slice()];
  while (levels[levels.length - 1]!.length > 1) {
    const level = levels[levels.length - 1]!;
    const next: Buffer[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    levels.push(next);
  }
  return levels;
}

/** The audit path of leaf `m` from {@link treeLevels}: equal to {@link auditPath}(m, leaves). */
export function pathFromLevels(levels: readonly Buffer[][], m: number): Buffer[] {
  const path: Buffer[] = [];
  let i = m;
  for (let l = 0; l < levels.length - 1; l++) {
    const sibling = i ^ 1;
    if (sibling < levels[l]!.length) path.push(levels[l]![sibling]!);
    i >>= 1;
  }
  return path;
}

/** The Merkle tree hash by the RFC's recursive definition (reference for tests). */
export function merkleRootRecursive(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  if (leaves.length === 1) return leaves[0]!;
  const k = splitPoint(leaves.length);
  return nodeHash(merkleRootRecursive(leaves.slice(0, k)), merkleRootRecursive(leaves.slice(k)));
}

/** The audit path of leaf `m` among `leaves` (RFC 9162 §2.1.3.1), nearest sibling first. */
export function auditPath(m: number, leaves: readonly Buffer[]): Buffer[] {
  if (m < 0 || m >= leaves.length) throw new RangeError(`auditPath: leaf ${m} of ${leaves.length}`);
  if (leaves.length === 1) return [];
  const k = splitPoint(leaves.length);
  if (m < k) return [...auditPath(m, leaves.slice(0, k)), merkleRoot(leaves.slice(k))];
  return [...auditPath(m - k, leaves.slice(k)), merkleRoot(leaves.slice(0, k))];
}

/**
 * Checks an audit path (RFC 9162 §2.1.3.2): whether `leaf` at index `m` of a tree of `n` leaves,
 * with `path`, hashes to `root`.
 */
export function verifyAuditPath(
  leaf: Buffer,
  m: number,
  n: number,
  path: readonly Buffer[],
  root: Buffer,
): boolean {
  if (m < 0 || m >= n) return false;
  let fn = m;
  let sn = n - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 && r.equals(root);
}

/** One batch record of a chain (table `audit_batch`), the fields its hash covers. */
export interface BatchRecord {
  chainId: string;
  /** 1 for a chain's first batch, then +1. */
  seq: bigint;
  prevHash: Buffer;
  rowCount: number;
  merkleRoot: Buffer;
  /** The batch's row ids as ascending ranges, {@link formatIdRanges}. */
  ids: string;
  /** `write` (serve, replay) or `adopted` (rows bound by `migrate`). */
  kind: 'write' | 'adopted';
}

/**
 * The bytes a batch record's hash covers (format `v1`), lines joined by `\n`:
 * `audit-gateway batch v1`, chain id, seq, prev hash (hex), row count, Merkle root (hex), ids, kind.
 * The same text is built in SQL by the writer (src/db/chain.ts).
 */
export function batchBody(b: BatchRecord): Buffer {
  return Buffer.from(
    [
      'audit-gateway batch v1',
      b.chainId,
      b.seq.toString(),
      b.prevHash.toString('hex'),
      String(b.rowCount),
      b.merkleRoot.toString('hex'),
      b.ids,
      b.kind,
    ].join('\n'),
    'utf8',
  );
}

/** SHA-256 of {@link batchBody}: the batch record's own hash, the next record's `prev_hash`. */
export function batchHash(b: BatchRecord): Buffer {
  return createHash('sha256').update(batchBody(b)).digest();
}

/** `1-1000,1003,1005-1010`: ascending ids as ranges (a lone id alone). */
export function formatIdRanges(ids: readonly bigint[]): string {
  const out: string[] = [];
  let i = 0;
  while (i < ids.length) {
    const start = ids[i]!;
    let end = start;
    while (i + 1 < ids.length && ids[i + 1] === end + 1n) {
      i++;
      end = ids[i]!;
    }
    out.push(start === end ? start.toString() : `${start}-${end}`);
    i++;
  }
  return out.join(',');
}

/**
 * Parses {@link formatIdRanges}' text into inclusive [start, end] pairs.
 * @throws Error on anything but ascending, disjoint ranges of positive integers.
 */
export function parseIdRanges(text: string): [bigint, bigint][] {
  if (text === '') return [];
  const out: [bigint, bigint][] = [];
  let last = 0n;
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`bad id range '${part}'`);
    const a = BigInt(m[1]!);
    const b = m[2] === undefined ? a : BigInt(m[2]);
    if (b < a || a <= last) throw new Error(`id ranges not ascending at '${part}'`);
    out.push([a, b]);
    last = b;
  }
  return out;
}

/** Number of ids in parsed ranges. */
export function rangesCount(ranges: readonly [bigint, bigint][]): number {
  let n = 0;
  for (const [a, b] of ranges) n += Number(b - a + 1n);
  return n;
}

/** A chain's head as a checkpoint signs it. */
export interface ChainHead {
  chainId: string;
  seq: bigint;
  hash: Buffer;
}

/** What a checkpoint signs. */
export interface CheckpointBody {
  /** ISO 8601 UTC, milliseconds. */
  madeAt: string;
  /** The writer that signed it (its --writer-id). */
  writerId: string;
  /** Every chain's head, sorted by chain id. */
  heads: ChainHead[];
}

/**
 * The signed bytes of a checkpoint (format `v1`), lines joined by `\n`:
 * `audit-gateway checkpoint v1`, made at, writer id, then one `<chain id> <seq> <hash hex>` per
 * chain in ascending chain id order (UTF-16 code unit order, as JavaScript sorts).
 */
export function checkpointBody(c: CheckpointBody): Buffer {
  const heads = [...c.heads].sort((a, b) => (a.chainId < b.chainId ? -1 : a.chainId > b.chainId ? 1 : 0));
  return Buffer.from(
    [
      'audit-gateway checkpoint v1',
      c.madeAt,
      c.writerId,
      ...heads.map((h) => `${h.chainId} ${h.seq} ${h.hash.toString('hex')}`),
    ].join('\n'),
    'utf8',
  );
}
