/**
 * `export --proofs` (CONTRACT.md §9): NDJSON entries, each with what an auditor needs to check it
 * without the database, in a `_proof` field that `replay` ignores:
 *
 * `"_proof": {"chain": ID, "seq": "N", "index": I, "row": [13 canonical texts], "path": [HEX, …]}`
 *
 * `row` is the entry's canonical form (README "Integrity"), `index` its place among its batch's
 * leaves and `path` its RFC 9162 audit path to the batch's Merkle root. The last line's `_proof`
 * also holds `records` (for every chain the export touches, the batch records from its first
 * exported batch up to the head of the newest checkpoint that covers its last one, without leaves),
 * `checkpoints` (those checkpoints' lines) and `manifest` (`"<chain> <seq>"` → the indices this
 * export holds), so `verify --export FILE --public-key FILE` can check the file alone.
 *
 * Entries are in export order (timestamp, id); the batches and checkpoints are loaded first (their
 * leaves: 32 bytes per row of every batch the export touches).
 */
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { BATCH_COLUMNS, canonicalColumnsSql, type StoredBatch, toStoredBatch } from '../db/chain.js';
import type { Database } from '../db/connect.js';
import { copyOut } from '../db/copyOut.js';
import { type Filters, filterCondition, literalBinder } from '../db/filter.js';
import { ENTRY_JSON_SQL } from '../db/queries.js';
import { CopyRowSplitter, decodeCopyRow } from '../entry/copyDecode.js';
import { parseCheckpoint } from '../integrity/checkpoint.js';
import { HASH_BYTES, parseIdRanges, pathFromLevels, treeLevels } from '../integrity/merkle.js';
import type { Logger } from '../log.js';

/** A batch record as an export carries it (no leaves). */
export interface ExportRecord {
  chain: string;
  seq: string;
  prev_hash: string;
  row_count: number;
  merkle_root: string;
  ids: string;
  kind: 'write' | 'adopted';
  hash: string;
}

/** Options of {@link exportWithProofs}. */
export interface ProofExportOptions {
  filters: Filters;
  destinations: [Writable, ...Writable[]];
  end: boolean;
  onProgress?: ((rows: number) => void) | undefined;
}

interface Place {
  batch: StoredBatch;
  start: bigint;
  end: bigint;
  offset: number;
}

/** Finds the interval holding `id` (intervals sorted by start, disjoint). */
function placeOf(places: Place[], id: bigint): Place | null {
  let lo = 0;
  let hi = places.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const p = places[mid]!;
    if (id < p.start) hi = mid - 1;
    else if (id > p.end) lo = mid + 1;
    else return p;
  }
  return null;
}

/**
 * Streams the matching entries with their proofs.
 * @returns the number of entries written
 * @throws pg errors; stream errors after the COPY was cancelled
 */
