/**
 * Output for people against adversarial values (issue 12 item 4, issue 10 "Terminals"): display
 * width with emoji, CJK, combining marks; every line within the terminal width; tables whose
 * borders line up; the vertical layout; and no control or bidi character reaching the terminal.
 * Property-based (fast-check) with a reference: string-width of each printed line.
 */
import { Chalk } from 'chalk';
import fc from 'fast-check';
import stringWidth from 'string-width';
import { describe, expect, it } from 'vitest';
import type { EntryRow, RejectRow, StatsRow } from '../../src/db/queries.js';
import {
  ANONYMOUS,
  groupText,
  rawText,
  rejectJson,
  renderEntriesTable,
  renderRejectsTable,
  renderStatsTable,
  shortTime,
  TextLineFormatter,
  truncate,
  visible,
} from '../../src/read/format.js';

const plain = new Chalk({ level: 0 });
const colour = new Chalk({ level: 1 });
const strip = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '');
/** Every character that must never reach a terminal unescaped. */
const UNSAFE =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/;

/** Text drawn from the hard cases: ASCII, CJK, emoji (with ZWJ and skin tones), combining marks, controls, bidi. */
const hard = fc
  .array(
    fc.constantFrom(
      'a',
      'Z',
      ' ',
      '日本',
      '한',
      '😀',
      '👩‍💻',
      '👍🏽',
      'é',
      'e\u0301',
      '\u0000',
      '\n',
      '\t',
      '\u001b[2J',
      '\u009b31m',
      '\u007f',
      '\u202e',
      '\u2066',
      '\u200f',
      '\u061c',
      '\u2028',
      '\ufeff',
      '%',
      '"',
      '\\',
    ),
    { maxLength: 40 },
  )
  .map((parts) => parts.join(''));

const row = (over: Partial<EntryRow> = {}): EntryRow => ({
  id: '1',
  line: '{}',
  ts: '2026-11-01T10:00:00.123456Z',
  client_subject: 'alice',
  client_role: 'admin',
  tool_name: 'fs.read',
  backend_name: 'fs-main',
  args: '{"path": "/etc/passwd"}',
  response_status: 'success',
  error_message: null,
  latency_ms: '12',
  ...over,
});

const entryArb = fc.record({
  client_subject: hard,
  client_role: fc.option(hard),
  tool_name: hard,
  backend_name: fc.option(hard),
  response_status: fc.oneof(fc.constantFrom('success', 'error', 'denied'), hard),
  error_message: fc.option(hard),
  args: fc.option(hard.map((s) => JSON.stringify({ v: s }))),
  ts: fc.constantFrom('2026-11-01T10:00:00.123456Z', 'infinity', '-infinity'),
});

describe('escaping', () => {
  it('control and bidi characters become escapes; nothing unsafe is left', () => {
    expect(visible('a\u202eb\u2066c\u009bd\u007f')).toBe('a\\u202eb\\u2066c\\u009bd\\u007f');
    fc.assert(fc.property(hard, (s) => !UNSAFE.test(visible(s)) && !visible(s).includes('\n')));
  });

  it('emoji joined with U+200D keep their joiner (it moves nothing)', () => {
    expect(visible('👩‍💻')).toBe('👩‍💻');
  });
});

describe('display width', () => {
  it('truncate counts columns, never splits a grapheme', () => {
    expect(truncate('日本語テキスト', 5)).toBe('日本…');
    expect(stringWidth(truncate('😀😀😀', 4))).toBeLessThanOrEqual(4);
    expect(truncate('e\u0301e\u0301e\u0301', 2)).toBe('e\u0301…');
    fc.assert(
      fc.property(hard, fc.integer({ min: 1, max: 30 }), (s, n) => stringWidth(truncate(visible(s), n)) <= n),
    );
  });
});

