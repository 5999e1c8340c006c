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
