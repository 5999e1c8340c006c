/** Helpers shared by bench/run.mjs and bench/read.mjs. */
import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';

/** Prints one progress line on stdout. */
export function say(msg) {
  process.stdout.write(`${msg}\n`);
}

/** Environment for children, without variables that would redirect audit-gateway or psql. */
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('AUDIT_GATEWAY_') || k === 'DATABASE_URL' || k.startsWith('PG')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** The p-th percentile (nearest rank) of an ascending array, or null when empty. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Buffered writes to a file descriptor. */
export function writer(path) {
  const fd = openSync(path, 'w');
  let parts = [];
  let size = 0;
  let total = 0;
  const flush = () => {
    if (size === 0) return;
    const buf = Buffer.from(parts.join(''), 'utf8');
    writeSync(fd, buf);
    total += buf.length;
    parts = [];
    size = 0;
  };
  return {
    write(s) {
      parts.push(s);
      size += s.length;
      if (size >= 4 << 20) flush();
    },
    close() {
      flush();
      closeSync(fd);
      return total;
    },
  };
}

/** A flag's whole number (`1_000_000` and `1,000,000` allowed); exits 2 naming the flag otherwise. */
export function wholeNumber(name, value, min) {
  const n = Number(String(value).replaceAll('_', '').replaceAll(',', ''));
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`--${name} ${value}: expected a whole number >= ${min}`);
    process.exit(2);
  }
  return n;
}

/**
 * The bench's flags (node:util parseArgs, plus `-h/--help`): prints `usage` and exits 0 on help,
 * exits 2 with the parser's message and `usage` on a bad command line.
 */
export function benchArgs(options, usage) {
  let values;
  try {
    values = parseArgs({
      options: { ...options, help: { type: 'boolean', short: 'h', default: false } },
    }).values;
  } catch (err) {
    console.error(`${err.message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}
