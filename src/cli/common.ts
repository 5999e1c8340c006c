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
 * so on stderr.
 */
export async function openFromOptions(opts: CommonOptions, log: Logger, owner = false): Promise<Database> {
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
 * A commander argument parser for whole numbers of at least `min` (exit 2 with commander's one-line
 * message naming the flag otherwise).
 */
export function intAtLeast(min: number): (value: string) => number {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`expected a whole number >= ${min}`);
    return n;
  };
}