export async function exportWithProofs(
  pool: pg.Pool,
  db: Database,
  log: Logger,
  opts: ProofExportOptions,
): Promise<number> {
  const batches = (await pool.query(`SELECT ${BATCH_COLUMNS} FROM audit_batch`)).rows.map(toStoredBatch);
  const places: Place[] = [];
  for (const b of batches) {
    let offset = 0;
    for (const [start, end] of parseIdRanges(b.ids)) {
      places.push({ batch: b, start, end, offset });
      offset += Number(end - start + 1n);
    }
  }
  places.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const levelsOf = new Map<StoredBatch, Buffer[][]>();
  const levels = (b: StoredBatch) => {
    let l = levelsOf.get(b);
    if (!l) {
      const leaves: Buffer[] = [];
      for (let i = 0; i < b.rowCount; i++)
        leaves.push(b.leaves.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES));
      l = treeLevels(leaves);
      if (levelsOf.size > 64) levelsOf.clear(); // bounded: entries come in time order, batches mostly in turn
      levelsOf.set(b, l);
    }
    return l;
  };
  const used = new Map<string, { chain: string; minSeq: bigint; maxSeq: bigint }>();
  const manifest: Record<string, number[]> = {};
  const where = filterCondition(opts.filters, literalBinder);
  const sql = `COPY (SELECT a.id, ${ENTRY_JSON_SQL} AS line, ${canonicalColumnsSql('a')} FROM audit_log a WHERE ${where} ORDER BY "timestamp", id) TO STDOUT`;
  let count = 0;
  let pending: string | null = null;

  async function* lines(source: AsyncIterable<Buffer>): AsyncGenerator<string> {
    const splitter = new CopyRowSplitter();
    for await (const chunk of source) {
      let out = '';
      for (const raw of splitter.push(chunk)) {
        const cols = decodeCopyRow(raw);
        const id = BigInt(cols[0]!);
        const line = cols[1]!;
        const row = cols.slice(2);
        const p = placeOf(places, id);
        let proof: Record<string, unknown>;
        if (!p) {
          proof = { chain: null, seq: null, index: null, row, path: [] };
        } else {
          const index = p.offset + Number(id - p.start);
          const b = p.batch;
          proof = {
            chain: b.chainId,
            seq: b.seq.toString(),
            index,
            row,
            path: pathFromLevels(levels(b), index).map((x) => x.toString('hex')),
          };
          const u = used.get(b.chainId) ?? { chain: b.chainId, minSeq: b.seq, maxSeq: b.seq };
          if (b.seq < u.minSeq) u.minSeq = b.seq;
          if (b.seq > u.maxSeq) u.maxSeq = b.seq;
          used.set(b.chainId, u);
          const key = `${b.chainId} ${b.seq}`;
          manifest[key] ??= [];
          manifest[key].push(index);
        }
        if (pending !== null) out += `${pending}\n`;
        pending = `${line.slice(0, -1)},"_proof":${JSON.stringify(proof)}}`;
        count++;
      }
      opts.onProgress?.(count);
      if (out) yield out;
    }
    if (pending !== null) {
      const tail = await trailer();
      const proof = pending.slice(pending.lastIndexOf(',"_proof":') + 10, -1);
      const merged = { ...(JSON.parse(proof) as object), ...tail };
      yield `${pending.slice(0, pending.lastIndexOf(',"_proof":'))},"_proof":${JSON.stringify(merged)}}\n`;
    }
  }

  async function trailer(): Promise<Record<string, unknown>> {
    const cps = await pool.query<{ line: string }>('SELECT line FROM audit_checkpoint ORDER BY id');
    const chosen = new Set<string>();
    const upTo = new Map<string, bigint>();
    for (const u of used.values()) {
      // the newest checkpoint whose head of this chain covers the last exported batch
      let best: { line: string; seq: bigint } | null = null;
      for (const { line } of cps.rows) {
        try {
          const head = parseCheckpoint(line).heads.find((h) => h.chainId === u.chain);
          if (head && head.seq >= u.maxSeq) best = { line, seq: head.seq };
        } catch {
          // malformed: verify reports it; an export carries only what checks
        }
      }
      if (best) {
        chosen.add(best.line);
        upTo.set(u.chain, best.seq);
      } else upTo.set(u.chain, u.maxSeq);
    }
    const records: ExportRecord[] = [];
    for (const b of batches) {
      const u = used.get(b.chainId);
      if (!u || b.seq < u.minSeq || b.seq > upTo.get(b.chainId)!) continue;
      records.push({
        chain: b.chainId,
        seq: b.seq.toString(),
        prev_hash: b.prevHash.toString('hex'),
        row_count: b.rowCount,
        merkle_root: b.merkleRoot.toString('hex'),
        ids: b.ids,
        kind: b.kind,
        hash: b.hash.toString('hex'),
      });
    }
    records.sort((a, b) =>
      a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : Number(BigInt(a.seq) - BigInt(b.seq)),
    );
    return { records, checkpoints: [...chosen], manifest };
  }

  await copyOut(pool, db, log, sql, async (stream) => {
    await pipeline([Readable.from(lines(stream)), ...opts.destinations], { end: opts.end });
  });
  return count;
}
