/** `audit-gateway export` (CONTRACT.md §5): every matching entry, oldest first, streamed. */
import type { Writable } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { Command } from 'commander';
import { createPool } from '../../db/connect.js';
import { UsageError } from '../../errors.js';
import { streamEntries } from '../../read/stream.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { openWholeFile, type WholeFile } from '../files.js';
import { guardStdout, isOutputClosed, progressLine } from '../output.js';
import { addFilterOptions, choiceOption, type FilterOptions, filtersOf, TIME_HELP } from '../readOptions.js';

interface ExportOptions extends CommonOptions, FilterOptions {
  format: string;
  output?: string;
  /** false with --no-progress. */
  progress?: boolean;
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
    .option(
      '--output <file>',
      'write to FILE instead of stdout (gzip-compressed when FILE ends in .gz); whole or not at all, mode 0600',
    )
    .option('--no-progress', 'no progress line on stderr')
    .option(
      '--proofs',
      'NDJSON with a _proof per entry, checkable alone: verify --export FILE --public-key KEY',
    );
  addFilterOptions(cmd).addHelpText(
    'after',
    `${TIME_HELP}

A progress line (rows, rows/s, elapsed) goes to stderr when stderr is a terminal and the data do
not go to that terminal (--no-progress: never). --output FILE is written beside FILE and renamed
into place on success (mode 0600): a failed run leaves an existing FILE as it was.
NDJSON export is what replay reads back: audit-gateway replay FILE.

Examples:
  $ audit-gateway export --since 2026-11-01 --until 2026-12-01 --output nov.ndjson.gz
  $ audit-gateway export --format csv --tool sql.query --errors --since yesterday > errors.csv
  $ audit-gateway export --subject alice | jq -c 'select(.latency_ms > 1000)'`,
  );
  addCommonOptions(cmd).action(async (opts: ExportOptions) => {
    const format = choiceOption('--format', opts.format, ['ndjson', 'csv'] as const);
    const filters = filtersOf(opts);
    // '-' and /dev/stdout are stdout itself (opening /dev/stdout fails when it is a socket)
    const file =
      opts.output !== undefined && opts.output !== '-' && opts.output !== '/dev/stdout'
        ? opts.output
        : undefined;
    guardStdout();
    const log = loggerOf(opts);
    if (opts.proofs && format !== 'ndjson')
      throw new UsageError('export: --proofs goes with --format ndjson');
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 2);
    // the progress line never shares a terminal with the data it counts
    const progress = progressLine(
      opts.progress !== false &&
        process.stderr.isTTY === true &&
        (file !== undefined || !process.stdout.isTTY),
    );
    let destinations: [Writable, ...Writable[]] = [process.stdout];
    let target: WholeFile | undefined;
    try {
      if (file !== undefined) {
        target = await openWholeFile(file);
        destinations = file.endsWith('.gz') ? [createGzip(), target.stream] : [target.stream];
      }
      const onProgress = (n: number) => progress.update(n);
      const end = target !== undefined;
      const rows = opts.proofs
        ? await (await import('../../read/proofs.js')).exportWithProofs(pool, db, log, {
            filters,
            destinations,
            end,
            onProgress,
          })
        : (
            await streamEntries(pool, db, log, {
              filters,
              format,
              order: 'asc',
              destinations,
              end,
              onProgress,
            })
          ).rows;
      await target?.commit();
      progress.done(rows, file === undefined ? '' : ` to ${file}`);
      if (rows === 0) process.stderr.write('audit-gateway: no entries match\n');
    } catch (err) {
      progress.clear();
      if (target !== undefined) {
        for (const d of destinations) d.destroy();
        await target.abort();
      }
      if (!isOutputClosed(err)) throw err;
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
