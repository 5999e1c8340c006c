/** `audit-gateway stats` (CONTRACT.md §5): count, errors and latency percentiles per group. */
import type { Command } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { STATS_GROUPS, STATS_SORTS, type StatsGroup, type StatsSort, statsBy } from '../../db/queries.js';
import { renderStatsTable } from '../../read/format.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { chalkFor, guardStdout, isOutputClosed, terminalColumns, writeOut } from '../output.js';
import { addFilterOptions, choiceOption, type FilterOptions, filtersOf, TIME_HELP } from '../readOptions.js';

interface StatsOptions extends CommonOptions, FilterOptions {
  by: string;
  sort: string;
  output?: string;
}

/** Registers `stats`. */
export function registerStats(program: Command): void {
  const cmd = program
    .command('stats')
    .description('per group: count, errors, error rate and latency p50/p95/p99 (ms), largest count first')
    .option('--by <group>', 'tool, subject, backend, status or role', 'tool')
    .option('--sort <key>', 'largest first by count, errors, error_rate, p50, p95 or p99', 'count')
    .option('--output <format>', 'table, vertical or json (default: table on a terminal, else json)');
  addFilterOptions(cmd).addHelpText(
    'after',
    `${TIME_HELP}

JSON: an array of {"group","count","errors","error_rate","p50_ms","p95_ms","p99_ms"}; error_rate is a
fraction from 0 to 1, errors count entries whose status is not 'success'; percentiles are
percentile_cont over the entries that have a latency (null when none has).

Examples:
  $ audit-gateway stats --by tool --since 7d --sort p95   # which tools are slowest this week
  $ audit-gateway stats --by subject --errors --since today
  $ audit-gateway stats --by status --tool sql.query --output json`,
  );
  addCommonOptions(cmd).action(async (opts: StatsOptions) => {
    const by = choiceOption('--by', opts.by, Object.keys(STATS_GROUPS) as StatsGroup[]);
    const sort = choiceOption('--sort', opts.sort, Object.keys(STATS_SORTS) as StatsSort[]);
    const output = choiceOption('--output', opts.output ?? (process.stdout.isTTY ? 'table' : 'json'), [
      'table',
      'vertical',
      'json',
    ] as const);
    const filters = filtersOf(opts);
    guardStdout();
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 1);
    try {
      const rows = await withClient(pool, db, (c) => statsBy(c, filters, by, sort));
      if (rows.length === 0) process.stderr.write('audit-gateway: no entries match\n');
      if (output === 'json') await writeOut(`${JSON.stringify(rows, null, 2)}\n`);
      else if (rows.length > 0) {
        const layout = output === 'vertical' ? 'vertical' : 'auto';
        await writeOut(renderStatsTable(rows, by, chalkFor(opts), terminalColumns() ?? 120, layout));
      }
    } catch (err) {
      if (!isOutputClosed(err)) throw err;
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
