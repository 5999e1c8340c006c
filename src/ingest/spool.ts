/**
 * The disk spool of CONTRACT.md §4: while Postgres is unreachable, batches go to append-only files
 * and are acked from there; once Postgres answers, the files are loaded oldest first and each is
 * deleted only after all its rows are committed.
 *
 * ## On-disk format
 * A spool directory holds segment files named `spool-<16-digit sequence>.seg`, written in sequence
 * order. Each segment starts with the 8-byte magic `AGSPOOL1`, followed by records:
 *
 * ```
 * u32 BE  payload length in bytes
 * u32 BE  CRC-32 (zlib's, ISO-HDLC) of the payload
 * bytes   payload: UTF-8 JSON {"v":2,"entries":["<COPY text line>"...],"rejects":[[source,reason,raw base64,key?]...]}
 * ```
 * One record is one batch. Each entry is its COPY text line (already validated, sanitised and
 * redacted: nothing secret reaches the disk unredacted; columns in ENTRY_COLUMNS order). The
 * original wire line is not kept: should Postgres refuse a spooled entry, its COPY line is what
 * goes to `audit_reject.raw`.
 *
 * ## fsync policy
 * A record is written with one `write` and then `fdatasync` before `append` resolves; its entries are
 * acked only after that. A new segment's directory entry is made durable by fsyncing the directory.
 *
 * ## Size cap and when-full policy
 * `maxBytes` caps the total size of the segment files. An append that would pass it throws
 * {@link SpoolFullError}; the queue then keeps the batch in memory and retries, and because the
 * queue is bounded the sockets are paused: backpressure, never loss.
 *
 * ## Damage
 * A record whose length runs past the end of the file, or whose CRC does not match, is reported and
 * skipped. At the end of a file it is a torn write from a crash (its entries were never acked).
 * Elsewhere the reader goes on at the next record (its length field is trusted while it stays
 * inside the file), so intact, acked records after a damaged one are still loaded; the file is then
 * kept for an operator, renamed to `.corrupt`.
 *
 * Spool files are input (CONTRACT.md §4): an intact record is not trusted either. Each entry's COPY
 * line is rebuilt as a wire line and validated, sanitised and redacted again (entry/copyEntry.ts,
 * then EntryEncoder); one that fails goes to `audit_reject` with the reason, and is logged.
 */
