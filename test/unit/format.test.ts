import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import type { EntryRow } from '../../src/db/queries.js';
import {
  fitColumns,
  renderEntriesTable,
  TextLineFormatter,
  truncate,
  visible,
} from '../../src/read/format.js';

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
const strip = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '');

describe('formatting for people', () => {
  it('shows control characters as escapes', () => {
    expect(visible('a\nb\tc\u001b[31m\u0000')).toBe('a\\nb\\tc\\u001b[31m\\u0000');
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('abc', 4)).toBe('abc');
  });

  it('fits columns to the width, shrinking only the flexible ones', () => {
    expect(fitColumns([10, 20, 30], [false, true, true], 100)).toEqual([10, 20, 30]);
    const w = fitColumns([10, 20, 30], [false, true, true], 40)!;
    expect(w[0]).toBe(10);
    expect(w.reduce((a, b) => a + b, 0) + 4).toBeLessThanOrEqual(40);
    expect(fitColumns([10, 20, 30], [false, true, true], 15)).toBeNull();
  });

  it('renders a table no wider than the terminal, dropping columns when needed', () => {
    const rows = [
      row({ args: 'x'.repeat(300), error_message: 'e'.repeat(200), response_status: 'error' }),
      row(),
    ];
    for (const width of [60, 80, 120, 200]) {
      const out = renderEntriesTable(rows, new Chalk({ level: 0 }), width);
      for (const line of out.trimEnd().split('\n'))
        expect(line.length, `${width}: ${line}`).toBeLessThanOrEqual(width);
    }
  });

  it('aligns tail lines and colours the status only when asked', () => {
    const f = new TextLineFormatter(new Chalk({ level: 1 }), 140);
    const out = f.format([
      row(),
      row({ client_subject: 'a-much-longer-subject', response_status: 'error', error_message: 'boom\nbang' }),
    ]);
    const lines = strip(out).trimEnd().split('\n');
    expect(lines[0]!.indexOf('fs.read')).toBe(lines[1]!.indexOf('fs.read'));
    expect(lines[1]).toContain('boom\\nbang');
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(140);
    expect(out).toContain('\u001b[32msuccess');
    const plain = new TextLineFormatter(new Chalk({ level: 0 }), undefined).format([row()]);
    expect(plain).not.toContain('\u001b');
  });
});
