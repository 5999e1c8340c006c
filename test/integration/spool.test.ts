/**
 * Damaged spool files at start-up (CONTRACT.md §4 "Leftover spool files are loaded at start-up";
 * src/ingest/spool.ts "Damage"): segments written with the spool's own `encodeRecord`, one with a
 * torn last record (a crash mid-write), one with a corrupt record in the middle. `serve` (the built
 * binary) must store every intact record once, skip the damaged ones with a log line, keep the
 * corrupt file as `.corrupt`, and keep running.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RejectRecord, WriteEntry } from '../../src/db/writer.js';
import { encodeRecord, SPOOL_MAGIC } from '../../src/ingest/spool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';
import { cleanupServes, type ServeProcess, send, startServe, tempDir, waitFor } from '../helpers/serve.js';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase('spool');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

const id = (tag: string, n: number) => `${tag}-0000-4000-8000-${n.toString().padStart(12, '0')}`;

function line(tag: string, n: number): string {
  return JSON.stringify({
    request_id: id(tag, n),
    timestamp: '2024-05-01T12:00:00.123456Z',
    client_subject: 'user:ada.example',
    client_role: 'analyst',
    tool_name: 'sql.query',
    backend_name: 'pg-reports',
    request_args: { q: `select ${n}`, big: '__BIG__' },
    response_status: 'ok',
    error_message: null,
    latency_ms: n,
    trace: { span: n },
  }).replace('"__BIG__"', '12345678901234567890123'); // a number no JS number holds
}

function entries(tag: string, from: number, to: number): WriteEntry[] {
  const out: WriteEntry[] = [];
  for (let n = from; n <= to; n++) out.push(writeEntryOf(line(tag, n), `test line ${n}`));
  return out;
}

function record(tag: string, from: number, to: number, rejects: RejectRecord[] = []): Buffer {
  return encodeRecord(entries(tag, from, to), rejects);
}

/** Stored request_ids with this tag, sorted, and how many rows they are. */
async function stored(tag: string): Promise<{ ids: string[]; rows: number }> {
  const r = await t.query<{ request_id: string }>(
    'SELECT request_id::text FROM audit_log WHERE request_id::text LIKE $1 ORDER BY request_id',
    [`${tag}-%`],
  );
  return { ids: [...new Set(r.rows.map((x) => x.request_id))], rows: r.rows.length };
}

const range = (tag: string, from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, k) => id(tag, from + k));

/** Writes the two damaged segments into a new spool dir and starts `serve` on it. */
async function serveOnDamagedSpool(tag: string): Promise<{ s: ServeProcess; spoolDir: string }> {
  const dir = await tempDir('ag-spool-');
  const spoolDir = join(dir, 'spool');
  await mkdir(spoolDir, { recursive: true });
  // Segment 1: records 1–3, 4–6 (with a validation reject), then 7–9 torn (cut mid-payload).
  const torn = record(tag, 7, 9);
  await writeFile(
    join(spoolDir, 'spool-0000000000000001.seg'),
    Buffer.concat([
      SPOOL_MAGIC,
      record(tag, 1, 3),
      record(tag, 4, 6, [
        { source: `${tag} reject`, reason: 'timestamp: test reject', raw: Buffer.from('{"x":1}') },
      ]),
      torn.subarray(0, torn.length - 40),
    ]),
  );
  // Segment 2: records 10–12, 13–15 with a flipped payload byte (bad CRC, length intact), 16–18.
  const bad = Buffer.from(record(tag, 13, 15));
  bad[bad.length - 20] = bad[bad.length - 20]! ^ 0xff;
  await writeFile(
    join(spoolDir, 'spool-0000000000000002.seg'),
    Buffer.concat([SPOOL_MAGIC, record(tag, 10, 12), bad, record(tag, 16, 18)]),
  );
  const s = await startServe({
    databaseUrl: t.url,
    dataDir: dir,
    socket: join(dir, 's.sock'),
    args: ['--log-level', 'info', '--spool-dir', spoolDir],
  });
  // Loaded: no segment file left (the corrupt one renamed).
  await waitFor(
    async () => (await readdir(spoolDir)).every((f) => !f.endsWith('.seg')),
    'the spool segments to be loaded',
    30_000,
    100,
  );
  return { s, spoolDir };
}

