/**
 * `audit-gateway rejects` (CONTRACT.md §5): the lines that were rejected (`audit_reject`), newest
 * first: when, from where, why, and the raw line.
 */
import type { Command } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { selectRejects } from '../../db/queries.js';
import { UsageError } from '../../errors.js';
import { rejectJson, renderRejectsTable } from '../../read/format.js';
import { parseTime, TIME_GRAMMAR } from '../../util/time.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';
import { chalkFor, guardStdout, isOutputClosed, terminalColumns, writeOut } from '../output.js';
import { choiceOption, intOption } from '../readOptions.js';

interface RejectsOptions extends CommonOptions {
  since?: string;
  until?: string;
  limit: string;
  output?: string;
  color?: boolean;
}

function time(flag: string, value: string | undefined, now: Date): string | undefined {
  if (value === undefined) return undefined;
  const t = parseTime(value, now);
  if (t === null) throw new UsageError(`${flag}: '${value}' is not a TIME; use ${TIME_GRAMMAR}`);
  return t;
}

/** Registers `rejects`. */
export function registerRejects(program: Command): void {
  const cmd = program
    .command('rejects')
    .description('list the rejected lines (audit_reject), newest first: when, from where, why, the raw line')
    .option('--since <time>', 'received at or after TIME')
    .option('--until <time>', 'received before TIME')
    .option('--limit <n>', 'at most N rejects', '100')
    .option(
      '--output <format>',
      'table, vertical, json or ndjson (default: table on a terminal, else ndjson)',
    )
    .option('--no-color', 'no colours (also: NO_COLOR=1); FORCE_COLOR=1 forces them')
    .addHelpText(
      'after',
      `
TIME: as for search (2026-11-01T10:00:00Z, 2026-11-01, today, 2h, 7d …); --since inclusive.
The raw line is shown as text (invalid UTF-8 bytes as U+FFFD, control characters escaped in
tables); json/ndjson carry it as "raw" and, byte for byte, as "raw_base64".
source: the connection and the line number of its ack (unix#14 line 3, tcp#2:127.0.0.1:50522 line 9),
or replay:FILE:LINE for replay.

Examples:
  $ audit-gateway rejects --since today                 # what was rejected today, and why
  $ audit-gateway rejects --output json | jq -r '.[0].raw_base64' | base64 -d`,
    );
  addCommonOptions(cmd).action(async (opts: RejectsOptions) => {
    const limit = intOption('--limit', opts.limit, 0);
    const now = new Date();
    const since = time('--since', opts.since, now);
    const until = time('--until', opts.until, now);
    const output = choiceOption('--output', opts.output ?? (process.stdout.isTTY ? 'table' : 'ndjson'), [
      'table',
      'vertical',
      'json',
      'ndjson',
    ] as const);
    guardStdout();
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 1);
    try {
      const rows = await withClient(pool, db, (c) => selectRejects(c, { since, until, limit: limit + 1 }));
      const more = rows.length > limit;
      if (more) rows.length = limit;
      if (output === 'json') {
        await writeOut(rows.length === 0 ? '[]\n' : `[\n${rows.map(rejectJson).join(',\n')}\n]\n`);
      } else if (output === 'ndjson') {
        await writeOut(rows.map((r) => `${rejectJson(r)}\n`).join(''));
      } else if (rows.length > 0) {
        const layout = output === 'vertical' ? 'vertical' : 'auto';
        await writeOut(renderRejectsTable(rows, chalkFor(opts), terminalColumns() ?? 160, layout));
      }
      if (more) {
        process.stderr.write(
          `audit-gateway: more rejects match than the ${rows.length} shown (--limit ${limit}); raise --limit or narrow --since/--until\n`,
        );
      } else if (rows.length === 0) {
        process.stderr.write('audit-gateway: no rejects match\n');
      }
    } catch (err) {
      if (!isOutputClosed(err)) throw err;
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