import { closeSync, fdatasyncSync, fsyncSync, ftruncateSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { RejectRecord, WriteEntry } from '../db/writer.js';
import { wireLineOfCopy } from '../entry/copyEntry.js';
import { EntryEncoder } from '../entry/encode.js';
import { DEFAULT_REDACT_KEYS, type ParseOptions } from '../entry/parse.js';
import { AuditGatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import { ensurePrivateDir } from '../util/privateFiles.js';

/** The magic bytes at the start of every segment (also how `replay` recognises a spool file). */
export const SPOOL_MAGIC = Buffer.from('AGSPOOL1');
const HEADER = 8;
const SEGMENT_RE = /^spool-(\d{16})\.seg$/;

/** The spool has no room for another batch (the when-full policy: backpressure). */
export class SpoolFullError extends AuditGatewayError {}

const DEFAULT_PARSE: ParseOptions = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };

/** One batch read back from a segment. */
export interface SpooledBatch {
  entries: WriteEntry[];
  rejects: RejectRecord[];
}

/** Encodes a batch as a record (header included). */
export function encodeRecord(entries: WriteEntry[], rejects: RejectRecord[]): Buffer {
  const payload = Buffer.from(
    JSON.stringify({
      v: 2,
      entries: entries.map((e) => e.copy.toString('utf8')),
      // The key keeps a reject once through the spool (audit_reject.reject_key); older records lack it.
      rejects: rejects.map((r) =>
        r.key
          ? [r.source, r.reason, r.raw.toString('base64'), r.key]
          : [r.source, r.reason, r.raw.toString('base64')],
      ),
    }),
  );
  const head = Buffer.alloc(HEADER);
  head.writeUInt32BE(payload.length, 0);
  head.writeUInt32BE(crc32(payload), 4);
  return Buffer.concat([head, payload]);
}

/**
 * Decodes one record's payload. Spool files are input (CONTRACT.md §4): each entry's COPY line is
 * rebuilt as a wire line (entry/copyEntry.ts) and passes the encoder's validation, sanitising and
 * redaction like a socket line; an entry that fails is set aside as a reject (its spooled line as
 * raw, the fault as reason) and counted in `damage.invalid`, so that no byte of a forged record can
 * reach a COPY stream unchecked.
 * @throws Error when the payload is not a version-2 record (the caller counts it as damaged)
 */
function decodePayload(payload: Buffer, source: string, encoder: EntryEncoder, damage: Damage): SpooledBatch {
  const p = JSON.parse(payload.toString('utf8')) as { v: unknown; entries: unknown; rejects: unknown };
  if (p === null || typeof p !== 'object' || p.v !== 2) {
    throw new AuditGatewayError(`${source}: spool record version ${String(p?.v)} is not supported`);
  }
  if (!Array.isArray(p.entries) || !Array.isArray(p.rejects)) {
    throw new AuditGatewayError(`${source}: spool record without entries and rejects`);
  }
  const entries: WriteEntry[] = [];
  const rejects: RejectRecord[] = [];
  for (const line of p.entries as unknown[]) {
    const copy = Buffer.from(typeof line === 'string' ? line : (JSON.stringify(line) ?? ''), 'utf8');
    const wire =
      typeof line === 'string' ? wireLineOfCopy(copy) : { ok: false as const, reason: 'not a string' };
    const r = wire.ok ? encoder.encode(wire.line) : wire;
    if (r.ok) {
      entries.push({ copy: r.copy, raw: copy, source });
    } else {
      damage.invalid++;
      rejects.push({ source, reason: `spool entry set aside: ${r.reason}`, raw: copy });
    }
  }
  for (const item of p.rejects as unknown[]) {
    const [s, reason, raw, key] = Array.isArray(item) ? item : [];
    rejects.push({
      source: typeof s === 'string' ? s : source,
      reason: typeof reason === 'string' ? reason : '',
      raw: Buffer.from(typeof raw === 'string' ? raw : '', 'base64'),
      ...(typeof key === 'string' && /^[0-9a-f-]{36}$/.test(key) ? { key } : {}),
    });
  }
  return { entries, rejects };
}

/** The result of reading one segment. */
export interface SegmentRead {
  batches: SpooledBatch[];
  /** The worst damage found: none, a torn last record, or a bad record before the end. */
  damaged: 'none' | 'torn-tail' | 'corrupt';
  /** Damaged records skipped. */
  skipped: number;
  /** Entries set aside as rejects because they failed validation. */
  invalid: number;
}

/** Damage found by {@link scanSegment}, filled in as it goes. */
export interface Damage {
  damaged: SegmentRead['damaged'];
  /** Records skipped: torn, a bad CRC, or a payload that is not a record. */
  skipped: number;
  /** Entries of intact records that failed validation and were set aside as rejects. */
  invalid: number;
}

/**
 * Yields the intact records of a segment one at a time (decoding each only when reached, so memory
 * holds one batch, not the whole file). A record with a bad CRC whose length stays inside the file
 * is skipped and the scan goes on at the next record (`corrupt`); a record cut by the end of the
 * file ends the scan (`torn-tail`, unless a corrupt one came before).
 * @throws AuditGatewayError when the bytes do not start with {@link SPOOL_MAGIC}.
 */
export function* scanSegment(
  buf: Buffer,
  source: string,
  damage: Damage,
  parse: ParseOptions = DEFAULT_PARSE,
): Generator<SpooledBatch> {
  const encoder = new EntryEncoder(parse);
  if (buf.length < SPOOL_MAGIC.length || !buf.subarray(0, SPOOL_MAGIC.length).equals(SPOOL_MAGIC)) {
    throw new AuditGatewayError(`${source}: not a spool segment (no AGSPOOL1 header)`);
  }
  let off = SPOOL_MAGIC.length;
  while (off < buf.length) {
    const end = off + HEADER <= buf.length ? off + HEADER + buf.readUInt32BE(off) : Number.POSITIVE_INFINITY;
    if (end > buf.length) {
      damage.skipped++;
      if (damage.damaged === 'none') damage.damaged = 'torn-tail';
      return;
    }
    const payload = buf.subarray(off + HEADER, end);
    if (crc32(payload) !== buf.readUInt32BE(off + 4)) {
      damage.skipped++;
      damage.damaged = end === buf.length && damage.damaged === 'none' ? 'torn-tail' : 'corrupt';
    } else {
      let batch: SpooledBatch | null = null;
      try {
        batch = decodePayload(payload, source, encoder, damage);
      } catch {
        // A checksummed payload that is not a record: forged, or written by another program.
        damage.skipped++;
        damage.damaged = 'corrupt';
      }
      if (batch !== null) yield batch;
    }
    off = end;
  }
}

/** Reads every intact record of a segment's bytes (see {@link scanSegment}). */
export function readSegment(buf: Buffer, source: string, parse?: ParseOptions): SegmentRead {
  const damage: Damage = { damaged: 'none', skipped: 0, invalid: 0 };
  const batches = [...scanSegment(buf, source, damage, parse)];
  return { batches, ...damage };
}

/** Options of {@link Spool}. */
export interface SpoolOptions {
  dir: string;
  /** True when `dir` is the default inside the data dir: a symbolic link there is refused. */
  inDataDir?: boolean;
  /** Cap of all segment files together, in bytes. */
  maxBytes: number;
  /** A segment is closed and a new one begun past this size, in bytes (default 16 MiB). */
  segmentBytes?: number;
  /** How loaded entries are validated and redacted (serve's `--redact-keys`; default §6's keys). */
  parse?: ParseOptions;
}

/** Writes all of `buf` (write(2) may write part of it without an error). */
function writeAll(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
}

/** The spool directory; see the module header. Not safe for two processes (serve owns the data dir). */
export class Spool {
  private fd: number | null = null;
  private currentSeq = 0;
  private currentBytes = 0;
  private totalBytes = 0;
  private readonly segmentBytes: number;

  private constructor(
    private readonly options: SpoolOptions,
    private readonly log: Logger,
  ) {
    this.segmentBytes = options.segmentBytes ?? 16 * 1024 * 1024;
  }

  /**
   * Opens (creating) the directory, private to us (0700, CONTRACT.md §4 "Neighbours"), and
   * measures what is already there.
   * @throws AuditGatewayError when the directory belongs to another user (or is a link in the data dir).
   */
  static async open(options: SpoolOptions, log: Logger): Promise<Spool> {
    await ensurePrivateDir(options.dir, { what: '--spool-dir', noLink: options.inDataDir ?? false });
    const spool = new Spool(options, log);
    for (const f of await spool.segments()) {
      spool.totalBytes += (await stat(join(options.dir, f.name))).size;
      spool.currentSeq = Math.max(spool.currentSeq, f.seq);
    }
    return spool;
  }

  /** Bytes of all segment files. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** The segment files, oldest first. */
  async segments(): Promise<{ name: string; seq: number }[]> {
    const names = await readdir(this.options.dir);
    return names
      .map((name) => ({ name, m: SEGMENT_RE.exec(name) }))
      .filter((x): x is { name: string; m: RegExpExecArray } => x.m !== null)
      .map((x) => ({ name: x.name, seq: Number(x.m[1]) }))
      .sort((a, b) => a.seq - b.seq);
  }

  /**
   * Appends one batch and fsyncs it; when this resolves the batch is durable and may be acked.
   * Synchronous file calls: one write and one fdatasync per batch, no interleaving possible.
   * @throws SpoolFullError when the batch would pass `maxBytes`.
   */
  async append(entries: WriteEntry[], rejects: RejectRecord[]): Promise<void> {
    const record = encodeRecord(entries, rejects);
    const newSegment = this.fd === null || this.currentBytes + record.length > this.segmentBytes;
    const extra = record.length + (newSegment ? SPOOL_MAGIC.length : 0);
    if (this.totalBytes + extra > this.options.maxBytes) {
      throw new SpoolFullError(
        `spool ${this.options.dir} is full (${this.totalBytes} of ${this.options.maxBytes} bytes)`,
      );
    }
    if (newSegment) this.startSegment();
    try {
      writeAll(this.fd!, record);
      fdatasyncSync(this.fd!);
    } catch (err) {
      // Disk full or an I/O error, maybe after part of the record was written: cut the segment
      // back to its last whole record, so nothing torn stays in it; the batch is not acked and
      // stays in memory. If even that fails, the segment is closed: its torn tail is then at the
      // end of a file, where the load skips it.
      try {
        ftruncateSync(this.fd!, this.currentBytes);
      } catch {
        this.closeCurrent();
      }
      throw err;
    }
    this.currentBytes += record.length;
    this.totalBytes += record.length;
  }

  private startSegment(): void {
    this.closeCurrent();
    this.currentSeq++;
    const name = `spool-${String(this.currentSeq).padStart(16, '0')}.seg`;
    const path = join(this.options.dir, name);
    this.fd = openSync(path, 'wx', 0o600);
    try {
      writeAll(this.fd, SPOOL_MAGIC);
      fdatasyncSync(this.fd);
    } catch (err) {
      // No header, no segment: remove the file (a crash here leaves one, which load removes).
      this.closeCurrent();
      try {
        unlinkSync(path);
      } catch {}
      throw err;
    }
    const dirFd = openSync(this.options.dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    this.currentBytes = SPOOL_MAGIC.length;
    this.totalBytes += SPOOL_MAGIC.length;
  }

  /** Closes the segment being written, so that it can be loaded; the next append starts a new one. */
  closeCurrent(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  /**
   * Loads every segment, oldest first, through `store` (which must commit the batch, or throw);
   * deletes each file once all its batches are committed. Torn tails are reported and skipped;
   * a corrupt file is renamed to `.corrupt` after its intact records are stored.
   * @returns entries loaded (stored or found already stored).
   * @throws whatever `store` throws (the file is kept; loading resumes at the next call).
   */
  async load(store: (batch: SpooledBatch) => Promise<void>): Promise<number> {
    // Only segments that are closed now: appends that happen while loading open a newer segment,
    // which must not be read (or deleted) before it is closed in turn.
    this.closeCurrent();
    const upTo = this.currentSeq;
    let loaded = 0;
    for (const seg of (await this.segments()).filter((s) => s.seq <= upTo)) {
      const path = join(this.options.dir, seg.name);
      const buf = await readFile(path);
      if (!buf.subarray(0, SPOOL_MAGIC.length).equals(SPOOL_MAGIC)) {
        if (SPOOL_MAGIC.subarray(0, buf.length).equals(buf)) {
          // Empty, or a torn header: a crash while the segment was begun; it holds no record.
          await unlink(path);
          this.log.warn({ file: path }, 'spool: removed a segment whose header was never written whole');
        } else {
          await rename(path, `${path}.corrupt`);
          this.log.error(
            { file: `${path}.corrupt` },
            'spool: a segment file without the AGSPOOL1 header was set aside; the others are loaded',
          );
        }
        this.totalBytes = Math.max(0, this.totalBytes - buf.length);
        continue;
      }
      const damage: Damage = { damaged: 'none', skipped: 0, invalid: 0 };
      for (const b of scanSegment(buf, `spool:${seg.name}`, damage, this.options.parse)) {
        await store(b);
        loaded += b.entries.length;
      }
      if (damage.invalid > 0) {
        this.log.error(
          { file: path, entries: damage.invalid },
          'spool: entries that fail validation (a damaged or forged file) were set aside in audit_reject',
        );
      }
      if (damage.damaged === 'torn-tail') {
        this.log.warn(
          { file: path },
          'spool: a torn record at the end of a segment (a crash mid-write) was skipped; its entries had not been acked',
        );
      }
      if (damage.damaged === 'corrupt') {
        await rename(path, `${path}.corrupt`);
        this.log.error(
          { file: `${path}.corrupt`, skipped: damage.skipped },
          'spool: damaged records in the middle of a segment were skipped (the others are stored); the file is kept for inspection',
        );
      } else {
        await unlink(path);
      }
      this.totalBytes = Math.max(0, this.totalBytes - buf.length);
    }
    return loaded;
  }
}
