import { describe, expect, it } from 'vitest';
import { DEFAULT_REDACT_KEYS, type EntryRow, parseEntry, parseRedactKeys } from '../../src/entry/parse.js';

const REDACT = new Set<string>(DEFAULT_REDACT_KEYS);
const base = {
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
};

function parseText(text: string, redactKeys: ReadonlySet<string> = REDACT) {
  return parseEntry(Buffer.from(text), { redactKeys });
}
function parseObj(over: Record<string, unknown>, drop: string[] = []) {
  const o: Record<string, unknown> = { ...base, ...over };
  for (const k of drop) delete o[k];
  return parseText(JSON.stringify(o));
}
function row(text: string, redactKeys: ReadonlySet<string> = REDACT): EntryRow {
  const r = parseText(text, redactKeys);
  if (!r.ok) throw new Error(`rejected: ${r.reason}`);
  return r.row;
}
function reason(r: ReturnType<typeof parseEntry>): string {
  if (r.ok) throw new Error('accepted');
  return r.reason;
}

describe('parseEntry: accepted entries', () => {
  it('maps every field to its column text', () => {
    const r = parseObj({});
    expect(r.ok && r.row).toEqual({
      request_id: base.request_id,
      timestamp: base.timestamp,
      client_subject: 'user:ada.example',
      client_role: 'analyst',
      tool_name: 'file.read',
      backend_name: 'fs-main',
      request_args: '{"path":"/tmp/a"}',
      response_status: 'ok',
      error_message: null,
      latency_ms: '12',
      extra: null,
    });
  });

  it('keeps every digit of numbers in request_args (nothing passes through a JS number)', () => {
    const text = JSON.stringify(base).replace(
      '{"path":"/tmp/a"}',
      '{"n":12345678901234567890123,"f":0.1000000000000000055511151231257827,"e":1E400}',
    );
    expect(row(text).request_args).toBe(
      '{"n":12345678901234567890123,"f":0.1000000000000000055511151231257827,"e":1E400}',
    );
  });

  it('stores missing or null optional fields as SQL NULL (C23 lines 4 and 5)', () => {
    const r = parseObj({ request_args: null, client_role: null }, [
      'backend_name',
      'error_message',
      'latency_ms',
    ]);
    expect(
      r.ok && [
        r.row.request_args,
        r.row.client_role,
        r.row.backend_name,
        r.row.error_message,
        r.row.latency_ms,
      ],
    ).toEqual([null, null, null, null, null]);
    const r2 = parseObj({}, ['request_args']);
    expect(r2.ok && r2.row.request_args).toBeNull();
  });

  it('takes request_args of any JSON type as its own text (C23)', () => {
    expect(
      parseObj({ request_args: ['a', 1, { k: null }] }).ok &&
        row(JSON.stringify({ ...base, request_args: ['a', 1, { k: null }] })).request_args,
    ).toBe('["a",1,{"k":null}]');
    expect(row(JSON.stringify({ ...base, request_args: 'plain string' })).request_args).toBe(
      '"plain string"',
    );
    expect(row(JSON.stringify({ ...base, request_args: 42 })).request_args).toBe('42');
    expect(row(JSON.stringify({ ...base, request_args: {} })).request_args).toBe('{}');
  });

  it('puts unknown fields in extra, numbers exact', () => {
    const text = JSON.stringify(base).replace(
      /}$/,
      ',"trace_id":"abc","n":123456789012345678901,"nested":{"a":[1,2]}}',
    );
    expect(row(text).extra).toBe('{"trace_id":"abc","n":123456789012345678901,"nested":{"a":[1,2]}}');
  });

  it('accepts epoch milliseconds and RFC 3339 variants', () => {
    expect(row(JSON.stringify({ ...base, timestamp: 1714564800123 })).timestamp).toBe(
      '2024-05-01T12:00:00.123Z',
    );
    for (const ts of [
      '2024-05-01T12:00:00.123456789+02:00',
      '2024-05-01 12:00:00z',
      '2024-02-29T00:00:00-05:30',
      '2016-12-31T23:59:60Z',
    ]) {
      expect(row(JSON.stringify({ ...base, timestamp: ts })).timestamp).toBe(ts);
    }
  });

  it('accepts every UUID form Postgres reads', () => {
    for (const id of [
      'C0100000-0000-4000-8000-000000000001',
      'c01000000000400080000000000000001'.slice(0, 32),
      '{c0100000-0000-4000-8000-000000000001}',
      'c010-0000-0000-4000-8000-0000-0000-0001',
    ]) {
      expect(parseObj({ request_id: id }).ok).toBe(true);
    }
  });

  it('keeps latency_ms exact up to the bigint maximum', () => {
    const text = JSON.stringify(base).replace('"latency_ms":12', '"latency_ms":9223372036854775807');
    expect(row(text).latency_ms).toBe('9223372036854775807');
  });

  it('an empty client_subject is an anonymous caller', () => {
    expect(parseObj({ client_subject: '' }).ok).toBe(true);
  });
});

