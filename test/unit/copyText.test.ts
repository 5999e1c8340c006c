import { describe, expect, it } from 'vitest';
import { encodeCopyChunks, encodeCopyRow, encodeCopyValue } from '../../src/entry/copyText.js';
import type { EntryRow } from '../../src/entry/parse.js';

describe('COPY text encoding', () => {
  it('escapes backslash, newline, carriage return and tab', () => {
    expect(encodeCopyValue('a\\b\nc\rd\te')).toBe('a\\\\b\\nc\\rd\\te');
  });

  it('writes SQL NULL as \\N, and the text "\\N" and "\\." so that they stay text (C12)', () => {
    expect(encodeCopyValue(null)).toBe('\\N');
    expect(encodeCopyValue('\\N')).toBe('\\\\N');
    expect(encodeCopyValue('\\.')).toBe('\\\\.');
    expect(encodeCopyValue('')).toBe('');
  });

  it('leaves other characters, emoji included, alone', () => {
    expect(encodeCopyValue('smile 😀 "q" ,;|')).toBe('smile 😀 "q" ,;|');
  });

  it('encodes a row as tab-separated columns ending in a newline', () => {
    const line = encodeCopyRow({
      request_id: 'c1200000-0000-4000-8000-000000000001',
      timestamp: '2024-05-01T12:00:00Z',
      client_subject: 'a\tb',
      client_role: null,
      tool_name: 't',
      backend_name: null,
      request_args: '{"p":"C:\\\\temp"}',
      response_status: 'ok',
      error_message: 'x\ny',
      latency_ms: '12',
      extra: null,
    });
    expect(line).toBe(
      'c1200000-0000-4000-8000-000000000001\t2024-05-01T12:00:00Z\ta\\tb\t\\N\tt\t\\N\t{"p":"C:\\\\\\\\temp"}\tok\tx\\ny\t12\t\\N\n',
    );
    expect(line.split('\t')).toHaveLength(11);
  });

  it('encodes rows into byte chunks equal to the UTF-8 of the joined lines, whatever the chunk size', () => {
    const rows: EntryRow[] = Array.from({ length: 50 }, (_, i) => ({
      request_id: `c1200000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      timestamp: '2024-05-01T12:00:00Z',
      client_subject: i % 3 ? 'user:中村.example 😀' : 'a\\b',
      client_role: null,
      tool_name: 'x'.repeat(i * 7),
      backend_name: 'é',
      request_args: '{"k":"\\u00e9\\n"}',
      response_status: 'ok',
      error_message: i % 2 ? 'line1\nline2' : null,
      latency_ms: String(i),
      extra: null,
    }));
    const expected = Buffer.from(rows.map(encodeCopyRow).join(''), 'utf8');
    for (const size of [16, 100, 333, 4096, 1 << 20]) {
      const chunks = [...encodeCopyChunks(rows, size)];
      expect(Buffer.concat(chunks).equals(expected)).toBe(true);
      if (size === 100) expect(chunks.length).toBeGreaterThan(10);
    }
    expect([...encodeCopyChunks([])]).toEqual([]);
  });
});
