/**
 * Logging through pino: JSON lines on stderr (CONTRACT.md §4) for machines, and, when stderr is a
 * terminal, the same records made readable for people by pino-pretty (time, level, message, then
 * the fields). Library code receives a {@link Logger} and never calls `console`.
 */
import { pino } from 'pino';
import pretty from 'pino-pretty';

/** The logger every module receives. */
export type Logger = pino.Logger;

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Log formats accepted by `--log-format`: `auto` is `pretty` on a terminal, else `json`. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * A logger writing to stderr (fd 2, synchronously, so nothing is lost on exit): JSON lines, or
 * pino-pretty's lines for `pretty` (and for `auto` when stderr is a terminal; colours unless
 * `NO_COLOR` is set).
 */
export function createLogger(
  level: LogLevel = 'info',
  format: LogFormat = 'auto',
  stderr: { isTTY?: boolean } = process.stderr,
): Logger {
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  const human = format === 'pretty' || (format === 'auto' && stderr.isTTY === true);
  if (!human) return pino(options, pino.destination({ fd: 2, sync: true }));
  const noColor = process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '';
  return pino(
    options,
    pretty({
      destination: 2,
      sync: true,
      colorize: !noColor && stderr.isTTY === true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
    }),
  );
}

/** A logger that writes nothing (tests, quiet commands). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
