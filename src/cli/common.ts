/**
 * Options every command shares (CONTRACT.md §2, §7), and opening the database from them.
 * Precedence: flag > environment variable > configuration file > default (commander's `.env()`,
 * then cli/config.ts).
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type Database, openDatabase } from '../db/connect.js';
import { databaseUrlProblem, maskUrl } from '../db/databaseUrl.js';
import { defaultDataDir } from '../db/embedded.js';
import { readServedDatabase, recordServedDatabase } from '../db/servedDatabase.js';
import { createLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat, type Logger, type LogLevel } from '../log.js';

/** The options of {@link addCommonOptions}, as commander gives them. */
export interface CommonOptions {
  databaseUrl?: string;
  dataDir: string;
  logLevel: LogLevel;
  logFormat?: LogFormat;
  verbose?: boolean;
}

/** Adds `--database-url`, `--data-dir`, `--log-level` and `--verbose` to a command. */
export function addCommonOptions(cmd: Command, defaultLevel: LogLevel = 'warn'): Command {
  return cmd
    .addOption(
      new Option(
        '--database-url <url>',
        'Postgres URL, postgres://USER@HOST:PORT/DATABASE; none: the one a running serve uses, else the embedded server (env AUDIT_GATEWAY_DATABASE_URL, then DATABASE_URL)',
      )
        .env('AUDIT_GATEWAY_DATABASE_URL')
        .argParser(databaseUrlArg),
    )
    .addOption(
      new Option('--data-dir <dir>', 'data dir of the embedded Postgres and the spool')
        .env('AUDIT_GATEWAY_DATA_DIR')
        .default(defaultDataDir(), '$XDG_DATA_HOME/audit-gateway or ~/.local/share/audit-gateway'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level of the log lines on stderr')
        .choices(LOG_LEVELS)
        .env('AUDIT_GATEWAY_LOG_LEVEL')
        .default(defaultLevel),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'log lines as json, pretty (for people), or auto: pretty on a terminal',
      )
        .choices(LOG_FORMATS)
        .env('AUDIT_GATEWAY_LOG_FORMAT')
        .default('auto'),
    )
    .option('--verbose', 'print stack traces with errors');
}

/** The database URL of CONTRACT.md §2: flag, else AUDIT_GATEWAY_DATABASE_URL, else DATABASE_URL. */
export function databaseUrlOf(opts: CommonOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return opts.databaseUrl || env.AUDIT_GATEWAY_DATABASE_URL || env.DATABASE_URL || undefined;
}

/** A logger at the command's level. */
export function loggerOf(opts: CommonOptions): Logger {
  return createLogger(opts.logLevel, opts.logFormat ?? 'auto');
}

/**
 * True when a database URL or libpq keyword string carries a password (`postgres://u:PW@h/db`,
 * `?password=PW`, `password=PW`): on the command line every local user can read it in `ps`.
 */
export function urlHasPassword(url: string): boolean {
  try {
    const u = new URL(url);
    if (u.password !== '' || u.searchParams.has('password')) return true;
  } catch {
    // not a URL: a libpq keyword/value string
  }
  return /(?:^|\s)password\s*=/.test(url);
}

/** commander's parser of `--database-url`: the forms of db/databaseUrl.ts, else exit 2. */
export function databaseUrlArg(value: string): string {
  if (value.trim() === '') return ''; // an empty value (e.g. DATABASE_URL=) is no URL at all
  const problem = databaseUrlProblem(value);
  if (problem !== null) throw new InvalidArgumentError(problem);
  return value.trim();
}

/**
 * Opens the database the options name; `owner` is true only for `serve`. A command given no URL
 * reads the one a `serve` running on the same data dir writes to (db/servedDatabase.ts), and says
 * so on stderr. Warns when the password came on the command line (CONTRACT.md §4 "Neighbours":
 * accepted, with a warning).
 */
export async function openFromOptions(opts: CommonOptions, log: Logger, owner = false): Promise<Database> {
  warnIfPasswordInArgv(opts, log);
  let databaseUrl = databaseUrlOf(opts);
  if (databaseUrl === undefined && !owner) {
    const served = await readServedDatabase(opts.dataDir);
    if (served !== undefined) {
      databaseUrl = served.url;
      process.stderr.write(
        `audit-gateway: reading the database of the running serve (pid ${served.pid}): ${maskUrl(served.url)} (from ${served.file}; --database-url chooses another)\n`,
      );
    }
  }
  return openDatabase({ databaseUrl, dataDir: opts.dataDir, owner, log });
}

/**
 * For `serve`: logs which database it writes to (password masked) and, for a URL, records it for
 * the read commands (db/servedDatabase.ts).
 * @returns a function that removes the record at exit
 */
export async function announceDatabase(
  opts: CommonOptions,
  db: Database,
  log: Logger,
): Promise<() => Promise<void>> {
  const url = databaseUrlOf(opts);
  log.info({ database: url === undefined ? db.where : maskUrl(url) }, 'writing entries to Postgres');
  if (url === undefined) return async () => {};
  try {
    return await recordServedDatabase(opts.dataDir, url);
  } catch (err) {
    log.warn(
      { err: (err as Error).message, dataDir: opts.dataDir },
      'could not record the database URL for the read commands',
    );
    return async () => {};
  }
}

/**
 * Warns when `--database-url` carries a password, and hides the URL from the process title: every
 * local user can read a command line in `ps` (CONTRACT.md §4 "Neighbours").
 */
function warnIfPasswordInArgv(opts: CommonOptions, log: Logger): void {
  if (!opts.databaseUrl || !urlHasPassword(opts.databaseUrl)) return;
  // Only a URL on the command line is shown by ps (not one from the environment or a config file).
  if (!process.argv.some((a) => a.includes(opts.databaseUrl as string))) return;
  // Shorten the window: the process title overwrites argv in place (/proc/PID/cmdline, libuv
  // uv_set_process_title); ps showed it until now, and the warning says how to avoid even that.
  const hidden = opts.databaseUrl;
  process.title = process.argv
    .map((a) => (a.includes(hidden) ? a.replace(hidden, '[hidden database URL]') : a))
    .join(' ');
  log.warn(
    '--database-url carries a password, which every local user can read in ps; set AUDIT_GATEWAY_DATABASE_URL instead, or leave the password out and use PGPASSWORD or ~/.pgpass',
  );
}

/** The longest delay Node's timers can hold, in ms (2^31 - 1; a longer one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A commander argument parser for whole numbers from `min` to `max` (default: the largest safe
 * integer), written in decimal digits only: `0x10`, `1e3`, `5.0`, ` 5`, `+5` and the empty string
 * are refused (exit 2 with commander's one-line message naming the flag and its value).
 */
export function intAtLeast(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string): number => {
    const n = /^[0-9]{1,16}$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        max === Number.MAX_SAFE_INTEGER
          ? `expected a whole number >= ${min}`
          : `expected a whole number from ${min} to ${max}`,
      );
    }
    return n;
  };
}
