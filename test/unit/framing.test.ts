import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Frame, LineFramer } from '../../src/entry/framing.js';

/** Feeds the chunks, ends the stream, and returns what the framer emitted (lines as text). */
function frame(
  chunks: (string | Buffer)[],
  max = 1024,
): (string | { blank: true } | { oversized: number; head: string })[] {
  const out: (string | { blank: true } | { oversized: number; head: string })[] = [];
  const sink = (f: Frame) => {
    if (f.kind === 'line') out.push(f.line.toString('utf8'));
    else if (f.kind === 'blank') for (let k = 0; k < f.count; k++) out.push({ blank: true });
    else out.push({ oversized: f.size, head: f.head.toString('latin1') });
  };
  const framer = new LineFramer(max);
  for (const c of chunks) framer.push(typeof c === 'string' ? Buffer.from(c) : c, sink);
  framer.end(sink);
  return out;
}

describe('LineFramer', () => {
  it('splits on LF and CRLF, keeping a CR that is not part of a CRLF', () => {
    expect(frame(['a\r\nb\nc\rd\n'])).toEqual(['a', 'b', 'c\rd']);
  });

  it('takes a last line without a newline at the end of the stream (C07)', () => {
    expect(frame(['a\nb'])).toEqual(['a', 'b']);
  });

  it('reports empty and whitespace-only lines as blank, not as entry lines (C07)', () => {
    expect(frame(['\na\n   \n\t\n\r\nb'])).toEqual([
      { blank: true },
      'a',
      { blank: true },
      { blank: true },
      { blank: true },
      'b',
    ]);
  });

  it('joins a line split across reads, and several lines in one read (C05)', () => {
    expect(frame(['{"a":', '1}\n{"b":2}\n{"c"', ':3}\n'])).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });

  it('keeps a multi-byte character split across reads intact (C04)', () => {
    const bytes = Buffer.from('user:中村.example\n');
    const cut = bytes.indexOf(0xe4) + 2; // inside U+4E2D
    expect(frame([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(['user:中村.example']);
  });

  it('skips a BOM only at the start of the stream, also when it arrives split (C06)', () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    expect(frame([bom.subarray(0, 1), bom.subarray(1), 'a\n'])).toEqual(['a']);
    expect(frame([Buffer.concat([Buffer.from('x'), bom, Buffer.from('y\n')])])).toEqual(['x\ufeffy']);
    expect(frame([Buffer.concat([Buffer.from('a\n'), bom, Buffer.from('b\n')])])).toEqual(['a', '\ufeffb']);
  });

  it('a stream of only a BOM or of one short line without a newline', () => {
    expect(frame([Buffer.from([0xef, 0xbb, 0xbf])])).toEqual([]);
    expect(frame(['ab'])).toEqual(['ab']);
  });

  it('rejects an oversized line once, keeps its head, and resynchronises at the next LF (C08)', () => {
    const big = 'x'.repeat(50);
    expect(frame([big.slice(0, 20), big.slice(20), '\nok\n'], 16)).toEqual([
      { oversized: 50, head: 'x'.repeat(16) },
      'ok',
    ]);
  });

  it('a line of exactly the limit passes, with or without CRLF; one byte more does not', () => {
    expect(frame(['abcd\r\nabcd\nabcde\n'], 4)).toEqual(['abcd', 'abcd', { oversized: 5, head: 'abcd' }]);
  });

  it('an oversized last line without a newline is reported at the end', () => {
    expect(frame(['a'.repeat(10)], 4)).toEqual([{ oversized: 10, head: 'aaaa' }]);
  });

  it('holds at most about the limit for a line that never ends (C08 variant)', () => {
    const framer = new LineFramer(1000);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 100; i++) framer.push(chunk, () => {});
    // only the head is kept: the count grows, the buffers do not
    expect(framer.pendingBytes).toBe(100 * 64 * 1024);
    expect((framer as unknown as { parts: Buffer[] }).parts.length).toBe(0);
  });

  it('abort drops a partial line and tells its size (C07 reset)', () => {
    const framer = new LineFramer(100);
    const lines: Frame[] = [];
    framer.push(Buffer.from('a\nbcd'), (f) => lines.push(f));
    expect(framer.abort()).toBe(3);
    framer.end((f) => lines.push(f));
    expect(lines).toHaveLength(1);
  });

  it('counts runs of blank lines in one frame, and agrees with a naive split however chunks cut', () => {
    const run: Frame[] = [];
    new LineFramer(64).push(Buffer.from('\n\r\n\n\nx\n'), (f) => run.push(f));
    expect(run).toEqual([
      { kind: 'blank', count: 4 },
      { kind: 'line', line: Buffer.from('x') },
    ]);
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('\n', '\r\n', '\r', ' ', '\t', 'x', '{}'), { maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 10 }),
        (parts, cuts) => {
          const text = parts.join('');
          const chunks: string[] = [];
          for (let i = 0, k = 0; i < text.length; k++) {
            const n = cuts[k % cuts.length]!;
            chunks.push(text.slice(i, i + n));
            i += n;
          }
          const want = text.split('\n');
          if (want.at(-1) === '') want.pop();
          const expected = want
            .map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l))
            .map((l) => (/^[ \t\r]*$/.test(l) ? { blank: true } : l));
          expect(frame(chunks, 64)).toEqual(expected);
        },
      ),
      { numRuns: 500 },
    );
  });
});
