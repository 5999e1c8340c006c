/**
 * `tail` with the built binary (CONTRACT.md §5): the newest N, oldest first; new entries within a
 * second with NOTIFY (as the writer sends it) and without (the periodic check); other subjects left
 * out; overlapping transactions that commit out of id order, an id taken long before its row is
 * written, out-of-order timestamps, and several writers at once: nothing skipped or doubled;
 * SIGINT exits 0.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Background } from '../helpers/cli.js';
import { createTestDatabase, ensurePartitionsBack, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
const clients: pg.Client[] = [];

beforeAll(async () => {
  t = await createTestDatabase('tail');
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await t?.drop();
});

async function writer(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  clients.push(c);
  return c;
}

const INSERT = `INSERT INTO audit_log (request_id, "timestamp", client_subject, client_role, tool_name, backend_name,
    request_args, response_status, latency_ms)
  VALUES (gen_random_uuid(), now() - $2::interval, $1, 'role', 'tool.x', 'be', '{"k": 1}', 'success', 5)
  RETURNING id::text AS id`;

/** Inserts one entry (its own transaction unless the client is in one); returns its id. */
async function insert(
  c: pg.Client | pg.Pool,
  subject: string,
  opts: { ago?: string; notify?: boolean } = {},
): Promise<string> {
  const res = await c.query<{ id: string }>(INSERT, [subject, opts.ago ?? '0']);
  const id = res.rows[0]!.id;
  if (opts.notify !== false) await c.query(`NOTIFY audit_log, '${id}'`);
  return id;
}

const ids = (lines: string[]) => lines.map((l) => String(JSON.parse(l).id));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tail(args: string[]): Background {
  return new Background(['tail', '--database-url', t.url, '--output', 'json', ...args]);
}

