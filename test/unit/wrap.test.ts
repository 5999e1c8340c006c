/**
 * wrap's pure parts (CONTRACT.md §11): JSON-RPC reading on raw text, correlation, the entry line
 * and its round trip through the spool's COPY form; adversarial inputs from fast-check, checked
 * against JSON.parse and against the entry parser serve uses (src/entry/parse.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeCopyRow } from '../../src/entry/copyText.js';
import { parseEntry } from '../../src/entry/parse.js';
import { sanitizeString } from '../../src/entry/sanitize.js';
import { type CallRecord, Correlator } from '../../src/wrap/correlate.js';
import { entryLine, wireFromCopy } from '../../src/wrap/entry.js';
import { arrayElements, idKeyOf, peekOverlong, readLine } from '../../src/wrap/jsonrpc.js';
import { LineSplitter, OVERLONG_ENDS } from '../../src/wrap/lines.js';

const json = fc.jsonValue({ maxDepth: 4 });
/** JSON text of a value with random whitespace between tokens (what a peer may send). */
const spaced = (v: unknown, ws: string) =>
  JSON.stringify(v, null, 1)
    .split('\n')
    .map((l) => l.trim())
    .join(ws);

describe('readLine / arrayElements', () => {
  it('the raw texts of a batch parse to its elements, whatever the spacing', () => {
    fc.assert(
      fc.property(fc.array(json, { maxLength: 6 }), fc.constantFrom('', ' ', '\t', ' \r '), (arr, ws) => {
        const text = spaced(arr, ws);
        expect(arrayElements(text).map((t) => JSON.parse(t))).toEqual(JSON.parse(text));
      }),
    );
  });

  it('keeps the id type: 1, "1", 1.0 and "1.0"', () => {
    const keys = ['1', '"1"', '1.0', '"1.0"', '-0', '1e0'].map(
      (id) => readLine(`{"jsonrpc":"2.0","id":${id},"method":"tools/call"}`)!.messages[0]!.idKey,
    );
    expect(keys).toEqual(['n:1', 's:1', 'n:1', 's:1.0', 'n:0', 'n:1']);
  });

  it('classifies requests, notifications, responses; lines that are not JSON give null', () => {
    expect(readLine('not json')).toBeNull();
    expect(readLine('{"id":1,"method":"x"')).toBeNull();
    const l = readLine('[{"id":1,"method":"a"},{"method":"b"},{"id":1,"result":{}},{"id":2,"error":{}},7]')!;
    expect(l.batch).toBe(true);
    expect(l.messages.map((m) => m.kind)).toEqual([
      'request',
      'notification',
      'response',
      'response',
      'invalid',
    ]);
  });
});

