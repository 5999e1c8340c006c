/** `audit-gateway serve`: the writer daemon (CONTRACT.md §4). */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { createPool, withClient } from '../../db/connect.js';
import { defaultDataDir } from '../../db/embedded.js';
import { BatchWriter } from '../../db/writer.js';
import { DEFAULT_REDACT_KEYS, parseRedactKeys } from '../../entry/parse.js';
import { AuditGatewayError, messageOf, UsageError } from '../../errors.js';
import { Checkpointer, defaultWriterId, loadSigningKey } from '../../ingest/checkpoints.js';
import { Daemon, DEFAULT_MAX_CONNECTIONS, ensureSocketNotLive } from '../../ingest/daemon.js';
import { Spool } from '../../ingest/spool.js';
import type { Logger } from '../../log.js';
import { startUpkeep } from '../../retention/schedule.js';
import { takePidFile } from '../../util/pidFile.js';
import { ensurePrivateDir } from '../../util/privateFiles.js';
import {
  addCommonOptions,
  announceDatabase,
  type CommonOptions,
  intAtLeast,
  loggerOf,
  MAX_TIMER_MS,
  openFromOptions,
} from '../common.js';
import { exitIfStuck, onStopSignals } from '../signals.js';
import { parseRetentionMs } from './retention.js';

interface ServeOptions extends CommonOptions {
  socket?: string;
  listen?: { host: string; port: number };
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  insecureListen?: boolean;
  batchSize: number;
  maxWriteEntries: number;
  writeTimeout: number;
  flushMs: number;
  maxQueue: number;
  maxQueueBytes: number;
  maxLineBytes: number;
  maxConnections: number;
  redactKeys: string;
  shutdownTimeout: number;
  migrate: boolean;
  copyMinRows: number;
  spoolDir?: string;
  maxSpoolBytes: number;
  metricsListen?: { host: string; port: number };
  writerId?: string;
  signingKey?: string;
  checkpointInterval: number;
  checkpointFile?: string;
  chains: boolean;
  retention?: number;
  archiveDir?: string;
}

/**
 * The default socket: `$XDG_RUNTIME_DIR/audit-gateway.sock`, else `<data dir>/audit-gateway.sock`.
 * Not `/tmp/audit-gateway.sock`: any local user could create that name first and so keep `serve`
 * from starting or receive the gateway's entries (CONTRACT.md §4 "Neighbours", issue 10). Both
 * defaults are in a directory only this user can enter (XDG's runtime dir is 0700, the data dir
 * too), so only the same user (and root) can connect; `--socket` puts it elsewhere.
 */
export function defaultSocketPath(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_RUNTIME_DIR
    ? join(env.XDG_RUNTIME_DIR, 'audit-gateway.sock')
    : join(dataDir, 'audit-gateway.sock');
}

/**
 * Parses a duration: `10s`, `500ms`, `2m`, or plain seconds (`1.5`). Returns ms, from `minMs` to
 * {@link MAX_TIMER_MS} (a longer delay would make Node's timer fire at once).
 * @throws InvalidArgumentError (exit 2 naming the flag) otherwise.
 */
export function parseDurationMs(value: string, minMs = 0): number {
  const m = /^(\d{1,12}(?:\.\d{1,6})?)(ms|s|m)?$/.exec(value);
  const ms = m ? Math.round(Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000)) : Number.NaN;
  if (!m || !(ms >= minMs) || ms > MAX_TIMER_MS) {
    throw new InvalidArgumentError(
      `expected a duration such as 10s, 500ms or 2m, from ${minMs}ms to ${Math.floor(MAX_TIMER_MS / 60_000)}m`,
    );
  }
  return ms;
}

