/**
 * End to end: the built `serve` binary against a real Postgres (CONTRACT.md §3, §4, §6, §7):
 * round trips over the Unix socket and TCP, acks, SIGTERM under load, the real-input corpus
 * (test/fixtures/corpus, a copy of /work/shared/corpus), and the errors of §7.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  type Ack,
  AckClient,
  cleanupServes,
  contractVerdict,
  entryLine,
  exists,
  expectedRow,
  freePort,
  REPO,
  ROW_SQL,
  rid,
  runBash,
  runCli,
  type ServeProcess,
  type StoredRow,
  send,
  sleep,
  startServe,
  tempDir,
  timestampMatches,
  waitFor,
  withoutTs,
} from '../helpers/serve.js';

const CORPUS = join(REPO, 'test', 'fixtures', 'corpus');

let db: TestDatabase;
let d: ServeProcess;

beforeAll(async () => {
  db = await createTestDatabase('e2e_serve');
  await db.query(`ALTER TABLE audit_log ADD CONSTRAINT test_poison CHECK (tool_name <> 'poison')`);
  d = await startServe({ databaseUrl: db.url });
});

afterAll(async () => {
  if (d?.alive) await d.stop();
  await cleanupServes();
  await db?.drop();
});

async function count(sql: string, params: unknown[] = []): Promise<number> {
  return Number((await db.query<{ n: string }>(sql, params)).rows[0]!.n);
}

/** Polls `SELECT count(*)` until it reaches `n` (or the timeout), then returns the last count. */
async function waitCount(sql: string, params: unknown[], n: number, timeoutMs = 15_000): Promise<number> {
  let last = -1;
  await waitFor(
    async () => {
      last = await count(sql, params);
      return last >= n;
    },
    `count ${n}`,
    timeoutMs,
    50,
  ).catch(() => {});
  return last;
}

async function rowOf(requestId: string): Promise<StoredRow | undefined> {
  return (await db.query<StoredRow>(`${ROW_SQL} WHERE request_id = $1`, [requestId])).rows[0];
}

