/** CONTRACT.md §7 for the command line itself: a wrong command line exits 2 with one plain line. */
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/serve.js';

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
