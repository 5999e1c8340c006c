/** `audit-gateway retention` (CONTRACT.md §10): remove old daily partitions, archiving them first. */
import { type Command, InvalidArgumentError } from 'commander';
import { createPool } from '../../db/connect.js';
import { type RetentionResult, runRetention } from '../../retention/retention.js';
import { parseDurationMicros } from '../../util/time.js';
import { addCommonOptions, type CommonOptions, loggerOf, openFromOptions } from '../common.js';

interface RetentionOptions extends CommonOptions {
  olderThan: number;
  archive?: string;
  dryRun?: boolean;
}

/**
 * Parses a retention duration (`30d`, `12h`, `90d12h`) into ms; at least one hour, so that a typo
 * cannot remove today's partition.
 */
export function parseRetentionMs(value: string): number {
  const us = parseDurationMicros(value);
  if (us === null) throw new InvalidArgumentError('expected a duration such as 30d, 12h or 400d');
  const ms = Number(us / 1000n);
  if (ms < 3_600_000) throw new InvalidArgumentError('expected at least 1h');
  return ms;
}

function line(r: RetentionResult): string {
  const verb = r.removed ? 'removed' : 'would remove';
  const archive = r.archive ? `, archived to ${r.archive.path} (sha256 ${r.archive.sha256})` : '';
  return `${verb}  ${r.day}  ${r.name}  ${r.entries} entries${archive}\n`;
}

/** Registers `retention`. */
export function registerRetention(program: Command): void {
  const cmd = program
    .command('retention')
    .description('remove the daily partitions older than a duration, archiving each one first (--archive)')
    .requiredOption(
      '--older-than <duration>',
      'remove partitions whose entries are all older (e.g. 90d)',
      parseRetentionMs,
    )
    .option(
      '--archive <dir>',
      'first write each partition to DIR/audit_log-YYYY-MM-DD.ndjson.gz and check it',
    )
    .option('--dry-run', 'list what would be removed, change nothing')
    .addHelpText(
      'after',
      `
Each partition is locked against writes, archived (export's NDJSON, gzip, mode 0600, read back:
count and SHA-256 checked), recorded in audit_retention, then detached and dropped. An archive is
stored again with: audit-gateway replay DIR/audit_log-YYYY-MM-DD.ndjson.gz

Examples:
  $ audit-gateway retention --older-than 90d --dry-run
  $ audit-gateway retention --older-than 90d --archive /srv/audit-archive`,
    );
  addCommonOptions(cmd).action(async (opts: RetentionOptions) => {
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 2);
    try {
      const cutoff = new Date(Date.now() - opts.olderThan);
      const results = await runRetention(pool, db, log, {
        cutoff,
        archiveDir: opts.archive,
        dryRun: opts.dryRun === true,
        onPartition: (r) => process.stdout.write(line(r)),
      });
      if (results.length === 0)
        process.stdout.write(
          `nothing to remove: no partition holds only entries before ${cutoff.toISOString()}\n`,
        );
    } finally {
      await pool.end();
      await db.close();
    }
  });
}
