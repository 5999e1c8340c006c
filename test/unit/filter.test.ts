import { describe, expect, it } from 'vitest';
import {
  argFilterJson,
  filterCondition,
  literalBinder,
  paramBinder,
  substringPattern,
  wildcardPattern,
} from '../../src/db/filter.js';

describe('filters → SQL', () => {
  it('makes * the only wildcard; %, _ and \\ stay literal', () => {
    expect(wildcardPattern('alice*')).toBe('alice%');
    expect(wildcardPattern('*50%_off\\*')).toBe('%50\\%\\_off\\\\%');
    expect(substringPattern('100%_done\\')).toBe('%100\\%\\_done\\\\%');
  });

  it('reads --arg KEY=VALUE: JSON when it parses (every digit kept), else a string', () => {
    expect(argFilterJson('n=5')).toBe('{"n":5}');
    expect(argFilterJson('big=12345678901234567890')).toBe('{"big":12345678901234567890}');
    expect(argFilterJson('path=/etc/passwd')).toBe('{"path":"/etc/passwd"}');
    expect(argFilterJson('opts={"deep":true}')).toBe('{"opts":{"deep":true}}');
    expect(argFilterJson('s="quoted"')).toBe('{"s":"quoted"}');
    expect(argFilterJson('eq=a=b')).toBe('{"eq":"a=b"}');
    expect(argFilterJson('empty=')).toBe('{"empty":""}');
    expect(argFilterJson('=x')).toBeNull();
    expect(argFilterJson('novalue')).toBeNull();
  });

  it('never puts a value into the SQL text with bind parameters', () => {
    const params: unknown[] = [];
    const evil = "x'; DROP TABLE audit_log; --";
    const sql = filterCondition(
      {
        subject: evil,
        role: `${evil}*`,
        tool: evil,
        backend: evil,
        status: evil,
        requestId: '00000000-0000-4000-8000-000000000000',
        since: '2026-01-01T00:00:00.000000Z',
        until: '2026-02-01T00:00:00.000000Z',
        errors: true,
        minLatencyMs: '5',
        args: ['{"a":1}'],
        text: evil,
      },
      paramBinder(params),
    );
    expect(sql).not.toContain('DROP');
    expect(sql).not.toContain('2026');
    expect(params).toHaveLength(11); // --errors has no value
    expect(sql).toContain('client_role LIKE $');
    expect(sql).toContain('client_subject = $');
  });

  it('quotes values as literals for COPY', () => {
    const sql = filterCondition({ subject: "o'neil\\x", text: 'a' }, literalBinder);
    expect(sql).toContain(`client_subject =  E'o''neil\\\\x'`);
    expect(filterCondition({}, literalBinder)).toBe('TRUE');
  });
});
