/**
 * Schema migrations (CONTRACT.md §8) with node-pg-migrate's programmatic runner, from the SQL files
 * in the package's `migrations/` folder, tracked in `pgmigrations`.
 *
 * The runner takes node-pg-migrate's advisory lock in `wait` mode, so two `migrate` (or `serve`)
 * runs at once are safe: the second waits, then finds nothing left to do (known-traps C21).
 */
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type pg from 'pg';
import { AuditGatewayError, isRetryable, messageOf } from '../errors.js';
import type { Logger } from '../log.js';

/** The folder of the shipped migrations (`<package>/migrations`, beside `dist/`). */
export const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'migrations');
/** node-pg-migrate's bookkeeping table. */
export const MIGRATIONS_TABLE = 'pgmigrations';

/** One migration and whether it has run. */
export interface MigrationStatus {
  name: string;
  /** When it was applied, or null when pending. */
  runOn: Date | null;
}

/**
 * Applies (`up`) or reverts (`down`) migrations on a connected client.
 * @param count how many to apply or revert; `Infinity` for all pending (up); down defaults to 1.
 * @returns the names of the migrations that ran.
 * @throws AuditGatewayError naming the migration that failed (one line; the SQL goes to the debug
 *   log); the connection's own error when it is lost (`isRetryable`).
 */
export async function migrate(
  client: pg.ClientBase,
  direction: 'up' | 'down',
  log: Logger,
  count?: number,
): Promise<string[]> {
  let current: string | undefined;
  try {
    const ran = await runner({
      dbClient: client,
      dir: MIGRATIONS_DIR,
      migrationsTable: MIGRATIONS_TABLE,
      direction,
      count: count ?? (direction === 'up' ? Number.POSITIVE_INFINITY : 1),
      advisoryLockMode: 'wait',
      checkOrder: true,
      singleTransaction: true,
      logger: {
        debug: (m: string) => log.debug(m),
        info: (m: string) => {
          current = /^### MIGRATION (\S+) /.exec(m)?.[1] ?? current;
          log.debug(m);
        },
        warn: (m: string) => log.warn(m),
        // node-pg-migrate logs the whole SQL of a failed migration: for --log-level debug only
        error: (m: string) => log.debug(m),
      },
    });
    return ran.map((m) => m.name);
  } catch (err) {
    // A lost connection stays what it is (retried or reported by the caller as unreachable).
    if (isRetryable(err)) throw err;
    throw new AuditGatewayError(
      `migrate ${direction}${current ? `: migration ${current}` : ''} failed: ${messageOf(err)}; nothing was applied (the pending migrations run in one transaction); 'audit-gateway migrate status' lists them`,
      1,
      { cause: err },
    );
  }
}

/** Every shipped migration with its state, in order. */
export async function migrationStatus(client: pg.ClientBase): Promise<MigrationStatus[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
  const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [MIGRATIONS_TABLE]);
  const done = new Map<string, Date>();
  if (exists.rows[0]?.t) {
    const rows = await client.query<{ name: string; run_on: Date }>(
      `SELECT name, run_on FROM ${MIGRATIONS_TABLE}`,
    );
    for (const r of rows.rows) done.set(r.name, r.run_on);
  }
  return files.map((f) => {
    const name = f.replace(/\.sql$/, '');
    return { name, runOn: done.get(name) ?? null };
  });
}

/** The roles of CONTRACT.md §9 that `migrate --roles` creates (cluster-wide, NOLOGIN). */
export const ROLES = { writer: 'audit_writer', reader: 'audit_reader' } as const;

/**
 * Creates the roles `audit_writer` and `audit_reader` unless they exist (NOLOGIN: grant them to a
 * login role, `GRANT audit_writer TO gateway`) and grants them this database's tables (run after
 * the migrations). `audit_writer` may INSERT (and SELECT, to read back the leaves of its own batch
 * and the chain head) and move a chain's head (UPDATE of head_seq, head_hash only, which a
 * trigger lets move forward by one); it may not UPDATE, DELETE or TRUNCATE anything else.
 * `audit_reader` may only SELECT. Neither may run migrations.
 * @returns the roles created now (those that existed are only granted).
 */
export async function createRoles(client: pg.ClientBase): Promise<string[]> {
  const made: string[] = [];
  for (const role of [ROLES.writer, ROLES.reader]) {
    const r = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
    if (r.rowCount === 0) {
      await client.query(`CREATE ROLE ${role} NOLOGIN`).catch((err: { code?: string }) => {
        if (err.code !== '42710') throw err; // made by a concurrent run meanwhile
      });
      made.push(role);
    }
  }
  const w = ROLES.writer;
  const rd = ROLES.reader;
  await client.query(
    `DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO ${w}, ${rd}', current_schema()); END $$`,
  );
  await client.query(
    `GRANT SELECT, INSERT ON audit_log, audit_reject, audit_batch, audit_checkpoint, audit_chain TO ${w}`,
  );
  await client.query(`GRANT UPDATE (head_seq, head_hash) ON audit_chain TO ${w}`);
  // CONTRACT.md §10: the writer makes the partitions of its batches' days (a SECURITY DEFINER function)
  await client.query(`GRANT EXECUTE ON FUNCTION audit_log_ensure_partitions(text[]) TO ${w}`);
  const seqs = await client.query<{ s: string }>(
    `SELECT pg_get_serial_sequence(t, 'id') AS s FROM unnest(ARRAY['audit_log', 'audit_reject', 'audit_checkpoint']) t`,
  );
  for (const { s } of seqs.rows) if (s) await client.query(`GRANT USAGE, SELECT ON SEQUENCE ${s} TO ${w}`);
  await client.query(
    `GRANT SELECT ON audit_log, audit_reject, audit_batch, audit_chain, audit_checkpoint, audit_retention TO ${rd}`,
  );
  return made;
}
