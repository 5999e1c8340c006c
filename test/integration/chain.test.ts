/**
 * Chains in the write transaction (CONTRACT.md §9) against a real Postgres: every path of
 * BatchWriter (COPY, INSERT, a COPY meeting a stored key, the split path) commits a batch record
 * with its rows; every stored row is in exactly one batch and the links hold; duplicates are in no
 * batch; two writers on one database never fork. Then each fault of §9, made with SQL as a
 * superuser with triggers off (session_replication_role = replica), is found and named by verify.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter, type WriteEntry } from '../../src/db/writer.js';
import { newSigningKey, privateKeyOf, publicKeyOf, signCheckpoint } from '../../src/integrity/checkpoint.js';
import { silentLogger } from '../../src/log.js';
import { verifyDatabase } from '../../src/read/verify.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeEntryOf } from '../helpers/entries.js';

let t: TestDatabase;

function line(rid: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    request_id: rid,
    timestamp: '2024-05-01T12:00:00.1234567Z',
    client_subject: 'user:ada.example',
    client_role: 'analyst',
    tool_name: 'sql.query',
    backend_name: 'pg-reports',
    request_args: { q: 'select 1', n: 1.5, big: 1e2, deep: { b: [1, { z: null }], a: 'é\u2028' } },
    response_status: 'ok',
    error_message: null,
    latency_ms: 12,
    ...over,
  });
}
const rid = (p: string, n: number) => `${p}-0000-4000-8000-${n.toString().padStart(12, '0')}`;
const entries = (p: string, n: number, from = 0): WriteEntry[] =>
  Array.from({ length: n }, (_, i) => writeEntryOf(line(rid(p, from + i), { latency_ms: from + i })));

async function superuser(sql: string): Promise<void> {
  await t.query(`SET session_replication_role = replica; ${sql}; RESET session_replication_role`);
}

async function verify(extra: Parameters<typeof verifyDatabase>[3] = {}) {
  return verifyDatabase(t.pool, t.db, silentLogger(), extra);
}

/** Every stored row is in exactly one batch: the union of the batches' ids equals audit_log's ids. */
async function exactlyOnce(): Promise<void> {
  const rows = await t.query<{ id: string }>('SELECT id::text FROM audit_log ORDER BY audit_log.id');
  const batches = await t.query<{ ids: string }>('SELECT ids FROM audit_batch');
  const listed: bigint[] = [];
  for (const b of batches.rows) {
    for (const part of b.ids.split(',')) {
      const [a, z] = part.split('-').map(BigInt);
      for (let i = a!; i <= (z ?? a!); i++) listed.push(i);
    }
  }
  listed.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  expect(listed.map(String)).toEqual(rows.rows.map((r) => r.id));
}

beforeAll(async () => {
  t = await createTestDatabase('chain');
});
afterAll(async () => {
  await t?.drop();
});