describe('parseEntry: sanitising (C01–C04)', () => {
  it('replaces NUL in request_args values and keys, and reports the paths (C01)', () => {
    const text = JSON.stringify(base).replace(
      '{"path":"/tmp/a"}',
      '{"path":"/tmp/a\\u0000b.txt","k\\u0000ey":1}',
    );
    const r = parseText(text);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(JSON.parse(r.row.request_args!)).toEqual({ path: '/tmp/a\ufffdb.txt', 'k\ufffdey': 1 });
    expect(r.sanitized.length).toBeGreaterThanOrEqual(2);
  });

  it('replaces NUL in text columns (C02)', () => {
    const r = parseObj({
      client_subject: 'user:ada\u0000.example',
      error_message: 'upstream sent \u0000 then closed',
    });
    expect(r.ok && [r.row.client_subject, r.row.error_message]).toEqual([
      'user:ada\ufffd.example',
      'upstream sent \ufffd then closed',
    ]);
    expect(r.ok && r.sanitized).toEqual(['client_subject', 'error_message']);
  });

  it('replaces lone surrogates, keeps real pairs (C03)', () => {
    const l1 = JSON.stringify(base)
      .replace('{"path":"/tmp/a"}', '{"q":"abc\\ud800"}')
      .replace('"error_message":null', '"error_message":"bad \\udc00 tail"');
    const r1 = parseText(l1);
    expect(r1.ok && JSON.parse(r1.row.request_args!).q).toBe('abc\ufffd');
    expect(r1.ok && r1.row.error_message).toBe('bad \ufffd tail');
    const l2 = JSON.stringify(base).replace('{"path":"/tmp/a"}', '{"q":"smile \\ud83d\\ude00"}');
    const r2 = parseText(l2);
    expect(r2.ok && JSON.parse(r2.row.request_args!).q).toBe('smile 😀');
    expect(r2.ok && r2.sanitized).toEqual([]);
    const l3 = JSON.stringify(base).replace('{"path":"/tmp/a"}', '{"q":"\\ude00\\ud83d"}');
    const r3 = parseText(l3);
    expect(r3.ok && JSON.parse(r3.row.request_args!).q).toBe('\ufffd\ufffd');
  });

  it('does not mistake an escaped backslash before "u" for an escape', () => {
    const text = JSON.stringify(base).replace('{"path":"/tmp/a"}', '{"p":"C:\\\\u0000x"}');
    const r = parseText(text);
    expect(r.ok && r.row.request_args).toBe('{"p":"C:\\\\u0000x"}');
    expect(r.ok && r.sanitized).toEqual([]);
  });

  it('stores invalid UTF-8 with U+FFFD and flags it (C04 line 2)', () => {
    const text = Buffer.concat([
      Buffer.from(JSON.stringify(base).replace('user:ada.example', 'user:')),
      Buffer.alloc(0),
    ]);
    const i = text.indexOf('user:') + 5;
    const bad = Buffer.concat([text.subarray(0, i), Buffer.from([0xc3, 0x28]), text.subarray(i)]);
    const r = parseEntry(bad, { redactKeys: REDACT });
    expect(r.ok && r.row.client_subject).toBe('user:\ufffd(');
    expect(r.ok && r.sanitized.length).toBe(1);
  });
});

describe('parseEntry: redaction (CONTRACT.md §6)', () => {
  it('redacts listed keys at any depth, inside arrays, case-insensitively, whatever the value type', () => {
    const args = {
      user: 'a',
      Password: 'x',
      nested: { deeper: [{ API_KEY: 'k', keep: 1 }], token: { a: 1 } },
      list: [{ cookie: ['c'] }],
    };
    const r = parseObj({ request_args: args });
    expect(r.ok && JSON.parse(r.row.request_args!)).toEqual({
      user: 'a',
      Password: '[REDACTED]',
      nested: { deeper: [{ API_KEY: '[REDACTED]', keep: 1 }], token: '[REDACTED]' },
      list: [{ cookie: '[REDACTED]' }],
    });
    expect(r.ok && r.redacted).toBe(4);
  });

  it('matches a key written with escapes', () => {
    const text = JSON.stringify(base).replace('{"path":"/tmp/a"}', '{"pass\\u0077ord":"x"}');
    expect(JSON.parse(row(text).request_args!)).toEqual({ password: '[REDACTED]' });
  });

  it('compares keys case-insensitively also beyond ASCII, with or without other escapes (U+212A KELVIN SIGN)', () => {
    // "to\u212Aen".toLowerCase() is "token": redacted whether or not the text holds a \u escape.
    for (const extra of ['', ',"n":"\\u0041"']) {
      const text = JSON.stringify(base).replace('{"path":"/tmp/a"}', `{"to\u212Aen":"x"${extra}}`);
      const r = parseText(text);
      expect(r.ok && JSON.parse(r.row.request_args!)['to\u212Aen'], extra).toBe('[REDACTED]');
      expect(r.ok && r.redacted).toBe(1);
    }
  });

  it("is off with --redact-keys ''", () => {
    const r = parseEntry(Buffer.from(JSON.stringify({ ...base, request_args: { password: 'x' } })), {
      redactKeys: parseRedactKeys(''),
    });
    expect(r.ok && r.row.request_args).toBe('{"password":"x"}');
  });

  it('does not redact fields outside request_args, nor keys that only contain a listed key', () => {
    const r = parseObj({ request_args: { passwords_count: 3 }, token: 'kept-in-extra' });
    expect(r.ok && r.row.request_args).toBe('{"passwords_count":3}');
    expect(r.ok && JSON.parse(r.row.extra!)).toEqual({ token: 'kept-in-extra' });
  });
});

