/**
 * The fast path of EntryEncoder against the reference path (parseEntry + encodeCopyRow): for every
 * line the fast path accepts, the reference must accept it too and give the same COPY bytes and
 * redaction count; every line the reference rejects, the fast path must decline.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeCopyRow } from '../../src/entry/copyText.js';
import { EntryEncoder } from '../../src/entry/encode.js';
import { DEFAULT_REDACT_KEYS, type ParseOptions, parseEntry, timestampFault } from '../../src/entry/parse.js';

const CORPUS = join(import.meta.dirname, '..', 'fixtures', 'corpus');
const corpusLines: Buffer[] = readdirSync(CORPUS)
  .filter((f) => f.endsWith('.ndjson'))
  .flatMap((f) =>
    readFileSync(join(CORPUS, f), 'utf8')
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .map((l) => Buffer.from(l)),
  );

const DEFAULT: ParseOptions = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };

/** Checks one line; returns whether the fast path took it. */
function check(line: Buffer, options: ParseOptions = DEFAULT, encoder = new EntryEncoder(options)): boolean {
  const fast = encoder.fast(line);
  const ref = parseEntry(line, options);
  if (fast === null) return false;
  if (!ref.ok) throw new Error(`fast path accepted a line the reference rejects (${ref.reason}): ${line}`);
  const want = Buffer.from(encodeCopyRow(ref.row), 'utf8');
  if (!fast.equals(want)) {
    throw new Error(`COPY lines differ for ${line}\nfast: ${fast}\nref:  ${want}`);
  }
  expect(encoder.encode(line)).toMatchObject({ ok: true, redacted: ref.redacted });
  return true;
}

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const entry = (over: Record<string, unknown> = {}, drop: string[] = []) => {
  const o: Record<string, unknown> = {
    request_id: 'c0100000-0000-4000-8000-000000000001',
    timestamp: '2024-05-01T12:00:00Z',
    client_subject: 'user:ada.example',
    client_role: 'analyst',
    tool_name: 'file.read',
    backend_name: 'fs-main',
    request_args: { path: '/tmp/a' },
    response_status: 'ok',
    error_message: null,
    latency_ms: 12,
    ...over,
  };
  for (const k of drop) delete o[k];
  return JSON.stringify(o);
};

