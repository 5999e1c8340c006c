#!/usr/bin/env node
/**
 * `node bench/hostile.mjs`: cost per byte of each hostile line shape (issue 9; CONTRACT.md §3 "Any
 * line, any client") against a friendly line of the same size, through the daemon's own
 * EntryEncoder.encode (fast path, else the reference parser). Each shape runs in a child process
 * (a line that runs the heap out or never ends is reported as such, not fatal to the bench).
 *
 *   --sizes LIST   line sizes in bytes (default 102400,1000000; the line limit is 1 MiB)
 *   --dist DIR     the build to measure (default ./dist; point it at an older build for "before")
 *   --runs N       timed runs per shape after the first (default 15, the median is reported)
 *   --timeout S    per shape and size (default 120)
 *   --out FILE     also write the Markdown table to FILE
 *
 * Figures: median ms per line, ns per byte, the ratio to the friendly line of the same size (target
 * ≤ 20), ms per 100 KB (target ≤ 100: the daemon does nothing else meanwhile), and the heap
 * allocated while encoding one line, in multiples of the line's size (no GC in between, so an upper
 * bound of what it holds at once).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const HEAD =
  '"request_id":"c0100000-0000-4000-8000-000000000001","timestamp":"2024-05-01T12:00:00Z","client_subject":"user:ada","tool_name":"sql.query","response_status":"ok"';

/** Fills `unit(i)` pieces joined by `sep` until about `bytes` bytes. */
function fill(bytes, unit, sep = ',') {
  const out = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const u = unit(i);
    out.push(u);
    n += u.length + sep.length;
  }
  return out.join(sep);
}

/** Each shape: a function of the target size giving the line (a Buffer). */
const SHAPES = {
  friendly: (n) =>
    Buffer.from(
      `{${HEAD},"request_args":{${fill(n - 300, (i) => `"field_${i}":"value ${i} of an ordinary request, with words"`)}}}`,
    ),
  'deep arrays': (n) => {
    const d = Math.floor((n - 300) / 2);
    return Buffer.from(`{${HEAD},"request_args":${'['.repeat(d)}${']'.repeat(d)}}`);
  },
  'deep objects': (n) => {
    const d = Math.floor((n - 300) / 7);
    return Buffer.from(`{${HEAD},"request_args":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}`);
  },
  'many top-level keys': (n) => Buffer.from(`{${HEAD},${fill(n - 300, (i) => `"k${i}":${i}`)}}`),
  'many keys, one repeated': (n) => Buffer.from(`{${HEAD},${fill(n - 320, (i) => `"k${i}":${i}`)},"k0":1}`),
  'long key + \\u0000 strings': (n) => {
    const k = Math.floor(n * 0.8);
    return Buffer.from(
      `{${HEAD},"request_args":{"${'k'.repeat(k)}":[${fill(n - k - 320, () => '"\\u0000"')}]}}`,
    );
  },
  'short strings + one escape at the end': (n) =>
    Buffer.from(`{${HEAD},"request_args":[${fill(n - 320, () => '"a"')},"\\u0000"]}`),
  'every escape': (n) => {
    const unit = '\\n\\t\\r\\b\\f\\/\\\\\\"\\u00e9\\ud83d\\ude00\\u0001';
    const s = unit.repeat(Math.floor((n - 300) / 2 / unit.length));
    return Buffer.from(`{${HEAD},"error_message":"${s}","request_args":{"a":"${s}"}}`);
  },
  'invalid UTF-8 in keys and values': (n) => {
    const bad = Buffer.from([0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80]);
    const parts = [Buffer.from(`{${HEAD}`)];
    let size = 300;
    for (let i = 0; size < n; i++) {
      const p = [Buffer.from(`,"k${i}`), bad, Buffer.from('":"'), bad, Buffer.from('"')];
      for (const x of p) size += x.length;
      parts.push(...p);
    }
    parts.push(Buffer.from('}'));
    return Buffer.concat(parts);
  },
  'duplicate required fields': (n) => Buffer.from(`{${HEAD},${fill(n - 300, (i) => `"tool_name":"t${i}"`)}}`),
  'redact keys everywhere': (n) =>
    Buffer.from(`{${HEAD},"request_args":[${fill(n - 320, (i) => `{"Password":"p${i}","x":1}`)}]}`),
};