describe('round trips', () => {
  it('socket round trip: one entry via socat is stored with every column equal to its input; socket mode 0660', async () => {
    // n has more digits than a JS number holds: it is spliced into the JSON text
    const line = JSON.stringify({
      request_id: 'E2E00000-0000-4000-8000-000000000001',
      timestamp: '2026-11-29T10:00:00.123456+02:00',
      client_subject: 'user:ada.example',
      client_role: 'analyst',
      tool_name: 'fs.read',
      backend_name: 'fs-main',
      request_args: {
        path: '/etc/hosts',
        nested: [{ Password: 'hunter2', keep: 1.5e3 }],
        token: { a: 1 },
        n: '__BIG__',
      },
      response_status: 'success',
      error_message: 'none\tat all',
      latency_ms: 42,
      trace_id: 'abc',
      span: { id: 7 },
    }).replace('"__BIG__"', '12345678901234567890');
    const r = await runBash(`printf '%s\\n' "$LINE" | socat -t 5 - UNIX-CONNECT:"$SOCK"`, {
      SOCK: d.socket,
      LINE: line,
    });
    expect(r.code, r.stderr).toBe(0);
    const row = await waitFor(() => rowOf('e2e00000-0000-4000-8000-000000000001'), 'the row');
    const input = JSON.parse(line) as Record<string, unknown>;
    expect(withoutTs(row)).toEqual(expectedRow(input));
    expect(row.request_args).toEqual({
      path: '/etc/hosts',
      nested: [{ Password: '[REDACTED]', keep: 1500 }],
      token: '[REDACTED]',
      n: Number('12345678901234567890'),
    });
    expect(row.extra).toEqual({ trace_id: 'abc', span: { id: 7 } });
    expect(row.ts_us).toBe(String(Date.UTC(2026, 10, 29, 8, 0, 0, 123) * 1000 + 456));
    expect(timestampMatches(row.ts_us, input.timestamp as string)).toBe(true);
    // the big number keeps every digit (never through a JS number)
    const n = await db.query<{ n: string; recent: boolean }>(
      `SELECT request_args->>'n' AS n, received_at > now() - interval '1 minute' AS recent
         FROM audit_log WHERE request_id = 'e2e00000-0000-4000-8000-000000000001'`,
    );
    expect(n.rows[0]).toEqual({ n: '12345678901234567890', recent: true });
    const st = await lstat(d.socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
  });

  it('TCP round trip: --listen 127.0.0.1:PORT accepts entries too', async () => {
    const port = await freePort();
    const s = await startServe({ databaseUrl: db.url, args: ['--listen', `127.0.0.1:${port}`] });
    const listening = s.logs().find((l) => l.msg === 'serve: listening')!;
    expect(listening.tcp).toBe(`127.0.0.1:${port}`);
    const line = entryLine('e2e00000-0000-4000-8000-000000000002', { client_subject: 'tcp-client' });
    const r = await runBash(`printf '%s\\n' "$LINE" | socat -t 5 - TCP:127.0.0.1:$PORT`, {
      PORT: String(port),
      LINE: line,
    });
    expect(r.code, r.stderr).toBe(0);
    const row = await waitFor(() => rowOf('e2e00000-0000-4000-8000-000000000002'), 'the row');
    expect(withoutTs(row)).toEqual(expectedRow(JSON.parse(line)));
    // also with acks, over node's net
    const { acks } = await send(
      { host: '127.0.0.1', port },
      `${entryLine('e2e00000-0000-4000-8000-000000000003')}\n`,
      { ack: true },
    );
    expect(acks).toEqual([{ seq: 1, ok: true }]);
    expect(await rowOf('e2e00000-0000-4000-8000-000000000003')).toBeDefined();
    expect(await s.stop()).toBe(0);
  });
});

describe('acks', () => {
  it('one response line per entry line, seq 1..N in order, ok for stored, the reason for rejected', async () => {
    const P = 'a0100000';
    const lines = [
      entryLine(rid(P, 1)),
      entryLine('nope'),
      entryLine(rid(P, 3)),
      entryLine(rid(P, 4), { timestamp: 'yesterday' }),
      '', // blank: not an entry line, no ack
      '   \t',
      '{"request_id":',
      entryLine(rid(P, 6), { tool_name: 'poison' }),
      JSON.stringify({
        request_id: rid(P, 7),
        timestamp: '2024-05-01T12:00:00Z',
        client_subject: 'u',
        response_status: 'ok',
      }),
      entryLine(rid(P, 8), { extra_field: [1, 2] }),
      entryLine(rid(P, 9), { latency_ms: -5 }),
      entryLine(rid(P, 10), { request_args: null }),
    ];
    const { acks } = await send(d.socket, lines.map((l) => `${l}\n`).join(''), { ack: true });
    const entryLines = lines.filter((l) => l.trim() !== '');
    expect(acks.map((a) => a.seq)).toEqual(entryLines.map((_, i) => i + 1));
    const okSeqs = acks.filter((a) => a.ok).map((a) => a.seq);
    expect(okSeqs).toEqual([1, 3, 8, 10]);
    const errors = Object.fromEntries(acks.filter((a) => !a.ok).map((a) => [a.seq, a.error]));
    expect(errors[2]).toBe('request_id: not a UUID');
    expect(errors[4]).toMatch(/^timestamp: /);
    expect(errors[5]).toMatch(/^line: not valid JSON/);
    expect(errors[6]).toContain('test_poison');
    expect(errors[7]).toBe('tool_name: missing (required)');
    expect(errors[9]).toMatch(/^latency_ms: /);
    for (const a of acks)
      expect(Object.keys(a).sort()).toEqual(a.ok ? ['ok', 'seq'] : ['error', 'ok', 'seq']);
    // the acked rows are there, the rejected ones are in audit_reject with the same reason
    for (const seq of okSeqs) {
      const line = entryLines[seq - 1]!;
      const row = await rowOf(JSON.parse(line).request_id);
      expect(row && withoutTs(row)).toEqual(expectedRow(JSON.parse(line)));
    }
    for (const [seq, reason] of Object.entries(errors)) {
      const raw = Buffer.from(entryLines[Number(seq) - 1]!, 'utf8');
      const r = await db.query<{ reason: string }>('SELECT reason FROM audit_reject WHERE raw = $1', [raw]);
      expect(r.rows.map((x) => x.reason)).toEqual([reason]);
    }
    expect(await count(`SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'a0100000-%'`)).toBe(
      4,
    );
  });

  it('a client that waits for the acks of 10,000 lines gets all of them', async () => {
    const N = 10_000;
    const body = Array.from({ length: N }, (_, i) => `${entryLine(rid('a0200000', i + 1))}\n`).join('');
    const { acks } = await send(d.socket, body, { ack: true, timeoutMs: 60_000 });
    expect(acks).toHaveLength(N);
    expect(acks.every((a, i) => a.seq === i + 1 && a.ok === true)).toBe(true);
    expect(await count(`SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'a0200000-%'`)).toBe(
      N,
    );
  });

  it('an ok is sent only once the row is visible in Postgres', async () => {
    const c = await AckClient.open(d.socket);
    const checks: Promise<{ seq: number; found: boolean }>[] = [];
    const ids: string[] = [];
    c.onAck = (a: Ack) => {
      // query at once, as soon as the ack arrives
      checks.push(
        db
          .query('SELECT 1 FROM audit_log WHERE request_id = $1', [ids[a.seq - 1]])
          .then((r) => ({ seq: a.seq, found: a.ok && r.rowCount === 1 })),
      );
    };
    let seq = 0;
    // one line at a time, waiting for each ack …
    for (let i = 0; i < 20; i++) {
      ids.push(rid('a0300000', ++seq));
      await c.write(`${entryLine(ids[seq - 1]!)}\n`);
      await c.waitAcks(seq, 10_000);
    }
    // … then bursts that span several batches
    for (let burst = 0; burst < 5; burst++) {
      let chunk = '';
      for (let i = 0; i < 300; i++) {
        ids.push(rid('a0300000', ++seq));
        chunk += `${entryLine(ids[seq - 1]!)}\n`;
      }
      await c.write(chunk);
      await sleep(5);
    }
    await c.waitAcks(seq, 30_000);
    await c.end();
    const results = await Promise.all(checks);
    expect(results).toHaveLength(seq);
    expect(results.filter((r) => !r.found)).toEqual([]);
  });
});

describe('shutdown', () => {
  it('SIGTERM under load: every entry that got ok:true is stored exactly once; exit 0; socket removed', async () => {
    const s = await startServe({ databaseUrl: db.url });
    const N = 100_000;
    const P = 'b0100000';
    const c = await AckClient.open(s.socket);
    let termSent = false;
    let written = 0;
    let writtenAtTerm = 0;
    c.onAck = () => {
      if (!termSent && c.acks.length >= 5000) {
        termSent = true;
        writtenAtTerm = written;
        s.proc.kill('SIGTERM');
      }
    };
    const writer = (async () => {
      for (let i = 0; i < N; i += 500) {
        // At most 20,000 entries in flight: the signal surely comes mid-stream, however fast the
        // kernel buffers take the writes.
        while (i - c.acks.length > 20_000 && !termSent) await sleep(5);
        let chunk = '';
        for (let k = i; k < i + 500; k++) chunk += `${entryLine(rid(P, k + 1))}\n`;
        if (!(await c.write(chunk))) return;
        written = i + 500;
      }
      c.socket.end();
    })();
    const { code } = await s.exited;
    await writer;
    await c.whenClosed(10_000).catch(() => {});
    expect(termSent).toBe(true);
    expect(writtenAtTerm).toBeLessThan(N); // the signal came mid-stream
    expect(code).toBe(0);
    expect(exists(s.socket)).toBe(false);
    const stopped = s.logs().find((l) => l.msg === 'serve: stopped');
    expect(stopped).toBeDefined();
    // acks are in order and each seq is acked once
    expect(c.acks.every((a, i) => a.seq === i + 1)).toBe(true);
    const okIds = c.acks.filter((a) => a.ok).map((a) => rid(P, a.seq));
    expect(okIds.length).toBe(c.acks.length);
    expect(okIds.length).toBeGreaterThanOrEqual(5000);
    // entries acked from the spool (shutdown deadline) reach Postgres at the next start
    if (Number(stopped!.spilled ?? 0) > 0) {
      const again = await startServe({ databaseUrl: db.url, dataDir: s.dataDir, socket: s.socket });
      await waitCount(
        `SELECT count(*) AS n FROM audit_log WHERE request_id::text LIKE 'b0100000-%'`,
        [],
        okIds.length,
        30_000,
      );
      expect(await again.stop()).toBe(0);
    }
    const stored = await db.query<{ id: string; n: string }>(
      `SELECT request_id::text AS id, count(*) AS n FROM audit_log WHERE request_id = ANY($1::uuid[]) GROUP BY 1`,
      [okIds],
    );
    expect(stored.rows.length).toBe(okIds.length);
    expect(stored.rows.filter((r) => r.n !== '1')).toEqual([]);
    // nothing stored twice, acked or not
    const dup = await count(
      `SELECT count(*) AS n FROM (SELECT request_id FROM audit_log WHERE request_id::text LIKE 'b0100000-%'
         GROUP BY request_id HAVING count(*) > 1) x`,
    );
    expect(dup).toBe(0);
  });

  it('SIGTERM with nothing pending: exits 0 within 5 s (the default --shutdown-timeout is 10 s)', async () => {
    const s = await startServe({ databaseUrl: db.url });
    await send(s.socket, `${entryLine('b0200000-0000-4000-8000-000000000001')}\n`);
    expect(await rowOf('b0200000-0000-4000-8000-000000000001')).toBeDefined();
    s.proc.kill('SIGTERM');
    const r = await Promise.race([s.exited, sleep(5000).then(() => 'still running' as const)]);
    expect(r).toEqual({ code: 0, signal: null });
    expect(exists(s.socket)).toBe(false);
  });
});

describe('real input', () => {
  it('every corpus file through serve: accepted lines stored equal to their input, the others rejected', async () => {
    const files = readdirSync(CORPUS).filter((f) => f.endsWith('.ndjson'));
    expect(files.length).toBeGreaterThanOrEqual(5);
    const before = await count('SELECT count(*) AS n FROM audit_reject');
    // one connection per file, all at once
    await Promise.all(
      files.map((f) => send(d.socket, readFileSync(join(CORPUS, f)), { timeoutMs: 120_000 })),
    );
    let lines = 0;
    const accepted: { line: string; obj: Record<string, unknown>; file: string }[] = [];
    const rejected: string[] = [];
    for (const f of files) {
      for (const line of readFileSync(join(CORPUS, f), 'utf8').split('\n')) {
        if (line.replace(/[ \t\r]/g, '') === '') continue; // blank: not an entry line
        lines++;
        const v = contractVerdict(line.replace(/\r$/, ''));
        if (v.ok) accepted.push({ line, obj: v.obj, file: f });
        else rejected.push(line);
      }
    }
    expect(lines).toBeGreaterThan(4000);
    const ids = accepted.map((a) => String(a.obj.request_id).toLowerCase());
    const rows = (await db.query<StoredRow>(`${ROW_SQL} WHERE request_id = ANY($1::uuid[])`, [ids])).rows;
    const byId = new Map(rows.map((r) => [r.request_id, r]));
    const mismatches: string[] = [];
    for (const a of accepted) {
      const exp = expectedRow(a.obj);
      const row = byId.get(exp.request_id);
      if (!row) {
        mismatches.push(`${a.file}: ${exp.request_id} not stored`);
        continue;
      }
      try {
        expect(withoutTs(row)).toEqual(exp);
        expect(timestampMatches(row.ts_us, a.obj.timestamp as string | number)).toBe(true);
      } catch (err) {
        mismatches.push(`${a.file}: ${exp.request_id}: ${(err as Error).message.slice(0, 400)}`);
      }
    }
    expect(mismatches.slice(0, 5)).toEqual([]);
    expect(rows.length).toBe(accepted.length);
    const rej = await db.query<{ raw: Buffer; reason: string }>(
      'SELECT raw, reason FROM audit_reject WHERE raw = ANY($1::bytea[])',
      [rejected.map((l) => Buffer.from(l, 'utf8'))],
    );
    expect(rej.rows.length).toBe(rejected.length);
    for (const r of rej.rows) expect(r.reason).toMatch(/^[a-z_]+: ./);
    // every line is accounted for: stored + rejected = lines
    expect(rows.length + rej.rows.length).toBe(lines);
    expect((await count('SELECT count(*) AS n FROM audit_reject')) - before).toBe(rejected.length);
  });
});

describe('errors (CONTRACT.md §7)', () => {
  it('unreachable database: exit 1, one stderr line naming 127.0.0.1:1, no stack trace', async () => {
    const dir = await tempDir();
    const r = await runCli(
      [
        'serve',
        '--database-url',
        'postgres://127.0.0.1:1/x',
        '--socket',
        join(dir, 's.sock'),
        '--data-dir',
        dir,
      ],
      { timeoutMs: 30_000 },
    );
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain('127.0.0.1:1');
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stdout).toBe('');
  });

  it('--batch-size 0: exit 2, the message names the flag and its value', async () => {
    const dir = await tempDir();
    const r = await runCli([
      'serve',
      '--database-url',
      db.url,
      '--socket',
      join(dir, 's.sock'),
      '--data-dir',
      dir,
      '--batch-size',
      '0',
    ]);
    expect(r.code).toBe(2);
    const first = r.stderr.split('\n')[0]!;
    expect(first).toContain('--batch-size');
    expect(first).toContain("'0'");
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(exists(join(dir, 's.sock'))).toBe(false);
  });

  it('--verbose shows the stack trace', async () => {
    const dir = await tempDir();
    const r = await runCli(
      [
        'serve',
        '--database-url',
        'postgres://127.0.0.1:1/x',
        '--socket',
        join(dir, 's.sock'),
        '--data-dir',
        dir,
        '--verbose',
      ],
      { timeoutMs: 30_000 },
    );
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toContain('127.0.0.1:1');
    expect(r.stderr).toMatch(/^\s+at /m);
  });
});