/** A duration of at least 1 ms (a write timeout of 0 would time every write out). */
function positiveDurationMs(value: string): number {
  return parseDurationMs(value, 1);
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (meaning 127.0.0.1), CONTRACT.md §4: the port is
 * 1–65535 in decimal without leading zeros, the host an IP address or a DNS name (RFC 1123); any
 * other form (`7070` alone, `00`, port 0) is a usage error (exit 2 naming the flag).
 */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):([1-9][0-9]{0,4})$/.exec(value);
  const port = m ? Number(m[3]) : Number.NaN;
  const host = m ? (m[1] ?? m[2] ?? '') : '';
  const hostOk =
    m?.[1] !== undefined ? isIP(host) === 6 : host === '' || isIP(host) === 4 || HOSTNAME_RE.test(host);
  if (!m || !hostOk || port < 1 || port > 65535) {
    throw new InvalidArgumentError(
      'expected HOST:PORT (or :PORT for 127.0.0.1) with a port from 1 to 65535, e.g. 127.0.0.1:7070',
    );
  }
  return { host: host || '127.0.0.1', port };
}

/** True for an address only this machine reaches: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Checks the TLS flags against --listen (CONTRACT.md §4 "Neighbours") and reads the files.
 * @throws UsageError (exit 2) for a combination that makes no sense or a non-loopback --listen
 *   without TLS nor --insecure-listen; AuditGatewayError (exit 1) naming a file that cannot be read.
 */
export async function tlsOptions(
  opts: Pick<ServeOptions, 'listen' | 'tlsCert' | 'tlsKey' | 'tlsClientCa' | 'insecureListen'>,
): Promise<{ cert: Buffer; key: Buffer; clientCa?: Buffer } | undefined> {
  const any = opts.tlsCert ?? opts.tlsKey ?? opts.tlsClientCa;
  if (any !== undefined && !opts.listen) {
    throw new UsageError(
      '--tls-cert, --tls-key and --tls-client-ca secure the --listen port: give --listen too',
    );
  }
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined) || (opts.tlsClientCa && !opts.tlsCert)) {
    throw new UsageError('TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)');
  }
  if (opts.listen && !opts.tlsCert && !isLoopback(opts.listen.host) && !opts.insecureListen) {
    const { host, port } = opts.listen;
    throw new UsageError(
      `--listen ${host}:${port}: not a loopback address, and without TLS anyone who reaches it can store forged entries; give --tls-cert and --tls-key (and --tls-client-ca), or --insecure-listen`,
    );
  }
  if (!opts.tlsCert || !opts.tlsKey) return undefined;
  const read = async (flag: string, file: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new AuditGatewayError(`${flag} ${file}: cannot read it (${messageOf(err)})`);
    }
  };
  return {
    cert: await read('--tls-cert', opts.tlsCert),
    key: await read('--tls-key', opts.tlsKey),
    ...(opts.tlsClientCa ? { clientCa: await read('--tls-client-ca', opts.tlsClientCa) } : {}),
  };
}

/**
 * Makes the data dir private and takes its pid file: only one `serve` owns a data dir (CONTRACT.md
 * §2), and no other local user can read or forge what is in it (§4 "Neighbours").
 */
async function lockDataDir(dataDir: string, log: Logger): Promise<() => Promise<void>> {
  // As root, the embedded Postgres then gives its group search permission (db/embedded.ts).
  await ensurePrivateDir(dataDir, { what: '--data-dir', mode: 0o700 });
  return takePidFile(dataDir, log);
}

/** Parses `--writer-id`: 1 to 200 of A-Z a-z 0-9 . _ : @ / + = - (it is a chain id, CONTRACT.md §9). */
export function parseWriterId(value: string): string {
  if (!/^[A-Za-z0-9._:@/+=-]{1,200}$/.test(value)) {
    throw new InvalidArgumentError('expected 1 to 200 of A-Z a-z 0-9 . _ : @ / + = -');
  }
  return value;
}

