/**
 * The configuration file and `audit-gateway config` (docs/configuration.md; issue 12 item 2), and how
 * the read commands find the database of a running `serve` (issue 12 "The read commands do not
 * find the daemon's database"), through the built binary: precedence flag > environment > file >
 * default, per-command tables, the default places ($XDG_CONFIG_HOME), typos and bad values as exit 2
 * naming the file and key, secrets masked; the bad --database-url forms and a database that does
 * not exist (CONTRACT.md §7).
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { cleanupServes, startServe } from '../helpers/serve.js';

let a: TestDatabase;
let b: TestDatabase;
let dir: string;

beforeAll(async () => {
  a = await createTestDatabase('cfga');
  b = await createTestDatabase('cfgb');
  for (const [t, n] of [
    [a, 3],
    [b, 5],
  ] as const) {
    await t.query(
      `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status)
       SELECT gen_random_uuid(), now(), 'alice', 'fs.read', 'success' FROM generate_series(1, ${n})`,
    );
  }
  dir = await mkdtemp(join(tmpdir(), 'ag-config-'));
});

afterAll(async () => {
  await cleanupServes?.();
  await a?.drop();
  await b?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const count = (stdout: string) =>
  (JSON.parse(stdout) as { count: number }[]).reduce((s, r) => s + r.count, 0);
/** An environment whose default config places are inside the test's dir. */
const xdg = (name: string) => ({ XDG_CONFIG_HOME: join(dir, name) });