describe('Correlator', () => {
  const setup = () => {
    const calls: CallRecord[] = [];
    let t = 0;
    const c = new Correlator(
      (r) => calls.push(r),
      () => t,
    );
    return { c, calls, tick: (ms: number) => (t += ms) };
  };
  const feed = (c: Correlator, side: 'client' | 'server', text: string) =>
    side === 'client' ? c.fromClient(readLine(text)!) : c.fromServer(readLine(text)!);

  it('the client cancelling and the server answering race: whichever comes first decides, once', () => {
    const { c, calls } = setup();
    feed(c, 'client', '{"id":1,"method":"tools/call","params":{"name":"t"}}');
    feed(c, 'server', '{"id":1,"result":{"content":[]}}');
    feed(c, 'client', '{"method":"notifications/cancelled","params":{"requestId":1}}');
    feed(c, 'client', '{"id":2,"method":"tools/call","params":{"name":"t"}}');
    feed(c, 'client', '{"method":"notifications/cancelled","params":{"requestId":2,"reason":"r"}}');
    feed(c, 'server', '{"id":2,"result":{"content":[]}}');
    expect(calls.map((x) => [x.idText, x.status, x.errorMessage])).toEqual([
      ['1', 'success', null],
      ['2', 'cancelled', 'r'],
    ]);
  });

  it('responses of the client (to server requests) never close its own calls; the server end closes them', () => {
    const { c, calls, tick } = setup();
    feed(c, 'client', '{"id":5,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}');
    feed(c, 'server', '{"id":5,"method":"sampling/createMessage","params":{}}');
    feed(c, 'client', '{"id":5,"result":{"content":{"type":"text","text":"x"}}}');
    expect(calls).toEqual([]);
    tick(42);
    c.endAll('gone');
    expect(calls).toEqual([
      expect.objectContaining({
        idText: '5',
        status: 'no_response',
        errorMessage: 'gone',
        latencyMs: 42,
        argsText: '{"a":1}',
      }),
    ]);
  });

  it('any interleaving of calls with ids 1 and "1" ends each with its own outcome', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            id: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constantFrom('0', '1', '2', '3')),
            ok: fc.boolean(),
          }),
          {
            maxLength: 12,
          },
        ),
        fc.infiniteStream(fc.boolean()),
        (ops, order) => {
          const { c, calls } = setup();
          // Unique ids only (a reused id is a protocol fault, tested apart).
          const seen = new Set<string>();
          const uniq = ops.filter((o) => !seen.has(JSON.stringify(o.id)) && seen.add(JSON.stringify(o.id)));
          const requests = uniq.map((o) =>
            JSON.stringify({
              jsonrpc: '2.0',
              id: o.id,
              method: 'tools/call',
              params: { name: `t${JSON.stringify(o.id)}` },
            }),
          );
          const answers = uniq.map((o) =>
            JSON.stringify(
              o.ok
                ? { jsonrpc: '2.0', id: o.id, result: { content: [] } }
                : { jsonrpc: '2.0', id: o.id, error: { code: 1, message: 'm' } },
            ),
          );
          const it = order[Symbol.iterator]();
          let ri = 0;
          const open: number[] = [];
          while (ri < requests.length || open.length > 0) {
            if (ri < requests.length && (open.length === 0 || it.next().value)) {
              feed(c, 'client', requests[ri]!);
              open.push(ri++);
            } else {
              const k = open.splice(it.next().value ? 0 : open.length - 1, 1)[0]!;
              feed(c, 'server', answers[k]!);
            }
          }
          expect(calls).toHaveLength(uniq.length);
          for (const r of calls) {
            const o = uniq.find((u) => JSON.stringify(u.id) === r.idText)!;
            expect(r.toolName).toBe(`t${JSON.stringify(o.id)}`);
            expect(r.status).toBe(o.ok ? 'success' : 'rpc_error');
          }
        },
      ),
    );
  });
});

