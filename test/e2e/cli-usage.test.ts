/** CONTRACT.md §7 for the command line itself: a wrong command line exits 2 with one plain line. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { BIN, cleanEnv, runBash, runCli } from '../helpers/serve.js';

const cases: [string, string[], RegExp][] = [
  ['an unknown option', ['serve', '--bogus'], /unknown option '--bogus'/],
  [
    'an unknown migrate direction',
    ['migrate', 'sideways'],
    /migrate: unknown direction 'sideways' \(expected up, down or status\)/,
  ],
  ['replay without a file', ['replay'], /missing required argument 'files'/],
  ['a bad --listen', ['serve', '--listen', 'nowhere'], /--listen.*expected HOST:PORT/],
  [
    'a bad --shutdown-timeout',
    ['serve', '--shutdown-timeout', 'soon'],
    /--shutdown-timeout.*expected a duration/,
  ],
  ['an unknown command', ['serf'], /unknown command 'serf'/],
  // One UUID grammar (entry/grammar.ts): braces come in pairs, as Postgres' uuid_in reads them.
  [
    'a --request-id with an unbalanced brace',
    ['search', '--request-id', '{c0100000-0000-4000-8000-000000000001'],
    /--request-id: '\{c0100000-0000-4000-8000-000000000001' is not a UUID/,
  ],
  [
    'a --request-id with only a closing brace',
    ['search', '--request-id', 'c0100000-0000-4000-8000-000000000001}'],
    /--request-id: .* is not a UUID/,
  ],
  // issue 10: `--listen 7070` became host 707 port 0, `--listen 00` bound 0.0.0.0
  ['--listen 7070 (no colon)', ['serve', '--listen', '7070'], /--listen.*'7070'.*expected HOST:PORT/],
  ['--listen 00', ['serve', '--listen', '00'], /--listen.*'00'.*expected HOST:PORT/],
  ['--listen :0', ['serve', '--listen', ':0'], /--listen.*port from 1 to 65535/],
  ['--listen :65536', ['serve', '--listen', ':65536'], /--listen.*port from 1 to 65535/],
  ['--metrics-listen 9090', ['serve', '--metrics-listen', '9090'], /--metrics-listen.*expected HOST:PORT/],
  ...(
    [
      ['--batch-size', '0x10'],
      ['--batch-size', '1e3'],
      ['--max-write-entries', '0'],
      ['--flush-ms', '-1'],
      ['--flush-ms', '3000000000'],
      ['--max-queue', ' 5'],
      ['--max-queue-bytes', '8MiB'],
      ['--max-line-bytes', '10'],
      ['--max-spool-bytes', '1.5'],
      ['--max-connections', '0'],
      ['--copy-min-rows', ''],
      ['--write-timeout', '0'],
      ['--write-timeout', '30d'],
      ['--shutdown-timeout', '99999999m'],
    ] as const
  ).map(([flag, value]): [string, string[], RegExp] => [
    `${flag} ${JSON.stringify(value)}`,
    ['serve', flag, value],
    new RegExp(`${flag}.*expected`),
  ]),
];

describe('usage errors', () => {
  for (const [name, args, message] of cases) {
    it(`${name}: exit 2, one line naming it`, async () => {
      const r = await runCli([...args, '--database-url', 'postgres://127.0.0.1:1/x']);
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }
});

describe('usage errors from the environment', () => {
  it('AUDIT_GATEWAY_LISTEN=7070: exit 2, one line naming the flag', async () => {
    const r = await runCli(['serve', '--database-url', 'postgres://127.0.0.1:1/x'], {
      env: cleanEnv({ AUDIT_GATEWAY_LISTEN: '7070' }),
    });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--listen.*expected HOST:PORT/);
  });
});

describe('errors that name the fix', () => {
  it('a command on a database without the schema says to run migrate (exit 1, one line)', async () => {
    const t = await createTestDatabase('cli_nomig', { migrated: false });
    try {
      const file = join(await mkdtemp(join(tmpdir(), 'ag-cli-')), 'one.ndjson');
      await writeFile(
        file,
        '{"request_id":"c0000000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"a","tool_name":"t","response_status":"ok"}\n',
      );
      for (const args of [
        ['replay', file],
        ['search', '--output', 'ndjson'],
      ]) {
        const r = await runCli([...args, '--database-url', t.url]);
        expect(r.code, args[0]).toBe(1);
        const lines = r.stderr.trim().split('\n');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(
          /audit_log.*run `audit-gateway migrate` first \(with the same --database-url/,
        );
      }
    } finally {
      await t.drop();
    }
  });

  it('help piped into head ends quietly (no EPIPE stack trace)', async () => {
    const r = await runBash(`"$NODE" "$BIN" migrate --help | head -1; echo "status \${PIPESTATUS[0]}"`, {
      NODE: process.execPath,
      BIN,
    });
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(r.stdout).toMatch(/status 0/);
  });
});
