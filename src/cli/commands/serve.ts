/** `audit-gateway serve`: the writer daemon (CONTRACT.md §4). */
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { isAlive } from '../../db/embedded.js';
import { BatchWriter } from '../../db/writer.js';
import { DEFAULT_REDACT_KEYS, parseRedactKeys } from '../../entry/parse.js';
import { AuditGatewayError } from '../../errors.js';
import { Daemon, ensureSocketNotLive } from '../../ingest/daemon.js';
import { Spool } from '../../ingest/spool.js';
import { startUpkeep } from '../../retention/schedule.js';
import { addCommonOptions, type CommonOptions, intAtLeast, loggerOf, openFromOptions } from '../common.js';
import { exitIfStuck, onStopSignals } from '../signals.js';
import { parseRetentionMs } from './retention.js';

interface ServeOptions extends CommonOptions {
  socket: string;
  listen?: { host: string; port: number };
  batchSize: number;
  maxWriteEntries: number;
  writeTimeout: number;
  flushMs: number;
  maxQueue: number;
  maxQueueBytes: number;
  maxLineBytes: number;
  redactKeys: string;
  shutdownTimeout: number;
  migrate: boolean;
  copyMinRows: number;
  spoolDir?: string;
  maxSpoolBytes: number;
  metricsListen?: { host: string; port: number };
  retention?: number;
  archiveDir?: string;
}

/** The default socket (CONTRACT.md §4): `$XDG_RUNTIME_DIR/audit-gateway.sock`, else `/tmp/…`. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'audit-gateway.sock') : '/tmp/audit-gateway.sock';
}

/** Parses a duration for --shutdown-timeout: `10s`, `500ms`, `2m`, or plain seconds. Returns ms. */
export function parseDurationMs(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a duration such as 10s, 500ms or 2m');
  const n = Number(m[1]);
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000);
}

/** Parses `--listen HOST:PORT` (`:PORT` or `PORT` alone means 127.0.0.1). */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d+)$/.exec(value.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError('expected HOST:PORT, e.g. 127.0.0.1:7070');
  }
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

/** Takes `<data dir>/serve.pid`: only one `serve` owns a data dir (CONTRACT.md §2). */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, 'serve.pid');
  const held = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(held) && held > 0 && held !== process.pid && isAlive(held)) {
    throw new AuditGatewayError(
      `--data-dir ${dataDir}: already used by another 'audit-gateway serve' (pid ${held}); stop it or choose another --data-dir`,
    );
  }
  await writeFile(file, `${process.pid}\n`);
  return () => unlink(file).catch(() => {});
}

