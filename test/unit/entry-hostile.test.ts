/**
 * CONTRACT.md §3 "Any line, any client": the entry path on hostile lines. Two kinds of checks:
 * - property-based (fast-check): generated entries whose request_args and extra fields hold
 *   arbitrary and adversarial JSON (every escape, lone surrogates, `\u0000`, invalid UTF-8, deep
 *   nesting, many keys, duplicate keys) — the encoder (fast path or not) gives exactly the
 *   reference's COPY line or reject reason, and the reference's request_args is the JSON value of
 *   the line, sanitised and redacted (checked against a small model built on JSON.parse);
 * - each hostile shape of issue 9 at the line limit (~1 MiB): the result is right and bounded
 *   (before the fix these ran the heap out, or took minutes: quadratic key checks and rescans).
 * Speed per byte of each shape is measured by `bench/hostile.mjs`, not here (no timed tests).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCopyRow } from '../../src/entry/copyDecode.js';
import { encodeCopyRow } from '../../src/entry/copyText.js';
import { EntryEncoder } from '../../src/entry/encode.js';
import { MAX_JSON_DEPTH, MAX_PATH_CHARS, MAX_REPORTED_PATHS } from '../../src/entry/grammar.js';
import { DEFAULT_REDACT_KEYS, type ParseOptions, parseEntry } from '../../src/entry/parse.js';

const OPTIONS: ParseOptions = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };
const HEAD =
  '"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"s","tool_name":"t","response_status":"ok"';

/** The encoder and the reference agree on the line: same COPY bytes, or the same reject reason. */
function agree(line: Buffer, encoder = new EntryEncoder(OPTIONS)): ReturnType<typeof parseEntry> {
  const ref = parseEntry(line, OPTIONS);
  const got = encoder.encode(line);
  expect(got.ok).toBe(ref.ok);
  if (got.ok && ref.ok) expect(got.copy.toString('utf8')).toBe(encodeCopyRow(ref.row));
  if (!got.ok && !ref.ok) expect(got.reason).toBe(ref.reason);
  return ref;
}

/** The model of sanitising and redaction (CONTRACT.md §3, §6) on a parsed value. */
function model(v: unknown, redact: boolean): unknown {
  if (typeof v === 'string') return v.toWellFormed().replaceAll('\u0000', '\ufffd');
  if (Array.isArray(v)) return v.map((x) => model(x, redact));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const key = model(k, false) as string;
      out[key] = redact && OPTIONS.redactKeys.has(k.toLowerCase()) ? '[REDACTED]' : model(x, redact);
    }
    return out;
  }
  return v;
}

/** JSON text of a string, with some characters written as escapes of every kind. */
const escapedString = fc
  .array(
    fc.oneof(
      fc.string({ maxLength: 4 }).map((s) => JSON.stringify(s).slice(1, -1)),
      fc.constantFrom('\\n', '\\t', '\\r', '\\b', '\\f', '\\/', '\\\\', '\\"', '\\u0000', '\\u001f'),
      fc.constantFrom('\\ud800', '\\udc00', '\\ud83d\\ude00', '\\ude00\\ud83d', '\\u00e9', '\\u2028'),
      fc.integer({ min: 0, max: 0xffff }).map((c) => `\\u${c.toString(16).padStart(4, '0')}`),
      fc.constantFrom('é', '日本', '\u{1f600}', '\t'.replace('\t', ' ')),
    ),
    { maxLength: 12 },
  )
  .map((parts) => `"${parts.join('')}"`);

/** JSON text of a value: nested objects and arrays, hostile strings and keys, numbers of every form. */
const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    escapedString,
    fc.constantFrom('0', '-0', '1e400', '12345678901234567890123', '0.1e-7', '-1.5E+3', 'true', 'null'),
    fc.array(tie('value'), { maxLength: 5 }).map((xs) => `[${xs.join(',')}]`),
    fc
      .array(
        fc.tuple(
          fc.oneof(escapedString, fc.constantFrom('"password"', '"Token"', '"API_KEY"', '"\\u0074oken"')),
          tie('value'),
        ),
        { maxLength: 5 },
      )
      .map((ms) => `{${ms.map(([k, v]) => `${k} : ${v}`).join(' ,')}}`),
  ),
})).value;