describe('chains in the write transaction', () => {
  it('every path commits its rows with a batch record; the links hold and verify finds it intact', async () => {
    const w = new BatchWriter(t.pool, silentLogger(), { chainId: 'w1', copyMinRows: 16 });
    const copy = await w.write(entries('aaaaaaaa', 100), []);
    expect(copy.path).toBe('copy');
    const ins = await w.write(entries('bbbbbbbb', 5), []);
    expect(ins.path).toBe('insert');
    // COPY meeting stored keys: half repeat the first batch; the repeats are in no batch
    const mixed = await w.write([...entries('aaaaaaaa', 20), ...entries('cccccccc', 20)], []);
    expect(mixed.stored).toBe(20);
    expect(mixed.duplicates).toBe(20);
    // all duplicates: no batch at all
    const before = Number((await t.query('SELECT count(*) FROM audit_batch')).rows[0]!.count);
    const dup = await w.write(entries('bbbbbbbb', 5), []);
    expect(dup.stored).toBe(0);
    expect(Number((await t.query('SELECT count(*) FROM audit_batch')).rows[0]!.count)).toBe(before);
    // split path: a row Postgres refuses (a CHECK) is isolated; the rest is stored, in batches
    await t.query(`ALTER TABLE audit_log ADD CONSTRAINT chain_poison CHECK (tool_name <> 'poison')`);
    const bad = entries('dddddddd', 40);
    bad[17] = writeEntryOf(line(rid('dddddddd', 17), { tool_name: 'poison' }));
    const split = await w.write(bad, []);
    await t.query('ALTER TABLE audit_log DROP CONSTRAINT chain_poison');
    expect([...split.refused.keys()]).toEqual([17]);
    expect(split.stored).toBe(39);
    await exactlyOnce();
    const chain = await t.query(
      'SELECT seq, prev_hash, hash FROM audit_batch WHERE chain_id = $1 ORDER BY seq',
      ['w1'],
    );
    expect(chain.rows.map((r) => Number(r.seq))).toEqual(chain.rows.map((_, i) => i + 1));
    const r = await verify();
    expect(r.faults).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.rows).toBe(Number((await t.query('SELECT count(*) FROM audit_log')).rows[0]!.count));
  });

  it('two writers at once, pipelined writes included, never fork and verify intact', async () => {
    const a = new BatchWriter(t.pool, silentLogger(), { chainId: 'two-a' });
    const b = new BatchWriter(t.pool, silentLogger(), { chainId: 'two-b' });
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      jobs.push(a.write(entries('eeeeeeee', 50, i * 50), []));
      jobs.push(b.write(entries('ffffffff', 50, i * 50), []));
    }
    await Promise.all(jobs);
    await exactlyOnce();
    const heads = await t.query(
      `SELECT chain_id, head_seq::int FROM audit_chain WHERE chain_id LIKE 'two-%' ORDER BY 1`,
    );
    expect(heads.rows.map((h) => h.head_seq)).toEqual([20, 20]);
    const r = await verify();
    expect(r.faults).toEqual([]);
  });

  it('a second process with the same writer id queues on the head instead of forking', async () => {
    const a = new BatchWriter(t.pool, silentLogger(), { chainId: 'same' });
    const b = new BatchWriter(t.pool, silentLogger(), { chainId: 'same' });
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).write(entries('abababab', 30, i * 30), [])),
    );
    const r = await verify();
    expect(r.faults).toEqual([]);
    expect(
      (await t.query(`SELECT head_seq::int FROM audit_chain WHERE chain_id = 'same'`)).rows[0]!.head_seq,
    ).toBe(10);
  });
});

describe('append-only', () => {
  it('UPDATE, DELETE and TRUNCATE are refused on audit_log and the chain tables', async () => {
    for (const sql of [
      `UPDATE audit_log SET client_subject = 'x' WHERE id = 1`,
      'DELETE FROM audit_log WHERE id = 1',
      'TRUNCATE audit_log',
      'UPDATE audit_batch SET row_count = 0',
      'DELETE FROM audit_batch',
      'TRUNCATE audit_batch',
      'DELETE FROM audit_checkpoint',
      'DELETE FROM audit_chain',
      `UPDATE audit_chain SET head_seq = 0`,
    ]) {
      await expect(t.query(sql), sql).rejects.toThrow(/append-only|only move forward/);
    }
  });
});

