import { describe, expect, it } from 'vitest';
import { CopyRowSplitter, decodeCopyRow, decodeCopyValue } from '../../src/entry/copyDecode.js';
import { encodeCopyValue } from '../../src/entry/copyText.js';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('COPY text decoding', () => {
  it('undoes every escape of COPY text format', () => {
    expect(decodeCopyValue(b('a\\\\b\\nc\\rd\\te\\bf\\fg\\vh'))).toBe('a\\b\nc\rd\te\bf\fg\vh');
    expect(decodeCopyValue(b('\\101\\60\\7x'))).toBe('A0\u0007x'); // octal, 1 to 3 digits
    expect(decodeCopyValue(b('\\x41\\x4a\\x7'))).toBe('AJ\u0007'); // hex, 1 or 2 digits
    expect(decodeCopyValue(b('\\303\\251'))).toBe('é'); // escaped bytes form UTF-8 together
    expect(decodeCopyValue(b('\\q\\.'))).toBe('q.'); // any other character stands for itself
  });

  it('keeps NULL apart from the empty string and from the text \\N', () => {
    expect(decodeCopyValue(b('\\N'))).toBeNull();
    expect(decodeCopyValue(b(''))).toBe('');
    expect(decodeCopyValue(b('\\\\N'))).toBe('\\N');
  });

  it('inverts the encoder for hard values (known-traps C12)', () => {
    for (const v of [
      'line1\nline2\tcol2\\share\r\n\\.\n\\N',
      'C:\\temp\\new',
      '{"a": "\\u0000"}',
      '😀 中村',
      '',
    ]) {
      expect(decodeCopyValue(b(encodeCopyValue(v)))).toBe(v);
    }
  });

  it('splits a row into columns on raw tabs', () => {
    expect(decodeCopyRow(b('1\t\\N\t\ta\\tb'))).toEqual(['1', null, '', 'a\tb']);
  });

  it('hands out whole rows however chunks cut them, multi-byte characters included', () => {
    const text = b('1\tä😀\n2\t\\N\n3\tx\\ny\n');
    for (let cut = 1; cut < text.length; cut++) {
      const s = new CopyRowSplitter();
      const rows = [...s.push(text.subarray(0, cut)), ...s.push(text.subarray(cut))];
      expect(rows.map((r) => decodeCopyRow(r))).toEqual([
        ['1', 'ä😀'],
        ['2', null],
        ['3', 'x\ny'],
      ]);
      expect(s.end()).toBeNull();
    }
  });
});
