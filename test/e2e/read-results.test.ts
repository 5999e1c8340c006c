/**
 * What the read commands print when the result is cut, empty or fails (CONTRACT.md §5, §7; issue 12
 * "Wrong results", issue 10 "export --output" and "forged infinity"): search's limit note on stderr,
 * an empty result said on stderr, no partial output before an error, `export --output` whole or
 * not at all (mode 0600, an existing file kept, a symbolic link replaced and its target untouched),
 * and stored `infinity` timestamps shown, not crashed on.
 */
import { lstatSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, run, runCommand, runInPty } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
let bare: TestDatabase;
let dir: string;
const DOWN = 'postgres://postgres@127.0.0.1:1/nothing';

beforeAll(async () => {
  t = await createTestDatabase('results');
  bare = await createTestDatabase('resultsbare', { migrated: false });
  dir = await mkdtemp(join(tmpdir(), 'ag-results-'));
  await t.query(
    `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status, latency_ms)
     SELECT gen_random_uuid(), now() - g * interval '1 minute', 'alice', 'fs.read',
            CASE WHEN g % 2 = 0 THEN 'error' ELSE 'success' END, g
       FROM generate_series(1, 228) g`,
  );
});

afterAll(async () => {
  await t?.drop();
  await bare?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('search says when --limit cut the result', () => {
  it('json: 100 of 228 shown, the note on stderr; stdout stays the data', async () => {
    const r = await run(['search', '--database-url', t.url, '--output', 'json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveLength(100);
    expect(r.stderr).toMatch(/more entries match than the 100 shown \(--limit 100\)/);
  });

  it('no note when everything matching is shown (limit equal to the count, and above)', async () => {
    for (const limit of ['228', '229']) {
      const r = await run(['search', '--database-url', t.url, '--output', 'ndjson', '--limit', limit]);
      expect(r.stdout.trim().split('\n')).toHaveLength(228);
      expect(r.stderr).toBe('');
    }
    const e = await run(['search', '--database-url', t.url, '--errors', '--limit', '114', '--output', 'csv']);
    expect(e.stdout.trim().split('\r\n')).toHaveLength(115);
    expect(e.stderr).toBe('');
  });

  it('table: the note too, and an empty result is said on stderr with nothing on stdout', async () => {
    const r = await runInPty(['search', '--database-url', t.url, '--limit', '3']);
    expect(r.stdout).toMatch(/more entries match than the 3 shown/);
    for (const [output, want] of [
      ['table', ''],
      ['ndjson', ''],
      ['json', '[]\n'],
      ['csv', /^id,request_id,[^\n]*\r\n$/],
    ] as const) {
      const e = await run(['search', '--database-url', t.url, '--subject', 'nobody', '--output', output]);
      expect(e.code).toBe(0);
      if (typeof want === 'string') expect(e.stdout).toBe(want);
      else expect(e.stdout).toMatch(want); // a CSV keeps its header row
      expect(e.stderr).toMatch(/no entries match/);
    }
  });
});

describe('a failed query leaves stdout empty', () => {
  it('search json/csv/ndjson and export csv on a database without the schema: exit 1, nothing on stdout', async () => {
    for (const args of [
      ['search', '--output', 'json'],
      ['search', '--output', 'csv'],
      ['search', '--output', 'ndjson'],
      ['export', '--format', 'csv'],
      ['export'],
    ]) {
      const r = await run([...args, '--database-url', bare.url]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr).toMatch(/run `audit-gateway migrate`/);
    }
  });
});

describe('export --output FILE: whole or not at all (CONTRACT.md §7)', () => {
  it('an existing FILE survives an unreachable database, and no partial file is left beside it', async () => {
    const file = join(dir, 'keep.ndjson');
    writeFileSync(file, 'precious\n');
    const r = await run(['export', '--database-url', DOWN, '--output', file]);
    expect(r.code).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe('precious\n');
    expect((await readdir(dir)).filter((f) => f.includes('keep'))).toEqual(['keep.ndjson']);
    const bad = await run(['export', '--database-url', bare.url, '--output', file]);
    expect(bad.code).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe('precious\n');
  });

  it('a new file has mode 0600 and the whole export; .gz is gzip', async () => {
    const file = join(dir, 'new.ndjson');
    const r = await run(['export', '--database-url', t.url, '--output', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(228);
  });

  it('a symbolic link at FILE is replaced; its target is never written', async () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'root only\n');
    const link = join(dir, 'link.ndjson');
    symlinkSync(victim, link);
    const r = await run(['export', '--database-url', t.url, '--output', link]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('root only\n');
    expect(lstatSync(link).isSymbolicLink()).toBe(false);
    expect(readFileSync(link, 'utf8').trim().split('\n')).toHaveLength(228);
    // a dangling link is replaced too, never followed into a new file
    const dangling = join(dir, 'dangling.ndjson');
    symlinkSync(join(dir, 'created-through-link'), dangling);
    expect(readlinkSync(dangling)).toContain('created-through-link');
    const d = await run(['export', '--database-url', t.url, '--output', dangling]);
    expect(d.code).toBe(0);
    expect((await readdir(dir)).includes('created-through-link')).toBe(false);
  });

  it('a FIFO or /dev/stdout is written as a stream, never replaced by a file', async () => {
    const fifo = join(dir, 'fifo');
    await runCommand('mkfifo', [fifo]);
    const r = await runCommand('bash', [
      '-c',
      `cat ${fifo} > ${fifo}.out & ${process.execPath} ${BIN} export --database-url ${t.url} --output ${fifo}; wait`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    expect(readFileSync(`${fifo}.out`, 'utf8').trim().split('\n')).toHaveLength(228);
    const out = await run(['export', '--database-url', t.url, '--output', '/dev/stdout']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.trim().split('\n')).toHaveLength(228);
    expect(lstatSync('/dev/stdout').isSymbolicLink()).toBe(true);
  });

  it('a directory that does not exist: exit 1 naming --output and the file', async () => {
    const r = await run(['export', '--database-url', t.url, '--output', join(dir, 'no', 'such.ndjson')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^audit-gateway: --output: cannot write '.*no\/such\.ndjson'/);
  });
});

describe('a stored infinity timestamp (forged by a superuser) is shown, never crashed on', () => {
  beforeAll(async () => {
    // No day's partition holds ±infinity (CONTRACT.md §10): the superuser forges those too.
    await t.query(
      `CREATE TABLE forged_pinf PARTITION OF audit_log FOR VALUES FROM ('infinity') TO (MAXVALUE)`,
    );
    await t.query(
      `CREATE TABLE forged_minf PARTITION OF audit_log FOR VALUES FROM ('-infinity') TO ('1900-01-01')`,
    );
    await t.query(
      `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status)
       VALUES ('f0000000-0000-4000-8000-000000000001', 'infinity', 'mallory', 'x', 'success'),
              ('f0000000-0000-4000-8000-000000000002', '-infinity', 'mallory', 'x', 'success')`,
    );
  });

  it('tail and search (text, table, json, csv) print it as infinity / -infinity', async () => {
    const base = ['--database-url', t.url, '--subject', 'mallory'];
    const json = await run(['search', ...base, '--output', 'ndjson']);
    expect(json.code, json.stderr).toBe(0);
    expect(
      json.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).timestamp),
    ).toEqual(['infinity', '-infinity']);
    const table = await runInPty(['search', ...base]);
    expect(table.stdout).toMatch(/infinity/);
    expect(table.stdout).not.toMatch(/TypeError|Error/);
    const text = await run(['tail', ...base, '--no-follow']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^-infinity .*\n^infinity /m);
    const csv = await run(['search', ...base, '--output', 'csv']);
    expect(csv.stdout).toMatch(/,infinity,/);
  });
});