describe('the configuration file', () => {
  it('database-url from the file; environment beats the file; the flag beats both', async () => {
    const file = join(dir, 'a.toml');
    writeFileSync(file, `database-url = "${a.url}"\n`);
    const fromFile = await run(['stats', '--config', file, '--output', 'json'], { env: xdg('none') });
    expect(fromFile.code, fromFile.stderr).toBe(0);
    expect(count(fromFile.stdout)).toBe(3);
    const fromEnv = await run(['stats', '--config', file, '--output', 'json'], {
      env: { ...xdg('none'), DATABASE_URL: b.url },
    });
    expect(count(fromEnv.stdout)).toBe(5);
    const fromFlag = await run(['stats', '--config', file, '--output', 'json', '--database-url', b.url], {
      env: { ...xdg('none'), AUDIT_GATEWAY_DATABASE_URL: a.url },
    });
    expect(count(fromFlag.stdout)).toBe(5);
  });

  it('found in $XDG_CONFIG_HOME/audit-gateway/config.toml; a [command] table beats the top level', async () => {
    await mkdir(join(dir, 'home1', 'audit-gateway'), { recursive: true });
    writeFileSync(
      join(dir, 'home1', 'audit-gateway', 'config.toml'),
      `database-url = "${b.url}"\n[search]\nlimit = 2\noutput = "ndjson"\n[stats]\nby = "subject"\n`,
    );
    const s = await run(['search'], { env: xdg('home1') });
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout.trim().split('\n')).toHaveLength(2);
    expect(s.stderr).toMatch(/more entries match than the 2 shown/);
    const st = await run(['stats', '--output', 'json'], { env: xdg('home1') });
    expect(JSON.parse(st.stdout)[0].group).toBe('alice');
  });

  it('switches: no-color = true, errors = true; repeatable flags take arrays', async () => {
    const file = join(dir, 'sw.toml');
    writeFileSync(file, `database-url = "${b.url}"\n[search]\nerrors = true\narg = ["k=1", "j=2"]\n`);
    const r = await run(['search', '--config', file, '--output', 'ndjson']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/no entries match/);
  });

  it('typos, bad values and a missing named file: exit 2, one line naming the file and the key', async () => {
    const serveArgs = ['--socket', join(dir, 'x.sock'), '--data-dir', dir];
    const cases: [string, string, RegExp][] = [
      ['search', 'databse-url = "x"\n', /unknown key 'databse-url'/],
      [
        'search',
        '[search]\nlimit = -1\n',
        /--limit: '-1' is not a whole number >= 0 \(set in config file .*\)/,
      ],
      [
        'search',
        '[search]\nsocket = "/x"\n',
        /\[search\] unknown key 'socket' \(that flag belongs to other commands\)/,
      ],
      ['stats', '[stats]\nby = "planet"\n', /--by: 'planet' is not one of .* \(set in config file/],
      [
        'search',
        'database-url = "127.0.0.1:5432"\n',
        /database-url: '127\.0\.0\.1:5432' is invalid: not a URL/,
      ],
      ['serve', '[serve]\nbatch-size = 0\n', /\[serve\] batch-size: '0' is invalid/],
      ['search', 'not toml ===\n', /not valid TOML/],
      ['search', '[output]\nx = 1\n', /\[output\] is a table, but no command is named output/],
    ];
    for (const [command, text, want] of cases) {
      const file = join(dir, 'bad.toml');
      writeFileSync(file, text);
      const url = text.includes('database-url') ? [] : ['--database-url', a.url];
      const extra = command === 'serve' ? serveArgs : [];
      const r = await run([command, '--config', file, ...url, ...extra], { timeoutMs: 10_000 });
      expect(r.stderr, text).toMatch(want);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(file);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    // a file others may change is refused, as ssh refuses its config
    const open = join(dir, 'open.toml');
    writeFileSync(open, `database-url = "${a.url}"\n`);
    chmodSync(open, 0o666);
    const w = await run(['search', '--config', open]);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/other users can change it .*mode 666.*chmod go-w/);
    const missing = await run(['search', '--config', join(dir, 'nope.toml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.toml \(--config\): cannot read it: no such file/);
  });

  it('config prints each setting and its source, the password masked', async () => {
    const file = join(dir, 'show.toml');
    writeFileSync(
      file,
      `database-url = "postgres://audit:hunter2@db.example:5432/audit"\n[serve]\nsocket = "/run/ag.sock"\n`,
    );
    const r = await run(['config', '--config', file, '--output', 'json'], {
      env: { AUDIT_GATEWAY_BATCH_SIZE: '77' },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('hunter2');
    const out = JSON.parse(r.stdout) as {
      config_file: { path: string };
      settings: { command: string; flag: string; value: unknown; source: string }[];
    };
    expect(out.config_file.path).toBe(file);
    expect((out as unknown as { database: string }).database).toBe(
      `postgres://audit:****@db.example:5432/audit (config ${file})`,
    );
    const get = (command: string, flag: string) =>
      out.settings.find((s) => s.command === command && s.flag === flag)!;
    expect(get('serve', '--database-url')).toEqual({
      command: 'serve',
      flag: '--database-url',
      value: 'postgres://audit:****@db.example:5432/audit',
      source: `config ${file}`,
    });
    expect(get('serve', '--socket').source).toBe(`config ${file} [serve]`);
    expect(get('tail', '--lines')).toMatchObject({ value: '10', source: 'default' });
    expect(get('serve', '--batch-size')).toMatchObject({ value: 77, source: 'env AUDIT_GATEWAY_BATCH_SIZE' });
    const text = await run(['config', 'serve', '--config', file]);
    expect(text.stdout).toMatch(/^config file: .*show\.toml \(chosen by --config\)/);
    expect(text.stdout).toMatch(/--socket +\/run\/ag\.sock +config .*\[serve\]/);
    expect(text.stdout).not.toMatch(/^search/m);
  });
});

describe('the bad --database-url forms and a database that does not exist (CONTRACT.md §7)', () => {
  it('host:port, a misspelt scheme: exit 2 naming the flag and the form', async () => {
    for (const url of ['127.0.0.1:5432', 'localhost:5432/audit', 'postgress://a@b/c', 'host=x dbname=y']) {
      const r = await run(['stats', '--database-url', url]);
      expect(r.code, url).toBe(2);
      expect(r.stderr).toMatch(/--database-url.*postgres:\/\/USER@/);
    }
  });

  it('the same from the environment variables, naming the variable', async () => {
    const a1 = await run(['stats'], { env: { AUDIT_GATEWAY_DATABASE_URL: '127.0.0.1:5432' } });
    expect(a1.code).toBe(2);
    expect(a1.stderr).toMatch(/from env 'AUDIT_GATEWAY_DATABASE_URL' is invalid\. not a URL/);
    const a2 = await run(['stats'], { env: { DATABASE_URL: 'postgress://x@y/z' } });
    expect(a2.code).toBe(2);
    expect(a2.stderr).toMatch(
      /^audit-gateway: DATABASE_URL: 'postgress:\/\/x@y\/z' is invalid for --database-url: unknown scheme 'postgress'/,
    );
  });

  it('a database that does not exist says so, exit 1', async () => {
    const u = new URL(a.url);
    u.pathname = '/no_such_database_here';
    const r = await run(['search', '--database-url', u.toString(), '--output', 'json']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/database "no_such_database_here" does not exist.*createdb/);
    expect(r.stderr).not.toMatch(/is it running/);
  });
});

describe('the read commands find the database of a running serve', () => {
  it('serve --database-url records it (no password, 0600); stats without a URL reads it and says so', async () => {
    const data = join(dir, 'data');
    await mkdir(data, { recursive: true, mode: 0o700 });
    const withPassword = a.url.replace('postgres@', 'postgres:s3cret@');
    const serve = await startServe({
      databaseUrl: withPassword,
      dataDir: data,
      socket: join(data, 's.sock'),
    });
    try {
      const file = join(data, 'serve-database.json');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, 'utf8')).not.toContain('s3cret');
      expect(
        serve
          .logs()
          .some((l) => l.msg === 'writing entries to Postgres' && String(l.database).includes('****')),
      ).toBe(true);
      const r = await run(['stats', '--data-dir', data, '--output', 'json'], { env: xdg('none') });
      expect(r.code, r.stderr).toBe(0);
      expect(count(r.stdout)).toBe(3);
      expect(r.stderr).toMatch(/reading the database of the running serve \(pid \d+\)/);
      // config names it too
      const cfg = await run(['config', 'search'], { env: { ...xdg('none'), AUDIT_GATEWAY_DATA_DIR: data } });
      expect(cfg.stdout).toMatch(
        /^database \(read commands\): postgres:\/\/postgres@127\.0\.0\.1:5432\/ag_test_cfga_\S+ \(the running serve, pid \d+\)$/m,
      );
      // a record another user could have written (writable by others) is not trusted
      chmodSync(file, 0o666);
      const untrusted = await run(
        ['stats', '--data-dir', data, '--output', 'json', '--log-level', 'silent'],
        {
          env: { ...xdg('none') },
          timeoutMs: 5000,
        },
      );
      expect(untrusted.stderr).not.toMatch(/reading the database of the running serve/);
      chmodSync(file, 0o600);
    } finally {
      expect(await serve.stop()).toBe(0);
    }
    expect(() => statSync(join(data, 'serve-database.json'))).toThrow();
  });
});