describe('entry lines', () => {
  const session = {
    session: '6f1c2a9e-0000-4000-8000-000000000001',
    subject: 'alice',
    role: null,
    backend: null,
  };
  const arbCall = fc.record({
    startedAt: fc.integer({ min: 0, max: 4102444800000 }),
    latencyMs: fc.nat(),
    toolName: fc.string({ minLength: 1, unit: 'binary' }),
    argsText: fc.option(json.map((v) => spaced(v, ' '))),
    idText: fc.oneof(
      fc.integer().map(String),
      fc.string({ unit: 'binary' }).map((s) => JSON.stringify(s)),
    ),
    status: fc.constantFrom('success', 'error', 'rpc_error', 'cancelled', 'no_response', 'denied' as const),
    errorMessage: fc.option(fc.string({ unit: 'binary' })),
  }) as fc.Arbitrary<CallRecord>;

  it('serve accepts every entry line, and the spool form turns back into the same entry', () => {
    fc.assert(
      fc.property(
        arbCall,
        fc.string({ unit: 'binary' }),
        fc.option(fc.string({ unit: 'binary' })),
        (call, subject, role) => {
          const line = entryLine(
            call,
            { ...session, subject, role },
            { serverName: 'srv', clientInfoText: '{"name":"c","version":"1"}' },
          );
          expect(line.endsWith('\n')).toBe(true);
          expect(line.slice(0, -1)).not.toContain('\n');
          const opts = { redactKeys: new Set(['password']) };
          const first = parseEntry(Buffer.from(line.slice(0, -1)), opts);
          if (!first.ok) {
            // Only the limits of §3 may refuse one (a name past 1024 bytes, a subject past 1024).
            expect(first.reason).toMatch(/tool_name|client_subject|too long|bytes/);
            return;
          }
          expect(first.row.response_status).toBe(call.status);
          // The id comes back as sent, but for what serve sanitises (U+0000, lone surrogates: §3).
          const id = JSON.parse(call.idText) as unknown;
          expect(JSON.parse(first.row.extra!).jsonrpc_id).toEqual(
            typeof id === 'string' ? sanitizeString(id) : id,
          );
          const back = wireFromCopy(Buffer.from(encodeCopyRow(first.row)));
          const second = parseEntry(Buffer.from(back.slice(0, -1)), opts);
          expect(second.ok && second.row).toEqual(first.row);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('LineSplitter', () => {
  it('finds the same lines however the stream is cut, and reports overlong ones as null', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.string({ maxLength: 40 }).map((s) => s.replace(/\n/g, '')),
          { maxLength: 8 },
        ),
        fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1 }),
        (lines, cuts) => {
          const bytes = Buffer.from(lines.map((l) => `${l}\n`).join(''));
          const s = new LineSplitter(20);
          const got: (string | null)[] = [];
          let at = 0;
          for (let i = 0; at < bytes.length; i++) {
            const n = cuts[i % cuts.length]!;
            s.push(bytes.subarray(at, at + n), (l) => got.push(l === null ? null : l.toString()));
            at += n;
          }
          s.end((l) => got.push(l === null ? null : l.toString()));
          expect(got).toEqual(lines.map((l) => (Buffer.byteLength(l) > 20 ? null : l)));
        },
      ),
    );
  });
});

describe('peekOverlong', () => {
  const id = fc.oneof(
    fc.integer(),
    fc.string({ unit: 'binary' }),
    fc.constantFrom('1', 'a"b', 'a\\"', '\\', '}'),
  );
  it('finds the id of SDK-shaped requests (members first) and responses (id last) from their ends', () => {
    fc.assert(
      fc.property(id, fc.string({ maxLength: 30 }), fc.boolean(), (i, name, isError) => {
        const pad = 'z'.repeat(20_000);
        const req = Buffer.from(
          JSON.stringify({
            jsonrpc: '2.0',
            id: i,
            method: 'tools/call',
            params: { name, arguments: { pad } },
          }),
        );
        const p = peekOverlong(req.subarray(0, OVERLONG_ENDS), req.subarray(-OVERLONG_ENDS));
        expect(p.idKey).toBe(idKeyOf(i));
        expect(p.method).toBe('tools/call');
        if (Buffer.byteLength(JSON.stringify(name)) < 3000) expect(p.toolName).toBe(name);
        const res = Buffer.from(
          JSON.stringify({
            result: { content: [{ type: 'text', text: pad }], isError },
            jsonrpc: '2.0',
            id: i,
          }),
        );
        const q = peekOverlong(res.subarray(0, OVERLONG_ENDS), res.subarray(-OVERLONG_ENDS));
        expect([q.idKey, q.method, q.isError, q.rpcError]).toEqual([idKeyOf(i), null, isError, false]);
        const err = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: i, error: { code: 1, message: pad } }));
        const e = peekOverlong(err.subarray(0, OVERLONG_ENDS), err.subarray(-OVERLONG_ENDS));
        expect([e.idKey, e.rpcError]).toEqual([idKeyOf(i), true]);
      }),
      { numRuns: 200 },
    );
  });

  it('an id only inside the body is never taken for the message id', () => {
    const body = Buffer.from(
      `{"result":{"content":[{"text":"\\"id\\":7}"}],"x":{"id":8}},"jsonrpc":"2.0","id":9}`,
    );
    expect(peekOverlong(body, body).idKey).toBe('n:9');
    const noId = Buffer.from('{"result":{"x":{"id":8}}}');
    expect(peekOverlong(noId, noId).idKey).toBeNull();
  });

  it('LineSplitter keeps the two ends of an overlong line, however it is cut', () => {
    const line = Buffer.from(`${'a'.repeat(5000)}${'m'.repeat(20_000)}${'b'.repeat(5000)}`);
    for (const cut of [1, 777, 4096, 9999, 40_000]) {
      const s = new LineSplitter(10_000);
      const got: unknown[] = [];
      for (let at = 0; at <= line.length; at += cut) {
        s.push(Buffer.concat([line, Buffer.from('\n')]).subarray(at, at + cut), (l, o) => got.push([l, o]));
      }
      expect(got).toEqual([
        [
          null,
          { head: line.subarray(0, OVERLONG_ENDS), tail: line.subarray(-OVERLONG_ENDS), size: line.length },
        ],
      ]);
    }
  });
});

