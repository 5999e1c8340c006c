/**
 * The options shared by `tail`, `search`, `export` and `stats` (CONTRACT.md §5) and their
 * validation. Values are checked here, after commander, so that a bad one is a {@link UsageError}:
 * one line naming the flag, the value and what it accepts, exit 2 (CONTRACT.md §7).
 */
import type { Command } from 'commander';
import { argFilterJson, type Filters } from '../db/filter.js';
import { isUuid } from '../entry/grammar.js';
import { UsageError } from '../errors.js';
import { parseTime, TIME_GRAMMAR } from '../util/time.js';

/** The filter options as commander gives them. */
export interface FilterOptions {
  subject?: string;
  role?: string;
  tool?: string;
  backend?: string;
  status?: string;
  requestId?: string;
  since?: string;
  until?: string;
  errors?: boolean;
  minLatency?: string;
  arg?: string[];
  text?: string;
  /** false with `--no-color`. */
  color?: boolean;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Adds the filter options and `--no-color` to a command. */
export function addFilterOptions(cmd: Command): Command {
  return cmd
    .option('--subject <subject>', 'client_subject equals (* is a wildcard; "" is the anonymous caller)')
    .option('--role <role>', 'client_role equals (* is a wildcard)')
    .option('--tool <tool>', 'tool_name equals (* is a wildcard)')
    .option('--backend <backend>', 'backend_name equals (* is a wildcard)')
    .option('--status <status>', 'response_status equals (* is a wildcard)')
    .option('--request-id <uuid>', 'request_id equals')
    .option('--since <time>', 'timestamp at or after TIME')
    .option('--until <time>', 'timestamp before TIME')
    .option('--errors', "only entries whose status is not 'success'")
    .option('--min-latency <ms>', 'latency_ms at least MS')
    .option(
      '--arg <key=value>',
      'request_args contains {"KEY": VALUE} (VALUE as JSON when it parses, else a string); repeatable',
      collect,
    )
    .option('--text <text>', 'error_message contains TEXT (case-insensitive, % and _ literal)')
    .option('--no-color', 'no colours (also: NO_COLOR=1); FORCE_COLOR=1 forces them');
}

/** Help text on TIME values, for `addHelpText('after', …)`. */
export const TIME_HELP = `
TIME: RFC 3339 (2026-11-01T10:00:00Z), a date or local date-time (2026-11-01,
'2026-11-01 10:00', read in the local time zone, TZ), now, today, yesterday, or a duration
ago (90s, 15m, 2h, 7d, 1h30m). --since is inclusive, --until exclusive.
A * in --subject, --role, --tool, --backend or --status matches any text.`;

function time(flag: string, value: string | undefined, now: Date): string | undefined {
  if (value === undefined) return undefined;
  const t = parseTime(value, now);
  if (t === null) throw new UsageError(`${flag}: '${value}' is not a TIME; use ${TIME_GRAMMAR}`);
  return t;
}

/**
 * The validated {@link Filters} of the options.
 * @param now the one "now" of this command, for relative TIMEs
 * @throws {UsageError} naming the flag of the first bad value
 */
export function filtersOf(opts: FilterOptions, now: Date = new Date()): Filters {
  const f: Filters = {};
  if (opts.subject !== undefined) f.subject = opts.subject;
  if (opts.role !== undefined) f.role = opts.role;
  if (opts.tool !== undefined) f.tool = opts.tool;
  if (opts.backend !== undefined) f.backend = opts.backend;
  if (opts.status !== undefined) f.status = opts.status;
  if (opts.requestId !== undefined) {
    if (!isUuid(opts.requestId))
      throw new UsageError(`--request-id: '${opts.requestId}' is not a UUID (32 hex digits)`);
    f.requestId = opts.requestId;
  }
  const since = time('--since', opts.since, now);
  if (since !== undefined) f.since = since;
  const until = time('--until', opts.until, now);
  if (until !== undefined) f.until = until;
  if (opts.errors) f.errors = true;
  if (opts.minLatency !== undefined) {
    if (!/^\d+$/.test(opts.minLatency.trim()) || opts.minLatency.trim().length > 18) {
      throw new UsageError(`--min-latency: '${opts.minLatency}' is not a whole number of milliseconds >= 0`);
    }
    f.minLatencyMs = opts.minLatency.trim();
  }
  if (opts.arg && opts.arg.length > 0) {
    f.args = opts.arg.map((a) => {
      const json = argFilterJson(a);
      if (json === null)
        throw new UsageError(`--arg: '${a}' is not KEY=VALUE (e.g. --arg path=/etc/passwd, --arg 'n=3')`);
      return json;
    });
  }
  if (opts.text !== undefined) f.text = opts.text;
  return f;
}

/**
 * A whole number option in `[min, max]`.
 * @throws {UsageError} naming the flag
 */
export function intOption(flag: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag}: '${value}' is not a whole number >= ${min}`);
  }
  return n;
}

/**
 * One of the allowed choices.
 * @throws {UsageError} naming the flag and the choices
 */
export function choiceOption<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`${flag}: '${value}' is not one of ${choices.join(', ')}`);
  }
  return value as T;
}
