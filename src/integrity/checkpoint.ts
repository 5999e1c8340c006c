/**
 * Signed checkpoints of CONTRACT.md §9: Ed25519 (node:crypto, RFC 8032) over
 * {@link checkpointBody}. A checkpoint travels as one JSON line (the `--checkpoint-file` line and
 * `audit_checkpoint.line`):
 * `{"v":1,"made_at":ISO,"writer_id":ID,"heads":[{"chain":ID,"seq":"N","hash":HEX}],"public_key":B64,"signature":B64}`
 * with `public_key` the raw 32-byte Ed25519 public key and `signature` the 64-byte signature, both
 * base64. Key files are PEM (PKCS#8 private, SPKI public), as `openssl genpkey -algorithm ed25519`
 * writes them.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { type ChainHead, type CheckpointBody, checkpointBody } from './merkle.js';

/** A parsed checkpoint line. */
export interface Checkpoint extends CheckpointBody {
  /** Raw Ed25519 public key, base64. */
  publicKey: string;
  /** Signature, base64. */
  signature: string;
}

/** Makes a new Ed25519 key pair as PEM texts. */
export function newSigningKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Loads an Ed25519 private key from PEM. @throws Error when it is not an Ed25519 private key. */
export function privateKeyOf(pem: string): KeyObject {
  const k = createPrivateKey(pem);
  if (k.asymmetricKeyType !== 'ed25519') throw new Error(`not an Ed25519 key (${k.asymmetricKeyType})`);
  return k;
}

/** Loads an Ed25519 public key from PEM (SPKI) or from the raw 32 bytes in base64. */
export function publicKeyOf(text: string): KeyObject {
  const t = text.trim();
  const k = t.startsWith('-----')
    ? createPublicKey(t)
    : createPublicKey({
        key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(t, 'base64').toString('base64url') },
        format: 'jwk',
      });
  if (k.asymmetricKeyType !== 'ed25519') throw new Error(`not an Ed25519 key (${k.asymmetricKeyType})`);
  return k;
}

/** The raw 32-byte public key in base64 (the form in checkpoint lines). */
export function rawPublicKey(k: KeyObject): string {
  const pub = k.type === 'private' ? createPublicKey(k) : k;
  const jwk = pub.export({ format: 'jwk' }) as { x: string };
  return Buffer.from(jwk.x, 'base64url').toString('base64');
}

/** Signs `heads` and returns the checkpoint and its JSON line (no newline). */
export function signCheckpoint(
  key: KeyObject,
  writerId: string,
  heads: ChainHead[],
  madeAt = new Date(),
): { checkpoint: Checkpoint; line: string } {
  const body: CheckpointBody = { madeAt: madeAt.toISOString(), writerId, heads };
  const signature = sign(null, checkpointBody(body), key).toString('base64');
  const checkpoint: Checkpoint = { ...body, publicKey: rawPublicKey(key), signature };
  return { checkpoint, line: formatCheckpoint(checkpoint) };
}

/** The JSON line of a checkpoint. */
export function formatCheckpoint(c: Checkpoint): string {
  return JSON.stringify({
    v: 1,
    made_at: c.madeAt,
    writer_id: c.writerId,
    heads: c.heads.map((h) => ({ chain: h.chainId, seq: h.seq.toString(), hash: h.hash.toString('hex') })),
    public_key: c.publicKey,
    signature: c.signature,
  });
}

/** Parses a checkpoint line. @throws Error naming what is malformed. */
export function parseCheckpoint(line: string): Checkpoint {
  const o = JSON.parse(line) as Record<string, unknown>;
  if (o.v !== 1) throw new Error('not a v1 checkpoint');
  if (typeof o.made_at !== 'string' || typeof o.writer_id !== 'string')
    throw new Error('made_at or writer_id missing');
  if (typeof o.public_key !== 'string' || typeof o.signature !== 'string')
    throw new Error('key or signature missing');
  if (!Array.isArray(o.heads)) throw new Error('heads missing');
  const heads = o.heads.map((h: Record<string, unknown>) => {
    if (
      typeof h.chain !== 'string' ||
      typeof h.seq !== 'string' ||
      typeof h.hash !== 'string' ||
      !/^\d+$/.test(h.seq)
    ) {
      throw new Error('a malformed head');
    }
    return { chainId: h.chain, seq: BigInt(h.seq), hash: Buffer.from(h.hash, 'hex') };
  });
  return {
    madeAt: o.made_at,
    writerId: o.writer_id,
    heads,
    publicKey: o.public_key,
    signature: o.signature,
  };
}

/** Whether `c`'s signature is valid under its own public key. */
export function checkpointSignatureValid(c: Checkpoint): boolean {
  try {
    return verify(null, checkpointBody(c), publicKeyOf(c.publicKey), Buffer.from(c.signature, 'base64'));
  } catch {
    return false;
  }
}
