/** `audit-gateway tail` (CONTRACT.md §5): the newest entries, then new ones as they commit. */
import type { Command } from 'commander';
import { tailEntries } from '../../read/follow.js';
import { TextLineFormatter } from '../../read/format.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { chalkFor, guardStdout, isOutputClosed, stopSignal, terminalColumns, writeOut } from '../output.js';
import {
  addFilterOptions,
  choiceOption,
  type FilterOptions,
  filtersOf,
  intOption,
  TIME_HELP,
} from '../readOptions.js';

interface TailOptions extends CommonOptions, FilterOptions {
  lines: string;
  follow: boolean;
  output: string;
}

/** Registers `tail`. */
export function registerTail(program: Command): void {
  const cmd = program
    .command('tail')
    .description('print the newest matching entries (oldest first), then follow new ones until Ctrl-C')
    .option('-n, --lines <n>', 'how many of the newest entries to print first', '10')
    .option('--no-follow', 'print the newest entries and exit')
    .option('--output <format>', 'text (aligned lines) or json (NDJSON, one entry per line)', 'text');
  addFilterOptions(cmd).addHelpText(
    'after',
    `${TIME_HELP}

Examples:
  $ audit-gateway tail                          # last 10 entries, then follow
  $ audit-gateway tail --subject alice          # follow everything alice does
  $ audit-gateway tail -n 50 --errors --no-follow
  $ audit-gateway tail --tool 'fs.*' --output json | jq .request_args`,
  );
  addCommonOptions(cmd).action(async (opts: TailOptions) => {
    const initial = intOption('--lines', opts.lines, 0);
    const output = choiceOption('--output', opts.output, ['text', 'json'] as const);
    const filters = filtersOf(opts);
    guardStdout();
    const log = loggerOf(opts);
    const formatter = new TextLineFormatter(chalkFor(opts), terminalColumns());
    const db = await openFromOptions(opts, log);
    const stop = stopSignal();
    try {
      await tailEntries(db, {
        filters,
        initial,
        follow: opts.follow,
        signal: stop.signal,
        log,
        onFirstPage: (n) => {
          if (n === 0 && initial > 0) {
            process.stderr.write(
              `audit-gateway: no entries match${opts.follow ? ' yet; following new ones (Ctrl-C to stop)' : ''}\n`,
            );
          }
        },
        onRows: (rows) =>
          writeOut(output === 'json' ? rows.map((r) => `${r.line}\n`).join('') : formatter.format(rows)),
      });
    } catch (err) {
      if (!isOutputClosed(err)) throw err;
    } finally {
      stop.detach();
      await db.close();
    }
  });
}
