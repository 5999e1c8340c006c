/**
 * An attacker with superuser rights rewriting a chain after changing rows: recomputes every
 * batch's leaves, root, hash and the links, and the head, with triggers off. Used to show that the
 * database alone cannot prove itself and a checkpoint kept elsewhere can (CONTRACT.md §9).
 */
import { leafSql } from '../../src/db/chain.js';
import { batchHash, GENESIS_HASH, merkleRoot, parseIdRanges } from '../../src/integrity/merkle.js';
import type { TestDatabase } from './db.js';

/** Rewrites chain `chain` so that it matches the rows as they are now. */
export async function rewriteChain(t: TestDatabase, chain: string): Promise<void> {
  const batches = await t.query(
    `SELECT seq::text, ids, kind, row_count FROM audit_batch WHERE chain_id = $1 ORDER BY seq`,
    [chain],
  );
  let prev: Buffer = GENESIS_HASH;
  const c = await t.pool.connect();
  try {
    await c.query('SET session_replication_role = replica');
    for (const b of batches.rows) {
      const ids: string[] = [];
      for (const [a, z] of parseIdRanges(b.ids)) for (let i = a; i <= z; i++) ids.push(i.toString());
      const leaves = (
        await c.query<{ leaf: Buffer }>(
          `SELECT ${leafSql('a')} AS leaf FROM audit_log a WHERE id = ANY($1::bigint[]) ORDER BY id`,
          [ids],
        )
      ).rows.map((r) => r.leaf);
      const root = merkleRoot(leaves);
      const hash = batchHash({
        chainId: chain,
        seq: BigInt(b.seq),
        prevHash: prev,
        rowCount: b.row_count,
        merkleRoot: root,
        ids: b.ids,
        kind: b.kind,
      });
      await c.query(
        'UPDATE audit_batch SET prev_hash = $3, merkle_root = $4, leaves = $5, hash = $6 WHERE chain_id = $1 AND seq = $2',
        [chain, b.seq, prev, root, Buffer.concat(leaves), hash],
      );
      prev = hash;
    }
    await c.query('UPDATE audit_chain SET head_hash = $2 WHERE chain_id = $1', [chain, prev]);
  } finally {
    await c.query('RESET session_replication_role');
    c.release();
  }
}
