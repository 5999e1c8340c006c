import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatEpochMicros, parseDurationMicros, parseTime } from '../../src/util/time.js';

describe('parseTime (CONTRACT.md §5 TIME)', () => {
  const savedTz = process.env.TZ;
  beforeAll(() => {
    process.env.TZ = 'Europe/Berlin';
  });
  afterAll(() => {
    if (savedTz === undefined) delete process.env.TZ;
    else process.env.TZ = savedTz;
  });
  // 2026-03-29 is the spring-forward day in Berlin (02:00 → 03:00, +01:00 → +02:00)
  const now = new Date('2026-03-29T12:34:56.789Z');

  it('reads RFC 3339 with any zone, keeping microseconds', () => {
    expect(parseTime('2026-11-01T10:00:00Z', now)).toBe('2026-11-01T10:00:00.000000Z');
    expect(parseTime('2026-11-01t10:00:00.123456z', now)).toBe('2026-11-01T10:00:00.123456Z');
    expect(parseTime('2026-11-01T10:00:00.1234567+02:00', now)).toBe('2026-11-01T08:00:00.123456Z');
    expect(parseTime('2026-11-01 10:00:00-05:30', now)).toBe('2026-11-01T15:30:00.000000Z');
    expect(parseTime('2024-02-29T00:00:00Z', now)).toBe('2024-02-29T00:00:00.000000Z');
  });

  it('reads dates and date-times without a zone as local time (TZ)', () => {
    expect(parseTime('2026-11-01', now)).toBe('2026-10-31T23:00:00.000000Z');
    expect(parseTime('2026-07-01', now)).toBe('2026-06-30T22:00:00.000000Z');
    expect(parseTime('2026-11-01 10:00', now)).toBe('2026-11-01T09:00:00.000000Z');
    expect(parseTime('2026-11-01T10:00:30.5', now)).toBe('2026-11-01T09:00:30.500000Z');
  });

  it('reads now, today, yesterday in the local zone, across a DST change', () => {
    expect(parseTime('now', now)).toBe('2026-03-29T12:34:56.789000Z');
    expect(parseTime('NOW', now)).toBe('2026-03-29T12:34:56.789000Z');
    expect(parseTime('today', now)).toBe('2026-03-28T23:00:00.000000Z'); // midnight was still +01:00
    expect(parseTime('yesterday', now)).toBe('2026-03-27T23:00:00.000000Z');
    expect(parseTime('tomorrow', now)).toBe('2026-03-29T22:00:00.000000Z'); // +02:00 by then
  });

  it('reads durations ago', () => {
    expect(parseTime('90s', now)).toBe('2026-03-29T12:33:26.789000Z');
    expect(parseTime('15m', now)).toBe('2026-03-29T12:19:56.789000Z');
    expect(parseTime('2h', now)).toBe('2026-03-29T10:34:56.789000Z');
    expect(parseTime('7d', now)).toBe('2026-03-22T12:34:56.789000Z');
    expect(parseTime('1h30m', now)).toBe('2026-03-29T11:04:56.789000Z');
    expect(parseTime('2h ago', now)).toBe(parseTime('2h', now));
    expect(parseTime('-2h', now)).toBe(parseTime('2h', now));
    expect(parseTime('1.5h', now)).toBe('2026-03-29T11:04:56.789000Z');
    expect(parseDurationMicros('500ms')).toBe(500_000n);
    expect(parseDurationMicros('5min')).toBe(300_000_000n);
    expect(parseDurationMicros('2w')).toBe(1_209_600_000_000n);
  });

  it('refuses everything else', () => {
    for (const bad of [
      '',
      'soon',
      '2026-13-01',
      '2026-02-30',
      '2025-02-29',
      '2026-11-01T25:00:00Z',
      '2026-11-01T10:60:00Z',
      '2026-11-01T10:00:00+25:00',
      '10:00',
      '90',
      '5x',
      '1h 5',
      'h',
      '2026/11/01',
      '1e3s',
    ]) {
      expect(parseTime(bad, now), bad).toBeNull();
    }
  });

  it('formats epoch microseconds, before 1970 too', () => {
    expect(formatEpochMicros(1n)).toBe('1970-01-01T00:00:00.000001Z');
    expect(formatEpochMicros(-1n)).toBe('1969-12-31T23:59:59.999999Z');
  });
});
