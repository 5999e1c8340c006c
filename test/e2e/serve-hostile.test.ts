/**
 * Issue 9, "one line stops the daemon": the built `serve` takes the hostile lines of the issue, at
 * their measured sizes and at the line limit, between friendly entries on an acked connection:
 * every line gets its ack in order, the entries around them are stored, the daemon stays up and
 * its memory stays bounded (a ~480 KB line of 20,000 "\u0000" under one long key ran the heap out
 * in a second; ~40,000 unknown keys froze it for 54 s). No timing is asserted.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../../src/entry/grammar.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { cleanupServes, send, startServe } from '../helpers/serve.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('servehostile');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

const tag = 'f9700000';
const id = (n: number) => `${tag}-0000-4000-8000-${n.toString().padStart(12, '0')}`;
const head = (n: number) =>
  `"request_id":"${id(n)}","timestamp":"2024-05-01T12:00:00Z","client_subject":"s","tool_name":"t","response_status":"ok"`;
const friendly = (n: number) => `{${head(n)},"request_args":{"q":"select ${n}"}}`;

describe('serve under hostile lines', () => {
  it('each of issue 9 shapes: acked in order, neighbours stored, daemon alive, memory bounded', async () => {
    const hostile: [string, string, boolean][] = [
      [
        '20,000 "\\u0000" under a long key (~480 KB)',
        `{${head(101)},"request_args":{"${'k'.repeat(300_000)}":[${Array(20_000).fill('"\\u0000"').join(',')}]}}`,
        true,
      ],
      [
        '~40,000 unknown keys (~480 KB)',
        `{${head(102)},${Array.from({ length: 40_000 }, (_, i) => `"x${i}":${i}`).join(',')}}`,
        true,
      ],
      [
        'the same keys, one repeated',
        `{${head(103)},${Array.from({ length: 40_000 }, (_, i) => `"x${i}":${i}`).join(',')},"x7":"last"}`,
        true,
      ],
      [
        'deep nesting at the line limit',
        `{${head(104)},"request_args":${'['.repeat(500_000)}${']'.repeat(500_000)}}`,
        false,
      ],
      ['an epoch with a fraction', `{${head(105)},"timestamp":1700000000000.9999999999}`, false],
    ];
    const s = await startServe({ databaseUrl: t.url });
    const lines = [
      ...[1, 2, 3, 4, 5].map(friendly),
      ...hostile.map(([, l]) => l),
      ...[6, 7, 8, 9, 10].map(friendly),
    ];
    const r = await send(s.socket, `${lines.join('\n')}\n`, { ack: true, timeoutMs: 120_000 });
    expect(r.acks.map((a) => a.seq)).toEqual(Array.from({ length: 15 }, (_, k) => k + 1));
    expect(r.acks.slice(0, 5).every((a) => a.ok)).toBe(true);
    expect(r.acks.slice(10).every((a) => a.ok)).toBe(true);
    for (const [k, [name, , ok]] of hostile.entries()) expect(r.acks[5 + k]!.ok, name).toBe(ok);
    expect(r.acks[8]).toMatchObject({ error: `request_args: nested deeper than ${MAX_JSON_DEPTH} levels` });
    expect(r.acks[9]).toMatchObject({ error: 'timestamp: epoch milliseconds must be an integer' });
    expect(s.alive).toBe(true);
    const stored = await t.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM audit_log WHERE request_id::text LIKE $1',
      [`${tag}-%`],
    );
    expect(Number(stored.rows[0]!.n)).toBe(13);
    const x = await t.query<{ v: unknown }>(`SELECT extra->'x7' AS v FROM audit_log WHERE request_id = $1`, [
      id(103),
    ]);
    expect(x.rows[0]!.v).toBe('last');
    // Peak RSS of the daemon: bounded by a small multiple of what it was sent (~2.5 MB here).
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${s.pid}/status`, 'utf8'))![1]) / 1024;
    expect(hwm).toBeLessThan(300);
    expect(await s.stop()).toBe(0);
  });
});
