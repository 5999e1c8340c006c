/**
 * serve's log for people and machines (issue 12 item 4): pino-pretty lines on a terminal, JSON
 * lines otherwise (and with --log-format json), and the database it writes to named with the
 * password masked.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, childEnv, shq } from '../helpers/cli.js';
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

/**
 * Runs serve on a terminal (script) or into a pipe until it logs that it listens, then SIGINT;
 * returns what stderr showed. The shell writes its pid (then execs node) so the test signals
 * exactly that process.
 */
async function serveFor(tty: boolean, extra: string[] = []): Promise<string> {
  const url = t.url.replace('postgres@', 'postgres:hunter2@');
  const tag = `${tty}${extra.length}`;
  const pidFile = join(dir, `${tag}.pid`);
  const args = [
    'serve',
    '--database-url',
    url,
    '--socket',
    join(dir, `${tag}.sock`),
    '--data-dir',
    join(dir, tag),
    ...extra,
  ];
  const inner = `echo $$ > ${shq(pidFile)}; exec ${[process.execPath, BIN, ...args].map(shq).join(' ')} 2>&1`;
  const child = tty
    ? spawn('script', ['-qfec', `sh -c ${shq(inner)}`, '/dev/null'], { env: childEnv({ NO_COLOR: '1' }) })
    : spawn('sh', ['-c', inner], { env: childEnv() });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    out += d;
  });
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  const deadline = Date.now() + 60_000;
  while (!/serve: listening/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGINT');
  await closed;
  return out;
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
