/**
 * Logging: JSON lines on stderr (CONTRACT.md §4), through pino. Library code receives a {@link Logger}
 * and never calls `console`.
 */
import { pino } from 'pino';

/** The logger every module receives. */
export type Logger = pino.Logger;

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A logger writing JSON lines to stderr (fd 2, synchronously, so nothing is lost on exit). */
export function createLogger(level: LogLevel = 'info'): Logger {
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that writes nothing (tests, quiet commands). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
