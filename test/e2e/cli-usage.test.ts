/** CONTRACT.md §7 for the command line itself: a wrong command line exits 2 with one plain line. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { BIN, runBash, runCli } from '../helpers/serve.js';

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