describe('verify finds and names each fault of §9', () => {
  // Each case: a fresh chain of 3 batches, a fault made by SQL with triggers off, the expected fault.
  let n = 0;
  async function freshChain(): Promise<{ chain: string; ids: string[] }> {
    n++;
    const chain = `fault-${n}`;
    const w = new BatchWriter(t.pool, silentLogger(), { chainId: chain });
    const p = `${(0x10000000 + n).toString(16)}`;
    for (let i = 0; i < 3; i++) await w.write(entries(p, 20, i * 20), []);
    const ids = (
      await t.query<{ id: string }>(
        `SELECT id::text FROM audit_log WHERE request_id::text LIKE $1 ORDER BY audit_log.id`,
        [`${p}%`],
      )
    ).rows.map((r) => r.id);
    return { chain, ids };
  }
  async function expectFault(kind: string, match: Partial<{ chain: string; seq: string; rowId: string }>) {
    const r = await verify();
    expect(r.ok).toBe(false);
    expect(r.faults).toContainEqual(expect.objectContaining({ kind, ...match }));
    return r;
  }
  const clean = async () => {
    // faults of one case must not leak into the next: check the database is intact before each
    const r = await verify();
    expect(r.faults).toEqual([]);
  };

  it('a changed value in each stored column', async () => {
    const sets = [
      `client_subject = 'mallory'`,
      `request_id = gen_random_uuid()`,
      `"timestamp" = "timestamp" + interval '1 microsecond'`,
      `client_role = NULL`,
      `tool_name = 'other'`,
      `backend_name = 'x'`,
      `request_args = '{"q": "select 2"}'`,
      `response_status = 'error'`,
      `error_message = ''`,
      `latency_ms = latency_ms + 1`,
      `received_at = received_at - interval '1 day'`,
      `extra = '{}'`,
    ];
    for (const set of sets) {
      await clean();
      const { chain, ids } = await freshChain();
      const victim = ids[25]!;
      await superuser(`UPDATE audit_log SET ${set} WHERE id = ${victim}`);
      await expectFault('row_changed', { chain, seq: '2', rowId: victim });
      // the next case starts from an intact database: this chain goes, with its rows (triggers off)
      await superuser(
        `DELETE FROM audit_batch WHERE chain_id = '${chain}'; DELETE FROM audit_chain WHERE chain_id = '${chain}'; DELETE FROM audit_log WHERE id IN (${ids.join(',')})`,
      );
    }
  });

  it('a deleted row, a row in no batch, rows moved between batches, a deleted batch, a cut tail', async () => {
    await clean();
    let c = await freshChain();
    await superuser(`DELETE FROM audit_log WHERE id = ${c.ids[5]}`);
    await expectFault('row_deleted', { chain: c.chain, seq: '1', rowId: c.ids[5] });
    await superuser(
      `DELETE FROM audit_batch WHERE chain_id = '${c.chain}'; DELETE FROM audit_chain WHERE chain_id = '${c.chain}'; DELETE FROM audit_log WHERE id IN (${c.ids.join(',')})`,
    );

    await clean();
    await t.query(
      `INSERT INTO audit_log (request_id, "timestamp", client_subject, tool_name, response_status) VALUES (gen_random_uuid(), now(), 'sql', 'plain', 'ok')`,
    );
    const plain = (await t.query('SELECT max(id)::text AS id FROM audit_log')).rows[0]!.id;
    await expectFault('row_without_batch', { rowId: plain });
    await superuser(`DELETE FROM audit_log WHERE id = ${plain}`);

    await clean();
    c = await freshChain();
    // move row 0 of batch 1 into batch 2: rewrite both records' ids (and their hashes, to hide it)
    await superuser(
      `UPDATE audit_batch SET ids = ids || ',999999999' WHERE chain_id = '${c.chain}' AND seq = 2`,
    );
    await expectFault('batch_changed', { chain: c.chain, seq: '2' });
    await superuser(
      `DELETE FROM audit_batch WHERE chain_id = '${c.chain}'; DELETE FROM audit_chain WHERE chain_id = '${c.chain}'; DELETE FROM audit_log WHERE id IN (${c.ids.join(',')})`,
    );

    await clean();
    c = await freshChain();
    await superuser(`DELETE FROM audit_batch WHERE chain_id = '${c.chain}' AND seq = 2`);
    await expectFault('batch_missing', { chain: c.chain, seq: '2' });
    await superuser(
      `DELETE FROM audit_batch WHERE chain_id = '${c.chain}'; DELETE FROM audit_chain WHERE chain_id = '${c.chain}'; DELETE FROM audit_log WHERE id IN (${c.ids.join(',')})`,
    );

    await clean();
    c = await freshChain();
    // the newest batch cut, with its rows, and the head moved back to hide it: the checkpoint shows it
    const key = privateKeyOf(newSigningKey().privatePem);
    const head = (
      await t.query(`SELECT head_seq::text, head_hash FROM audit_chain WHERE chain_id = $1`, [c.chain])
    ).rows[0]!;
    const cp = signCheckpoint(key, 'test', [
      { chainId: c.chain, seq: BigInt(head.head_seq), hash: head.head_hash },
    ]);
    const prev = (await t.query(`SELECT hash FROM audit_batch WHERE chain_id = $1 AND seq = 2`, [c.chain]))
      .rows[0]!.hash;
    await superuser(
      `DELETE FROM audit_log WHERE id IN (${c.ids.slice(40).join(',')}); DELETE FROM audit_batch WHERE chain_id = '${c.chain}' AND seq = 3; UPDATE audit_chain SET head_seq = 2, head_hash = '\\x${prev.toString('hex')}' WHERE chain_id = '${c.chain}'`,
    );
    const cut = await verifyDatabase(t.pool, t.db, silentLogger(), {
      checkpointLines: [cp.line],
      publicKeys: [key],
    });
    expect(cut.faults).toContainEqual(
      expect.objectContaining({ kind: 'batches_cut', chain: c.chain, seq: '3' }),
    );
    await superuser(
      `DELETE FROM audit_batch WHERE chain_id = '${c.chain}'; DELETE FROM audit_chain WHERE chain_id = '${c.chain}'; DELETE FROM audit_log WHERE id IN (${c.ids.join(',')})`,
    );
  });

  it('a checkpoint altered, or signed by another key', async () => {
    await clean();
    const mine = newSigningKey();
    const theirs = newSigningKey();
    const heads = (await t.query(`SELECT chain_id, head_seq::text, head_hash FROM audit_chain`)).rows.map(
      (h) => ({
        chainId: h.chain_id,
        seq: BigInt(h.head_seq),
        hash: h.head_hash,
      }),
    );
    const good = signCheckpoint(privateKeyOf(mine.privatePem), 'w', heads);
    const pinned = [publicKeyOf(mine.publicPem)];
    expect((await verify({ checkpointLines: [good.line], publicKeys: pinned })).faults).toEqual([]);
    const altered = good.line.replace(/"hash":"(.)/, (_, ch) => `"hash":"${ch === '0' ? '1' : '0'}`);
    expect((await verify({ checkpointLines: [altered], publicKeys: pinned })).faults).toContainEqual(
      expect.objectContaining({ kind: 'checkpoint_bad_signature' }),
    );
    const foreign = signCheckpoint(privateKeyOf(theirs.privatePem), 'w', heads);
    expect((await verify({ checkpointLines: [foreign.line], publicKeys: pinned })).faults).toContainEqual(
      expect.objectContaining({ kind: 'checkpoint_unknown_key' }),
    );
  });

  it('with a checkpoint file kept elsewhere, a rewrite of rows and chains together', async () => {
    await clean();
    const c = await freshChain();
    const key = newSigningKey();
    const heads = (await t.query(`SELECT chain_id, head_seq::text, head_hash FROM audit_chain`)).rows.map(
      (h) => ({
        chainId: h.chain_id,
        seq: BigInt(h.head_seq),
        hash: h.head_hash,
      }),
    );
    const cp = signCheckpoint(privateKeyOf(key.privatePem), 'w', heads);
    // rewrite: change a row, then recompute its leaf, the batch's root and hash, and the rest of the chain
    await superuser(`UPDATE audit_log SET client_subject = 'mallory' WHERE id = ${c.ids[45]}`);
    const { rewriteChain } = await import('../helpers/rewrite.js');
    await rewriteChain(t, c.chain);
    const without = await verify();
    expect(without.faults).toEqual([]); // a full rewrite fools the database alone…
    const withFile = await verify({ checkpointLines: [cp.line], publicKeys: [publicKeyOf(key.publicPem)] });
    expect(withFile.faults).toContainEqual(
      expect.objectContaining({ kind: 'checkpoint_mismatch', chain: c.chain, seq: '3' }),
    );
  });
});

describe('rows stored before chains existed', () => {
  it('migrate binds them into adopted batches, which verify checks from then on', async () => {
    const { readFileSync } = await import('node:fs');
    const { migrate } = await import('../../src/db/migrate.js');
    const d = await createTestDatabase('chain_adopt', { migrated: false });
    try {
      await d.query(readFileSync(new URL('../fixtures/seed-gateway-schema.sql', import.meta.url), 'utf8'));
      await d.query(`INSERT INTO audit_log (request_id, "timestamp", client_subject, client_role, tool_name, backend_name, request_args, response_status, latency_ms)
        SELECT gen_random_uuid(), now() - g * interval '1.5 s', 'user-' || g, 'admin', 'tool', 'be',
               jsonb_build_object('n', g, 's', E'tab\\there "q" \\u00e9'), 'success', g
          FROM generate_series(1, 25000) g`);
      const c = await d.pool.connect();
      try {
        await migrate(c, 'up', silentLogger());
      } finally {
        c.release();
      }
      const b = await d.query(
        `SELECT kind, count(*)::int AS n, sum(row_count)::int AS rows FROM audit_batch GROUP BY kind`,
      );
      expect(b.rows).toEqual([{ kind: 'adopted', n: 3, rows: 25000 }]);
      const r = await verifyDatabase(d.pool, d.db, silentLogger());
      expect(r.faults).toEqual([]);
      expect(r.rows).toBe(25000);
      await d.query(
        `SET session_replication_role = replica; UPDATE audit_log SET latency_ms = 0 WHERE id = 12345; RESET session_replication_role`,
      );
      const after = await verifyDatabase(d.pool, d.db, silentLogger());
      expect(after.faults).toEqual([
        expect.objectContaining({
          kind: 'row_changed',
          chain: 'adopted-1764400000004',
          seq: '2',
          rowId: '12345',
        }),
      ]);
    } finally {
      await d.drop();
    }
  });
});

describe('the canonical form is what Postgres hashes', () => {
  it('for adversarial rows, the leaf Postgres computed equals SHA-256(0x00 ‖ canonicalRow(the row as stored))', async () => {
    const { default: fc } = await import('fast-check');
    const { canonicalColumnsSql, leafSql } = await import('../../src/db/chain.js');
    const { canonicalRow, leafHash } = await import('../../src/integrity/merkle.js');
    const text = fc.string({ unit: 'binary', maxLength: 20 });
    const json = fc.jsonValue({ maxDepth: 3 });
    let k = 0;
    const w = new BatchWriter(t.pool, silentLogger(), { chainId: 'canon', copyMinRows: 8 });
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            client_subject: text,
            client_role: fc.option(text, { nil: null }),
            tool_name: text,
            backend_name: fc.option(text, { nil: null }),
            request_args: json,
            response_status: text,
            error_message: fc.option(text, { nil: null }),
            latency_ms: fc.option(fc.nat(), { nil: null }),
            ts: fc.date({ min: new Date('1971-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }),
            frac: fc.stringMatching(/^[0-9]{0,9}$/),
            extra_field: fc.option(json, { nil: undefined }),
          }),
          { minLength: 1, maxLength: 20 },
        ),
        async (rows) => {
          const es: WriteEntry[] = [];
          for (const r of rows) {
            k++;
            const iso = r.ts.toISOString().slice(0, 19) + (r.frac ? `.${r.frac}` : '') + 'Z';
            const obj: Record<string, unknown> = {
              request_id: rid('cafe0000', k),
              timestamp: iso,
              client_subject: r.client_subject,
              client_role: r.client_role,
              tool_name: r.tool_name,
              backend_name: r.backend_name,
              request_args: r.request_args,
              response_status: r.response_status,
              error_message: r.error_message,
              latency_ms: r.latency_ms,
            };
            if (r.extra_field !== undefined) obj.zz_extra = r.extra_field;
            try {
              es.push(writeEntryOf(JSON.stringify(obj)));
            } catch {
              // rejected by validation (e.g. an empty tool_name): not stored, not hashed
            }
          }
          if (es.length > 0) await w.write(es, []);
        },
      ),
      { numRuns: 25 },
    );
    const stored = await t.query(
      `SELECT ${canonicalColumnsSql('a')}, ${leafSql('a')} AS leaf FROM audit_log a WHERE request_id::text LIKE 'cafe0000%'`,
    );
    expect(stored.rows.length).toBeGreaterThan(50);
    for (const r of stored.rows) {
      const cols = Object.values(r).slice(0, 13) as (string | null)[];
      expect(leafHash(canonicalRow(cols)).equals(r.leaf as Buffer), JSON.stringify(cols)).toBe(true);
    }
    expect((await verify()).faults).toEqual([]);
  });
});

describe('verify --since/--until', () => {
  it('checks the rows of the batches committed in the window; chains whole', async () => {
    const w = new BatchWriter(t.pool, silentLogger(), { chainId: 'window' });
    await w.write(entries('babe0001', 30), []);
    const between = new Date(Date.now() + 1).toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await w.write(entries('babe0002', 30), []);
    const ids = async (p: string) =>
      (
        await t.query<{ id: string }>(
          `SELECT id::text FROM audit_log WHERE request_id::text LIKE $1 ORDER BY audit_log.id`,
          [`${p}%`],
        )
      ).rows.map((r) => r.id);
    const early = await ids('babe0001');
    const late = await ids('babe0002');
    await superuser(`UPDATE audit_log SET tool_name = 'x' WHERE id IN (${early[3]}, ${late[4]})`);
    const lateOnly = await verify({ since: between });
    expect(lateOnly.faults.filter((f) => f.kind === 'row_changed').map((f) => f.rowId)).toEqual([late[4]]);
    expect(lateOnly.rows).toBe(30);
    expect(lateOnly.cursor).toBeNull();
    const earlyOnly = await verify({ until: between });
    expect(earlyOnly.faults.filter((f) => f.kind === 'row_changed').map((f) => f.rowId)).toContain(early[3]);
    expect(earlyOnly.faults.filter((f) => f.kind === 'row_changed').map((f) => f.rowId)).not.toContain(
      late[4],
    );
    const future = await verify({ since: new Date(Date.now() + 3_600_000).toISOString() });
    expect(future.rows).toBe(0);
    await superuser(
      `DELETE FROM audit_batch WHERE chain_id = 'window'; DELETE FROM audit_chain WHERE chain_id = 'window'; DELETE FROM audit_log WHERE id IN (${[...early, ...late].join(',')})`,
    );
  });
});

describe('a copy of the database', () => {
  it('restored from pg_dump verifies like the original', async () => {
    const { execFileSync } = await import('node:child_process');
    const original = await verify();
    expect(original.faults).toEqual([]);
    const copy = await createTestDatabase('chain_copy', { migrated: false });
    try {
      const dump = execFileSync('pg_dump', ['--no-owner', '--dbname', t.url], { maxBuffer: 1 << 28 });
      execFileSync('psql', ['-q', '-v', 'ON_ERROR_STOP=1', '--dbname', copy.url], {
        input: dump,
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      const r = await verifyDatabase(copy.pool, copy.db, silentLogger());
      expect(r.faults).toEqual([]);
      expect(r.rows).toBe(original.rows);
      expect(r.batches).toBe(original.batches);
    } finally {
      await copy.drop();
    }
  });
});