/** Registers `serve`. */
export function registerServe(program: Command): void {
  const env = (name: string) => `AUDIT_GATEWAY_${name}`;
  const cmd = program
    .command('serve')
    .description('run the writer daemon: NDJSON entries from a Unix socket (and TCP) into Postgres')
    .addOption(
      new Option(
        '--socket <path>',
        'Unix socket to listen on (mode 0660; default $XDG_RUNTIME_DIR/audit-gateway.sock, else <data dir>/audit-gateway.sock, a directory only this user can enter)',
      ).env(env('SOCKET')),
    )
    .addOption(
      new Option(
        '--listen <host:port>',
        'also listen on TCP (:PORT means 127.0.0.1); an address other than loopback needs --tls-cert and --tls-key, or --insecure-listen',
      )
        .env(env('LISTEN'))
        .argParser(parseListen),
    )
    .addOption(
      new Option('--tls-cert <file>', 'TLS on the --listen port: the PEM certificate (chain)').env(
        env('TLS_CERT'),
      ),
    )
    .addOption(new Option('--tls-key <file>', 'the PEM private key of --tls-cert').env(env('TLS_KEY')))
    .addOption(
      new Option(
        '--tls-client-ca <file>',
        'require TCP clients to present a certificate signed by this PEM CA',
      ).env(env('TLS_CLIENT_CA')),
    )
    .addOption(
      new Option(
        '--insecure-listen',
        'allow --listen on an address other than loopback without TLS (anyone who reaches it can store entries)',
      ).env(env('INSECURE_LISTEN')),
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
        .argParser(intAtLeast(0, MAX_TIMER_MS)),
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
        'bytes of entries waiting in memory (each line and its COPY form) before the sockets are paused; unfinished lines count too, and their biggest holders are paused first',
      )
        .env(env('MAX_QUEUE_BYTES'))
        .default(8 * 1024 * 1024)
        .argParser(intAtLeast(1)),
    )
    .addOption(
      new Option('--max-line-bytes <bytes>', 'longest line accepted; longer ones are rejected')
        .env(env('MAX_LINE_BYTES'))
        .default(1024 * 1024)
        .argParser(intAtLeast(64, 1024 * 1024 * 1024)),
    )
    .addOption(
      new Option(
        '--max-connections <n>',
        'clients connected at once; the next one is closed at once, logged and counted in /metrics',
      )
        .env(env('MAX_CONNECTIONS'))
        .default(DEFAULT_MAX_CONNECTIONS)
        .argParser(intAtLeast(1, 1_000_000)),
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
        .argParser(positiveDurationMs),
    )
    .addOption(
      new Option('--shutdown-timeout <duration>', 'how long a stop may take to write what it holds')
        .env(env('SHUTDOWN_TIMEOUT'))
        .default(10_000, '10s')
        .argParser((v) => parseDurationMs(v)),
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
      new Option(
        '--writer-id <id>',
        "this daemon's hash chain (default: the host and a hash of the data dir)",
      )
        .env(env('WRITER_ID'))
        .argParser(parseWriterId),
    )
    .addOption(
      new Option(
        '--signing-key <file>',
        'Ed25519 key (PEM) for checkpoints (default: <data dir>/signing-key, made at first start)',
      ).env(env('SIGNING_KEY')),
    )
    .addOption(
      new Option(
        '--checkpoint-interval <duration>',
        'sign a checkpoint this often when something was committed',
      )
        .env(env('CHECKPOINT_INTERVAL'))
        .default(60_000, '60s')
        .argParser(positiveDurationMs),
    )
    .addOption(
      new Option(
        '--checkpoint-file <file>',
        'append each checkpoint here too (default: <data dir>/checkpoints.log)',
      ).env(env('CHECKPOINT_FILE')),
    )
    .addOption(
      new Option('--no-chains', 'benchmark reference only: commit batches without chain records').hideHelp(),
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
  $ audit-gateway serve                                  # embedded Postgres, socket ${defaultSocketPath(defaultDataDir())}
  $ audit-gateway serve --database-url postgres://audit@db/audit --listen 127.0.0.1:7070
  $ printf '%s\\n' '{"request_id":"…","timestamp":"2026-11-29T10:00:00Z","client_subject":"alice","tool_name":"fs.read","response_status":"success"}' \\
      | socat -t 5 - UNIX-CONNECT:${defaultSocketPath(defaultDataDir())}`,
    );
  addCommonOptions(cmd, 'info').action(async (opts: ServeOptions) => {
    const log = loggerOf(opts);
    const tls = await tlsOptions(opts);
    if (opts.listen && !tls && !isLoopback(opts.listen.host)) {
      log.warn(
        { listen: `${opts.listen.host}:${opts.listen.port}` },
        '--insecure-listen: TCP without TLS on an address other than loopback; anyone who reaches it can store entries',
      );
    }
    const socketPath = opts.socket ?? defaultSocketPath(opts.dataDir);
    // A live daemon on the socket is named before the data dir it may share (known-traps C20).
    await ensureSocketNotLive(socketPath);
    const unlock = await lockDataDir(opts.dataDir, log);
    const db = await openFromOptions(opts, log, true);
    const pool = createPool(db, log, 4);
    let forgetDatabase = async () => {};
    let unwritten = 0;
    let upkeep: ReturnType<typeof startUpkeep> | undefined;
    let upkeepPool: ReturnType<typeof createPool> | undefined;
    try {
      // The spool dir first: a forged or unsafe one is refused before anything else happens.
      const spool = await Spool.open(
        {
          dir: opts.spoolDir ?? join(opts.dataDir, 'spool'),
          inDataDir: opts.spoolDir === undefined,
          maxBytes: opts.maxSpoolBytes,
          parse: { redactKeys: parseRedactKeys(opts.redactKeys) },
        },
        log,
      );
      await withClient(pool, db, async (client) => {
        if (!opts.migrate) return;
        // Loaded here, not at start-up: every other command would pay for node-pg-migrate.
        const { migrate } = await import('../../db/migrate.js');
        const ran = await migrate(client, 'up', log);
        if (ran.length > 0) log.info({ migrations: ran }, 'applied migrations');
      });
      // once the database answered: name it in the log and record it for the read commands
      forgetDatabase = await announceDatabase(opts, db, log);
      const writerId = opts.writerId ?? defaultWriterId(hostname(), opts.dataDir);
      const signing = await loadSigningKey(opts.signingKey, opts.dataDir).catch((err: Error) => {
        throw new AuditGatewayError(err.message);
      });
      log.info(
        { writer_id: writerId, public_key: signing.publicKey, key_file: signing.file, made: signing.made },
        signing.made
          ? 'made a checkpoint signing key; keep its .pub outside this host'
          : 'checkpoint signing key',
      );
      const checkpointer = new Checkpointer(pool, log, {
        writerId,
        key: signing.key,
        file: opts.checkpointFile ?? join(opts.dataDir, 'checkpoints.log'),
        intervalMs: opts.checkpointInterval,
      });
      if (!opts.chains) log.warn('--no-chains: batches get no chain record; verify will report their rows');
      const writer = new BatchWriter(pool, log, {
        copyMinRows: opts.copyMinRows,
        chainId: opts.chains ? writerId : undefined,
      });
      // CONTRACT.md §10: partitions made ahead (hourly) and --retention (daily), on a pool of their own.
      upkeepPool = createPool(db, log, 2);
      upkeep = startUpkeep(upkeepPool, db, log, { retentionMs: opts.retention, archiveDir: opts.archiveDir });
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
        connections: () => daemon?.connectionCount ?? 0,
        unfinishedBytes: () => daemon?.unfinishedBytes ?? 0,
      });
      daemon = new Daemon(
        {
          socketPath,
          socketMode: 0o660,
          listen: opts.listen,
          tls,
          batchSize: opts.batchSize,
          maxWriteEntries: opts.maxWriteEntries,
          writeTimeoutMs: opts.writeTimeout,
          flushMs: opts.flushMs,
          maxQueue: opts.maxQueue,
          maxQueueBytes: opts.maxQueueBytes,
          maxLineBytes: opts.maxLineBytes,
          maxConnections: opts.maxConnections,
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
      let forced = false;
      const detach = onStopSignals(
        log,
        () => stopRequested(),
        () => {
          forced = true;
          running.force();
        },
      );
      try {
        await running.start();
        checkpointer.start();
        await stopSignal;
        const stopAt = Date.now();
        unwritten = (await running.stop()).unwritten;
        // The last checkpoint fits in what is left of --shutdown-timeout, and is not tried when
        // Postgres is down (the spool holds the entries; the next start signs the heads again).
        if (forced || running.queue.spooling) checkpointer.cancel();
        else await checkpointer.stop(Math.max(200, opts.shutdownTimeout - (Date.now() - stopAt)));
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
      await forgetDatabase();
      await unlock();
      exitIfStuck(300);
    }
    if (unwritten > 0) {
      throw new AuditGatewayError(`stopped with ${unwritten} entries not written to Postgres (see the log)`);
    }
  });
}
