/**
 * src/integrity against references: the Certificate Transparency roots and inclusion proofs of
 * RFC 6962 (sizes 0–8), the RFC's recursive definition (property-based, every size up to 70 and
 * every leaf), and the README's test vectors of the canonical form (read from README.md, so the
 * document and the code cannot drift apart).
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkpointSignatureValid,
  newSigningKey,
  parseCheckpoint,
  privateKeyOf,
  signCheckpoint,
} from '../../src/integrity/checkpoint.js';
import {
  auditPath,
  batchHash,
  canonicalRow,
  formatIdRanges,
  leafHash,
  merkleRoot,
  merkleRootRecursive,
  parseIdRanges,
  pathFromLevels,
  treeLevels,
  verifyAuditPath,
} from '../../src/integrity/merkle.js';

const hex = (b: Buffer) => b.toString('hex');
const CT_DATA = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map((h) => Buffer.from(h, 'hex'));
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

describe('Merkle tree (RFC 6962 / 9162)', () => {
  const leaves = CT_DATA.map(leafHash);
  it('matches the Certificate Transparency reference roots for sizes 0–8', () => {
    for (let n = 0; n <= 8; n++) expect(hex(merkleRoot(leaves.slice(0, n))), `size ${n}`).toBe(CT_ROOTS[n]);
  });
  it('gives the reference inclusion proofs (leaf 0 and leaf 5 of 8)', () => {
    expect(auditPath(0, leaves).map(hex)).toEqual([
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ]);
    expect(auditPath(5, leaves).map(hex)).toEqual([
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ]);
  });
  it('the iterative root equals the recursive definition; every audit path verifies and no altered one does', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.uint8Array({ maxLength: 12 }), {
          minLength: 1,
          maxLength: 70,
          selector: (d) => Buffer.from(d).toString('hex'),
        }), // distinct leaves: equal ones may swap places
        fc.nat(),
        (data, pick) => {
          const ls = data.map((d) => leafHash(Buffer.from(d)));
          const root = merkleRoot(ls);
          expect(root.equals(merkleRootRecursive(ls))).toBe(true);
          const levels = treeLevels(ls);
          for (let m = 0; m < ls.length; m++) {
            const p = auditPath(m, ls);
            expect(verifyAuditPath(ls[m]!, m, ls.length, p, root)).toBe(true);
            expect(pathFromLevels(levels, m).map(hex)).toEqual(p.map(hex));
          }
          const m = pick % ls.length;
          const path = auditPath(m, ls);
          const other = leafHash(Buffer.from('other'));
          expect(verifyAuditPath(other, m, ls.length, path, root)).toBe(false);
          if (ls.length > 1)
            expect(verifyAuditPath(ls[m]!, (m + 1) % ls.length, ls.length, path, root)).toBe(false);
          if (path.length > 0) {
            const bad = path.map((p, i) => (i === 0 ? leafHash(p) : p));
            expect(verifyAuditPath(ls[m]!, m, ls.length, bad, root)).toBe(false);
          }
        },
      ),
    );
  });
});

describe('id ranges', () => {
  it('round-trips any ascending id set', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.bigInt({ min: 1n, max: 10_000n }), { maxLength: 200 }), (ids) => {
        const sorted = [...ids].sort((a, b) => (a < b ? -1 : 1));
        const back = parseIdRanges(formatIdRanges(sorted)).flatMap(([a, b]) => {
          const out: bigint[] = [];
          for (let i = a; i <= b; i++) out.push(i);
          return out;
        });
        expect(back).toEqual(sorted);
      }),
    );
  });
  it('refuses ranges that are not ascending and disjoint', () => {
    for (const bad of ['3,2', '1-5,5', '5-1', 'x', '1,,2', '0'])
      expect(() => parseIdRanges(bad), bad).toThrow();
  });
});

describe('the README test vectors', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const block = /<!-- integrity-vectors:begin -->\n```\n([\s\S]*?)```\n<!-- integrity-vectors:end -->/.exec(
    readme,
  )?.[1];
  const get = (key: string) => {
    const m = new RegExp(`^${key}: (.*)$`, 'm').exec(block ?? '');
    if (!m) throw new Error(`README vectors: no '${key}:' line`);
    return m[1]!;
  };
  it('are present', () => expect(block).toBeTruthy());
  it('canonical form and leaves', () => {
    const a = JSON.parse(get('row A')) as (string | null)[];
    const b = JSON.parse(get('row B')) as (string | null)[];
    expect(canonicalRow(a).toString('utf8')).toBe(get('canonical A'));
    expect(hex(leafHash(canonicalRow(a)))).toBe(get('leaf A'));
    expect(hex(leafHash(canonicalRow(b)))).toBe(get('leaf B'));
    const root = merkleRoot([leafHash(canonicalRow(b)), leafHash(canonicalRow(a))]);
    expect(hex(root)).toBe(get('batch root'));
    const hash = batchHash({
      chainId: 'host-0123456789ab',
      seq: 1n,
      prevHash: Buffer.alloc(32),
      rowCount: 2,
      merkleRoot: root,
      ids: '7,42',
      kind: 'write',
    });
    expect(hex(hash)).toBe(get('batch hash'));
  });
  it('no two different rows share a canonical form (NULL, empty, and texts that look like fields)', () => {
    const field = fc.option(fc.string({ unit: 'binary', maxLength: 8 }), { nil: null });
    fc.assert(
      fc.property(
        fc.array(field, { minLength: 13, maxLength: 13 }),
        fc.array(field, { minLength: 13, maxLength: 13 }),
        (x, y) => {
          if (JSON.stringify(x) !== JSON.stringify(y))
            expect(canonicalRow(x).equals(canonicalRow(y))).toBe(false);
        },
      ),
    );
    expect(canonicalRow(Array(13).fill(null)).equals(canonicalRow(Array(13).fill('')))).toBe(false);
  });
});

describe('checkpoints', () => {
  it('sign, parse and verify; any change to the line breaks the signature', () => {
    const key = privateKeyOf(newSigningKey().privatePem);
    const { line } = signCheckpoint(key, 'w1', [
      { chainId: 'b', seq: 3n, hash: Buffer.alloc(32, 1) },
      { chainId: 'a', seq: 1n, hash: Buffer.alloc(32, 2) },
    ]);
    expect(checkpointSignatureValid(parseCheckpoint(line))).toBe(true);
    for (const [from, to] of [
      ['"seq":"3"', '"seq":"4"'],
      ['"writer_id":"w1"', '"writer_id":"w2"'],
      ['"chain":"a"', '"chain":"c"'],
      ['0101', '0100'],
    ] as const) {
      const altered = line.replace(from, to);
      expect(altered).not.toBe(line);
      expect(checkpointSignatureValid(parseCheckpoint(altered)), from).toBe(false);
    }
  });
});
