/**
 * End to end: `serve` with no database URL at all runs the embedded Postgres in its data dir
 * (CONTRACT.md §2); the other commands reach the server that `serve` runs; SIGTERM stops both.
 * Slow (initdb): one test, with a long timeout.
 */
import { lstatSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import {
  cleanEnv,
  cleanupServes,
  entryLine,
  exists,
  expectedRow,
  ROW_SQL,
  run,
  runCli,
  type StoredRow,
  send,
  startServe,
  tempDir,
  waitFor,
  withoutTs,
} from '../helpers/serve.js';

afterAll(async () => {
  await cleanupServes();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe('the embedded default', () => {
  it('serve with no database URL: stores entries in the embedded Postgres, migrate status reaches it, SIGTERM stops both', async () => {
    const dir = await tempDir();
    const dataDir = join(dir, 'data');
    // no --database-url, and cleanEnv() drops DATABASE_URL and AUDIT_GATEWAY_* from the child env
    const env = { XDG_DATA_HOME: join(dir, 'xdg') };
    const s = await startServe({
      databaseUrl: null,
      dataDir,
      socket: join(dir, 's.sock'),
      env,
      startTimeoutMs: 100_000,
    });
    const line = entryLine('e0000000-0000-4000-8000-000000000001', { client_subject: 'embedded' });
    const { acks } = await send(s.socket, `${line}\n`, { ack: true });
    expect(acks).toEqual([{ seq: 1, ok: true }]);

    const status = await runCli(['migrate', 'status', '--data-dir', dataDir], {
      env: cleanEnv(env),
      timeoutMs: 60_000,
    });
    expect(status.code, status.stderr).toBe(0);
    const st = status.stdout.trim().split('\n');
    expect(st.length).toBeGreaterThanOrEqual(2);
    for (const l of st) expect(l).toMatch(/^applied\s+\d+_/);

    const pid = readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n');
    const postmaster = Number(pid[0]);
    const port = Number(pid[3]);
    const password = readFileSync(join(dataDir, 'password'), 'utf8').trim();
    const client = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password,
      database: 'postgres',
    });
    await client.connect();
    try {
      const r = await client.query<StoredRow>(
        `${ROW_SQL} WHERE request_id = 'e0000000-0000-4000-8000-000000000001'`,
      );
      expect(r.rows).toHaveLength(1);
      expect(withoutTs(r.rows[0]!)).toEqual(expectedRow(JSON.parse(line)));
    } finally {
      await client.end();
    }
    // migrate status left the server running for serve: a second entry is still stored
    const { acks: acks2 } = await send(s.socket, `${entryLine('e0000000-0000-4000-8000-000000000002')}\n`, {
      ack: true,
    });
    expect(acks2).toEqual([{ seq: 1, ok: true }]);
    expect(alive(postmaster)).toBe(true);

    if (process.getuid?.() === 0) {
      // As root the server runs as `postgres`, which owns pg/ only: the data dir stays root's, mode
      // 0710 group postgres, so that user cannot replace serve.pid or read the password (issue 10).
      const st = statSync(dataDir);
      expect([st.uid, st.mode & 0o777]).toEqual([0, 0o710]);
      for (const f of ['serve.pid', 'password']) {
        const fst = lstatSync(join(dataDir, f));
        expect([f, fst.isFile(), fst.uid, fst.mode & 0o777]).toEqual([f, true, 0, 0o600]);
      }
      const attack = await run('runuser', [
        '-u',
        'postgres',
        '--',
        'sh',
        '-c',
        `ln -sf /etc/shadow ${dataDir}/serve.pid || cat ${dataDir}/password || touch ${dataDir}/spool/x`,
      ]);
      expect(attack.code).not.toBe(0);
      expect(lstatSync(join(dataDir, 'serve.pid')).isFile()).toBe(true);
    }

    expect(await s.stop('SIGTERM', 60_000)).toBe(0);
    expect(exists(s.socket)).toBe(false);
    const gone = await waitFor(() => !alive(postmaster), 'the embedded postgres to exit', 10_000).catch(
      () => false,
    );
    expect(gone).toBe(true);
    expect(exists(join(dataDir, 'pg', 'postmaster.pid'))).toBe(false);
  }, 120_000);
});