describe('EntryEncoder fast path', () => {
  it('gives the reference COPY line for every corpus line it takes, and takes most of them', () => {
    const encoder = new EntryEncoder(DEFAULT);
    let accepted = 0;
    let fast = 0;
    for (const line of corpusLines) {
      if (parseEntry(line, DEFAULT).ok) accepted++;
      if (check(line, DEFAULT, encoder)) fast++;
    }
    expect(corpusLines.length).toBeGreaterThan(4000);
    // The corpus is real input: the fast path must be the common path, not the exception.
    expect(fast / accepted).toBeGreaterThan(0.9);
  });

  it('takes and encodes escapes, redaction, epoch times, extras and nulls exactly', () => {
    const cases = [
      entry(),
      entry({ client_subject: 'tab\there\nnew\\line "q" \u00e9 \u{1f600} / \b\f\r' }),
      `{"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"\\u00e9\\ud83d\\ude00\\u005c\\u0009\\/\\u2028","tool_name":"t","response_status":"ok"}`,
      entry({
        request_args: { Password: 'x', nested: [{ TOKEN: { deep: 1 } }, { api_key: null }], n: 1.5e300 },
      }),
      entry({ request_args: { a: 'back\\slash\ttab', b: [1, -0, 0.5, 1e-7, true, false, null] } }),
      entry({ timestamp: 1714564800123 }),
      entry({ timestamp: -1 }),
      entry({ latency_ms: 0 }),
      `{"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"","tool_name":"t","response_status":"ok","latency_ms":9223372036854775807}`,
      entry({ zone: 'eu', nested: { a: [1, 2, { b: 'c\\d' }] }, 'k\u00e9y': 'v' }),
      entry({ request_args: 'just a string' }, []),
      entry({ request_args: null, client_role: null, backend_name: null }),
      entry({}, ['client_role', 'backend_name', 'request_args', 'error_message', 'latency_ms']),
      `  {"request_id" : "{C0100000-0000-4000-8000-000000000001}" ,\t"timestamp":"2024-05-01 12:00:00.123456+02:00", "client_subject":"s","tool_name":"t","response_status":"ok","request_args":{\r\n "a" :\t[ 1 , 2 ]\n}}  `,
      `{"request_id":"c0100000000040008000000000000001","timestamp":"2024-05-01T12:00:00z","client_subject":"s","tool_name":"t","response_status":"ok"}`,
      // Repeated keys, known and unknown: the last one counts and takes the last place (JSON.parse).
      `{"request_id":"c0100000-0000-4000-8000-000000000001","request_id":"c0100000-0000-4000-8000-000000000002","timestamp":"2024-05-01T12:00:00Z","client_subject":"s","tool_name":"t","response_status":"ok"}`,
      `{"request_id":"c0100000-0000-4000-8000-000000000001","z":1,"timestamp":"2024-05-01T12:00:00Z","a":2,"client_subject":"s","z":{"n":3},"tool_name":"t","response_status":"ok","request_args":{"password":1},"request_args":{"q":1}}`,
      // Keys with escapes or non-ASCII bytes are decoded and compared as the reference does.
      `{"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"s","tool_name":"t","response_status":"ok","request_args":{"\\u0070assword":"x","K\u212a":1,"Töken":2,"Key":3}}`,
    ];
    for (const text of cases) expect(check(Buffer.from(text)), text).toBe(true);
  });

  it('declines what needs sanitising or the reference path, and still matches it', () => {
    const declined = [
      entry({ client_subject: 'a\u0000b' }),
      `{"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"\\ud800","tool_name":"t","response_status":"ok"}`,
      entry().replace('"latency_ms":12', '"latency_ms":1e3'),
      entry().replace('"latency_ms":12', '"latency_ms":12.0'),
      entry({ latency_ms: -1 }),
      `{"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"s","tool_name":"t","response_status":"ok","latency_ms":9223372036854775808}`,
      entry({ client_subject: 'x'.repeat(1025) }),
      entry({ tool_name: '' }),
      entry({ response_status: 7 }),
      entry({}, ['tool_name']),
      entry({ timestamp: '2024-02-30T00:00:00Z' }),
      entry({ request_id: 'c0100000-0000-4000-8000-00000000000' }),
      `{"request_id":"c0100000-0000-4000-8000-000000000001",}`,
      '[1,2]',
      '{"a":1} x',
      entry({ request_args: JSON.parse(`${'['.repeat(80)}1${']'.repeat(80)}`) }),
    ];
    for (const text of declined) {
      expect(new EntryEncoder(DEFAULT).fast(Buffer.from(text)), text).toBeNull();
      const r = new EntryEncoder(DEFAULT).encode(Buffer.from(text));
      const ref = parseEntry(Buffer.from(text), DEFAULT);
      expect(r.ok).toBe(ref.ok);
      if (!r.ok && !ref.ok) expect(r.reason).toBe(ref.reason);
      if (r.ok && ref.ok) expect(r.copy.toString()).toBe(encodeCopyRow(ref.row));
    }
    // Invalid UTF-8 is left to the reference path, which replaces it.
    const bad = Buffer.from(entry({ client_subject: 'A' }));
    bad[bad.indexOf('"A"') + 1] = 0xff;
    expect(new EntryEncoder(DEFAULT).fast(bad)).toBeNull();
    expect(new EntryEncoder(DEFAULT).encode(bad)).toMatchObject({ ok: true, sanitized: ['(invalid UTF-8)'] });
  });

  it('accepts exactly the timestamps the reference accepts', () => {
    const stamps = [
      '2024-02-29T00:00:00Z',
      '2023-02-29T00:00:00Z',
      '1900-02-29T00:00:00Z',
      '2000-02-29T00:00:00Z',
      '2024-04-31T00:00:00Z',
      '2024-04-30t23:59:60z',
      '2024-04-30 23:59:59.123456789+15:59',
      '2024-04-30T23:59:59+16:00',
      '2024-04-30T23:59:59-00:60',
      '2024-04-30T23:59:59.Z',
      '2024-04-30T24:00:00Z',
      '2024-04-30T23:60:00Z',
      '2024-04-30T23:59:61Z',
      '0000-01-01T00:00:00Z',
      '0001-01-01T00:00:00Z',
      '2024-00-10T00:00:00Z',
      '2024-13-10T00:00:00Z',
      '2024-01-00T00:00:00Z',
      '2024-01-32T00:00:00Z',
      '2024-01-01T00:00:00',
      '2024-01-01T00:00:00+0100',
      '2024-01-01T00:00:00+01:00x',
      '2024-1-01T00:00:00Z',
      '2024-01-01X00:00:00Z',
      '+2024-01-01T00:00:00Z',
    ];
    for (const ts of stamps) {
      const line = Buffer.from(entry({ timestamp: ts }));
      expect(new EntryEncoder(DEFAULT).fast(line) !== null, ts).toBe(timestampFault(ts) === null);
      check(line);
    }
  });

  it('follows --redact-keys and replay ignored fields', () => {
    const line = Buffer.from(
      entry({ request_args: { Secret: 1, mine: { MINE: 2 } }, id: 5, received_at: 'x', other: 1 }),
    );
    const custom: ParseOptions = {
      redactKeys: new Set(['mine']),
      ignoreFields: new Set(['id', 'received_at']),
    };
    expect(check(line, custom)).toBe(true);
    expect(new EntryEncoder(custom).fast(line)!.toString()).toContain('{"Secret":1,"mine":"[REDACTED]"}');
    expect(new EntryEncoder(custom).fast(line)!.toString()).toMatch(/\t\{"other":1\}\n$/);
    expect(check(line, { redactKeys: new Set() })).toBe(true);
    // Keys are taken as given (ParseOptions: lower-cased); an upper-case one matches on neither path.
    const upper = Buffer.from(entry({ request_args: { token: 1, Token: 2 } }));
    expect(check(upper, { redactKeys: new Set(['Token']) })).toBe(true);
    expect(new EntryEncoder({ redactKeys: new Set(['Token']) }).encode(upper)).toMatchObject({ redacted: 0 });
    // A redact key that is not plain ASCII turns the fast path off (the reference lower-cases Unicode).
    expect(new EntryEncoder({ redactKeys: new Set(['pässword']) }).fast(line)).toBeNull();
  });

  it('never disagrees with the reference on mutated corpus lines', () => {
    const rand = prng(7);
    const pieces = [
      '"',
      '\\',
      '{',
      '}',
      '[',
      ']',
      ',',
      ':',
      '0',
      '9',
      '-',
      '.',
      'e',
      'u',
      ' ',
      '\t',
      'n',
      '\\u0000',
      '\\ud800',
      '\\u00e9',
      'null',
      '1e3',
      '"x"',
    ];
    const encoder = new EntryEncoder(DEFAULT);
    let tried = 0;
    let taken = 0;
    for (let n = 0; n < 20000; n++) {
      const src = corpusLines[Math.floor(rand() * corpusLines.length)]!.toString('latin1');
      const at = Math.floor(rand() * src.length);
      let text: string;
      const kind = rand();
      if (kind < 0.3) text = src.slice(0, at) + src.slice(at + 1 + Math.floor(rand() * 3));
      else if (kind < 0.7)
        text = src.slice(0, at) + pieces[Math.floor(rand() * pieces.length)] + src.slice(at);
      else if (kind < 0.85)
        text = src.slice(0, at) + String.fromCharCode(Math.floor(rand() * 256)) + src.slice(at + 1);
      else {
        const len = Math.floor(rand() * 20);
        text = src.slice(0, at) + src.slice(at, at + len) + src.slice(at);
      }
      tried++;
      if (check(Buffer.from(text, 'latin1'), DEFAULT, encoder)) taken++;
    }
    expect(tried).toBe(20000);
    // Many mutations leave a valid entry (inside a string, say): the fast path must have met them.
    expect(taken).toBeGreaterThan(1000);
  });
});
