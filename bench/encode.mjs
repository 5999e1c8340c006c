/**
 * The entry encoder alone, no I/O: µs per entry of EntryEncoder.encode (the fast path) against the
 * reference path (parseEntry + encodeCopyRow + Buffer.from), on N generated entries, measured in the
 * same run, best of 5 passes each.
 *   npm run build && node bench/encode.mjs [N]      (FAST_ONLY=1: the fast path only, for profiling)
 */

import { encodeCopyRow } from '../dist/entry/copyText.js';
import { EntryEncoder } from '../dist/entry/encode.js';
import { DEFAULT_REDACT_KEYS, parseEntry } from '../dist/entry/parse.js';
import { makeGenerator } from './lib/gen.mjs';

const N = Number(process.argv[2] ?? 200000);
const g = makeGenerator(42);
const lines = Array.from({ length: N }, () => Buffer.from(g.next()));
const options = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };
const encoder = new EntryEncoder(options);

function time(label, fn) {
  let best = Number.POSITIVE_INFINITY;
  let bytes = 0;
  for (let pass = 0; pass < 5; pass++) {
    bytes = 0;
    const t0 = process.hrtime.bigint();
    for (const l of lines) bytes += fn(l).length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e3);
  }
  console.log(`${label}: ${(best / N).toFixed(2)} µs/entry (${bytes} COPY bytes)`);
  return best;
}
const fast = time('EntryEncoder.encode', (l) => {
  const r = encoder.encode(l);
  if (!r.ok) throw new Error(r.reason);
  return r.copy;
});
if (process.env.FAST_ONLY) process.exit(0);
const ref = time('parseEntry + encodeCopyRow', (l) => {
  const r = parseEntry(l, options);
  if (!r.ok) throw new Error(r.reason);
  return Buffer.from(encodeCopyRow(r.row), 'utf8');
});
console.log(`ratio reference/fast: ${(ref / fast).toFixed(2)}`);