describe('tail', () => {
  it('prints the newest N oldest first, then follows: NOTIFY, no NOTIFY, other subjects left out; SIGINT exits 0', async () => {
    const seeded: { id: string; ago: number }[] = [];
    for (let i = 0; i < 15; i++) {
      const ago = (i * 7919) % 15; // timestamps not in id order
      seeded.push({ id: await insert(t.pool, 'tail-a', { ago: `${ago} minutes`, notify: false }), ago });
      await insert(t.pool, 'tail-b', { notify: false });
    }
    const newest3 = [...seeded]
      .sort((a, b) => a.ago - b.ago)
      .slice(0, 3)
      .reverse()
      .map((s) => s.id);
    const p = tail(['--subject', 'tail-a', '-n', '3']);
    await p.waitFor((l) => l.length >= 3, 10_000, 'the first 3 lines');
    expect(ids(p.lines)).toEqual(newest3);
    const first = JSON.parse(p.lines[0]!);
    expect(first.client_subject).toBe('tail-a');
    expect(first.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

    await insert(t.pool, 'tail-b');
    const a1 = await insert(t.pool, 'tail-a');
    await p.waitFor((l) => l.length >= 4, 3000, 'the NOTIFYed entry');
    const a2 = await insert(t.pool, 'tail-a', { notify: false });
    await p.waitFor((l) => l.length >= 5, 3000, 'the entry without NOTIFY');
    await sleep(1200);
    expect(ids(p.lines)).toEqual([...newest3, a1, a2]);
    const exit = await p.interrupt();
    expect(exit).toEqual({ code: 0, signal: null });
  });

  it('never skips or doubles: transactions committing out of id order, an id taken before its row, old timestamps', async () => {
    await insert(t.pool, 'tail-c');
    const p = tail(['--subject', 'tail-c', '-n', '1']);
    await p.waitFor((l) => l.length >= 1, 10_000);
    const a = await writer();
    const b = await writer();
    // A takes id k, B takes k+1 and commits first
    await a.query('BEGIN');
    const k = await insert(a, 'tail-c', { notify: false });
    await b.query('BEGIN');
    const k1 = await insert(b, 'tail-c', { notify: false });
    await b.query(`NOTIFY audit_log, '${k1}'`);
    await b.query('COMMIT');
    await p.waitFor((l) => ids(l).includes(k1), 3000, 'k+1');
    await sleep(1500); // several polls see k+1 without k
    await a.query(`NOTIFY audit_log, '${k}'`);
    await a.query('COMMIT');
    await p.waitFor((l) => ids(l).includes(k), 3000, 'k, committed after k+1');

    // an id handed out by nextval long before the row (and its transaction id) exists
    await a.query('BEGIN');
    const m = (
      await a.query<{ m: string }>(`SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))::text AS m`)
    ).rows[0]!.m;
    const m1 = await insert(b, 'tail-c');
    await p.waitFor((l) => ids(l).includes(m1), 3000, 'm+1');
    await sleep(1500);
    await ensurePartitionsBack(a, 0, [new Date(Date.now() - 400 * 86_400_000).toISOString()]);
    await a.query(
      `INSERT INTO audit_log (id, request_id, "timestamp", client_subject, tool_name, response_status)
       VALUES ($1, gen_random_uuid(), now() - interval '400 days', 'tail-c', 'late', 'error')`,
      [m],
    );
    await a.query('COMMIT'); // no NOTIFY: the periodic check must find it
    await p.waitFor((l) => ids(l).includes(m), 3000, 'the late id m');
    await sleep(1200);
    const got = ids(p.lines).slice(1);
    expect(got).toEqual([k1, k, m1, m]);
    expect((await p.interrupt()).code).toBe(0);
  });

  it('a dropped connection is made again, and what came meanwhile is not missed', async () => {
    await insert(t.pool, 'tail-d');
    const p = tail(['--subject', 'tail-d', '-n', '1']);
    await p.waitFor((l) => l.length >= 1, 10_000);
    await t.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'audit-gateway' AND datname = current_database()`,
    );
    const x = await insert(t.pool, 'tail-d');
    await p.waitFor((l) => ids(l).includes(x), 5000, 'the entry written while reconnecting');
    expect(ids(p.lines)).toHaveLength(2);
    expect((await p.interrupt()).code).toBe(0);
  });

  it('several writers at once, filtered and not: every committed entry exactly once', async () => {
    await insert(t.pool, 'stress');
    const all = tail(['-n', '1']);
    const only = tail(['--subject', 'stress', '-n', '1']);
    await all.waitFor((l) => l.length >= 1, 10_000);
    await only.waitFor((l) => l.length >= 1, 10_000);
    const committed: { id: string; subject: string }[] = [];
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const run = async (w: pg.Client) => {
      for (let i = 0; i < 25; i++) {
        await w.query('BEGIN');
        const mine: { id: string; subject: string }[] = [];
        for (let j = 0; j <= rand(4); j++) {
          const subject = rand(3) === 0 ? 'stress-other' : 'stress';
          mine.push({
            id: await insert(w, subject, { ago: `${rand(100000)} seconds`, notify: false }),
            subject,
          });
          await sleep(rand(30));
        }
        if (rand(10) < 2) {
          await w.query('ROLLBACK');
          continue;
        }
        if (rand(2) === 0) await w.query(`NOTIFY audit_log, '${mine[mine.length - 1]!.id}'`);
        await w.query('COMMIT');
        committed.push(...mine);
      }
    };
    const writers = await Promise.all([writer(), writer(), writer(), writer()]);
    await Promise.all(writers.map(run));
    const wantAll = committed.map((c) => c.id).sort();
    const wantOnly = committed
      .filter((c) => c.subject === 'stress')
      .map((c) => c.id)
      .sort();
    expect(wantOnly.length).toBeGreaterThan(20);
    await all.waitFor((l) => l.length >= 1 + wantAll.length, 5000, 'every entry (unfiltered)');
    await only.waitFor((l) => l.length >= 1 + wantOnly.length, 5000, 'every entry (filtered)');
    await sleep(1200);
    expect(ids(all.lines.slice(1)).sort()).toEqual(wantAll);
    expect(ids(only.lines.slice(1)).sort()).toEqual(wantOnly);
    expect((await all.interrupt()).code).toBe(0);
    expect((await only.interrupt()).code).toBe(0);
  });
});
