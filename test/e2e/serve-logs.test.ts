/**
 * serve's log for people and machines (issue 12 item 4): pino-pretty lines on a terminal, JSON
 * lines otherwise (and with --log-format json), and the database it writes to named with the
 * password masked.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, runCommand, shq } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
let dir: string;

beforeAll(async () => {
  t = await createTestDatabase('logs');
  dir = await mkdtemp(join(tmpdir(), 'ag-logs-'));
});

afterAll(async () => {
  await t?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs serve for ~3 s (then SIGINT), on a terminal or into a pipe; returns what stderr showed. */
async function serveFor(tty: boolean, extra: string[] = []): Promise<string> {
  const url = t.url.replace('postgres@', 'postgres:hunter2@');
  const args = [
    'serve',
    '--database-url',
    url,
    '--socket',
    join(dir, `${tty}.sock`),
    '--data-dir',
    join(dir, String(tty)),
    ...extra,
  ];
  const cmd = `timeout -s INT 3 ${[process.execPath, BIN, ...args].map(shq).join(' ')}`;
  const r = tty
    ? await runCommand('script', ['-qfec', cmd, '/dev/null'], { env: { NO_COLOR: '1' } })
    : await runCommand('bash', ['-c', `${cmd} 2>&1`]);
  return r.stdout;
}

describe('serve logs', () => {
  it('on a terminal: readable lines, the database named with its password masked', async () => {
    const out = await serveFor(true);
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: writing entries to Postgres/m);
    expect(out).toMatch(/database: "postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1:5432\/ag_test_logs_/);
    expect(out).toMatch(/INFO: serve: listening/);
    expect(out).not.toContain('hunter2');
    expect(out).not.toMatch(/^\{"level"/m);
  });

  it('into a pipe, and with --log-format json on a terminal: JSON lines', async () => {
    for (const out of [await serveFor(false), await serveFor(true, ['--log-format', 'json'])]) {
      const lines = out.split(/\r?\n/).filter((l) => l.startsWith('{'));
      const db = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'writing entries to Postgres');
      expect(db.database).toMatch(/^postgres:\/\/postgres:\*\*\*\*@/);
      expect(out).not.toContain('hunter2');
    }
  });
});