describe('Correlator.fastServerResult', () => {
  /** A response or server request in one of the member orders peers use. */
  const message = fc.record({
    id: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constantFrom('0', '1', 'a"b')),
    kind: fc.constantFrom('result', 'isError', 'error', 'request'),
    body: fc.jsonValue({ maxDepth: 3 }),
    order: fc.constantFrom('id-first', 'id-last', 'jsonrpc-last'),
  });
  const text = (m: { id: unknown; kind: string; body: unknown; order: string }) => {
    const payload: Record<string, unknown> =
      m.kind === 'error'
        ? { error: { code: -1, message: JSON.stringify(m.body) } }
        : m.kind === 'request'
          ? { method: 'sampling/createMessage', params: { result: m.body } }
          : {
              result: {
                content: [{ type: 'text', text: JSON.stringify(m.body) }],
                extra: m.body,
                ...(m.kind === 'isError' ? { isError: true } : {}),
              },
            };
    const o =
      m.order === 'id-first'
        ? { jsonrpc: '2.0', id: m.id, ...payload }
        : m.order === 'id-last'
          ? { ...payload, jsonrpc: '2.0', id: m.id }
          : { id: m.id, ...payload, jsonrpc: '2.0' };
    return JSON.stringify(o);
  };

  it('takes the plain results of SDK servers, and leaves the rest to the full parse', () => {
    const calls: CallRecord[] = [];
    const c = new Correlator(
      (r) => calls.push(r),
      () => 0,
    );
    for (const id of [7, 8, 9])
      c.fromClient(readLine(`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"t"}}`)!);
    expect(
      c.fastServerResult(
        Buffer.from(
          '{"result":{"content":[{"type":"text","text":"a \\"error\\" b"}]},"jsonrpc":"2.0","id":7}\r',
        ),
      ),
    ).toBe(true);
    expect(c.fastServerResult(Buffer.from('{"jsonrpc":"2.0","id":8,"result":{"content":[]}}'))).toBe(true);
    expect(
      c.fastServerResult(Buffer.from('{"jsonrpc":"2.0","id":9,"result":{"content":[],"isError":true}}')),
    ).toBe(false);
    expect(c.fastServerResult(Buffer.from('[{"jsonrpc":"2.0","id":9,"result":{}}]'))).toBe(false);
    expect(calls.map((x) => [x.idText, x.status])).toEqual([
      ['7', 'success'],
      ['8', 'success'],
    ]);
  });

  it('closes calls exactly as the full parse does, whatever the server sends', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 10 }), (msgs) => {
        const run = (fast: boolean) => {
          const calls: CallRecord[] = [];
          const c = new Correlator(
            (r) => calls.push(r),
            () => 0,
          );
          for (const id of [0, 1, 2, 3, '0', '1', 'a"b']) {
            c.fromClient(
              readLine(JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 't' } }))!,
            );
          }
          for (const m of msgs) {
            const line = Buffer.from(text(m));
            if (!(fast && c.fastServerResult(line))) c.fromServer(readLine(line.toString())!);
          }
          c.endAll('end');
          return calls.map(({ startedAt: _, ...rest }) => rest);
        };
        expect(run(true)).toEqual(run(false));
      }),
      { numRuns: 500 },
    );
  });
});
