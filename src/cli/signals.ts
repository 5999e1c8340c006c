/**
 * The process edge for signals (style.md rule 6): the first SIGINT or SIGTERM asks for a graceful
 * stop, a second one forces it. The only module that registers signal handlers.
 */
import type { Logger } from '../log.js';

/**
 * Calls `graceful` on the first SIGINT/SIGTERM and `force` on the next one.
 * @returns a function that removes the handlers.
 */
export function onStopSignals(
  log: Logger,
  graceful: (signal: string) => void,
  force: (signal: string) => void,
): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      log.info({ signal }, 'stopping gracefully (send it again to force)');
      graceful(signal);
    } else {
      log.warn({ signal }, 'forced stop: giving up on unwritten entries');
      force(signal);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/**
 * After `serve` has stopped and released what it can, a connection that Postgres never answers
 * (a frozen server) may still hold the event loop: exit after `graceMs` in that case. The timer is
 * unref'd, so a process with nothing left exits at once on its own.
 */
export function exitIfStuck(graceMs: number): void {
  setTimeout(() => process.exit(), graceMs).unref();
}

/** The signals `wrap` passes on to the server it runs (SIGUSR1 stays Node's debugger signal). */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = [
  'SIGINT',
  'SIGTERM',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR2',
];

/**
 * Calls `forward` with each of {@link FORWARDED_SIGNALS} received, instead of ending the process
 * (`wrap` ends when its server does, CONTRACT.md §11).
 * @returns a function that removes the handlers.
 */
export function onForwardedSignals(forward: (signal: NodeJS.Signals) => void): () => void {
  for (const s of FORWARDED_SIGNALS) process.on(s, forward);
  return () => {
    for (const s of FORWARDED_SIGNALS) process.off(s, forward);
  };
}
