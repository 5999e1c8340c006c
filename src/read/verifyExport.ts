/**
 * `verify --export FILE --public-key FILE` (CONTRACT.md §9): checks an `export --proofs` file
 * without the database (format: src/read/proofs.ts).
 *
 * - Each checkpoint in the file: signature valid, signed by a pinned key.
 * - Each batch record: its hash recomputed; per chain, consecutive seqs whose prev_hash is the
 *   previous record's hash, ending at the head of a pinned checkpoint (anchored).
 * - Each entry: its canonical row hashes, with its audit path, to its batch's Merkle root; its id is
 *   the id at its index in the batch's ids; its visible fields say what the canonical row says.
 * - The manifest: every index it lists for a batch is present, nothing else is.
 * So an entry changed, added or removed inside the span a batch covers is found, in a filtered
 * export too (removal: against the manifest; an export of everything also has every index of each
 * batch). What a filtered export cannot show is an entry that matched the filter and was left out
 * together with its manifest index: check that against the database (`verify`).
 */
import type { KeyObject } from 'node:crypto';
import { checkpointSignatureValid, parseCheckpoint, rawPublicKey } from '../integrity/checkpoint.js';
import {
  batchHash,
  CANONICAL_COLUMNS,
  canonicalRow,
  GENESIS_HASH,
  leafHash,
  parseIdRanges,
  verifyAuditPath,
} from '../integrity/merkle.js';
import type { ExportRecord } from './proofs.js';
import type { Fault, VerifyReport } from './verify.js';

/** JSON fields of an exported entry that are columns (the rest are `extra`'s). */
const ENTRY_COLUMNS = new Set<string>([...CANONICAL_COLUMNS].filter((c) => c !== 'extra'));

/** Microseconds since the epoch of an RFC 3339 UTC text with up to 6 fraction digits. */
function micros(ts: unknown): string | null {
  if (typeof ts !== 'string') return null;
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(ts);
  if (!m) return null;
  const ms = Date.parse(`${m[1]}Z`);
  if (Number.isNaN(ms)) return null;
  return (BigInt(ms) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0') || '0')).toString();
}

/** Deep equality of parsed JSON values. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Which visible field of `entry` disagrees with its canonical `row`, or null. */
function disagreement(entry: Record<string, unknown>, row: (string | null)[]): string | null {
  const text = (v: unknown) => (v === null || v === undefined ? null : String(v));
  const checks: [string, boolean][] = [
    ['id', text(entry.id) === row[0]],
    ['request_id', text(entry.request_id) === row[1]],
    ['timestamp', micros(entry.timestamp) === row[2]],
    ['client_subject', text(entry.client_subject) === row[3]],
    ['client_role', text(entry.client_role) === row[4]],
    ['tool_name', text(entry.tool_name) === row[5]],
    ['backend_name', text(entry.backend_name) === row[6]],
    ['request_args', sameJson(entry.request_args ?? null, row[7] == null ? null : JSON.parse(row[7]))],
    ['response_status', text(entry.response_status) === row[8]],
    ['error_message', text(entry.error_message) === row[9]],
    ['latency_ms', (entry.latency_ms ?? null) === (row[10] === null ? null : Number(row[10]))],
    ['received_at', micros(entry.received_at) === row[11]],
  ];
  for (const [name, ok] of checks) if (!ok) return name;
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(entry)) if (!ENTRY_COLUMNS.has(k) && k !== '_proof') extra[k] = v;
  const stored = row[12] == null ? {} : (JSON.parse(row[12]) as unknown);
  const visible =
    typeof stored === 'object' && stored !== null && !Array.isArray(stored)
      ? Object.fromEntries(Object.entries(stored).filter(([k]) => !ENTRY_COLUMNS.has(k)))
      : {};
  return sameJson(extra, visible) ? null : 'extra';
}

/**
 * Checks an export with proofs.
 * @param text the file's content (NDJSON)
 * @param keys the pinned public keys
 */
