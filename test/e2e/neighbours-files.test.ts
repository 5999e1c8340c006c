/**
 * CONTRACT.md §4 "Neighbours", files (issue 10): the data dir, the spool and the pid file are
 * private to the user `serve` runs as, a file in the data dir is never followed through a symbolic
 * link, and a pid file naming a process that is not a running `serve` is stale.
 * The "other local user" is `nobody` (these tests run as root, as the attacker review did).
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  BIN,
  cleanEnv,
  cleanupServes,
  entryLine,
  rid,
  run,
  runCli,
  send,
  startServe,
  tempDir,
  waitFor,
} from '../helpers/serve.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('nbfiles');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

describe.skipIf(!isRoot)('private files in the data dir', () => {
  it('serve.pid planted as a symbolic link to a root-only file: the target is never written', async () => {
    const dir = await tempDir();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const target = join(dir, 'root-only');
    writeFileSync(target, 'keep me\n', { mode: 0o600 });
    symlinkSync(target, join(dataDir, 'serve.pid'));
    const s = await startServe({ databaseUrl: t.url, dataDir, socket: join(dir, 's.sock') });
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
    const pidFile = lstatSync(join(dataDir, 'serve.pid'));
    expect(pidFile.isFile()).toBe(true);
    expect(pidFile.mode & 0o777).toBe(0o600);
    expect(pidFile.uid).toBe(0);
    expect(readFileSync(join(dataDir, 'serve.pid'), 'utf8').split(' ')[0]).toBe(String(s.pid));
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(s.logs().some((l) => l.msg?.includes('stale pid file'))).toBe(true);
    expect(await s.stop()).toBe(0);
    expect(readFileSync(target, 'utf8')).toBe('keep me\n');
  });

  it('a data dir that another user owns is taken back: private to root, and that user can no longer write in it', async () => {
    const dir = await tempDir();
    chmodSync(dir, 0o755);
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o777 });
    chownSync(dataDir, NOBODY, NOBODY);
    const s = await startServe({ databaseUrl: t.url, dataDir, socket: join(dir, 's.sock') });
    const st = statSync(dataDir);
    expect(st.uid).toBe(0);
    expect(st.mode & 0o077).toBe(0);
    const spool = statSync(join(dataDir, 'spool'));
    expect([spool.uid, spool.mode & 0o777]).toEqual([0, 0o700]);
    const forge = await run('setpriv', [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      'sh',
      '-c',
      `ln -sf /etc/shadow ${dataDir}/serve.pid || echo > ${dataDir}/spool/spool-9999999999999999.seg`,
    ]);
    expect(forge.code).not.toBe(0);
    expect(lstatSync(join(dataDir, 'serve.pid')).isFile()).toBe(true);
    expect(await s.stop()).toBe(0);
  });

  it('a spool dir in the data dir that is a symbolic link is refused (exit 1, one line naming it)', async () => {
    const dir = await tempDir();
    const dataDir = join(dir, 'data');
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(dataDir, { mode: 0o700 });
    mkdirSync(elsewhere, { mode: 0o777 });
    symlinkSync(elsewhere, join(dataDir, 'spool'));
    const r = await runCli(
      ['serve', '--database-url', t.url, '--data-dir', dataDir, '--socket', join(dir, 's.sock')],
      { timeoutMs: 20_000 },
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--spool-dir .*spool: a symbolic link/);
  });

  it('as another user, a data dir owned by root is refused: it could read or forge what serve keeps', async () => {
    const dir = await tempDir();
    chmodSync(dir, 0o777);
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o777 });
    const r = await run(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        BIN,
        'serve',
        '--database-url',
        t.url,
        '--data-dir',
        dataDir,
        '--socket',
        join(dir, 's.sock'),
      ],
      { env: cleanEnv({ HOME: dir }) },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--data-dir .*owned by uid 0, not by this user \(uid 65534\)/);
  });
});

describe.skipIf(!isRoot)('the default socket', () => {
  it("another user cannot take it first: without XDG_RUNTIME_DIR it is in the data dir, which only serve's user can enter", async () => {
    const dir = await tempDir();
    chmodSync(dir, 0o755);
    const dataDir = join(dir, 'data');
    // nobody squats the old default, /tmp/audit-gateway.sock, with a live socket of its own
    const squat = spawn(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        'socat',
        'UNIX-LISTEN:/tmp/audit-gateway.sock,fork',
        'OPEN:/dev/null',
      ],
      { stdio: 'ignore' },
    );
    try {
      await waitFor(() => existsSync('/tmp/audit-gateway.sock'), 'the squatter socket');
      const s = await startServe({
        databaseUrl: t.url,
        dataDir,
        socket: join(dataDir, 'audit-gateway.sock'),
        defaultSocket: true,
        env: { XDG_RUNTIME_DIR: '' },
      });
      expect(lstatSync(s.socket).isSocket()).toBe(true);
      const { acks } = await send(s.socket, `${entryLine(rid('d4000000', 1))}\n`, { ack: true });
      expect(acks).toEqual([{ seq: 1, ok: true }]);
      // nobody cannot even reach it
      const probe = await run('setpriv', [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        'socat',
        '-u',
        'OPEN:/dev/null',
        `UNIX-CONNECT:${s.socket}`,
      ]);
      expect(probe.code).not.toBe(0);
      expect(probe.stderr).toMatch(/Permission denied/);
      expect(await s.stop()).toBe(0);
    } finally {
      squat.kill();
      rmSync('/tmp/audit-gateway.sock', { force: true });
    }
  });
});

describe('the pid file', () => {
  it('a pid file naming a pid that another program now has is stale: serve starts', async () => {
    const dir = await tempDir();
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      // the format of an older version (the pid alone), and of this one (pid and start time)
      for (const content of [`${other.pid}\n`, `${other.pid} 1\n`]) {
        writeFileSync(join(dataDir, 'serve.pid'), content, { mode: 0o600 });
        const s = await startServe({ databaseUrl: t.url, dataDir, socket: join(dir, 's.sock') });
        expect(s.logs().some((l) => l.msg?.includes('stale pid file'))).toBe(true);
        expect(await s.stop()).toBe(0);
      }
    } finally {
      other.kill();
    }
  });

  it('a second serve on the same data dir is refused while the first runs (exit 1, naming its pid)', async () => {
    const dir = await tempDir();
    const dataDir = join(dir, 'data');
    const s = await startServe({ databaseUrl: t.url, dataDir, socket: join(dir, 'a.sock') });
    const r = await runCli([
      'serve',
      '--database-url',
      t.url,
      '--data-dir',
      dataDir,
      '--socket',
      join(dir, 'b.sock'),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`already used by another 'audit-gateway serve' (pid ${s.pid})`);
    expect(await s.stop()).toBe(0);
  });
});
