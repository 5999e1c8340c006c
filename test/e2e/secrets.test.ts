/**
 * Secrets out of `ps` (CONTRACT.md §4 "Neighbours", issue 10): a --database-url with a password is
 * accepted with a warning; the environment variable keeps it private and draws none.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { urlHasPassword } from '../../src/cli/common.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { cleanupServes, entryLine, rid, send, startServe } from '../helpers/serve.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('secrets');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

/** The test database's URL with a password (the shared server trusts local connections). */
function withPassword(url: string): string {
  const u = new URL(url);
  u.password = 'hunter2';
  return u.toString();
}

const WARNING = /--database-url carries a password.*ps.*AUDIT_GATEWAY_DATABASE_URL.*PGPASSWORD.*~\/\.pgpass/;

describe('a password on the command line', () => {
  it('--database-url with a password: serve warns, never prints the password, and works', async () => {
    const s = await startServe({ databaseUrl: withPassword(t.url) });
    const warning = s.logs().find((l) => WARNING.test(String(l.msg)));
    expect(warning?.level).toBe(40);
    expect(s.stderrLines.join('\n')).not.toContain('hunter2');
    // once started, ps no longer shows it either (the process title overwrites argv)
    expect(readFileSync(`/proc/${s.pid}/cmdline`, 'utf8')).not.toContain('hunter2');
    const { acks } = await send(s.socket, `${entryLine(rid('e3000000', 1))}\n`, { ack: true });
    expect(acks).toEqual([{ seq: 1, ok: true }]);
    expect(await s.stop()).toBe(0);
  });

  it('the same URL in AUDIT_GATEWAY_DATABASE_URL: no warning', async () => {
    const s = await startServe({
      databaseUrl: null,
      env: { AUDIT_GATEWAY_DATABASE_URL: withPassword(t.url) },
    });
    expect(s.logs().some((l) => WARNING.test(String(l.msg)))).toBe(false);
    expect(await s.stop()).toBe(0);
  });

  it.each([
    ['postgres://u:pw@h/db', true],
    ['postgres://u@h/db?password=pw', true],
    ['host=h user=u password=pw', true],
    ['postgres://u@h/db', false],
    ['postgres://h/db?sslmode=require', false],
    ['host=h user=u', false],
  ])('%j has a password: %s', (url, has) => {
    expect(urlHasPassword(url)).toBe(has);
  });
});
