/**
 * `replay` and the spool loader on hostile and messy input (issue 9 part 3; issue 10 "Forged spool",
 * "Truncated gzip", "Slow trash"; issue 12 item 3), with the built binary and a real Postgres:
 * - a forged spool segment (`\.`, raw newlines, extra columns, an `infinity` timestamp, a field
 *   smuggled through extra or request_args, an unredacted secret) never injects into COPY: every
 *   entry is validated and redacted like a socket line, a bad one set aside in audit_reject;
 * - oversized lines in a gzip are rejected and the rest stored (bounded batches);
 * - a truncated gzip names the file and keeps the entries before the cut;
 * - blank lines cost one tight loop, not a callback each;
 * - a CSV export or a binary is refused, exit 1, nothing stored.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Damage, encodeRecord, SPOOL_MAGIC, scanSegment } from '../../src/ingest/spool.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';
import { BIN, cleanEnv, cleanupServes, type RunResult, run, tempDir } from '../helpers/serve.js';

let t: TestDatabase;
let dir: string;

beforeAll(async () => {
  t = await createTestDatabase('replayhostile');
  dir = await tempDir('ag-replay-hostile-');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

function replay(args: string[], input?: Buffer): Promise<RunResult> {
  return run(process.execPath, [BIN, 'replay', '--no-progress', '--database-url', t.url, ...args], {
    env: cleanEnv(),
    input,
    timeoutMs: 280_000,
  });
}

const id = (tag: string, n: number) => `${tag}-0000-4000-8000-${n.toString().padStart(12, '0')}`;
const entry = (tag: string, n: number, over: Record<string, unknown> = {}) =>
  JSON.stringify({
    request_id: id(tag, n),
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada',
    tool_name: 'sql.query',
    response_status: 'ok',
    request_args: { q: `select ${n}` },
    latency_ms: n,
    ...over,
  });

async function rows(tag: string): Promise<number> {
  const r = await t.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM audit_log WHERE request_id::text LIKE $1',
    [`${tag}-%`],
  );
  return Number(r.rows[0]!.n);
}

async function rejectsOf(sourceLike: string): Promise<{ reason: string; raw: Buffer }[]> {
  const r = await t.query<{ reason: string; raw: Buffer }>(
    'SELECT reason, raw FROM audit_reject WHERE source LIKE $1 ORDER BY id',
    [sourceLike],
  );
  return r.rows;
}

describe('a forged spool segment (CONTRACT §4: spool files are input)', () => {
  const tag = 'f9010000';
  const good = (n: number, over: Record<string, unknown> = {}) =>
    writeEntryOf(entry(tag, n, over), `seg ${n}`).copy.toString('utf8');
  const cols = (n: number) => good(n).slice(0, -1).split('\t');
  const forged = [
    // 0: the end-of-data marker alone, then a row after it
    '\\.\n',
    // 1: two rows in one entry (a raw newline), the second a valid-looking row
    `${good(101).slice(0, -1)}\n${good(102)}`,
    // 2: an "infinity" timestamp
    (() => {
      const c = cols(103);
      c[1] = 'infinity';
      return `${c.join('\t')}\n`;
    })(),
    // 3: a twelfth column
    `${good(104).slice(0, -1)}\textra-column\n`,
    // 4: a known field smuggled through extra
    (() => {
      const c = cols(105);
      c[10] = '{"tool_name":"forged"}';
      return `${c.join('\t')}\n`;
    })(),
    // 5: a member smuggled through request_args
    (() => {
      const c = cols(106);
      c[6] = '1,"response_status":"forged"';
      return `${c.join('\t')}\n`;
    })(),
    // 6: U+0000 by octal escape, and a secret not redacted: stored sanitised and redacted
    (() => {
      const c = cols(107);
      c[2] = 'a\\000b';
      c[6] = '{"password":"hunter2","q":1}';
      return `${c.join('\t')}\n`;
    })(),
    // 7: not a string at all (in the JSON payload)
    42 as unknown as string,
  ];

  function forgedSegment(): Buffer {
    const record = (entries: string[]) => {
      const payload = Buffer.from(JSON.stringify({ v: 2, entries, rejects: [] }));
      const head = Buffer.alloc(8);
      head.writeUInt32BE(payload.length, 0);
      // the CRC is a forger's to compute: the file is consistent, only its content lies
      head.writeUInt32BE(crc32(payload), 4);
      return Buffer.concat([head, payload]);
    };
    const valid = Array.from({ length: 5 }, (_, k) => good(k + 1));
    return Buffer.concat([
      SPOOL_MAGIC,
      record([...valid, ...forged]),
      encodeRecord([writeEntryOf(entry(tag, 6), 'seg 6')], []),
    ]);
  }

  it('scanSegment: every entry re-validated; the forged ones become rejects with a reason', () => {
    const damage: Damage = { damaged: 'none', skipped: 0, invalid: 0 };
    const batches = [...scanSegment(forgedSegment(), 'forged', damage)];
    const stored = batches.flatMap((b) => b.entries);
    const rejected = batches.flatMap((b) => b.rejects);
    // 5 + entry 6 + the sanitised/redacted 107
    expect(stored).toHaveLength(7);
    expect(damage.invalid).toBe(7);
    expect(rejected.map((r) => r.reason)).toEqual([
      expect.stringMatching(/^spool entry set aside: spool record: 1 columns, expected 11/),
      'spool entry set aside: spool record: a raw newline inside an entry',
      'spool entry set aside: timestamp: not an RFC 3339 time with zone',
      'spool entry set aside: spool record: 12 columns, expected 11',
      'spool entry set aside: extra: holds the known field tool_name',
      'spool entry set aside: request_args: not one JSON value',
      'spool entry set aside: not a string',
    ]);
    // Every stored COPY line is one row of 11 columns.
    for (const e of stored) {
      expect(e.copy.indexOf(0x0a)).toBe(e.copy.length - 1);
      expect(e.copy.toString().split('\t')).toHaveLength(11);
    }
    const s107 = stored.find((e) => e.copy.includes(id(tag, 107)))!.copy.toString();
    expect(s107).toContain('a\ufffdb');
    expect(s107).toContain('{"password":"[REDACTED]","q":1}');
  });

  it('replay of the forged file stores the true entries only, and says what it set aside', async () => {
    const file = join(dir, 'spool-0000000000000001.seg');
    await writeFile(file, forgedSegment());
    const r = await replay([file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'read 14, stored 7, skipped 0, rejected 7, 7 spooled entries set aside (failed validation)\n',
    );
    expect(await rows(tag)).toBe(7);
    const c = await t.query<{ client_subject: string; request_args: unknown; ts: string }>(
      `SELECT client_subject, request_args, timestamp::text AS ts FROM audit_log WHERE request_id = $1`,
      [id(tag, 107)],
    );
    expect(c.rows[0]).toMatchObject({
      client_subject: 'a\ufffdb',
      request_args: { password: '[REDACTED]', q: 1 },
    });
    // Nothing with a forged value or an infinite time got in.
    const bad = await t.query(
      `SELECT 1 FROM audit_log WHERE request_id::text LIKE $1 AND (tool_name = 'forged' OR response_status = 'forged' OR timestamp = 'infinity')`,
      [`${tag}-%`],
    );
    expect(bad.rowCount).toBe(0);
    expect(await rejectsOf(`replay:${file}`)).toHaveLength(7);
  });
});

describe('replay on oversized, damaged and blank input', () => {
  // The case had 1.2 MB lines over the default 1 MiB limit; the same shape at a 64 KiB limit
  // stores 20 MB of reject heads instead of 300 MB, so the suite stays fast on a loaded machine.
  it('300 lines over the limit in a gzip among 5 valid ones: the 5 stored, 300 rejected', async () => {
    const tag = 'f9020000';
    const big = `{"request_id":"x","pad":"${'y'.repeat(80 * 1024)}"}`;
    const lines: string[] = [];
    for (let k = 0; k < 300; k++) {
      lines.push(big);
      if (k % 60 === 0) lines.push(entry(tag, k));
    }
    const file = join(dir, 'oversized.ndjson.gz');
    await writeFile(file, gzipSync(`${lines.join('\n')}\n`));
    const r = await replay(['--max-line-bytes', '65536', file]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('read 305, stored 5, skipped 0, rejected 300\n');
    expect(await rows(tag)).toBe(5);
  });

  it('a truncated gzip: exit 1 naming the file; the entries before the cut are stored', async () => {
    const tag = 'f9030000';
    const text = Array.from({ length: 3000 }, (_, k) => entry(tag, k + 1)).join('\n');
    const gz = gzipSync(text);
    const file = join(dir, 'cut.ndjson.gz');
    await writeFile(file, gz.subarray(0, Math.floor(gz.length * 0.6)));
    const r = await replay(['--batch-size', '5000', file]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(file);
    expect(lines[0]).toMatch(/damaged gzip stream after line \d+/);
    const n = await rows(tag);
    // Everything up to the cut: more than half the file, though one batch was never full.
    expect(n).toBeGreaterThan(1000);
    expect(n).toBeLessThan(3000);
  });

  it('100 MB of blank lines (a 100 KB gzip) then one entry: read in one pass', async () => {
    const tag = 'f9040000';
    const blank = Buffer.alloc(100 * 1024 * 1024, 0x0a);
    const file = join(dir, 'blank.ndjson.gz');
    await writeFile(file, Buffer.concat([gzipSync(blank), gzipSync(`${entry(tag, 1)}\nnot json\n`)]));
    const r = await replay([file]);
    expect(r.stdout).toBe('read 2, stored 1, skipped 0, rejected 1\n');
    const rej = await t.query<{ source: string }>('SELECT source FROM audit_reject WHERE source LIKE $1', [
      `replay:${file}:%`,
    ]);
    expect(rej.rows.map((x) => x.source)).toEqual([`replay:${file}:${100 * 1024 * 1024 + 2}`]);
  });
});

describe('replay of a file that is not NDJSON (issue 12 item 3)', () => {
  it('a CSV export, a binary, a JSON array: exit 1, one line naming the file, nothing stored', async () => {
    const tag = 'f9050000';
    const csv = join(dir, 'export.csv');
    await writeFile(
      csv,
      `id,request_id,timestamp\n${Array.from({ length: 50 }, (_, k) => `${k},${id(tag, k)},2024-05-01T12:00:00Z`).join('\n')}\n${entry(tag, 999)}\n`,
    );
    const bin = join(dir, 'blob.bin');
    await writeFile(bin, Buffer.from(Array.from({ length: 4096 }, (_, k) => (k * 7919) % 256)));
    const arr = join(dir, 'array.json');
    await writeFile(arr, `[${entry(tag, 1)}]\n`);

    for (const f of [csv, bin, arr]) {
      const r = await replay([f]);
      expect(r.code, f).toBe(1);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`${f} is not NDJSON`);
    }
    // Also when the CSV comes after a good file: nothing of either is stored.
    const good = join(dir, 'good.ndjson');
    await writeFile(good, `${entry(tag, 1)}\n`);
    expect((await replay([good, csv])).code).toBe(1);
    expect(await rows(tag)).toBe(0);
    for (const f of [csv, bin, arr, good]) expect(await rejectsOf(`replay:${f}:%`), f).toEqual([]);
    // stdin: refused as it is read
    const s = await replay(['-'], Buffer.from('a,b,c\n1,2,3\n'));
    expect(s.code).toBe(1);
    expect(s.stderr).toContain('stdin is not NDJSON');
  });

  it('on a terminal, the summary is printed once (the progress line is cleared)', async () => {
    const tag = 'f9060000';
    const file = join(dir, 'tty.ndjson');
    await writeFile(file, `${Array.from({ length: 20 }, (_, k) => entry(tag, k + 1)).join('\n')}\n`);
    const cmd = [process.execPath, BIN, 'replay', '--database-url', t.url, file]
      .map((a) => `'${a.replaceAll("'", "'\\''")}'`)
      .join(' ');
    // script(1) gives the command a terminal on stdout and stderr.
    const r = await run('script', ['-qec', cmd, '/dev/null'], { env: cleanEnv(), timeoutMs: 60_000 });
    expect(r.code).toBe(0);
    // What the terminal shows: the progress line is cleared (ESC [K after a CR) and gone.
    const screen = r.stdout.split(/\r?\n/).map((l) =>
      l
        .split('\r')
        .at(-1)!
        .replace(/\x1b\[K/g, ''),
    );
    const shown = screen.filter((l) => l.includes('read 20, stored 20'));
    expect(shown).toEqual(['read 20, stored 20, skipped 0, rejected 0']);
  });
});
