/** `audit-gateway verify` (CONTRACT.md §9): exit 0 intact, 3 a fault found, 1 could not check. */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { createPool } from '../../db/connect.js';
import { AuditGatewayError, FaultsFound, UsageError } from '../../errors.js';
import { publicKeyOf } from '../../integrity/checkpoint.js';
import { type VerifyCursor, type VerifyReport, verifyDatabase } from '../../read/verify.js';
import { parseTime } from '../../util/time.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { choiceOption } from '../readOptions.js';

interface VerifyOptions extends CommonOptions {
  publicKey?: string[];
  checkpoints?: string;
  cursor?: string;
  full?: boolean;
  since?: string;
  until?: string;
  export?: string;
  output?: string;
}

async function readOrFail(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new AuditGatewayError(`${what} ${file}: cannot be read (${(err as Error).message})`);
  }
}

/** The text report: one line per fault, then a summary line. */
export function renderVerifyText(r: VerifyReport): string {
  const lines = r.faults.map((f) => `FAULT ${f.kind}: ${f.message}`);
  if (r.keys === 'database') {
    lines.push(
      'note: checkpoint keys were read from the database, which proves nothing against someone who can write it; pin them with --public-key FILE',
    );
  }
  lines.push(
    `${r.ok ? 'intact' : `${r.faults.length} fault(s) found`}: ${r.chains} chain(s), ${r.batches} batch(es), ${r.rows} row(s) checked (${r.mode}), ${r.checkpoints} checkpoint(s)${r.removedByRetention ? `, ${r.removedByRetention} row(s) removed by retention` : ''}`,
  );
  return `${lines.join('\n')}\n`;
}

/** Registers `verify`. */
export function registerVerify(program: Command): void {
  const cmd = program
    .command('verify')
    .description(
      'check the hash chains, every row, and the signed checkpoints (exit 0 intact, 3 fault, 1 could not check)',
    )
    .option(
      '--public-key <file>',
      'pin the checkpoint signing key (PEM, or signing-key.pub); repeat for several writers',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      '--since <time>',
      'check the rows of batches committed at or after TIME (chains are always checked whole)',
    )
    .option('--until <time>', 'check the rows of batches committed before TIME')
    .option('--checkpoints <file>', 'a copy of the checkpoint file kept outside the database')
    .option('--cursor <file>', 'incremental: check only what is newer than this file says, then update it')
    .option('--full', 'with --cursor: check everything, then update the cursor')
    .option('--export <file>', 'check an `export --proofs` file instead of the database (needs --public-key)')
    .option('--output <format>', 'text or json', 'text')
    .addHelpText(
      'after',
      `
Exit codes: 0 intact; 3 a fault was found (each is printed, naming chain, batch and row id);
1 it could not check (database unreachable, unreadable file).

Examples:
  $ audit-gateway verify --public-key /secure/signing-key.pub --checkpoints /secure/checkpoints.log
  $ audit-gateway verify --cursor ~/.audit-verify.cursor   # daily: only what is new
  $ audit-gateway verify --export alice.ndjson --public-key signing-key.pub`,
    );
  addCommonOptions(cmd).action(async (opts: VerifyOptions) => {
    const output = choiceOption('--output', opts.output ?? 'text', ['text', 'json'] as const);
    const keys = [];
    for (const f of opts.publicKey ?? []) {
      try {
        keys.push(publicKeyOf(await readOrFail(f, '--public-key')));
      } catch (err) {
        if (err instanceof AuditGatewayError) throw err;
        throw new AuditGatewayError(
          `--public-key ${f}: not an Ed25519 public key (${(err as Error).message})`,
        );
      }
    }
    if (opts.export !== undefined) {
      if (keys.length === 0) {
        throw new AuditGatewayError(
          'verify --export: give --public-key FILE, the key you kept outside the database',
          2,
        );
      }
      let text = await readOrFail(opts.export, '--export');
      if (text.startsWith('\x1f\x8b') || opts.export.endsWith('.gz')) {
        const { gunzipSync } = await import('node:zlib');
        text = gunzipSync(await readFile(opts.export)).toString('utf8');
      }
      const { verifyExport } = await import('../../read/verifyExport.js');
      const r = verifyExport(text, keys);
      process.stdout.write(
        output === 'json' ? `${JSON.stringify({ ...r, cursor: undefined }, null, 2)}\n` : renderVerifyText(r),
      );
      if (!r.ok) throw new FaultsFound();
      return;
    }
    const now = new Date();
    const window: { since?: string; until?: string } = {};
    for (const [flag, v] of [
      ['--since', opts.since],
      ['--until', opts.until],
    ] as const) {
      if (v === undefined) continue;
      const t = parseTime(v, now);
      if (t === null)
        throw new UsageError(
          `${flag}: '${v}' is not a TIME (2026-11-01, 2026-11-01T10:00:00Z, 7d, yesterday)`,
        );
      window[flag === '--since' ? 'since' : 'until'] = t;
    }
    const checkpointLines = opts.checkpoints
      ? (await readOrFail(opts.checkpoints, '--checkpoints')).split('\n')
      : undefined;
    let cursor: VerifyCursor | null = null;
    if (opts.cursor && !opts.full) {
      const text = await readFile(opts.cursor, 'utf8').catch(() => null);
      if (text !== null) {
        try {
          cursor = JSON.parse(text) as VerifyCursor;
          if (cursor.v !== 1) throw new Error('not a v1 cursor');
        } catch (err) {
          throw new AuditGatewayError(
            `--cursor ${opts.cursor}: not a verify cursor (${(err as Error).message}); remove it or use --full`,
          );
        }
      }
    }
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    // The row scan sorts by id after a parallel scan (each worker hashing its share): in memory,
    // not in temp files.
    const pool = createPool({ ...db, config: { ...db.config, options: '-c work_mem=64MB' } }, log, 2);
    let report: VerifyReport;
    try {
      const tty = process.stderr.isTTY;
      report = await verifyDatabase(pool, db, log, {
        publicKeys: keys.length ? keys : undefined,
        checkpointLines,
        cursor,
        ...window,
        onProgress: tty ? (n) => process.stderr.write(`\rverify: ${n} rows checked`) : undefined,
      });
      if (tty) process.stderr.write('\r\x1b[K');
    } finally {
      await pool.end();
      await db.close();
    }
    if (output === 'json') {
      const { cursor: _c, ...rest } = report;
      process.stdout.write(`${JSON.stringify(rest, null, 2)}\n`);
    } else process.stdout.write(renderVerifyText(report));
    if (!report.ok) throw new FaultsFound();
    if (opts.cursor && report.cursor) {
      await writeFile(`${opts.cursor}.tmp`, `${JSON.stringify(report.cursor)}\n`, { mode: 0o600 });
      await rename(`${opts.cursor}.tmp`, opts.cursor);
    }
  });
}
