/** `audit-gateway search` (CONTRACT.md §5): matching entries as a table, JSON, NDJSON or CSV. */
import type { Command } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { selectEntries } from '../../db/queries.js';
import { renderEntriesTable } from '../../read/format.js';
import { streamEntries } from '../../read/stream.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { chalkFor, guardStdout, isOutputClosed, terminalColumns, writeOut } from '../output.js';
import {
  addFilterOptions,
  choiceOption,
  type FilterOptions,
  filtersOf,
  intOption,
  TIME_HELP,
} from '../readOptions.js';

interface SearchOptions extends CommonOptions, FilterOptions {
  limit: string;
  order: string;
  output?: string;
}

/** Registers `search`. */
export function registerSearch(program: Command): void {
  const cmd = program
    .command('search')
    .description('find entries by filters; newest first, as a table on a terminal and NDJSON into a pipe')
    .option('--limit <n>', 'at most N entries', '100')
    .option('--order <order>', 'desc (newest first) or asc', 'desc')
    .option(
      '--output <format>',
      'table, vertical (one block per entry), json, ndjson or csv (default: table on a terminal, else ndjson)',
    );
  addFilterOptions(cmd).addHelpText(
    'after',
    `${TIME_HELP}

Output: json/ndjson objects have the wire fields plus id and received_at, extra fields at the top
level, times as RFC 3339 UTC with microseconds; csv is RFC 4180 with a header row.

Examples:
  $ audit-gateway search --subject alice --since 1h          # what did alice call in the last hour
  $ audit-gateway search --tool sql.query --errors --since yesterday --output csv > errors.csv
  $ audit-gateway search --arg path=/etc/passwd --limit 10
  $ audit-gateway search --text 'timeout' --min-latency 1000 --order asc --output json`,
  );
  addCommonOptions(cmd).action(async (opts: SearchOptions) => {
    const limit = intOption('--limit', opts.limit, 0);
    const order = choiceOption('--order', opts.order, ['desc', 'asc'] as const);
    const output = choiceOption('--output', opts.output ?? (process.stdout.isTTY ? 'table' : 'ndjson'), [
      'table',
      'vertical',
      'json',
      'ndjson',
      'csv',
    ] as const);
    const filters = filtersOf(opts);
    guardStdout();
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 2);
    try {
      let shown: number;
      let more: boolean;
      if (output === 'table' || output === 'vertical') {
        const rows = await withClient(pool, db, (c) =>
          selectEntries(c, filters, { order, limit: limit + 1 }),
        );
        more = rows.length > limit;
        if (more) rows.length = limit;
        shown = rows.length;
        const layout = output === 'vertical' ? 'vertical' : 'auto';
        if (rows.length > 0) {
          await writeOut(renderEntriesTable(rows, chalkFor(opts), terminalColumns() ?? 160, layout));
        }
      } else {
        ({ rows: shown, more } = await streamEntries(pool, db, log, {
          filters,
          format: output,
          order,
          limit,
          destinations: [process.stdout],
          end: false,
        }));
      }
      // CONTRACT.md §5: stdout stays the data; the note goes to stderr.
      if (more) {
        process.stderr.write(
          `audit-gateway: more entries match than the ${shown} shown (--limit ${limit}); raise --limit, narrow the filters, or use export for all\n`,
        );
      } else if (shown === 0) {
        process.stderr.write('audit-gateway: no entries match\n');
      }
    } catch (err) {
      if (!isOutputClosed(err)) throw err;
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
