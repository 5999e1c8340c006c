/**
 * entry/grammar.ts against its reference, Postgres itself: the UUID forms are exactly those
 * `uuid_in` reads (the CLI's --request-id and the entry path share this check), and every time
 * the RFC 3339 check accepts is read by `timestamptz` as the same instant JavaScript reads.
 */
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUuid, timestampFault } from '../../src/entry/grammar.js';
import { ADMIN_URL } from '../helpers/db.js';

let client: pg.Client;
beforeAll(async () => {
  client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
});
afterAll(async () => {
  await client?.end();
});

/** What Postgres says of each text: null when it refuses it, else its canonical text. */
async function pgRead(texts: string[], type: 'uuid' | 'timestamptz'): Promise<(string | null)[]> {
  const out: (string | null)[] = [];
  for (const t of texts) {
    try {
      const r = await client.query<{ v: string }>(
        type === 'uuid'
          ? 'SELECT $1::uuid::text AS v'
          : `SELECT to_char($1::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS v`,
        [t],
      );
      out.push(r.rows[0]!.v);
    } catch {
      out.push(null);
    }
  }
  return out;
}

describe('grammar.ts against Postgres', () => {
  it('isUuid accepts exactly what uuid_in reads (hyphens anywhere, braces, lengths, non-hex)', async () => {
    const hex = fc.constantFrom(...'0123456789abcdefABCDEF');
    const candidate = fc
      .tuple(
        fc.oneof(
          fc.array(hex, { minLength: 32, maxLength: 32 }),
          fc.array(hex, { minLength: 30, maxLength: 34 }),
        ),
        fc.array(
          fc.oneof(
            fc.integer({ min: 1, max: 7 }).map((g) => 4 * g),
            fc.integer({ min: 0, max: 34 }),
          ),
          { maxLength: 9 },
        ),
        fc.constantFrom('', '{', '}', '{}', 'g', ' ', '--'),
      )
      .map(([digits, hyphens, extra]) => {
        const d = [...digits];
        for (const h of hyphens.sort((a, b) => b - a)) if (h <= d.length) d.splice(h, 0, '-');
        let s = d.join('');
        if (extra === '{}') s = `{${s}}`;
        else if (extra === '{') s = `{${s}`;
        else if (extra === '}') s = `${s}}`;
        else if (extra === '--') s = s.replace('-', '--');
        else if (extra) s = s.slice(0, 5) + extra + s.slice(5);
        return s;
      });
    const samples = fc.sample(candidate, { numRuns: 600, seed: 9 });
    const extra = [
      'c0100000-0000-4000-8000-000000000001',
      '{c0100000-0000-4000-8000-000000000001}',
      '{c0100000-0000-4000-8000-000000000001',
      'c0100000-0000-4000-8000-000000000001}',
      'c0100000000040008000000000000001',
      'c010-0000-0000-4000-8000-0000-0000-0001',
      '-c0100000-0000-4000-8000-000000000001',
      'c0100000-0000-4000-8000-000000000001-',
      '',
    ];
    const all = [...samples, ...extra];
    const read = await pgRead(all, 'uuid');
    let accepted = 0;
    for (let k = 0; k < all.length; k++) {
      expect(isUuid(all[k]!), all[k]).toBe(read[k] !== null);
      if (read[k] !== null) accepted++;
    }
    expect(accepted).toBeGreaterThan(30); // the sample holds both kinds
  });

  it('every time timestampFault accepts, timestamptz reads as the same instant', async () => {
    const two = (max: number) => fc.integer({ min: 0, max }).map((n) => String(n).padStart(2, '0'));
    const stamp = fc
      .tuple(
        fc.integer({ min: 1, max: 9999 }),
        two(13),
        two(32),
        fc.constantFrom('T', 't', ' '),
        two(24),
        two(60),
        two(61),
        fc.constantFrom('', '.5', '.123456', '.1234567'),
        fc.constantFrom('Z', 'z', '+01:00', '-05:30', '+15:59', '+16:00', '-00:60'),
      )
      .map(
        ([y, mo, d, t, h, mi, s, f, z]) =>
          `${String(y).padStart(4, '0')}-${mo}-${d}${t}${h}:${mi}:${s}${f}${z}`,
      );
    const samples = fc
      .sample(stamp, { numRuns: 800, seed: 3 })
      .filter((s) => timestampFault(s) === null && !/:60(\.|[Zz+-])/.test(s.slice(17)));
    expect(samples.length).toBeGreaterThan(50);
    const read = await pgRead(samples, 'timestamptz');
    for (let k = 0; k < samples.length; k++) {
      const s = samples[k]!;
      expect(read[k], s).not.toBeNull();
      const ms = Date.parse(s.replace(' ', 'T').replace(/[tz]/g, (c) => c.toUpperCase()));
      if (Number.isNaN(ms) || s.startsWith('0')) continue; // years before 1000: Date.parse may not read them
      expect(read[k]!.slice(0, 23), s).toBe(new Date(ms).toISOString().slice(0, 23));
    }
  });
});
