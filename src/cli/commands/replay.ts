/** `audit-gateway replay FILE... | -` (CONTRACT.md §5). */
import { access } from 'node:fs/promises';
import { hostname } from 'node:os';
import { type Command, Option } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { BatchWriter } from '../../db/writer.js';
import { DEFAULT_REDACT_KEYS, parseRedactKeys } from '../../entry/parse.js';
import { AuditGatewayError, messageOf } from '../../errors.js';
import { defaultWriterId } from '../../ingest/checkpoints.js';
import { type ReplayCounts, replaySource } from '../../ingest/replay.js';
import { addCommonOptions, type CommonOptions, intAtLeast, loggerOf, openFromOptions } from '../common.js';
import { parseWriterId } from './serve.js';

interface ReplayOptions extends CommonOptions {
  batchSize: number;
  maxLineBytes: number;
  redactKeys: string;
  progress: boolean;
  writerId?: string;
}

function summary(c: ReplayCounts): string {
  const damaged = c.damaged > 0 ? `, ${c.damaged} damaged spool records not readable` : '';
  const invalid = c.invalid ? `, ${c.invalid} spooled entries set aside (failed validation)` : '';
  return `read ${c.read}, stored ${c.stored}, skipped ${c.skipped}, rejected ${c.rejected}${damaged}${invalid}`;
}

/** Registers `replay`. */
export function registerReplay(program: Command): void {
  const cmd = program
    .command('replay')
    .description(
      'load NDJSON files (an export, a spool file, a gateway fallback file) into Postgres, idempotently',
    )
    .argument('<files...>', "files to load (gzip is detected by content); '-' reads stdin")
    .addOption(new Option('--batch-size <n>', 'entries per write').default(1000).argParser(intAtLeast(1)))
    .addOption(
      new Option('--max-line-bytes <bytes>', 'longest line accepted')
        .default(1024 * 1024)
        .argParser(intAtLeast(64)),
    )
    .addOption(
      new Option('--redact-keys <keys>', "request_args keys to redact; '' turns it off")
        .env('AUDIT_GATEWAY_REDACT_KEYS')
        .default(DEFAULT_REDACT_KEYS.join(',')),
    )
    .option('--no-progress', 'no progress line on stderr')
    .addOption(
      new Option(
        '--writer-id <id>',
        'the hash chain of what this replay stores (default: host, data dir, "-replay")',
      )
        .env('AUDIT_GATEWAY_REPLAY_WRITER_ID')
        .argParser(parseWriterId),
    )
    .addHelpText(
      'after',
      `
Entries whose (request_id, timestamp) is already stored are skipped, so a file replayed twice is stored once.

Examples:
  $ audit-gateway replay gateway-fallback.ndjson
  $ audit-gateway export --since 7d --output week.ndjson.gz && audit-gateway replay week.ndjson.gz
  $ zcat old/*.gz | audit-gateway replay -`,
    );
  addCommonOptions(cmd).action(async (files: string[], opts: ReplayOptions) => {
    // Check every file first: nothing is loaded when one of them is missing.
    for (const f of files) {
      if (f === '-') continue;
      try {
        await access(f);
      } catch (err) {
        throw new AuditGatewayError(`replay: cannot read ${f}: ${messageOf(err)}`);
      }
    }
    const parse = {
      redactKeys: parseRedactKeys(opts.redactKeys),
      ignoreFields: new Set(['id', 'received_at', '_proof']), // _proof: export --proofs
    };
    // And that each is NDJSON (its first entry line an object): a CSV export or a binary is
    // refused before anything is stored (stdin is checked as it is read).
    for (const f of files) {
      if (f === '-') continue;
      const none: ReplayCounts = { read: 0, stored: 0, skipped: 0, rejected: 0, damaged: 0 };
      await replaySource(
        f,
        null,
        { parse, maxLineBytes: opts.maxLineBytes, batchSize: 1 },
        none,
        undefined,
        true,
      );
    }
    const log = loggerOf(opts);
    const db = await openFromOptions(opts, log);
    const pool = createPool(db, log, 2);
    const counts: ReplayCounts = { read: 0, stored: 0, skipped: 0, rejected: 0, damaged: 0 };
    const tty = opts.progress && process.stderr.isTTY;
    const t0 = Date.now();
    try {
      await withClient(pool, db, async () => {}); // reachable? (one line naming host and port if not)
      const writer = new BatchWriter(pool, log, {
        chainId: opts.writerId ?? defaultWriterId(hostname(), opts.dataDir, '-replay'),
      });
      for (const f of files) {
        await replaySource(
          f,
          writer,
          {
            parse,
            maxLineBytes: opts.maxLineBytes,
            batchSize: opts.batchSize,
            progress: tty
              ? (c) => {
                  const s = (Date.now() - t0) / 1000;
                  process.stderr.write(
                    `\r${summary(c)} (${Math.round(c.read / Math.max(s, 0.001))} lines/s, ${s.toFixed(1)} s)\x1b[K`,
                  );
                }
              : undefined,
          },
          counts,
        );
      }
    } finally {
      // The progress line is cleared, not kept: the summary is printed once, on stdout.
      if (tty) process.stderr.write('\r\x1b[K');
      await pool.end();
      await db.close();
    }
    process.stdout.write(`${summary(counts)}\n`);
  });
}
