/**
 * CONTRACT.md §10 end to end with the built binary: entries of days that have no partition (years
 * old, far in the future) are stored, never rejected, whether they come over the socket (COPY and
 * INSERT batches) or from a spool that `serve` loads at start; `serve` makes the coming days'
 * partitions at start.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeRecord, SPOOL_MAGIC } from '../../src/ingest/spool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';
import {
  cleanupServes,
  entryLine,
  rid,
  runCli,
  send,
  startServe,
  tempDir,
  waitFor,
} from '../helpers/serve.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('part_e2e');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

const STAMPS = [
  '1987-06-05T04:03:02.000001Z',
  '2003-01-01T00:00:00+01:00', // 2002-12-31 UTC
  '2077-07-07T07:07:07Z',
  '2099-12-31T23:59:59.999999-10:00', // 2100-01-01 UTC
];

async function storedIn(prefix: string): Promise<{ n: number; misplaced: number; rejects: number }> {
  const r = await t.query<{ n: number; misplaced: number }>(
    `SELECT count(*)::int AS n,
            count(*) FILTER (WHERE tableoid::regclass::text <> audit_log_partition_name(("timestamp" AT TIME ZONE 'UTC')::date))::int AS misplaced
       FROM audit_log WHERE request_id::text LIKE $1`,
    [`${prefix}%`],
  );
  const j = await t.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM audit_reject WHERE raw::text LIKE $1`,
    [`%${Buffer.from(prefix).toString('hex')}%`],
  );
  return { ...r.rows[0]!, rejects: j.rows[0]!.n };
}

describe('serve stores entries of any day', () => {
  it('from a spool loaded at start and over the socket (COPY and INSERT batches): all stored, each in its day', async () => {
    const dir = await tempDir('ag-part-');
    const spoolDir = join(dir, 'spool');
    await mkdir(spoolDir, { recursive: true });
    const spooled = STAMPS.map((ts, i) => writeEntryOf(entryLine(rid('f1400000', i), { timestamp: ts })));
    await writeFile(
      join(spoolDir, 'spool-0000000000000001.seg'),
      Buffer.concat([SPOOL_MAGIC, encodeRecord(spooled, [])]),
    );
    const s = await startServe({
      databaseUrl: t.url,
      dataDir: dir,
      socket: join(dir, 's.sock'),
      args: ['--spool-dir', spoolDir, '--copy-min-rows', '3'],
    });
    await waitFor(async () => (await storedIn('f1400000')).n === STAMPS.length, 'the spool to load', 20_000);
    // a COPY batch (4 entries >= 3) and INSERT batches (one entry each)
    const many = STAMPS.map((ts, i) =>
      entryLine(rid('f1410000', i), { timestamp: ts.replace(/^(\d{3})\d/, '$15') }),
    );
    const acks = (await send(s.socket, `${many.join('\n')}\n`, { ack: true })).acks;
    expect(acks.every((a) => a.ok)).toBe(true);
    for (const [i, ts] of STAMPS.entries()) {
      const one = entryLine(rid('f1420000', i), { timestamp: ts.replace(/^(\d{2})\d\d/, '$1$1') });
      expect((await send(s.socket, `${one}\n`, { ack: true })).acks[0]?.ok).toBe(true);
    }
    expect(await s.stop()).toBe(0);
    expect(await storedIn('f1400000')).toEqual({ n: 4, misplaced: 0, rejects: 0 });
    expect(await storedIn('f1410000')).toEqual({ n: 4, misplaced: 0, rejects: 0 });
    expect(await storedIn('f1420000')).toEqual({ n: 4, misplaced: 0, rejects: 0 });
    // made ahead: the next 7 days exist
    const ahead = await t.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM generate_series(0, 7) g
        WHERE to_regclass(audit_log_partition_name(((now() AT TIME ZONE 'UTC')::date + g))) IS NOT NULL`,
    );
    expect(ahead.rows[0]!.n).toBe(8);
  });

  it('migrate makes the coming days again, also when no migration is left to run', async () => {
    const day = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10).replaceAll('-', '');
    await t.query(`DROP TABLE audit_log_p${day}`);
    const r = await runCli(['migrate', '--database-url', t.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('nothing to migrate');
    const back = await t.query(`SELECT to_regclass($1) AS p`, [`audit_log_p${day}`]);
    expect(back.rows[0]!.p).toBe(`audit_log_p${day}`);
  });
});
