/**
 * Options every command shares (CONTRACT.md §2, §7), and opening the database from them.
 * Precedence: flag > environment variable > default (commander's `.env()`).
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type Database, openDatabase } from '../db/connect.js';
import { defaultDataDir } from '../db/embedded.js';
import { createLogger, LOG_LEVELS, type Logger, type LogLevel } from '../log.js';

/** The options of {@link addCommonOptions}, as commander gives them. */
export interface CommonOptions {
  databaseUrl?: string;
  dataDir: string;
  logLevel: LogLevel;
  verbose?: boolean;
}

/** Adds `--database-url`, `--data-dir`, `--log-level` and `--verbose` to a command. */
export function addCommonOptions(cmd: Command, defaultLevel: LogLevel = 'warn'): Command {
  return cmd
    .addOption(
      new Option(
        '--database-url <url>',
        'Postgres URL; none: the embedded server (env AUDIT_GATEWAY_DATABASE_URL, then DATABASE_URL)',
      ),
    )
    .addOption(
      new Option('--data-dir <dir>', 'data dir of the embedded Postgres and the spool')
        .env('AUDIT_GATEWAY_DATA_DIR')
        .default(defaultDataDir(), '$XDG_DATA_HOME/audit-gateway or ~/.local/share/audit-gateway'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level of the JSON log lines on stderr')
        .choices(LOG_LEVELS)
        .env('AUDIT_GATEWAY_LOG_LEVEL')
        .default(defaultLevel),
    )
    .option('--verbose', 'print stack traces with errors');
}

/** The database URL of CONTRACT.md §2: flag, else AUDIT_GATEWAY_DATABASE_URL, else DATABASE_URL. */
export function databaseUrlOf(opts: CommonOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return opts.databaseUrl || env.AUDIT_GATEWAY_DATABASE_URL || env.DATABASE_URL || undefined;
}

/** A logger at the command's level. */
export function loggerOf(opts: CommonOptions): Logger {
  return createLogger(opts.logLevel);
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

/**
 * Opens the database the options name; `owner` is true only for `serve`. Warns when the password
 * came on the command line (CONTRACT.md §4 "Neighbours": accepted, with a warning).
 */
export function openFromOptions(opts: CommonOptions, log: Logger, owner = false): Promise<Database> {
  if (opts.databaseUrl && urlHasPassword(opts.databaseUrl)) {
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
  return openDatabase({ databaseUrl: databaseUrlOf(opts), dataDir: opts.dataDir, owner, log });
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