async function child(dist, shape, size, runs) {
  const { EntryEncoder } = await import(pathToFileURL(join(dist, 'entry', 'encode.js')).href);
  const { DEFAULT_REDACT_KEYS } = await import(pathToFileURL(join(dist, 'entry', 'parse.js')).href);
  const encoder = new EntryEncoder({ redactKeys: new Set(DEFAULT_REDACT_KEYS) });
  const line = SHAPES[shape](size);
  // A daemon has its fast path warm from ordinary traffic: so has this one.
  const warm = SHAPES.friendly(2000);
  for (let k = 0; k < 2000; k++) encoder.encode(warm);
  globalThis.gc?.();
  const h0 = process.memoryUsage();
  const t0 = process.hrtime.bigint();
  const first = encoder.encode(line);
  const firstMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const h1 = process.memoryUsage();
  const alloc = h1.heapUsed + h1.arrayBuffers - (h0.heapUsed + h0.arrayBuffers);
  const times = [];
  for (let k = 0; k < runs; k++) {
    globalThis.gc?.();
    const t = process.hrtime.bigint();
    encoder.encode(line);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  const result = {
    bytes: line.length,
    ms: times[Math.floor(times.length / 2)],
    firstMs,
    allocMb: alloc / 1e6,
    ok: first.ok,
    why: first.ok ? `stored${first.sanitized?.length ? ', sanitised' : ''}` : first.reason.slice(0, 60),
  };
  process.stdout.write(JSON.stringify(result));
}

async function main() {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '102400,1000000' },
      dist: { type: 'string', default: join(HERE, '..', 'dist') },
      runs: { type: 'string', default: '15' },
      timeout: { type: 'string', default: '120' },
      out: { type: 'string' },
      shape: { type: 'string' },
      size: { type: 'string' },
    },
  });
  const dist = resolve(values.dist);
  if (values.shape) return child(dist, values.shape, Number(values.size), Number(values.runs));
  const sizes = values.sizes.split(',').map(Number);
  const L = [];
  const load0 = loadavg()[0];
  L.push(
    `Hostile lines through EntryEncoder.encode (${dist}), the encoder warmed by 2,000 friendly entries first; "first" is the first line of the shape (cold code: the stall a single line causes), the other figures the median of ${values.runs} more runs.`,
  );
  L.push('');
  L.push(
    '| shape | line bytes | result | first line ms | ms per line | ns / byte | × friendly (≤ 20) | ms per 100 KB (≤ 100) | heap allocated, × line |',
  );
  L.push('|---|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const size of sizes) {
    let friendlyNsPerByte = null;
    for (const shape of Object.keys(SHAPES)) {
      const r = spawnSync(
        process.execPath,
        [
          '--expose-gc',
          '--max-old-space-size=2048',
          '--max-semi-space-size=256',
          fileURLToPath(import.meta.url),
          '--dist',
          dist,
          '--shape',
          shape,
          '--size',
          String(size),
          '--runs',
          values.runs,
        ],
        { encoding: 'utf8', timeout: Number(values.timeout) * 1000 },
      );
      let cells;
      if (r.status !== 0 || !r.stdout) {
        const why =
          r.error?.code === 'ETIMEDOUT' || r.signal === 'SIGTERM'
            ? `did not finish in ${values.timeout} s`
            : /heap out of memory|Invalid string length|Reached heap limit/.test(r.stderr)
              ? 'ran the heap out (2 GB)'
              : `failed (${r.signal ?? r.status})`;
        cells = `| ${shape} | ~${size} | ${why} | – | – | – | – | – | – |`;
      } else {
        const x = JSON.parse(r.stdout);
        const nsb = (x.ms * 1e6) / x.bytes;
        if (shape === 'friendly') friendlyNsPerByte = nsb;
        const ratio = friendlyNsPerByte ? nsb / friendlyNsPerByte : null;
        cells = `| ${shape} | ${x.bytes} | ${x.why} | ${x.firstMs.toFixed(1)} | ${x.ms.toFixed(2)} | ${nsb.toFixed(1)} | ${ratio === null ? '–' : ratio.toFixed(1)} | ${((x.ms * 102400) / x.bytes).toFixed(1)} | ${x.allocMb < 0 ? '– (a GC ran)' : (x.allocMb / (x.bytes / 1e6)).toFixed(1)} |`;
      }
      L.push(cells);
      console.error(cells);
    }
  }
  L.push('');
  L.push(
    `Load average (1 min): ${load0.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end (2 cores, shared).`,
  );
  const text = L.join('\n');
  console.log(text);
  if (values.out) writeFileSync(values.out, `${text}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