export function verifyExport(text: string, keys: KeyObject[]): VerifyReport {
  const faults: Fault[] = [];
  const pinned = keys.map(rawPublicKey);
  const entries: { line: number; entry: Record<string, unknown>; proof: Record<string, unknown> }[] = [];
  const lines = text.split('\n');
  lines.forEach((l, i) => {
    if (l.trim() === '') return;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(l) as Record<string, unknown>;
    } catch {
      faults.push({ kind: 'row_changed', message: `line ${i + 1}: not JSON (altered)` });
      return;
    }
    const proof = entry._proof as Record<string, unknown> | undefined;
    if (!proof || typeof proof !== 'object') {
      faults.push({
        kind: 'row_without_batch',
        rowId: String(entry.id),
        message: `line ${i + 1} (row ${entry.id}): no proof (added?)`,
      });
      return;
    }
    entries.push({ line: i + 1, entry, proof });
  });
  const last = entries[entries.length - 1]?.proof ?? {};
  const records = (Array.isArray(last.records) ? last.records : []) as ExportRecord[];
  const checkpointLines = (Array.isArray(last.checkpoints) ? last.checkpoints : []) as string[];
  const manifest = (last.manifest ?? {}) as Record<string, number[]>;

  // Checkpoints: the anchored heads.
  const anchors = new Map<string, string>(); // "chain seq" -> hash hex
  for (const line of checkpointLines) {
    try {
      const c = parseCheckpoint(line);
      if (!checkpointSignatureValid(c)) {
        faults.push({
          kind: 'checkpoint_bad_signature',
          message: `checkpoint ${c.madeAt} (writer ${c.writerId}): its signature does not match its content`,
        });
        continue;
      }
      if (!pinned.includes(c.publicKey)) {
        faults.push({
          kind: 'checkpoint_unknown_key',
          message: `checkpoint ${c.madeAt} (writer ${c.writerId}): signed by a key that --public-key does not name`,
        });
        continue;
      }
      for (const h of c.heads) anchors.set(`${h.chainId} ${h.seq}`, h.hash.toString('hex'));
    } catch (err) {
      faults.push({
        kind: 'checkpoint_malformed',
        message: `a checkpoint in the export is malformed (${(err as Error).message})`,
      });
    }
  }

  // Records: hashes, links, anchoring (walking back from an anchored head).
  const byKey = new Map<string, ExportRecord>();
  const anchored = new Set<string>();
  const byChain = new Map<string, ExportRecord[]>();
  for (const r of records) {
    const key = `${r.chain} ${r.seq}`;
    const own = batchHash({
      chainId: r.chain,
      seq: BigInt(r.seq),
      prevHash: Buffer.from(r.prev_hash, 'hex'),
      rowCount: r.row_count,
      merkleRoot: Buffer.from(r.merkle_root, 'hex'),
      ids: r.ids,
      kind: r.kind,
    }).toString('hex');
    if (own !== r.hash) {
      faults.push({
        kind: 'batch_changed',
        chain: r.chain,
        seq: r.seq,
        message: `chain ${r.chain} batch ${r.seq}: its record does not hash to its hash (altered)`,
      });
      continue;
    }
    byKey.set(key, r);
    const list = byChain.get(r.chain) ?? [];
    byChain.set(r.chain, list);
    list.push(r);
  }
  for (const [chain, list] of byChain) {
    list.sort((a, b) => Number(BigInt(a.seq) - BigInt(b.seq)));
    let ok = false;
    for (let i = list.length - 1; i >= 0; i--) {
      const r = list[i]!;
      const next = list[i + 1];
      if (anchors.get(`${chain} ${r.seq}`) === r.hash) ok = true;
      else if (!next || BigInt(next.seq) !== BigInt(r.seq) + 1n || next.prev_hash !== r.hash) ok = false;
      if (ok) anchored.add(`${chain} ${r.seq}`);
    }
    if (list[0]!.seq === '1' && list[0]!.prev_hash !== GENESIS_HASH.toString('hex')) {
      faults.push({
        kind: 'link_broken',
        chain,
        seq: '1',
        message: `chain ${chain} batch 1: prev_hash is not the genesis hash`,
      });
    }
  }

  // Entries.
  const seen = new Map<string, Set<number>>();
  for (const { line, entry, proof } of entries) {
    const id = String(entry.id);
    const key = `${proof.chain} ${proof.seq}`;
    const r = byKey.get(key);
    const where = { chain: String(proof.chain), seq: String(proof.seq), rowId: id };
    if (!r) {
      faults.push({
        kind: 'row_without_batch',
        ...where,
        message: `line ${line} (row ${id}): its batch ${key} is not in the export's records`,
      });
      continue;
    }
    if (!anchored.has(key)) {
      faults.push({
        kind: 'batches_cut',
        ...where,
        message: `line ${line} (row ${id}): chain ${r.chain} batch ${r.seq} is not linked to a checkpoint signed by a pinned key`,
      });
      continue;
    }
    const row = proof.row as (string | null)[];
    const index = proof.index as number;
    const path = (proof.path as string[]).map((h) => Buffer.from(h, 'hex'));
    let idAt: string | null = null;
    let off = index;
    for (const [a, b] of parseIdRanges(r.ids)) {
      const n = Number(b - a + 1n);
      if (off < n) {
        idAt = (a + BigInt(off)).toString();
        break;
      }
      off -= n;
    }
    if (
      !Array.isArray(row) ||
      row.length !== 13 ||
      idAt !== row[0] ||
      !verifyAuditPath(
        leafHash(canonicalRow(row)),
        index,
        r.row_count,
        path,
        Buffer.from(r.merkle_root, 'hex'),
      )
    ) {
      faults.push({
        kind: 'row_changed',
        ...where,
        message: `line ${line} (row ${id}, chain ${r.chain} batch ${r.seq}): does not hash to its batch's Merkle root (altered)`,
      });
      continue;
    }
    let field: string | null;
    try {
      field = disagreement(entry, row);
    } catch {
      field = 'request_args or extra (not JSON)';
    }
    if (field) {
      faults.push({
        kind: 'row_changed',
        ...where,
        message: `line ${line} (row ${id}, chain ${r.chain} batch ${r.seq}): ${field} differs from what was stored`,
      });
      continue;
    }
    const s = seen.get(key) ?? new Set<number>();
    seen.set(key, s);
    if (s.has(index))
      faults.push({
        kind: 'row_in_two_batches',
        ...where,
        message: `line ${line} (row ${id}): a second copy of the same entry`,
      });
    s.add(index);
    if (!manifest[key]?.includes(index)) {
      faults.push({
        kind: 'row_without_batch',
        ...where,
        message: `line ${line} (row ${id}): not in the export's manifest (added)`,
      });
    }
  }
  for (const [key, indices] of Object.entries(manifest)) {
    const r = byKey.get(key);
    for (const index of indices) {
      if (seen.get(key)?.has(index)) continue;
      let idAt = '?';
      if (r) {
        let off = index;
        for (const [a, b] of parseIdRanges(r.ids)) {
          const n = Number(b - a + 1n);
          if (off < n) {
            idAt = (a + BigInt(off)).toString();
            break;
          }
          off -= n;
        }
      }
      const [chain, seq] = key.split(' ');
      faults.push({
        kind: 'row_deleted',
        chain,
        seq,
        rowId: idAt,
        message: `row ${idAt} (chain ${chain} batch ${seq}): listed in the export's manifest, missing from it (removed)`,
      });
    }
  }
  return {
    ok: faults.length === 0,
    chains: byChain.size,
    batches: records.length,
    rows: entries.length,
    removedByRetention: 0,
    checkpoints: checkpointLines.length,
    keys: 'pinned',
    mode: 'full',
    faults,
    cursor: null,
  };
}