describe('serve on a damaged spool', () => {
  it('stores the intact records once, skips the torn tail and the corrupt record with a log line, keeps running', async () => {
    const tag = 'd5000000';
    const { s, spoolDir } = await serveOnDamagedSpool(tag);
    const got = await stored(tag);
    // Intact records before any damage: 1–6 and 10–12; the torn 7–9 and the corrupt 13–15 are not.
    for (const want of [...range(tag, 1, 6), ...range(tag, 10, 12)]) expect(got.ids).toContain(want);
    for (const lost of [...range(tag, 7, 9), ...range(tag, 13, 15)]) expect(got.ids).not.toContain(lost);
    expect(got.rows).toBe(got.ids.length);
    const rejects = await t.query<{ reason: string }>('SELECT reason FROM audit_reject WHERE source = $1', [
      `${tag} reject`,
    ]);
    expect(rejects.rows.map((r) => r.reason)).toEqual(['timestamp: test reject']);
    // The spooled columns come back as they went in (extra, big numbers, microseconds).
    const row = await t.query<{ a: string; e: unknown; us: string }>(
      `SELECT request_args::text AS a, extra AS e, to_char("timestamp" AT TIME ZONE 'UTC', 'US') AS us
         FROM audit_log WHERE request_id = $1`,
      [id(tag, 2)],
    );
    expect(row.rows[0]).toEqual({
      a: '{"q": "select 2", "big": 12345678901234567890123}',
      e: { trace: { span: 2 } },
      us: '123456',
    });

    const files = await readdir(spoolDir);
    expect(files).toEqual(['spool-0000000000000002.seg.corrupt']);
    const logs = s.logs();
    const tornLog = logs.find((l) => (l.level ?? 0) === 40 && /torn/.test(String(l.msg)));
    expect(tornLog?.file).toBe(join(spoolDir, 'spool-0000000000000001.seg'));
    expect(logs.some((l) => (l.level ?? 0) >= 50 && String(l.file ?? '').endsWith('.corrupt'))).toBe(true);

    // The daemon keeps running and takes new entries.
    expect(s.alive).toBe(true);
    const r = await send(s.socket, `${line(tag, 100)}\n`, { ack: true });
    expect(r.acks).toEqual([{ seq: 1, ok: true }]);
    expect((await stored(tag)).ids).toContain(id(tag, 100));
    expect(await s.stop()).toBe(0);
  });

  it('an intact record after a corrupt one (its length field intact, so the framing holds) is stored too', async () => {
    // Records 16–18 were acked from the spool; only 13–15 are damaged. Stopping at the bad CRC
    // loses 16–18 although they can be read, and `replay` of the .corrupt file stops there as well.
    const tag = 'd5100000';
    const { s } = await serveOnDamagedSpool(tag);
    const got = await stored(tag);
    expect(got.ids).toEqual(expect.arrayContaining(range(tag, 16, 18)));
    expect(got.ids).not.toContain(id(tag, 13));
    expect(got.rows).toBe(got.ids.length);
    expect(await s.stop()).toBe(0);
  });
});

describe('serve on a forged spool (CONTRACT §4: spool files are input)', () => {
  it('loads at start-up through the socket path: forged entries set aside and logged, secrets redacted', async () => {
    const tag = 'd5200000';
    const dir = await tempDir('ag-spool-forged-');
    const spoolDir = join(dir, 'spool');
    await mkdir(spoolDir, { recursive: true });
    const good = entries(tag, 1, 4).map((e) => e.copy.toString('utf8'));
    const cols = (n: number) => entries(tag, n, n)[0]!.copy.toString('utf8').slice(0, -1).split('\t');
    const infinity = cols(5);
    infinity[1] = 'infinity';
    const secret = cols(6);
    secret[6] = '{"Password":"hunter2","q":"x"}';
    const forged = [
      '\\.\n',
      `${infinity.join('\t')}\n`,
      `${secret.join('\t')}\n`,
      `${good[0]!.slice(0, -1)}\n${good[1]}`,
    ];
    const payload = Buffer.from(
      JSON.stringify({ v: 2, entries: [...good.slice(2), ...forged], rejects: [] }),
    );
    const head = Buffer.alloc(8);
    head.writeUInt32BE(payload.length, 0);
    head.writeUInt32BE(crc32(payload), 4);
    await writeFile(
      join(spoolDir, 'spool-0000000000000001.seg'),
      Buffer.concat([SPOOL_MAGIC, head, payload]),
    );
    const s = await startServe({
      databaseUrl: t.url,
      dataDir: dir,
      socket: join(dir, 's.sock'),
      args: ['--log-level', 'info', '--spool-dir', spoolDir],
    });
    await waitFor(
      async () => (await readdir(spoolDir)).every((f) => !f.endsWith('.seg')),
      'the spool segment to be loaded',
      30_000,
      100,
    );
    // 3, 4 and the redacted 6; not the two rows smuggled in one entry (1, 2), nor the infinite 5.
    expect((await stored(tag)).ids).toEqual([id(tag, 3), id(tag, 4), id(tag, 6)]);
    const args = await t.query<{ a: unknown }>(
      'SELECT request_args AS a FROM audit_log WHERE request_id = $1',
      [id(tag, 6)],
    );
    expect(args.rows[0]!.a).toEqual({ Password: '[REDACTED]', q: 'x' });
    const rejects = await t.query<{ reason: string }>(
      `SELECT reason FROM audit_reject WHERE source = 'spool:spool-0000000000000001.seg' ORDER BY id`,
    );
    expect(rejects.rows.map((r) => r.reason)).toEqual([
      'spool entry set aside: spool record: 1 columns, expected 11',
      'spool entry set aside: timestamp: not an RFC 3339 time with zone',
      'spool entry set aside: spool record: a raw newline inside an entry',
    ]);
    expect(
      s.logs().some((l) => (l.level ?? 0) >= 50 && /set aside/.test(String(l.msg)) && l.entries === 3),
    ).toBe(true);
    expect(await s.stop()).toBe(0);
  });
});
