/**
 * Errors that reach users (CONTRACT.md §7): each carries a one-line message that names the thing and
 * the fix, and the exit code it maps to. Only the CLI turns them into exit codes.
 */

/** Exit codes of CONTRACT.md §7. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, FAULTS: 3 } as const;

/** Base of every error meant for a user: `message` is one line, `exitCode` is 1, 2 or 3. */
export class AuditGatewayError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 3 = 1,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The command line is wrong (exit 2). */
export class UsageError extends AuditGatewayError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** `verify` found faults (exit 3, CONTRACT.md §9); they are already printed, the message is empty. */
export class FaultsFound extends AuditGatewayError {
  constructor() {
    super('', 3);
  }
}

/** Postgres cannot be reached (exit 1); the message names host and port. */
export class DatabaseUnavailableError extends AuditGatewayError {}

/** SQLSTATE classes that mean "try again later", never "the data is bad" (CONTRACT.md §4). */
const RETRYABLE_CLASSES = new Set(['08', '53', '57', '40']);
/** SQLSTATE classes that mean "this data cannot be stored" (CONTRACT.md §4). */
const DATA_CLASSES = new Set(['22', '23', '54']);
/** Node socket error codes of a lost or refused connection. */
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/** The SQLSTATE of a pg error, or undefined. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * True for errors worth retrying with backoff: SQLSTATE classes 08, 53, 57, 40, socket errors, and
 * node-postgres' own "Connection terminated" errors (which carry no code).
 */
export function isRetryable(err: unknown): boolean {
  const state = sqlState(err);
  if (state) return RETRYABLE_CLASSES.has(state.slice(0, 2));
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return true;
  const msg = err instanceof Error ? err.message : String(err);
  return /Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|connection is closed|Client was closed/i.test(
    msg,
  );
}

/**
 * True for errors caused by the data of a batch (SQLSTATE classes 22, 23, 54), except a missing
 * partition ({@link isMissingPartition}): that one is the schema's to fix, never the entry's fault.
 */
export function isDataError(err: unknown): boolean {
  const state = sqlState(err);
  return state !== undefined && DATA_CLASSES.has(state.slice(0, 2)) && !isMissingPartition(err);
}

/**
 * True for Postgres' "no partition of relation … found for row" (SQLSTATE 23514 with that message;
 * CONTRACT.md §10): the entry's day has no partition yet. The writer makes it and writes again.
 */
export function isMissingPartition(err: unknown): boolean {
  if (sqlState(err) !== '23514') return false;
  // A CHECK constraint's violation names its constraint; routing's does not (and its message may be
  // translated by lc_messages).
  const constraint = (err as { constraint?: unknown }).constraint;
  return /no partition of relation/i.test(messageOf(err)) || constraint === undefined || constraint === null;
}

/** The message of any thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
