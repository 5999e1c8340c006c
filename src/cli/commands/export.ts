/** `audit-gateway export` (CONTRACT.md §5): every matching entry, oldest first, streamed. */
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { Command } from 'commander';
import { createPool } from '../../db/connect.js';
import { AuditGatewayError, messageOf, UsageError } from '../../errors.js';
import { streamEntries } from '../../read/stream.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { guardStdout, isOutputClosed, progressLine } from '../output.js';
import { addFilterOptions, choiceOption, type FilterOptions, filtersOf, TIME_HELP } from '../readOptions.js';

interface ExportOptions extends CommonOptions, FilterOptions {
  format: string;
  output?: string;
  proofs?: boolean;
}

/** Registers `export`. */
export function registerExport(program: Command): void {
  const cmd = program
    .command('export')
    .description(
      'stream every matching entry, oldest first, as NDJSON or CSV (COPY TO STDOUT, constant memory)',
    )
    .option('--format <format>', 'ndjson or csv', 'ndjson')
    .option('--output <file>', 'write to FILE instead of stdout (gzip-compressed when FILE ends in .gz)')
    .option(
      '--proofs',
      'NDJSON with a _proof per entry, checkable alone: verify --export FILE --public-key KEY',
    );
  addFilterOptions(cmd).addHelpText(
    'after',
    `${TIME_HELP}

A progress line (rows, rows/s, elapsed) goes to stderr when stderr is a terminal.
NDJSON export is what replay reads back: audit-gateway replay FILE.

Examples:
  $ audit-gateway export --since 2026-11-01 --until 2026-12-01 --output nov.ndjson.gz
  $ audit-gateway export --format csv --tool sql.query --errors --since yesterday > errors.csv
  $ audit-gateway export --subject alice | jq -c 'select(.latency_ms > 1000)'`,
  );
  addCommonOptions(cmd).action(async (opts: ExportOptions) => {
    const format = choiceOption('--format', opts.format, ['ndjson', 'csv'] as const);
    const filters = filtersOf(opts);
    const file = opts.output !== undefined && opts.output !== '-' ? opts.output : undefined;
    guardStdout();
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 2);
    const progress = progressLine();
    let destinations: [Writable, ...Writable[]] = [process.stdout];
    if (file !== undefined) {
      const out = createWriteStream(file, { flags: 'w' });
      await new Promise<void>((resolve, reject) => {
        out.once('open', () => resolve());
        out.once('error', (err) =>
          reject(new AuditGatewayError(`--output: cannot write '${file}': ${messageOf(err)}`)),
        );
      });
      destinations = file.endsWith('.gz') ? [createGzip(), out] : [out];
    }
    if (opts.proofs && format !== 'ndjson')
      throw new UsageError('export: --proofs goes with --format ndjson');
    try {
      if (opts.proofs) {
        const { exportWithProofs } = await import('../../read/proofs.js');
        const n = await exportWithProofs(pool, db, log, {
          filters,
          destinations,
          end: file !== undefined,
          onProgress: (k) => progress.update(k),
        });
        progress.done(n);
        return;
      }
      const rows = await streamEntries(pool, db, log, {
        filters,
        format,
        order: 'asc',
        destinations,
        end: file !== undefined,
        onProgress: (n) => progress.update(n),
      });
      progress.done(rows);
    } catch (err) {
      if (file !== undefined) {
        for (const d of destinations) d.destroy();
        await unlink(file).catch(() => {});
      }
      if (!isOutputClosed(err)) throw err;
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
