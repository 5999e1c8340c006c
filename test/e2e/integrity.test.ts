/**
 * End to end, CONTRACT.md §9 with the built binary: two `serve` daemons on one database (two
 * chains, no fork), a daemon killed with -9 mid-stream, signed checkpoints (key made 0600 at
 * first start, signing-key.pub, the checkpoint file, at an interval with activity and at
 * shutdown), and `verify` itself: exit 0/3/1, text and json, pinned keys, the checkpoint file and
 * the incremental cursor.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSigningKey } from '../../src/integrity/checkpoint.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { faultLine, requestId, streamLines } from '../helpers/ownPostgres.js';
import { cleanupServes, runCli, startServe, tempDir, waitFor } from '../helpers/serve.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase('e2e_integrity');
});
afterAll(async () => {
  await cleanupServes();
  await db?.drop();
});

async function verify(args: string[] = []) {
  return runCli(['verify', '--database-url', db.url, ...args]);
}
async function rows(): Promise<number> {
  return Number((await db.query('SELECT count(*) AS n FROM audit_log')).rows[0]!.n);
}

describe('serve binds every batch into its chain and signs checkpoints', () => {
  let dirs: string[] = [];

  it('two daemons on one database: two chains, no fork, verify 0 with the pinned keys and checkpoint files', async () => {
    const a = await startServe({
      databaseUrl: db.url,
      args: ['--checkpoint-interval', '200ms', '--batch-size', '100'],
    });
    const b = await startServe({
      databaseUrl: db.url,
      args: ['--checkpoint-interval', '200ms', '--batch-size', '100'],
    });
    dirs = [a.dataDir, b.dataDir];
    const N = 3000;
    const sa = streamLines(a.socket, N, (i) => faultLine('1e000001', i), {
      ack: true,
      chunk: 100,
      paceMs: 5,
    });
    const sb = streamLines(b.socket, N, (i) => faultLine('1e000002', i), {
      ack: true,
      chunk: 100,
      paceMs: 5,
    });
    await Promise.all([sa.done, sb.done]);
    expect(sa.okSeqs.size + sb.okSeqs.size).toBe(2 * N);
    // a checkpoint at an interval with activity, before any shutdown
    await waitFor(
      async () => Number((await db.query('SELECT count(*) AS n FROM audit_checkpoint')).rows[0]!.n) >= 2,
      'checkpoints while running',
      15_000,
    );
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
    expect(await rows()).toBe(2 * N);
    const chains = await db.query(`SELECT chain_id, head_seq::int AS s FROM audit_chain ORDER BY chain_id`);
    expect(chains.rows).toHaveLength(2);
    for (const c of chains.rows) expect(c.s).toBeGreaterThan(1);
    for (const d of dirs) {
      expect((await stat(join(d, 'signing-key'))).mode & 0o777).toBe(0o600);
      expect(await readFile(join(d, 'signing-key.pub'), 'utf8')).toMatch(/BEGIN PUBLIC KEY/);
      expect(
        (await readFile(join(d, 'checkpoints.log'), 'utf8')).trim().split('\n').length,
      ).toBeGreaterThanOrEqual(2);
    }
    const plain = await verify();
    expect(plain.code, plain.stdout + plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/intact: 2 chain\(s\), \d+ batch\(es\), 6000 row\(s\)/);
    expect(plain.stdout).toMatch(/keys were read from the database/);
    const pinned = await verify([
      ...dirs.flatMap((d) => ['--public-key', join(d, 'signing-key.pub')]),
      '--checkpoints',
      join(dirs[0]!, 'checkpoints.log'),
      '--output',
      'json',
    ]);
    expect(pinned.code, pinned.stdout + pinned.stderr).toBe(0);
    const report = JSON.parse(pinned.stdout);
    expect(report).toMatchObject({ ok: true, chains: 2, rows: 6000, keys: 'pinned', faults: [] });
  });

  it('a checkpoint signed by a key that --public-key does not name is a fault (exit 3)', async () => {
    const other = join(await tempDir(), 'other.pub');
    await writeFile(other, newSigningKey().publicPem);
    const r = await verify(['--public-key', other]);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/FAULT checkpoint_unknown_key/);
  });

  it('a daemon killed with -9 mid-stream leaves no partial batch: verify 0, and the restarted daemon goes on', async () => {
    const dir = await tempDir();
    const s = await startServe({ databaseUrl: db.url, dataDir: dir, args: ['--batch-size', '50'] });
    const st = streamLines(s.socket, 20_000, (i) => faultLine('1e000003', i), {
      ack: true,
      chunk: 50,
      paceMs: 1,
    });
    await waitFor(() => st.okSeqs.size >= 1000, '1000 acks', 30_000);
    s.proc.kill('SIGKILL');
    await s.exited;
    await st.done.catch(() => {});
    const r = await verify();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s2 = await startServe({ databaseUrl: db.url, dataDir: dir, args: ['--batch-size', '50'] });
    const st2 = streamLines(s2.socket, 500, (i) => faultLine('1e000004', i), { ack: true });
    await st2.done;
    expect(await s2.stop()).toBe(0);
    const r2 = await verify();
    expect(r2.code, r2.stdout + r2.stderr).toBe(0);
  });
});

describe('--signing-key', () => {
  it('a key brought with --signing-key signs the checkpoints; a file that is no Ed25519 key is exit 1 in one line', async () => {
    const dir = await tempDir();
    const pair = newSigningKey();
    await writeFile(join(dir, 'mine.pem'), pair.privatePem, { mode: 0o600 });
    await writeFile(join(dir, 'mine.pub'), pair.publicPem);
    const s = await startServe({ databaseUrl: db.url, args: ['--signing-key', join(dir, 'mine.pem')] });
    await streamLines(s.socket, 50, (i) => faultLine('1e000007', i), { ack: true }).done;
    expect(await s.stop()).toBe(0);
    const mine = await db.query(`SELECT line FROM audit_checkpoint ORDER BY id DESC LIMIT 1`);
    const { publicKeyOf, rawPublicKey } = await import('../../src/integrity/checkpoint.js');
    expect(JSON.parse(mine.rows[0]!.line).public_key).toBe(rawPublicKey(publicKeyOf(pair.publicPem)));
    await expect(stat(join(s.dataDir, 'signing-key'))).rejects.toThrow(); // none made
    await writeFile(join(dir, 'bad.pem'), 'not a key\n');
    const bad = await runCli([
      'serve',
      '--database-url',
      db.url,
      '--socket',
      join(dir, 'b.sock'),
      '--data-dir',
      dir,
      '--signing-key',
      join(dir, 'bad.pem'),
    ]);
    expect(bad.code).toBe(1);
    expect(
      bad.stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('{')),
    ).toEqual([expect.stringMatching(/--signing-key .*bad\.pem: not an Ed25519 private key/)]);
  });
});

describe('verify', () => {
  it('names a changed row by chain, batch and row id (exit 3, text and json); 1 when it cannot check', async () => {
    const victim = (
      await db.query(`SELECT id::text FROM audit_log WHERE request_id = $1`, [requestId('1e000001', 7)])
    ).rows[0]!.id;
    const batch = (
      await db.query(
        `SELECT chain_id, seq::text FROM audit_batch WHERE $1::bigint BETWEEN first_id AND last_id AND kind = 'write' AND ids ~ '.'`,
        [victim],
      )
    ).rows;
    await db.query(
      `SET session_replication_role = replica; UPDATE audit_log SET response_status = 'error' WHERE id = ${victim}; RESET session_replication_role`,
    );
    const text = await verify();
    expect(text.code).toBe(3);
    expect(text.stdout).toMatch(new RegExp(`FAULT row_changed: row ${victim} \\(chain \\S+ batch \\d+\\)`));
    const json = await verify(['--output', 'json']);
    expect(json.code).toBe(3);
    const faults = JSON.parse(json.stdout).faults;
    expect(faults).toHaveLength(1);
    expect(faults[0]).toMatchObject({ kind: 'row_changed', rowId: victim });
    expect(batch.some((b) => b.chain_id === faults[0].chain && b.seq === faults[0].seq)).toBe(true);
    await db.query(
      `SET session_replication_role = replica; UPDATE audit_log SET response_status = 'ok' WHERE id = ${victim}; RESET session_replication_role`,
    );
    expect((await verify()).code).toBe(0);
    const down = await runCli(['verify', '--database-url', 'postgres://postgres@127.0.0.1:1/none']);
    expect(down.code).toBe(1);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('incremental with --cursor: a second run checks only what is new, and notices an old batch rewritten', async () => {
    const cursor = join(await tempDir(), 'cursor.json');
    const first = await verify(['--cursor', cursor, '--output', 'json']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).mode).toBe('full');
    const second = await verify(['--cursor', cursor, '--output', 'json']);
    expect(second.code).toBe(0);
    const r2 = JSON.parse(second.stdout);
    expect(r2.mode).toBe('incremental');
    expect(r2.rows).toBe(0);
    const s = await startServe({ databaseUrl: db.url, args: ['--batch-size', '100'] });
    await streamLines(s.socket, 300, (i) => faultLine('1e000005', i), { ack: true }).done;
    expect(await s.stop()).toBe(0);
    const third = JSON.parse((await verify(['--cursor', cursor, '--output', 'json'])).stdout);
    expect(third).toMatchObject({ ok: true, mode: 'incremental', rows: 300 });
    // an old batch rewritten after the cursor saw it
    await db.query(
      `SET session_replication_role = replica; UPDATE audit_batch SET hash = sha256(hash) WHERE (chain_id, seq) = (SELECT chain_id, head_seq FROM audit_chain ORDER BY chain_id LIMIT 1); RESET session_replication_role`,
    );
    const fourth = await verify(['--cursor', cursor]);
    expect(fourth.code).toBe(3);
    expect(fourth.stdout).toMatch(/FAULT cursor_mismatch/);
  });
});

describe('export --proofs and verify --export', () => {
  let edb: TestDatabase;
  let pub: string;
  let dir: string;
  beforeAll(async () => {
    edb = await createTestDatabase('e2e_proofs');
    const s = await startServe({ databaseUrl: edb.url, args: ['--batch-size', '64'] });
    pub = join(s.dataDir, 'signing-key.pub');
    const subjects = ['alice', 'bob', 'carol'];
    await streamLines(
      s.socket,
      600,
      (i) =>
        `${JSON.stringify({
          request_id: requestId('1e000006', i),
          timestamp: `2024-05-01T12:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}.123456Z`,
          client_subject: subjects[i % 3],
          tool_name: 'fs.read',
          request_args: { n: i, big: 'BIG', f: 1.5, s: 'é\n"' },
          response_status: 'success',
          latency_ms: i,
          zz_extra: i % 7 === 0 ? { k: i } : undefined,
        }).replace('"BIG"', '12345678901234567890')}\n`, // a number beyond 2^53 on the wire
      { ack: true, chunk: 50 },
    ).done;
    expect(await s.stop()).toBe(0); // a checkpoint at shutdown covers every batch
    dir = await tempDir();
  });
  afterAll(async () => {
    await edb?.drop();
  });
  const exp = (file: string, extra: string[] = []) =>
    runCli(['export', '--database-url', edb.url, '--proofs', '--output', file, ...extra]);
  const check = (file: string, key = pub) => runCli(['verify', '--export', file, '--public-key', key]);
  async function tampered(file: string, edit: (lines: string[]) => string[]): Promise<string> {
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    const out = join(dir, `t-${Math.random().toString(36).slice(2)}.ndjson`);
    await writeFile(out, `${edit(lines).join('\n')}\n`);
    return out;
  }

  it('a whole export and a filtered one (one subject) check alone, and replay reads them back', async () => {
    const all = join(dir, 'all.ndjson');
    expect((await exp(all)).code).toBe(0);
    const r = await check(all);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/intact: .*600 row\(s\)/);
    const alice = join(dir, 'alice.ndjson.gz');
    expect((await exp(alice, ['--subject', 'alice'])).code).toBe(0);
    const ra = await check(alice);
    expect(ra.code, ra.stdout + ra.stderr).toBe(0);
    expect(ra.stdout).toMatch(/200 row\(s\)/);
    const other = await createTestDatabase('e2e_proofs_replay');
    try {
      const rp = await runCli(['replay', '--database-url', other.url, all]);
      expect(rp.stdout).toMatch(/stored 600, skipped 0, rejected 0/);
      const same = await other.query(`SELECT count(*)::int AS n FROM audit_log WHERE extra ? '_proof'`);
      expect(same.rows[0]!.n).toBe(0);
    } finally {
      await other.drop();
    }
  });

  it('finds an entry changed, added or removed, in a whole and in a filtered export, and a foreign key', async () => {
    for (const base of ['all.ndjson', 'alice-plain.ndjson']) {
      const file = join(dir, base);
      if (base !== 'all.ndjson') expect((await exp(file, ['--subject', 'alice'])).code).toBe(0);
      const changed = await tampered(file, (ls) =>
        ls.map((l, i) => (i === 3 ? JSON.stringify({ ...JSON.parse(l), latency_ms: 999999 }) : l)),
      );
      const rc = await check(changed);
      expect(rc.code).toBe(3);
      expect(rc.stdout).toMatch(/FAULT row_changed: line 4 .*latency_ms differs/);
      const rowToo = await tampered(file, (ls) =>
        ls.map((l, i) => {
          if (i !== 5) return l;
          const o = JSON.parse(l);
          o.client_subject = 'mallory';
          o._proof.row[3] = 'mallory';
          return JSON.stringify(o);
        }),
      );
      expect((await check(rowToo)).stdout).toMatch(/FAULT row_changed: line 6 .*Merkle root/);
      const removed = await tampered(file, (ls) => ls.filter((_, i) => i !== 7));
      const rr = await check(removed);
      expect(rr.code).toBe(3);
      expect(rr.stdout).toMatch(/FAULT row_deleted: row \d+ .*removed/);
      const added = await tampered(file, (ls) => {
        const o = JSON.parse(ls[2]!);
        o.request_id = '00000000-0000-4000-8000-00000000dead';
        o._proof.row[1] = o.request_id;
        return [...ls.slice(0, 3), JSON.stringify(o), ...ls.slice(3)];
      });
      const ra = await check(added);
      expect(ra.code).toBe(3);
      expect(ra.stdout).toMatch(/FAULT row_changed: line 4/);
    }
    const other = join(dir, 'other.pub');
    await writeFile(other, newSigningKey().publicPem);
    const rk = await check(join(dir, 'all.ndjson'), other);
    expect(rk.code).toBe(3);
    expect(rk.stdout).toMatch(/checkpoint_unknown_key/);
    const nokey = await runCli(['verify', '--export', join(dir, 'all.ndjson')]);
    expect(nokey.code).toBe(2);
  });
});
