/**
 * Summarises a V8 `.cpuprofile` (written by `node --cpu-prof`): self time per function, as a share of
 * the process's busy CPU (everything but `(idle)`).
 *
 * Also a command: `node bench/lib/profile.mjs FILE.cpuprofile [TOP]`.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * @returns {{ totalMs: number, busyMs: number, rows: { name: string, where: string, selfMs: number, share: number }[] }}
 */
export function summarizeProfile(file, top = 10, root = process.cwd()) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map();
  for (const n of prof.nodes) byId.set(n.id, n);
  const selfUs = new Map();
  const { samples, timeDeltas } = prof;
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the next delta to this sample.
    const dt = timeDeltas[i + 1] ?? 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  const agg = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const cf = byId.get(id).callFrame;
    const name = cf.functionName || '(anonymous)';
    total += us;
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    let where = '';
    if (cf.url) {
      let path = cf.url.replace(/^file:\/\//, '');
      if (path.startsWith(root)) path = relative(root, path);
      where = `${path}:${cf.lineNumber + 1}`;
    }
    const key = `${name}\u0000${where}`;
    const a = agg.get(key) ?? { name, where, selfUs: 0 };
    a.selfUs += us;
    agg.set(key, a);
  }
  const busy = total - idle;
  const rows = [...agg.values()]
    .sort((x, y) => y.selfUs - x.selfUs)
    .slice(0, top)
    .map((a) => ({
      name: a.name,
      where: a.where,
      selfMs: a.selfUs / 1000,
      share: busy > 0 ? a.selfUs / busy : 0,
    }));
  return { totalMs: total / 1000, busyMs: busy / 1000, rows };
}

/** The summary as a Markdown table. */
export function profileTable(summary) {
  const lines = ['| # | function | where | self ms | share of busy CPU |', '|---:|---|---|---:|---:|'];
  summary.rows.forEach((r, i) => {
    lines.push(
      `| ${i + 1} | \`${r.name}\` | ${r.where ? `\`${r.where}\`` : ''} | ${r.selfMs.toFixed(0)} | ${(r.share * 100).toFixed(1)}% |`,
    );
  });
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node bench/lib/profile.mjs FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  const s = summarizeProfile(file, Number(top) || 10);
  console.log(`profile: ${s.totalMs.toFixed(0)} ms sampled, ${s.busyMs.toFixed(0)} ms busy (not idle)`);
  console.log(profileTable(s));
}
