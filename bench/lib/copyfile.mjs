/** Writes N generated entries (bench/lib/gen.mjs, seed 7) as COPY text, as serve would send them. */
import { writeFileSync } from 'node:fs';
import { encodeCopyRow } from '../../dist/entry/copyText.js';
import { DEFAULT_REDACT_KEYS, parseEntry } from '../../dist/entry/parse.js';
import { makeGenerator } from './gen.mjs';

const [n, file] = [Number(process.argv[2]), process.argv[3]];
const g = makeGenerator(7);
const opts = { redactKeys: new Set(DEFAULT_REDACT_KEYS) };
const out = [];
for (let i = 0; i < n; i++) {
  const r = parseEntry(Buffer.from(g.next()), opts);
  if (r.ok) out.push(encodeCopyRow(r.row));
}
writeFileSync(file, out.join(''));