describe('tail text lines fit the terminal', () => {
  it('every line within 80 (and 60, 120) columns, whatever the values', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { minLength: 1, maxLength: 5 }),
        fc.constantFrom(60, 80, 120),
        (es, cols) => {
          const f = new TextLineFormatter(colour, cols);
          const out = f.format(es.map((e) => row(e)));
          for (const line of out.split('\n').slice(0, -1)) {
            if (stringWidth(line) > cols) return false;
            if (UNSAFE.test(strip(line))) return false;
          }
          return true;
        },
      ),
      { numRuns: 300 },
    );
  });

  it('at 80 columns an error keeps most of the room: time without ms, args a third', () => {
    const line = new TextLineFormatter(plain, 80).format([
      row({
        client_subject: 'agent-orchestrator',
        tool_name: 'stockCommitment',
        response_status: 'denied',
        error_message: 'Nombre de cliente no autorizado para este SKU',
      }),
    ]);
    expect(line).toMatch(/^2026-11-01 10:00:00 {2}/);
    expect(stringWidth(line.trimEnd())).toBeLessThanOrEqual(80);
    expect(line).toMatch(/Nombre de/);
  });

  it('the anonymous caller is named the same in tail, search and stats', () => {
    const anon = row({ client_subject: '' });
    expect(new TextLineFormatter(plain, 120).format([anon])).toContain(ANONYMOUS);
    expect(renderEntriesTable([anon], plain, 200)).toContain(ANONYMOUS);
    expect(groupText('', 'subject')).toBe(ANONYMOUS);
    expect(groupText('', 'role')).toBe('(empty)');
    expect(groupText(null, 'role')).toBe('(none)');
  });

  it('an infinity timestamp prints as it is', () => {
    expect(shortTime('infinity')).toBe('infinity');
    expect(new TextLineFormatter(plain, 100).format([row({ ts: '-infinity' })])).toMatch(/^-infinity /);
  });
});

describe('tables', () => {
  it('search: borders line up (equal display width per line) within the width, or vertical blocks', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { minLength: 1, maxLength: 6 }),
        fc.constantFrom(80, 100, 160, 240),
        (es, cols) => {
          const out = strip(
            renderEntriesTable(
              es.map((e) => row(e)),
              colour,
              cols,
            ),
          );
          const lines = out.split('\n').slice(0, -1);
          if (UNSAFE.test(out.replace(/\n/g, ''))) return false;
          if (lines[0]!.startsWith('┌')) {
            const w = stringWidth(lines[0]!);
            return w <= cols && lines.every((l) => stringWidth(l) === w);
          }
          return lines[0]!.startsWith('-[ RECORD 1 ]') && lines.every((l) => stringWidth(l) <= cols);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('--output vertical: one block per record, long values wrapped, not lost', () => {
    const long = 'x'.repeat(150);
    const out = renderEntriesTable(
      [row({ error_message: long, response_status: 'error' })],
      plain,
      80,
      'vertical',
    );
    expect(out.split('\n')[0]).toMatch(/^-\[ RECORD 1 \]-+$/);
    expect(out.replace(/\n.*│ /g, '')).toContain(long);
    for (const l of out.split('\n')) expect(stringWidth(l)).toBeLessThanOrEqual(80);
  });

  it('stats: numbers right-aligned, one format per column', () => {
    const stats: StatsRow[] = [
      {
        group: 'fs.read',
        count: 12345,
        errors: 3,
        error_rate: 3 / 12345,
        p50_ms: 12,
        p95_ms: 1886.2,
        p99_ms: null,
      },
      { group: '', count: 7, errors: 7, error_rate: 1, p50_ms: 0.5, p95_ms: 3, p99_ms: 4 },
    ];
    const lines = renderStatsTable(stats, 'tool', plain, 120).split('\n');
    expect(lines[3]).toMatch(/│ fs\.read +│ +12,345 │ +3 │ +0\.0% │ +12\.0 │ +1886\.2 │ +- │/);
    expect(lines[4]).toMatch(/│ \(empty\) +│ +7 │ +7 │ +100\.0% │ +0\.5 │ +3\.0 │ +4\.0 │/);
  });
});

describe('rejects', () => {
  const rej: RejectRow = {
    id: '12',
    received_at: '2026-11-01T10:00:00.123456Z',
    source: 'unix#3 line 2',
    reason: 'invalid_json: Unexpected token',
    raw: Buffer.from([0x7b, 0xff, 0x1b, 0x5b, 0x32, 0x4a, 0xe2, 0x80, 0xae, 0x7d]),
  };

  it('raw as text with U+FFFD for invalid bytes; json carries the exact bytes in base64', () => {
    expect(rawText(rej.raw)).toBe('{\ufffd\u001b[2J\u202e}');
    const j = JSON.parse(rejectJson(rej));
    expect(j).toEqual({
      id: 12,
      received_at: rej.received_at,
      source: rej.source,
      reason: rej.reason,
      raw: '{\ufffd\u001b[2J\u202e}',
      raw_base64: rej.raw.toString('base64'),
    });
    expect(Buffer.from(j.raw_base64, 'base64')).toEqual(rej.raw);
  });

  it('table: escaped, within the width', () => {
    const wide = renderRejectsTable([rej], plain, 200);
    expect(wide).toContain('\\u001b[2J\\u202e');
    const out = renderRejectsTable([rej], plain, 80);
    expect(UNSAFE.test(out.replace(/\n/g, ''))).toBe(false);
    for (const l of out.split('\n')) expect(stringWidth(l)).toBeLessThanOrEqual(80);
  });
});