/** Registers `serve`. */
export function registerServe(program: Command): void {
  const env = (name: string) => `AUDIT_GATEWAY_${name}`;
  const cmd = program
    .command('serve')
    .description('run the writer daemon: NDJSON entries from a Unix socket (and TCP) into Postgres')
    .addOption(
      new Option('--socket <path>', 'Unix socket to listen on (mode 0660)')
        .env(env('SOCKET'))
        .default(defaultSocketPath()),
    )
    .addOption(
      new Option('--listen <host:port>', 'also listen on TCP (loopback unless you name another address)')
        .env(env('LISTEN'))
        .argParser(parseListen),
    )
    .addOption(
      new Option('--batch-size <n>', 'entries per batch')
        .env(env('BATCH_SIZE'))
        .default(1000)
        .argParser(intAtLeast(1)),
    )
    .addOption(
      new Option(
        '--max-write-entries <n>',
        'when Postgres falls behind, waiting batches are written together in one COPY of up to this many entries',
      )
        .env(env('MAX_WRITE_ENTRIES'))
        .default(10_000)
        .argParser(intAtLeast(1)),
    )
    .addOption(
      new Option('--flush-ms <ms>', 'write a batch this long after its first entry')
        .env(env('FLUSH_MS'))
        .default(50)
        .argParser(intAtLeast(0)),
    )
    .addOption(
      new Option('--max-queue <n>', 'entries waiting in memory before the sockets are paused')
        .env(env('MAX_QUEUE'))
        .default(100_000)
        .argParser(intAtLeast(1)),
    )
    .addOption(
      new Option(
        '--max-queue-bytes <bytes>',
        'bytes of entries waiting in memory (each line and its COPY form) before the sockets are paused',
      )
        .env(env('MAX_QUEUE_BYTES'))
        .default(8 * 1024 * 1024)
        .argParser(intAtLeast(1)),
    )
    .addOption(
      new Option('--max-line-bytes <bytes>', 'longest line accepted; longer ones are rejected')
        .env(env('MAX_LINE_BYTES'))
        .default(1024 * 1024)
        .argParser(intAtLeast(64)),
    )
    .addOption(
      new Option(
        '--redact-keys <keys>',
        'comma-separated request_args keys whose values become "[REDACTED]"; \'\' turns it off',
      )
        .env(env('REDACT_KEYS'))
        .default(DEFAULT_REDACT_KEYS.join(',')),
    )
    .addOption(
      new Option(
        '--write-timeout <duration>',
        'a write to Postgres unanswered this long counts as Postgres down: batches go to the spool',
      )
        .env(env('WRITE_TIMEOUT'))
        .default(10_000, '10s')
        .argParser(parseDurationMs),
    )
    .addOption(
      new Option('--shutdown-timeout <duration>', 'how long a stop may take to write what it holds')
        .env(env('SHUTDOWN_TIMEOUT'))
        .default(10_000, '10s')
        .argParser(parseDurationMs),
    )
    .addOption(
      new Option(
        '--spool-dir <dir>',
        'where batches wait while Postgres is down (default: <data dir>/spool)',
      ).env(env('SPOOL_DIR')),
    )
    .addOption(
      new Option('--max-spool-bytes <bytes>', 'cap of the spool; when full the sockets are paused')
        .env(env('MAX_SPOOL_BYTES'))
        .default(1024 * 1024 * 1024, '1 GiB')
        .argParser(intAtLeast(1024)),
    )
    .addOption(
      new Option('--metrics-listen <host:port>', 'serve Prometheus /metrics, /healthz and /readyz')
        .env(env('METRICS_LISTEN'))
        .argParser(parseListen),
    )
    .addOption(
      new Option('--retention <duration>', 'once a day, remove the partitions older than this (e.g. 90d)')
        .env(env('RETENTION'))
        .argParser(parseRetentionMs),
    )
    .addOption(
      new Option('--archive-dir <dir>', 'with --retention: archive each partition here first').env(
        env('ARCHIVE_DIR'),
      ),
    )
    .addOption(new Option('--no-migrate', 'do not apply pending migrations at start'))
    .addOption(
      new Option('--copy-min-rows <n>', 'batches this large use COPY, smaller ones INSERT')
        .env(env('COPY_MIN_ROWS'))
        .default(16)
        .argParser(intAtLeast(1))
        .hideHelp(),
    )
    .addHelpText(
      'after',
      `
Examples:
  $ audit-gateway serve                                  # embedded Postgres, socket ${defaultSocketPath()}
  $ audit-gateway serve --database-url postgres://audit@db/audit --listen 127.0.0.1:7070
  $ printf '%s\\n' '{"request_id":"…","timestamp":"2026-11-29T10:00:00Z","client_subject":"alice","tool_name":"fs.read","response_status":"success"}' \\
      | socat -t 5 - UNIX-CONNECT:${defaultSocketPath()}`,
    );
  addCommonOptions(cmd, 'info').action(async (opts: ServeOptions) => {
    const log = loggerOf(opts);
    // A live daemon on the socket is named before the data dir it may share (known-traps C20).
    await ensureSocketNotLive(opts.socket);
    const unlock = await lockDataDir(opts.dataDir);
    const db = await openFromOptions(opts, log, true);
    const pool = createPool(db, log, 4);
    let unwritten = 0;
    let upkeep: ReturnType<typeof startUpkeep> | undefined;
    let upkeepPool: ReturnType<typeof createPool> | undefined;
    try {
      await withClient(pool, db, async (client) => {
        if (!opts.migrate) return;
        // Loaded here, not at start-up: every other command would pay for node-pg-migrate.
        const { migrate } = await import('../../db/migrate.js');
        const ran = await migrate(client, 'up', log);
        if (ran.length > 0) log.info({ migrations: ran }, 'applied migrations');
      });
      const writer = new BatchWriter(pool, log, { copyMinRows: opts.copyMinRows });
      // CONTRACT.md §10: partitions made ahead (hourly) and --retention (daily), on a pool of their own.
      upkeepPool = createPool(db, log, 2);
      upkeep = startUpkeep(upkeepPool, db, log, { retentionMs: opts.retention, archiveDir: opts.archiveDir });
      const spool = await Spool.open(
        { dir: opts.spoolDir ?? join(opts.dataDir, 'spool'), maxBytes: opts.maxSpoolBytes },
        log,
      );
      // The metrics read the daemon's totals at scrape time (the closures run after it exists).
      // prom-client is loaded only by serve: the read commands start faster without it.
      const { DaemonMetrics } = await import('../../ingest/metrics.js');
      let daemon: Daemon | undefined;
      const metrics = new DaemonMetrics({
        source: () => daemon!.counters,
        queue: () => daemon!.queue.counters,
        depth: () => daemon?.queue.depth ?? 0,
        oldestAgeMs: () => daemon?.queue.oldestAgeMs() ?? 0,
        spoolBytes: () => spool.bytes,
        spooling: () => daemon?.queue.spooling ?? false,
      });
      daemon = new Daemon(
        {
          socketPath: opts.socket,
          socketMode: 0o660,
          listen: opts.listen,
          batchSize: opts.batchSize,
          maxWriteEntries: opts.maxWriteEntries,
          writeTimeoutMs: opts.writeTimeout,
          flushMs: opts.flushMs,
          maxQueue: opts.maxQueue,
          maxQueueBytes: opts.maxQueueBytes,
          maxLineBytes: opts.maxLineBytes,
          redactKeys: parseRedactKeys(opts.redactKeys),
          shutdownTimeoutMs: opts.shutdownTimeout,
        },
        writer,
        log,
        spool,
        metrics.observer,
      );
      const metricsServer = opts.metricsListen
        ? await metrics.listen(opts.metricsListen.host, opts.metricsListen.port, log)
        : undefined;
      let stopRequested!: () => void;
      const stopSignal = new Promise<void>((r) => {
        stopRequested = r;
      });
      const running = daemon;
      const detach = onStopSignals(
        log,
        () => stopRequested(),
        () => running.force(),
      );
      try {
        await running.start();
        await stopSignal;
        unwritten = (await running.stop()).unwritten;
      } finally {
        detach();
        metricsServer?.close();
      }
    } finally {
      // Upkeep waiting on a Postgres that does not answer must not hold the shutdown: its run is
      // one transaction, rolled back when the process ends.
      const upkeepDone = Promise.all([upkeep?.stop(), upkeepPool?.end()]);
      await Promise.race([upkeepDone, new Promise((r) => setTimeout(r, 500).unref())]);
      // A client held by a write that Postgres never answers would make pool.end() wait forever.
      await Promise.race([pool.end(), new Promise((r) => setTimeout(r, 500).unref())]);
      await db.close();
      await unlock();
      exitIfStuck(300);
    }
    if (unwritten > 0) {
      throw new AuditGatewayError(`stopped with ${unwritten} entries not written to Postgres (see the log)`);
    }
  });
}
