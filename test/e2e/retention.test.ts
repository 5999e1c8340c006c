/**
 * `retention` (CONTRACT.md §10, §7) with the built binary against a real Postgres: `--dry-run`
 * changes nothing; `--archive DIR` writes one checked archive per day (mode 0600, SHA-256 and count
 * recorded in audit_retention) before the partition goes; `replay` of the archives stores the same
 * entries again, exactly; entries that arrive later for a removed day are stored (the partition is
 * made again) and a second retention keeps the first archive; an archive that cannot be written
 * keeps the partition; `serve --retention --archive-dir` removes old partitions on its own, while it
 * ingests.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter } from '../../src/db/writer.js';
import { silentLogger } from '../../src/log.js';
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
  t = await createTestDatabase('retention');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

const DAY = 86_400_000;
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);
/**
 * An --older-than value whose cut-off is one minute into the UTC day `n - 1` days ago: the
 * partitions of `n` and more days ago end before it, the one of `n - 1` days ago does not.
 */
function olderThan(n: number): string {
  const cutoff = Date.parse(`${dayOf(Date.now() - (n - 1) * DAY)}T00:00:00Z`) + 60_000;
  return `${Math.floor((Date.now() - cutoff) / 1000)}s`;
}

/** Entries of the last `days` days (k per day), hard values included, written by the real writer. */
async function seed(prefix: string, days: number, perDay: number): Promise<void> {
  const writer = new BatchWriter(t.pool, silentLogger());
  const lines: string[] = [];
  for (let d = 0; d < days; d++) {
    for (let k = 0; k < perDay; k++) {
      const ts = new Date(Date.now() - d * DAY - k * 1000).toISOString().replace('Z', '123Z');
      lines.push(
        entryLine(rid(prefix, d * 1000 + k), {
          timestamp: ts,
          client_subject: k % 2 ? 'alice' : '中村',
          request_args: {
            k,
            big: 12345678901234567890n.toString(),
            nested: { s: 'tab\there "q" \\ \u0001' },
          },
          error_message: k % 3 ? null : 'line1\nline2',
          latency_ms: k % 4 ? k : null,
          extra_field: { d },
        }),
      );
    }
  }
  const entries = lines.map((l) => writeEntryOf(l));
  for (let i = 0; i < entries.length; i += 500) await writer.write(entries.slice(i, i + 500), []);
}

/** The stored entries of a prefix, as an export line without id and received_at, sorted. */
async function entriesOf(prefix: string): Promise<string[]> {
  const r = await t.query<{ j: Record<string, unknown> }>(
    `SELECT to_jsonb(a) - 'id' - 'received_at' AS j FROM audit_log a WHERE request_id::text LIKE $1`,
    [`${prefix}%`],
  );
  return r.rows.map((x) => JSON.stringify(x.j)).sort();
}