describe('the encoder against the reference, on generated hostile entries', () => {
  it('request_args and extra fields of any JSON: same COPY line, and the model value', () => {
    const encoder = new EntryEncoder(OPTIONS);
    fc.assert(
      fc.property(jsonText, jsonText, (args, extra) => {
        const line = Buffer.from(`{${HEAD},"request_args":${args},"x_extra":${extra}}`);
        const ref = agree(line, encoder);
        expect(ref.ok).toBe(true);
        if (!ref.ok) return;
        expect(JSON.parse(ref.row.request_args!)).toEqual(model(JSON.parse(args), true));
        expect(JSON.parse(ref.row.extra!)).toEqual({ x_extra: model(JSON.parse(extra), false) });
        // The COPY line round-trips to the same texts (no byte can break the stream).
        const cols = decodeCopyRow(encodeCopyRowBytes(ref.row));
        expect(cols[6]).toBe(ref.row.request_args);
        expect(cols).toHaveLength(11);
      }),
      { numRuns: 400 },
    );
  });

  it('any bytes, invalid UTF-8 included, in any field: never throws, always agrees', () => {
    const encoder = new EntryEncoder(OPTIONS);
    const fieldBytes = fc.uint8Array({ maxLength: 12 });
    fc.assert(
      fc.property(
        fc.constantFrom('client_subject', 'tool_name', 'request_id', 'timestamp', 'request_args', 'zz'),
        fieldBytes,
        fc.boolean(),
        (field, bytes, asKey) => {
          const raw = Buffer.from(bytes.filter((c) => c !== 0x22 && c !== 0x5c && c >= 0x20));
          const line = Buffer.concat([
            Buffer.from(`{${HEAD},"${asKey ? '' : field}`),
            asKey ? raw : Buffer.alloc(0),
            Buffer.from(asKey ? '":1,' : '":"'),
            asKey ? Buffer.alloc(0) : raw,
            Buffer.from(asKey ? `"${field}":"v"}` : '"}'),
          ]);
          agree(line, encoder);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('duplicate required fields and duplicate extras: the last one counts, as JSON.parse says', () => {
    const encoder = new EntryEncoder(OPTIONS);
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('tool_name', 'response_status', 'k1', 'k2', 'request_args'), {
          minLength: 1,
          maxLength: 30,
        }),
        (keys) => {
          const members = keys.map((k, i) => `"${k}":"v${i}"`).join(',');
          const line = Buffer.from(`{${HEAD},${members}}`);
          const ref = agree(line, encoder);
          expect(ref.ok).toBe(true);
          if (!ref.ok) return;
          const parsed = JSON.parse(line.toString()) as Record<string, string>;
          expect(ref.row.tool_name).toBe(parsed.tool_name);
          const extra = Object.fromEntries(Object.entries(parsed).filter(([k]) => /^k\d$/.test(k)));
          expect(ref.row.extra === null ? {} : JSON.parse(ref.row.extra)).toEqual(extra);
        },
      ),
      { numRuns: 300 },
    );
  });
});

function encodeCopyRowBytes(row: Parameters<typeof encodeCopyRow>[0]): Buffer {
  const s = encodeCopyRow(row);
  return Buffer.from(s.slice(0, -1), 'utf8');
}

/** A line of about `bytes` bytes: the entry's head, then `body` (members, comma-led). */
const line = (body: string) => Buffer.from(`{${HEAD}${body}}`);

describe('hostile shapes at the line limit (~1 MiB): right, and bounded', () => {
  const MIB = 1024 * 1024;

  it('one long key and ~20,000 strings "\\u0000" (ran the heap out): stored, paths bounded', () => {
    const key = 'k'.repeat(400_000);
    const strings = Array(20_000).fill('"\\u0000"').join(',');
    const l = line(`,"request_args":{"${key}":[${strings}]}`);
    expect(l.length).toBeLessThan(MIB);
    const r = agree(l);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.sanitized.length).toBeLessThanOrEqual(MAX_REPORTED_PATHS + 1);
    for (const p of r.sanitized) expect(p.length).toBeLessThanOrEqual(MAX_PATH_CHARS + 1);
    expect(r.sanitized.at(-1)).toBe(`(and ${20_000 - MAX_REPORTED_PATHS} more)`);
    expect((JSON.parse(r.row.request_args!) as Record<string, string[]>)[key]).toHaveLength(20_000);
    expect(r.row.request_args).not.toContain('\\u0000');
  });

  it('~40,000 unknown top-level keys (a quadratic duplicate check froze the daemon): all in extra', () => {
    const members = Array.from({ length: 40_000 }, (_, i) => `,"k${i}":${i}`).join('');
    const l = line(members);
    const r = agree(l);
    expect(r.ok).toBe(true);
    if (r.ok) expect(Object.keys(JSON.parse(r.row.extra!))).toHaveLength(40_000);
    // The same with one repeat at the end: still agreed (the last value counts).
    const r2 = agree(line(`${members},"k0":"last"`));
    expect(r2.ok && (JSON.parse(r2.row.extra!) as Record<string, unknown>).k0).toBe('last');
  });

  it('many short strings and one escape at the end (the rescan): agreed', () => {
    const strings = Array(100_000).fill('"a"').join(',');
    const r = agree(line(`,"request_args":[${strings},"\\u0000"]`));
    expect(r.ok && r.sanitized).toEqual(['request_args[100000]']);
  });

  it('deep nesting: up to MAX_JSON_DEPTH stored, deeper rejected naming the field (extra fields too)', () => {
    const nest = (d: number, open: string, close: string) => `${open.repeat(d)}1${close.repeat(d)}`;
    const ok = agree(line(`,"request_args":${nest(MAX_JSON_DEPTH, '[', ']')}`));
    expect(ok.ok).toBe(true);
    for (const [open, close] of [
      ['[', ']'],
      ['{"a":', '}'],
    ] as const) {
      const deep = nest(Math.floor((MIB - 400) / (open.length + close.length)), open, close);
      const r1 = agree(line(`,"request_args":${deep}`));
      expect(r1).toMatchObject({ ok: false, code: 'too_deep' });
      expect(!r1.ok && r1.reason).toBe(`request_args: nested deeper than ${MAX_JSON_DEPTH} levels`);
      // A fault in an extra field names that field (it said request_args).
      const r2 = agree(line(`,"trace":{"deep":${nest(MAX_JSON_DEPTH + 1, open, close)}}`));
      expect(!r2.ok && r2.reason).toBe(`trace: nested deeper than ${MAX_JSON_DEPTH} levels`);
    }
    const r3 = agree(Buffer.from(`${'['.repeat(500_000)}${']'.repeat(500_000)}`));
    expect(!r3.ok && r3.reason).toBe(`line: nested deeper than ${MAX_JSON_DEPTH} levels`);
  });

  it('every escape, repeated to the limit, in text fields and request_args: agreed and exact', () => {
    const unit = '\\n\\t\\r\\b\\f\\/\\\\\\"\\u00e9\\ud83d\\ude00\\u0001';
    const many = unit.repeat(Math.floor(400_000 / unit.length));
    const l = Buffer.from(
      `{${HEAD.replace('"client_subject":"s"', `"client_subject":"x"`)},"error_message":"${many}","request_args":{"a":"${many}"}}`,
    );
    const r = agree(l);
    expect(r.ok && r.row.error_message).toBe(JSON.parse(`"${many}"`));
  });

  it('a line of invalid UTF-8 in keys and values: sanitised and agreed', () => {
    const bad = Buffer.from([0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80]);
    const parts: Buffer[] = [Buffer.from(`{${HEAD}`)];
    for (let i = 0; i < 20_000; i++)
      parts.push(Buffer.from(`,"k${i}`), bad, Buffer.from('":"'), bad, Buffer.from('"'));
    parts.push(Buffer.from('}'));
    const r = agree(Buffer.concat(parts));
    expect(r.ok && r.sanitized[0]).toBe('(invalid UTF-8)');
  });
});

describe('small rule breaks (issue 9)', () => {
  it('an epoch timestamp with a fraction is rejected, not rounded (CONTRACT §3: an integer)', () => {
    for (const ts of ['1700000000000.9999999999', '1700000000000.0', '1.7e12', '17E11']) {
      const r = agree(line(`,"timestamp":${ts}`).subarray(0)); // the later key counts
      expect(r, ts).toMatchObject({ ok: false, code: 'bad_timestamp' });
      expect(!r.ok && r.reason).toBe('timestamp: epoch milliseconds must be an integer');
    }
    const ok = agree(line(',"timestamp":1700000000000'));
    expect(ok.ok && ok.row.timestamp).toBe('2023-11-14T22:13:20.000Z');
    const far = agree(line(',"timestamp":8640000000000001'));
    expect(!far.ok && far.reason).toBe('timestamp: epoch milliseconds out of range');
  });

  it('a forged "infinity" timestamp is not an RFC 3339 time', () => {
    for (const ts of ['infinity', '-infinity', 'epoch', 'now']) {
      const r = agree(line(`,"timestamp":"${ts}"`));
      expect(!r.ok && r.reason).toBe('timestamp: not an RFC 3339 time with zone');
    }
  });
});
