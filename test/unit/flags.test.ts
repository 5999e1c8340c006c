/**
 * Flag values are parsed strictly (CONTRACT.md §4, §7; issue 10: `--listen 7070` became host `707`
 * port 0, `--listen 00` bound 0.0.0.0): every value is either the one the user meant or refused.
 */
import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { parseDurationMs, parseListen } from '../../src/cli/commands/serve.js';
import { intAtLeast, MAX_TIMER_MS } from '../../src/cli/common.js';

/** A small seeded PRNG (mulberry32): the same cases on every run. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = '0123456789:.[]abcdefxXeE-+ \t/';
function randomString(r: () => number, max: number): string {
  let s = '';
  const n = Math.floor(r() * max);
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)];
  return s;
}

describe('parseListen', () => {
  it.each([
    ['7070'],
    ['00'],
    ['0'],
    [':0'],
    ['127.0.0.1:0'],
    [':65536'],
    [':99999'],
    [':07070'],
    ['127.0.0.1:'],
    ['127.0.0.1'],
    ['host:70:70'],
    ['::1:7070'],
    ['[nothost]:7070'],
    ['[::1]'],
    [' :7070'],
    [':7070 '],
    ['exa mple:7070'],
    ['-bad:7070'],
    [''],
  ])('%j is refused', (v) => {
    expect(() => parseListen(v)).toThrow(InvalidArgumentError);
  });

  it.each([
    [':7070', '127.0.0.1', 7070],
    ['127.0.0.1:1', '127.0.0.1', 1],
    ['0.0.0.0:65535', '0.0.0.0', 65535],
    ['[::1]:7070', '::1', 7070],
    ['localhost:9090', 'localhost', 9090],
    ['gw-1.example.org:443', 'gw-1.example.org', 443],
  ])('%j is host %j port %j', (v, host, port) => {
    expect(parseListen(v)).toEqual({ host, port });
  });

  it('any string: refused, or a port 1-65535 and a host that spell the input again', () => {
    const r = rng(10);
    for (let i = 0; i < 20_000; i++) {
      const v = randomString(r, 14);
      let got: { host: string; port: number };
      try {
        got = parseListen(v);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        continue;
      }
      expect(got.port).toBeGreaterThanOrEqual(1);
      expect(got.port).toBeLessThanOrEqual(65535);
      const host = v.startsWith(':') ? '' : got.host.includes(':') ? `[${got.host}]` : got.host;
      expect(`${host}:${got.port}`, v).toBe(v);
    }
  });
});

describe('intAtLeast', () => {
  const parse = intAtLeast(1, 1000);
  it.each([
    ['0'],
    ['1001'],
    [''],
    [' 5'],
    ['5 '],
    ['+5'],
    ['-5'],
    ['0x10'],
    ['1e3'],
    ['5.0'],
    ['١٢'],
    ['Infinity'],
  ])('%j is refused', (v) => {
    expect(() => parse(v)).toThrow(InvalidArgumentError);
  });
  it('any string: refused, or the decimal number it spells', () => {
    const r = rng(11);
    for (let i = 0; i < 20_000; i++) {
      const v = randomString(r, 6);
      let n: number;
      try {
        n = parse(v);
      } catch {
        continue;
      }
      expect(/^[0-9]+$/.test(v), v).toBe(true);
      expect(n).toBe(Number.parseInt(v, 10));
      expect(n >= 1 && n <= 1000).toBe(true);
    }
  });
});

describe('parseDurationMs', () => {
  it.each([
    ['10s', 10_000],
    ['500ms', 500],
    ['2m', 120_000],
    ['1.5', 1500],
    ['0', 0],
  ])('%j is %d ms', (v, ms) => {
    expect(parseDurationMs(v)).toBe(ms);
  });
  it.each([
    [''],
    ['soon'],
    ['-1s'],
    ['1h'],
    [' 10s'],
    ['1e3'],
    ['30d'],
    [`${MAX_TIMER_MS + 1}ms`],
    ['99999999m'],
  ])('%j is refused', (v) => {
    expect(() => parseDurationMs(v)).toThrow(InvalidArgumentError);
  });
  it('a minimum: 0 is refused where at least 1 ms is needed (--write-timeout)', () => {
    expect(() => parseDurationMs('0', 1)).toThrow(InvalidArgumentError);
    expect(parseDurationMs('1ms', 1)).toBe(1);
  });
});