async function partitions(): Promise<string[]> {
  const r = await t.query<{ relname: string }>(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1`,
  );
  return r.rows.map((x) => x.relname);
}

describe('retention', () => {
  it('--dry-run lists, --archive archives, checks, records and removes; replay restores exactly', async () => {
    await seed('e1400000', 10, 40);
    const oldDays = [7, 8, 9].map((d) => dayOf(Date.now() - d * DAY));
    const before = await entriesOf('e1400000');
    const oldBefore = (
      await t.query<{ j: Record<string, unknown> }>(
        `SELECT to_jsonb(a) - 'id' - 'received_at' AS j FROM audit_log a
          WHERE request_id::text LIKE 'e1400000%' AND "timestamp" < $1::date`,
        [dayOf(Date.now() - 6 * DAY)],
      )
    ).rows
      .map((x) => JSON.stringify(x.j))
      .sort();
    expect(oldBefore).toHaveLength(120);
    const partsBefore = await partitions();

    // the partitions of days 7, 8, 9 ago end before the cut-off; day 6 ago does not
    const dry = await runCli([
      'retention',
      '--database-url',
      t.url,
      '--older-than',
      olderThan(7),
      '--dry-run',
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    for (const d of oldDays) expect(dry.stdout).toContain(`would remove  ${d}`);
    expect(await partitions()).toEqual(partsBefore);

    const dir = join(await tempDir('ag-ret-'), 'archive');
    const r = await runCli([
      'retention',
      '--database-url',
      t.url,
      '--older-than',
      olderThan(7),
      '--archive',
      dir,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const files = (await readdir(dir)).sort();
    for (const d of oldDays) expect(files).toContain(`audit_log-${d}.ndjson.gz`);
    expect(files.filter((f) => f.startsWith('.'))).toEqual([]); // no temporary file left
    const recs = await t.query<{
      day: string;
      entries: string;
      archive_file: string;
      archive_sha256: string;
    }>(
      `SELECT to_char(day, 'YYYY-MM-DD') AS day, entries::text, archive_file, archive_sha256 FROM audit_retention`,
    );
    for (const rec of recs.rows) {
      const path = join(dir, rec.archive_file);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(
        createHash('sha256')
          .update(await readFile(path))
          .digest('hex'),
      ).toBe(rec.archive_sha256);
    }
    const oldRecs = recs.rows.filter((x) => oldDays.includes(x.day));
    expect(oldRecs.map((x) => Number(x.entries)).reduce((a, b) => a + b, 0)).toBe(120);
    const after = await partitions();
    for (const d of oldDays) expect(after).not.toContain(`audit_log_p${d.replaceAll('-', '')}`);
    expect(await entriesOf('e1400000')).toHaveLength(before.length - 120);

    // replay of the archives stores the same entries again, exactly
    const rp = await runCli([
      'replay',
      '--database-url',
      t.url,
      ...oldDays.map((d) => join(dir, `audit_log-${d}.ndjson.gz`)),
    ]);
    expect(rp.code, rp.stderr).toBe(0);
    expect(rp.stdout).toContain('stored 120, skipped 0, rejected 0');
    expect(await entriesOf('e1400000')).toEqual(before);

    // the restored day is removed again: its earlier archive is kept, the new one takes a suffix
    const again = await runCli([
      'retention',
      '--database-url',
      t.url,
      '--older-than',
      olderThan(7),
      '--archive',
      dir,
    ]);
    expect(again.code, again.stderr).toBe(0);
    const files2 = await readdir(dir);
    for (const d of oldDays) {
      expect(files2).toContain(`audit_log-${d}.ndjson.gz`);
      expect(files2).toContain(`audit_log-${d}.2.ndjson.gz`);
    }
    // the first archives are untouched: their SHA-256 still matches the first records
    for (const rec of oldRecs) {
      const sha = createHash('sha256')
        .update(await readFile(join(dir, rec.archive_file)))
        .digest('hex');
      expect(sha).toBe(rec.archive_sha256);
    }
  });

  it('an archive whose directory is a file: exit 1, the partition kept', async () => {
    await seed('e1420000', 14, 5);
    const day = dayOf(Date.now() - 13 * DAY);
    const file = join(await tempDir('ag-ret-f-'), 'not-a-dir');
    await writeFile(file, 'x');
    const r = await runCli([
      'retention',
      '--database-url',
      t.url,
      '--older-than',
      olderThan(13),
      '--archive',
      file,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(file);
    expect(await partitions()).toContain(`audit_log_p${day.replaceAll('-', '')}`);
  });

  it('serve --retention --archive-dir removes old partitions at start while it ingests', async () => {
    await seed('e1430000', 20, 5);
    const day = dayOf(Date.now() - 19 * DAY);
    const dir = join(await tempDir('ag-ret-s-'), 'arch');
    const s = await startServe({
      databaseUrl: t.url,
      args: ['--retention', olderThan(19), '--archive-dir', dir, '--copy-min-rows', '1'],
    });
    const lines = Array.from({ length: 50 }, (_, i) =>
      entryLine(rid('e1440000', i), { timestamp: new Date().toISOString() }),
    );
    const sent = send(s.socket, `${lines.join('\n')}\n`, { ack: true });
    await waitFor(
      async () => !(await partitions()).includes(`audit_log_p${day.replaceAll('-', '')}`),
      'the partition to be removed',
      30_000,
    );
    const acks = (await sent).acks;
    expect(acks.filter((a) => a.ok)).toHaveLength(50);
    expect(await readdir(dir)).toContain(`audit_log-${day}.ndjson.gz`);
    expect(await s.stop()).toBe(0);
  });
});

describe('retention and verify (CONTRACT.md §9, §10)', () => {
  it('rows retention removed are reported as retention, not tampering; a kept row deleted among them is a fault', async () => {
    const db = await createTestDatabase('retverify');
    try {
      const writer = new BatchWriter(db.pool, silentLogger(), { chainId: 'ret-verify' });
      // Each batch mixes two old days and today, so the old days' ids are not one range: a row of
      // today has an id between removed ones.
      for (let round = 0; round < 4; round++) {
        const lines: string[] = [];
        for (const d of [9, 8, 0]) {
          for (let k = 0; k < 5; k++) {
            lines.push(
              entryLine(rid('e14b0000', round * 100 + d * 10 + k), {
                timestamp: new Date(Date.now() - d * DAY - k * 1000).toISOString(),
              }),
            );
          }
        }
        await writer.write(
          lines.map((l) => writeEntryOf(l)),
          [],
        );
      }
      const r = await runCli(['retention', '--database-url', db.url, '--older-than', olderThan(7)]);
      expect(r.code, r.stderr).toBe(0);
      const v = await runCli(['verify', '--database-url', db.url, '--output', 'json']);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      const report = JSON.parse(v.stdout) as { removedByRetention: number; faults: unknown[]; rows: number };
      expect(report.faults).toEqual([]);
      expect(report.removedByRetention).toBe(40);

      // a row of today whose id lies between removed ids, deleted by a superuser with triggers off
      const victim = (
        await db.query<{ id: string }>(
          `SELECT id::text FROM audit_log WHERE request_id::text LIKE 'e14b0000%' ORDER BY id LIMIT 1 OFFSET 10`,
        )
      ).rows[0]!.id;
      const removed = await db.query<{ lo: string; hi: string }>(
        'SELECT min(min_id)::text AS lo, max(max_id)::text AS hi FROM audit_retention',
      );
      expect(BigInt(victim)).toBeGreaterThan(BigInt(removed.rows[0]!.lo));
      expect(BigInt(victim)).toBeLessThan(BigInt(removed.rows[0]!.hi));
      const c = await db.pool.connect();
      try {
        await c.query('SET session_replication_role = replica');
        await c.query('DELETE FROM audit_log WHERE id = $1', [victim]);
        await c.query('RESET session_replication_role');
      } finally {
        c.release();
      }
      const v2 = await runCli(['verify', '--database-url', db.url, '--output', 'json']);
      expect(v2.code, v2.stdout + v2.stderr).toBe(3);
      const faults = (JSON.parse(v2.stdout) as { faults: { rowId?: string }[] }).faults;
      expect(faults.map((f) => f.rowId)).toContain(victim);
    } finally {
      await db.drop();
    }
  });
});
