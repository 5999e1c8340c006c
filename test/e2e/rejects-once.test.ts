/**
 * audit_reject exactly once (CONTRACT.md §4 "none is stored twice"; issue 10: after a write whose
 * outcome was unknown every reject of the batch was stored twice, and replaying a file twice stored
 * its rejects twice). A proxy in front of the shared Postgres lets a COMMIT through and cuts the
 * connection before its reply: the batch is retried (through the spool) and must not add rows.
 */

import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RejectRecord } from '../../src/db/writer.js';
import { encodeRecord, readSegment, SPOOL_MAGIC } from '../../src/ingest/spool.js';
import { ADMIN_URL, createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { spoolFiles, startPgProxy, withPort } from '../helpers/ownPostgres.js';
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
  t = await createTestDatabase('rejonce');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

async function rejectCount(like: string): Promise<number> {
  const r = await t.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM audit_reject WHERE source LIKE $1',
    [like],
  );
  return Number(r.rows[0]!.n);
}

describe('audit_reject exactly once', () => {
  it('a batch with rejects whose COMMIT reply is lost is retried without storing its rejects again', async () => {
    const proxy = await startPgProxy(Number(new URL(ADMIN_URL).port || 5432));
    try {
      const s = await startServe({
        databaseUrl: withPort(t.url, proxy.port),
        args: ['--batch-size', '1000', '--copy-min-rows', '1000'],
        flushMs: 100,
      });
      const cut = proxy.cutAfterNextCommit();
      const lines: string[] = [];
      for (let i = 0; i < 20; i++) {
        lines.push(i % 4 === 0 ? `{"not an entry":${i}}` : entryLine(rid('c1000000', i)));
      }
      const { acks } = await send(s.socket, `${lines.join('\n')}\n`, { ack: true, timeoutMs: 60_000 });
      await cut;
      expect(proxy.cuts).toBeGreaterThan(0);
      expect(acks.map((a) => a.ok)).toEqual(lines.map((_, i) => i % 4 !== 0));
      // The retry went to the spool (acked from there); wait until the spool is loaded into Postgres.
      await waitFor(
        async () => (await spoolFiles(join(s.dataDir, 'spool'))).length === 0,
        'the spool to be loaded',
        60_000,
      );
      const bad = await rejectCount('unix#%');
      const good = await t.query<{ n: string }>(
        "SELECT count(*)::text AS n FROM audit_log WHERE request_id::text LIKE 'c1000000%'",
      );
      expect({ rejects: bad, stored: Number(good.rows[0]!.n) }).toEqual({ rejects: 5, stored: 15 });
      expect(await s.stop()).toBe(0);
      expect(await rejectCount('unix#%')).toBe(5);
    } finally {
      await proxy.close();
    }
  }, 90_000);

  it('replaying a file twice stores its rejects once', async () => {
    const dir = await tempDir();
    const file = join(dir, 'with-rejects.ndjson');
    await writeFile(
      file,
      `${entryLine(rid('c2000000', 1))}\n{"broken"\n${entryLine(rid('c2000000', 2))}\n[1,2]\n`,
    );
    for (let run = 0; run < 2; run++) {
      const r = await runCli(['replay', file, '--database-url', t.url]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect(await rejectCount(`replay:${file}:%`)).toBe(2);
  });

  it('a spooled reject keeps its key', () => {
    const before: RejectRecord[] = [
      { source: 'unix#1 line 1', reason: 'json: bad', raw: Buffer.from('{x'), key: randomUUID() },
      { source: 'unix#1 line 2', reason: 'json: bad', raw: Buffer.from([0xff, 0x00]), key: randomUUID() },
    ];
    const seg = Buffer.concat([SPOOL_MAGIC, encodeRecord([], before)]);
    expect(readSegment(seg, 'test').batches[0]!.rejects).toEqual(before);
  });
});