describe('parseEntry: rejects name the field and the fault', () => {
  const cases: [string, Record<string, unknown>, string[], string][] = [
    ['missing request_id', {}, ['request_id'], 'request_id: missing (required)'],
    ['request_id not a string', { request_id: 5 }, [], 'request_id: expected a string, got number'],
    ['request_id empty (C14)', { request_id: '' }, [], 'request_id: not a UUID'],
    ['request_id bad', { request_id: 'c01-xyz' }, [], 'request_id: not a UUID'],
    [
      'unbalanced brace',
      { request_id: '{c0100000-0000-4000-8000-000000000001' },
      [],
      'request_id: not a UUID',
    ],
    ['missing timestamp', {}, ['timestamp'], 'timestamp: missing (required)'],
    [
      'timestamp without zone',
      { timestamp: '2024-05-01T12:00:00' },
      [],
      'timestamp: not an RFC 3339 time with zone',
    ],
    ['timestamp date only', { timestamp: '2024-05-01' }, [], 'timestamp: not an RFC 3339 time with zone'],
    ['timestamp Feb 30', { timestamp: '2024-02-30T00:00:00Z' }, [], 'timestamp: day out of range'],
    ['timestamp Feb 29 non-leap', { timestamp: '2023-02-29T00:00:00Z' }, [], 'timestamp: day out of range'],
    ['timestamp hour 24', { timestamp: '2024-05-01T24:00:00Z' }, [], 'timestamp: time of day out of range'],
    ['timestamp float ms', { timestamp: 1.5 }, [], 'timestamp: epoch milliseconds must be an integer'],
    [
      'timestamp bool',
      { timestamp: true },
      [],
      'timestamp: expected an RFC 3339 string or epoch milliseconds, got boolean',
    ],
    ['missing client_subject', {}, ['client_subject'], 'client_subject: missing (required)'],
    ['client_subject null', { client_subject: null }, [], 'client_subject: expected a string, got null'],
    [
      'client_subject too long',
      { client_subject: 'é'.repeat(513) },
      [],
      'client_subject: longer than 1024 bytes (1026)',
    ],
    ['client_role number', { client_role: 1 }, [], 'client_role: expected a string, got number'],
    ['tool_name empty', { tool_name: '' }, [], 'tool_name: empty (at least 1 byte needed)'],
    ['tool_name too long', { tool_name: 'x'.repeat(1025) }, [], 'tool_name: longer than 1024 bytes (1025)'],
    ['backend_name object', { backend_name: {} }, [], 'backend_name: expected a string, got object'],
    ['missing response_status', {}, ['response_status'], 'response_status: missing (required)'],
    [
      'response_status too long',
      { response_status: 's'.repeat(65) },
      [],
      'response_status: longer than 64 bytes (65)',
    ],
    ['error_message array', { error_message: [] }, [], 'error_message: expected a string, got array'],
    ['latency negative', { latency_ms: -1 }, [], 'latency_ms: not an integer >= 0 (-1)'],
    ['latency fraction', { latency_ms: 1.5 }, [], 'latency_ms: not an integer >= 0 (1.5)'],
    ['latency string', { latency_ms: '12' }, [], 'latency_ms: expected an integer >= 0 or null, got string'],
  ];
  for (const [name, over, drop, expected] of cases) {
    it(name, () => {
      expect(reason(parseObj(over, drop))).toBe(expected);
    });
  }

  it('lengths count UTF-8 bytes after sanitising', () => {
    // 1024 bytes of which one NUL (1 byte) becomes U+FFFD (3 bytes): 1026 bytes
    expect(reason(parseObj({ client_subject: `${'a'.repeat(1023)}\u0000` }))).toBe(
      'client_subject: longer than 1024 bytes (1026)',
    );
  });

  it('latency beyond bigint', () => {
    const text = JSON.stringify(base).replace('"latency_ms":12', '"latency_ms":9223372036854775808');
    expect(reason(parseText(text))).toBe('latency_ms: larger than a bigint holds (9223372036854775808)');
  });

  it('lines that are not JSON objects', () => {
    expect(reason(parseText('{"a":'))).toMatch(/^line: not valid JSON \(/);
    expect(reason(parseText('[1,2]'))).toBe('line: not a JSON object (got array)');
    expect(reason(parseText('null'))).toBe('line: not a JSON object (got null)');
    expect(reason(parseText('"x"'))).toBe('line: not a JSON object (got string)');
  });

  it('a duplicate key takes its last value, as JSON.parse does', () => {
    const text = JSON.stringify(base).replace(
      '"request_args":{"path":"/tmp/a"}',
      '"request_args":{"a":1},"request_args":{"b":2}',
    );
    expect(row(text).request_args).toBe('{"b":2}');
  });
});
