/**
 * Where the database is (CONTRACT.md §2) and the pool every command uses.
 *
 * `--database-url`, else env `AUDIT_GATEWAY_DATABASE_URL`, else env `DATABASE_URL` (the CLI resolves
 * that order and passes the result here); with none, the embedded server in the data dir.
 */
import pg from 'pg';
import { DatabaseUnavailableError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { startEmbedded } from './embedded.js';

/** Every connection says who it is, so operators (and tests) find it in `pg_stat_activity`. */
export const APPLICATION_NAME = 'audit-gateway';

/** An open database: the pg config to connect with, a label for messages, and how to let it go. */
export interface Database {
  /** Config for `new pg.Client` / `new pg.Pool` (connection details only). */
  config: pg.ClientConfig;
  /** `host:port` (or the socket), for one-line errors. */
  where: string;
  /** True when this is the embedded server. */
  embedded: boolean;
  /** Stops an embedded server this process owns; a no-op otherwise. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface OpenOptions {
  /** A postgres:// URL, or undefined for the embedded server. */
  databaseUrl: string | undefined;
  /** The data dir of the embedded server. */
  dataDir: string;
  /** `serve` owns the data dir: it adopts a server left running and stops it on exit. */
  owner: boolean;
  log: Logger;
}

/** Describes a URL's host and port without its password. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    const host = u.hostname || u.searchParams.get('host') || 'localhost';
    return `${host}:${u.port || '5432'}`;
  } catch {
    return 'the database URL';
  }
}

/**
 * Resolves the database of CONTRACT.md §2 and, for the embedded one, starts it (or reuses the one
 * `serve` runs).
 */
export async function openDatabase(opts: OpenOptions): Promise<Database> {
  if (opts.databaseUrl) {
    return {
      config: { connectionString: opts.databaseUrl, application_name: APPLICATION_NAME },
      where: describeUrl(opts.databaseUrl),
      embedded: false,
      close: async () => {},
    };
  }
  const server = await startEmbedded(opts.dataDir, opts.log, { adoptRunning: opts.owner });
  return {
    config: {
      host: server.host,
      port: server.port,
      user: server.user,
      password: server.password,
      database: server.database,
      application_name: APPLICATION_NAME,
    },
    where: `${server.host}:${server.port} (embedded, data dir ${opts.dataDir})`,
    embedded: true,
    close: () => server.stop(),
  };
}

/**
 * A pool whose idle clients may die without crashing the process (known-traps C17): pg emits
 * `'error'` on the pool for an idle client's failure, and an `'error'` event without a listener is
 * an uncaught exception. Checked-out clients get their own listener as well.
 */
export function createPool(db: Database, log: Logger, max = 4): pg.Pool {
  const pool = new pg.Pool({ ...db.config, max, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000 });
  pool.on('error', (err) => {
    log.warn({ err: messageOf(err) }, 'an idle Postgres connection failed; it will be replaced');
  });
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      log.warn({ err: messageOf(err) }, 'a Postgres connection failed');
    });
  });
  return pool;
}

/** Turns a connection failure into the one-line error of CONTRACT.md §7, naming host and port. */
export function unreachable(db: Database, err: unknown): DatabaseUnavailableError {
  const state = (err as { code?: unknown } | null)?.code;
  const msg = messageOf(err);
  let fix = '(is it running? check --database-url)';
  // SQLSTATEs of PostgreSQL docs Appendix A: 3D000 invalid_catalog_name, 28P01/28000 auth failures
  if (state === '3D000')
    fix =
      '(the server runs, the database does not: create it with createdb, or fix the name in --database-url)';
  else if (state === '28P01' || state === '28000' || /password must be a string|SASL/i.test(msg))
    fix =
      '(the server refused the credentials: give the password in PGPASSWORD or ~/.pgpass, or check the user in --database-url)';
  return new DatabaseUnavailableError(`cannot connect to Postgres at ${db.where}: ${msg} ${fix}`, 1, {
    cause: err,
  });
}

/** Runs `fn` with a connected client from the pool; connection failures become {@link unreachable}. */
export async function withClient<T>(
  pool: pg.Pool,
  db: Database,
  fn: (c: pg.PoolClient) => Promise<T>,
): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw unreachable(db, err);
  }
  try {
    return await fn(client);
  } finally {
    client.release();
  }
}
