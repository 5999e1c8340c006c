/** `audit-gateway migrate [up|down|status]` (CONTRACT.md §1, §8). */
import type { Command } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { ensureAhead } from '../../db/partitions.js';
import { UsageError } from '../../errors.js';
import { addCommonOptions, type CommonOptions, intAtLeast, loggerOf, openFromOptions } from '../common.js';

interface MigrateOptions extends CommonOptions {
  count?: number;
  roles?: boolean;
}

/** Registers `migrate`. */
export function registerMigrate(program: Command): void {
  const cmd = program
    .command('migrate')
    .description('create or upgrade the schema (audit_log, audit_reject), under the migration lock')
    .argument('[direction]', 'up, down or status', 'up')
    .option(
      '--count <n>',
      'how many migrations to apply or revert (default: all up, one down)',
      intAtLeast(1),
    )
    .option('--roles', 'also create the roles audit_writer (insert only) and audit_reader (select only)')
    .addHelpText(
      'after',
      `
Examples:
  $ audit-gateway migrate                 # apply every pending migration
  $ audit-gateway migrate --roles         # and the roles; then: GRANT audit_writer TO gateway_login
  $ audit-gateway migrate status          # list migrations and when each ran
  $ audit-gateway migrate down --count 1  # revert the newest (audit rows are never dropped)`,
    );
  addCommonOptions(cmd).action(async (direction: string, opts: MigrateOptions) => {
    if (!['up', 'down', 'status'].includes(direction)) {
      throw new UsageError(`migrate: unknown direction '${direction}' (expected up, down or status)`);
    }
    if (opts.roles && direction !== 'up') throw new UsageError('migrate: --roles goes with up');
    const { createRoles, migrate, migrationStatus } = await import('../../db/migrate.js');
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 1);
    try {
      await withClient(pool, db, async (client) => {
        if (direction === 'status') {
          for (const m of await migrationStatus(client)) {
            process.stdout.write(
              `${m.runOn ? 'applied' : 'pending'}  ${m.name}${m.runOn ? `  ${m.runOn.toISOString()}` : ''}\n`,
            );
          }
          return;
        }
        const ran = await migrate(client, direction as 'up' | 'down', log, opts.count);
        // CONTRACT.md §10: the coming days' partitions, also when nothing was left to migrate.
        const partitioned = await client.query(
          `SELECT to_regprocedure('audit_log_ensure_partitions(text[])') AS f`,
        );
        if (direction === 'up' && partitioned.rows[0]?.f) await ensureAhead(client);
        if (ran.length === 0) process.stdout.write('nothing to migrate: the schema is up to date\n');
        for (const name of ran)
          process.stdout.write(`${direction === 'up' ? 'applied' : 'reverted'}  ${name}\n`);
        if (opts.roles) {
          const made = await createRoles(client);
          process.stdout.write(
            `roles: audit_writer (insert only), audit_reader (select only) ${made.length ? `created (${made.join(', ')})` : 'existed'}, granted on this database\n`,
          );
        }
      });
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
