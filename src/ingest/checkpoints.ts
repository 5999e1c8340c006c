/**
 * Signed checkpoints of `serve` (CONTRACT.md §9): every `--checkpoint-interval` in which this
 * writer committed something, and at shutdown, the heads of every chain in the database are signed
 * with the writer's Ed25519 key, stored in `audit_checkpoint` and appended (fsynced) to
 * `--checkpoint-file`, a copy for an auditor to keep outside the database.
 *
 * The signing key: `--signing-key FILE` (PEM, PKCS#8), or `<data dir>/signing-key`, made at first
 * start with mode 0600 (never through a symbolic link) with its public key beside it as
 * `signing-key.pub` (PEM, SPKI).
 */
import { createHash, type KeyObject } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type pg from 'pg';
import { messageOf } from '../errors.js';
import {
  type Checkpoint,
  newSigningKey,
  privateKeyOf,
  rawPublicKey,
  signCheckpoint,
} from '../integrity/checkpoint.js';
import type { ChainHead } from '../integrity/merkle.js';
import type { Logger } from '../log.js';

/** Writes `text` to a new file with `mode`, failing if it exists; never follows a symbolic link. */
async function createExclusive(file: string, text: string, mode: number): Promise<void> {
  const h = await open(
    file,
    fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW,
    mode,
  );
  try {
    await h.writeFile(text);
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Loads the signing key: `file` when given (it must exist), else `<dataDir>/signing-key`, made
 * (with `signing-key.pub`) when absent.
 * @returns the key, its raw public key (base64) and whether it was made now.
 * @throws Error naming the file when it cannot be read or is not an Ed25519 private key.
 */
export async function loadSigningKey(
  file: string | undefined,
  dataDir: string,
): Promise<{ key: KeyObject; publicKey: string; made: boolean; file: string }> {
  const path = file ?? `${dataDir}/signing-key`;
  let pem: string | null = null;
  try {
    const h = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      pem = await h.readFile('utf8');
    } finally {
      await h.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || file !== undefined) {
      throw new Error(`--signing-key ${path}: cannot be read (${messageOf(err)})`);
    }
  }
  let made = false;
  if (pem === null) {
    const pair = newSigningKey();
    await createExclusive(path, pair.privatePem, 0o600);
    await createExclusive(`${path}.pub`, pair.publicPem, 0o644).catch(async (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // a stale .pub beside a new key would mislead an auditor: say so rather than keep it silently
      const old = await readFile(`${path}.pub`, 'utf8');
      if (old !== pair.publicPem)
        throw new Error(`${path}.pub exists and is not the new key's; move it away`);
    });
    pem = pair.privatePem;
    made = true;
  }
  try {
    const key = privateKeyOf(pem);
    return { key, publicKey: rawPublicKey(key), made, file: path };
  } catch (err) {
    throw new Error(`--signing-key ${path}: not an Ed25519 private key in PEM (${messageOf(err)})`);
  }
}

/**
 * The default writer id (CONTRACT.md §9): the host name and a short hash of the data dir's
 * absolute path, so two daemons on one host with different data dirs have different chains.
 * `suffix` tells other writers (replay) apart.
 */
export function defaultWriterId(host: string, dataDir: string, suffix = ''): string {
  const name = host.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100) || 'host';
  const dir = createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 12);
  return `${name}-${dir}${suffix}`;
}

/** Options of {@link Checkpointer}. */
export interface CheckpointerOptions {
  writerId: string;
  key: KeyObject;
  /** The file each checkpoint line is appended to. */
  file: string;
  /** ms between checks for activity (--checkpoint-interval). */
  intervalMs: number;
}

/** Signs checkpoints on a timer and at stop; see the module header. */
export class Checkpointer {
  private timer: NodeJS.Timeout | null = null;
  private lastSigned: string | null = null;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly options: CheckpointerOptions,
  ) {}

  /** Starts the interval timer. */
  start(): void {
    this.timer = setInterval(() => {
      this.running = this.running.then(async () => {
        await this.checkpoint(false);
      });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer without a last checkpoint. */
  cancel(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Stops the timer and signs a last checkpoint (errors are logged, never thrown). Waits at most
   * `timeoutMs`: a Postgres that does not answer must not hold up the shutdown of §4 (the entries
   * are already written or spooled; the next start signs the heads again).
   */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
      timer.unref();
    });
    const done = this.running.then(() => this.checkpoint(true)).then(() => 'done' as const);
    const r = await Promise.race([done, late]);
    clearTimeout(timer);
    if (r === 'late')
      this.log.warn({ timeout_ms: timeoutMs }, 'no checkpoint at shutdown: Postgres did not answer in time');
  }

  /**
   * Signs the heads of every chain when this writer's head moved since the last checkpoint (or
   * always, with `force`). Resolves the checkpoint, or null when none was due or it failed.
   */
  async checkpoint(force: boolean): Promise<Checkpoint | null> {
    try {
      const r = await this.pool.query<{ chain_id: string; head_seq: string; head_hash: Buffer }>(
        'SELECT chain_id, head_seq::text AS head_seq, head_hash FROM audit_chain ORDER BY chain_id',
      );
      const heads: ChainHead[] = r.rows.map((h) => ({
        chainId: h.chain_id,
        seq: BigInt(h.head_seq),
        hash: h.head_hash,
      }));
      const mine = heads.find((h) => h.chainId === this.options.writerId);
      const state = mine ? `${mine.seq}:${mine.hash.toString('hex')}` : 'none';
      if (!force && state === this.lastSigned) return null;
      if (!force && this.lastSigned === null && !mine) return null;
      const { checkpoint, line } = signCheckpoint(this.options.key, this.options.writerId, heads);
      await this.pool.query(
        'INSERT INTO audit_checkpoint (made_at, writer_id, public_key, line) VALUES ($1, $2, $3, $4)',
        [checkpoint.madeAt, checkpoint.writerId, checkpoint.publicKey, line],
      );
      const h = await open(
        this.options.file,
        fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW,
        0o644,
      );
      try {
        await h.write(`${line}\n`);
        await h.sync();
      } finally {
        await h.close();
      }
      this.lastSigned = state;
      this.log.info({ chains: heads.length, head: mine ? mine.seq.toString() : null }, 'signed a checkpoint');
      return checkpoint;
    } catch (err) {
      this.log.error({ err: messageOf(err) }, 'could not sign a checkpoint; retrying at the next interval');
      return null;
    }
  }
}
