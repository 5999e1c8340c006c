import { describe, expect, it } from 'vitest';
import { encodeCopyRow, encodeCopyValue } from '../../src/entry/copyText.js';

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
});
