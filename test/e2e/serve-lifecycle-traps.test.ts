/**
 * End to end: the known traps about the daemon's life cycle and about `migrate` (C19, C20, C21 of
 * test/fixtures/known-traps.md), each with the document's input, against the built binary.
 */
import { readdirSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  cleanupServes,
  exists,
  REPO,
  runBash,
  runCli,
  startServe,
  tempDir,
  trapBlocks,
  waitFor,
} from '../helpers/serve.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('e2e_life');
});

afterAll(async () => {
  await cleanupServes();
  await db?.drop();
});

async function count(sql: string): Promise<number> {
  return Number((await db.query<{ n: string }>(sql)).rows[0]!.n);
}

describe('life cycle', () => {
  it('C19 — SIGTERM right after a 50000-line client: drain, flush, exit 0; new connections refused', async () => {
    const s = await startServe({ databaseUrl: db.url });
    const lines = trapBlocks('C19', 'bash')[0]!.split('\n');
    const genEnd = lines.findIndex((l) => l.includes('> c19.ndjson'));
    const generate = lines.slice(0, genEnd + 1).join('\n');
    const sendAndTerm = lines.find((l) => l.startsWith('socat -u FILE:c19.ndjson'))!;
    expect(sendAndTerm).toContain('kill -TERM "$DAEMON_PID"');
    const r = await runBash(`cd "$DIR"\n${generate}\n${sendAndTerm}`, {
      SOCK: s.socket,
      DAEMON_PID: String(s.pid),
      DIR: s.dir,
    });
    expect(r.code, r.stderr).toBe(0);
    // once the daemon has taken the signal, a new connection is refused
    await s.waitForLog((l) => String(l.msg).startsWith('serve: stopping'), 10_000);
    const after = await runBash(`socat -u /dev/null UNIX-CONNECT:"$SOCK"; echo "connect_after_term_rc=$?"`, {
      SOCK: s.socket,
    });
    expect(after.stdout).toMatch(/connect_after_term_rc=[1-9]/);
    const { code } = await s.exited;
    expect(code).toBe(0);
    expect(await count(`SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'c1900000-%'`)).toBe(
      50_000,
    );
    expect(exists(s.socket)).toBe(false);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped');
    expect(stopped).toMatchObject({ received: 50_000, stored: 50_000, unwritten: 0 });
  });

  it('C20 — stale Unix socket after kill -9: the next serve replaces it, a third one refuses and leaves it', async () => {
    const dir = await tempDir();
    const sock = join(dir, 'ag-c20.sock');
    const p1 = await startServe({ databaseUrl: db.url, socket: sock, dataDir: join(dir, 'd1') });
    p1.proc.kill('SIGKILL');
    await p1.exited;
    expect((await lstat(sock)).isSocket()).toBe(true); // the stale file is still there
    const p2 = await startServe({ databaseUrl: db.url, socket: sock, dataDir: join(dir, 'd2') });
    expect(p2.logs().some((l) => /stale socket/.test(String(l.msg)) && l.socket === sock)).toBe(true);
    const third = await runCli(
      ['serve', '--database-url', db.url, '--socket', sock, '--data-dir', join(dir, 'd3')],
      {
        timeoutMs: 30_000,
      },
    );
    expect(third.code).not.toBe(0);
    expect(third.code).not.toBeNull();
    expect(third.stderr).toContain('socket in use by another process');
    expect(third.stderr).toContain(sock);
    const st = await lstat(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    const printf = trapBlocks('C20', 'bash')[0]!
      .split('\n')
      .find((l) => l.startsWith("printf '%s\\n'"))!;
    const r = await runBash(printf, { SOCK: sock });
    expect(r.code, r.stderr).toBe(0);
    const stored = await waitFor(
      async () =>
        (await count(
          `SELECT count(*) AS n FROM audit_log WHERE request_id = 'c2000000-0000-4000-8000-000000000001'`,
        )) === 1,
      'the C20 line',
      10_000,
    ).catch(() => false);
    expect(stored).toBe(true);
    expect(p2.alive).toBe(true);
    expect(await p2.stop()).toBe(0);
  });

  it('C20 — as in the trap, all three on the same (default) data dir: the third names the socket in use', async () => {
    const dir = await tempDir();
    const sock = join(dir, 'ag-c20.sock');
    const dataDir = join(dir, 'data');
    const p1 = await startServe({ databaseUrl: db.url, socket: sock, dataDir });
    p1.proc.kill('SIGKILL');
    await p1.exited;
    const p2 = await startServe({ databaseUrl: db.url, socket: sock, dataDir });
    expect(p2.logs().some((l) => /stale socket/.test(String(l.msg)))).toBe(true);
    const third = await runCli(['serve', '--database-url', db.url, '--socket', sock, '--data-dir', dataDir], {
      timeoutMs: 30_000,
    });
    expect(third.code).not.toBe(0);
    expect(third.stderr).toContain('socket in use by another process');
    expect((await lstat(sock)).isSocket()).toBe(true);
    expect(p2.alive).toBe(true);
    expect(await p2.stop()).toBe(0);
  });
});

describe('migrate', () => {
  it('C21 — two concurrent `migrate up` on a fresh database: both exit 0, one has nothing to do', async () => {
    const fresh = await createTestDatabase('e2e_c21', { migrated: false });
    try {
      const dir = await tempDir();
      const args = ['migrate', 'up', '--database-url', fresh.url, '--data-dir', dir];
      const [a, b] = await Promise.all([runCli(args), runCli(args)]);
      expect([a.code, b.code], a.stderr + b.stderr).toEqual([0, 0]);
      const outs = [a.stdout, b.stdout];
      expect(outs.filter((o) => o.includes('nothing to migrate'))).toHaveLength(1);
      const files = readdirSync(join(REPO, 'migrations'))
        .filter((f) => f.endsWith('.sql'))
        .map((f) => f.replace(/\.sql$/, ''));
      const applier = outs.find((o) => !o.includes('nothing to migrate'))!;
      for (const f of files) expect(applier).toContain(f);
      const dup = await fresh.query(
        `SELECT name, count(*) FROM pgmigrations GROUP BY name HAVING count(*) > 1`,
      );
      expect(dup.rows).toEqual([]);
      const invalid = await fresh.query(
        `SELECT indexrelid::regclass AS i FROM pg_index WHERE NOT indisvalid`,
      );
      expect(invalid.rows).toEqual([]);
      const names = await fresh.query<{ name: string }>(`SELECT name FROM pgmigrations ORDER BY name`);
      expect(names.rows.map((r) => r.name)).toEqual(files.sort());
    } finally {
      await fresh.drop();
    }
  });
});
