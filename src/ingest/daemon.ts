/**
 * The writer daemon of `serve` (CONTRACT.md §4): listeners (Unix socket, optional TCP), connections,
 * the bounded queue and its writer, and the lifecycle `start → running → draining → stopped`.
 *
 * It never reads the environment nor touches `process`: the CLI passes a config slice and a
 * {@link BatchSink}, and calls {@link Daemon.stop} on signals.
 */
import { readFileSync } from 'node:fs';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, TLSSocket } from 'node:tls';
import { EntryEncoder } from '../entry/encode.js';
import { AuditGatewayError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { Connection, type SourceCounters } from './connection.js';
import { type BatchSink, IngestQueue, type QueueObserver, type QueueOptions } from './queue.js';
import type { Spool } from './spool.js';

/** Daemon settings (the flags of `serve`, already validated). */
export interface DaemonConfig extends QueueOptions {
  /** Unix socket path. */
  socketPath: string;
  /** File mode of the socket (CONTRACT.md §4: 0660). */
  socketMode: number;
  /** Optional TCP listener. */
  listen?: { host: string; port: number };
  /**
   * TLS on the TCP listener (node:tls): PEM certificate chain and key; with `clientCa`, clients
   * must present a certificate signed by it (CONTRACT.md §4 "Neighbours").
   */
  tls?: { cert: Buffer; key: Buffer; clientCa?: Buffer };
  maxLineBytes: number;
  /**
   * Clients connected at once (CONTRACT.md §4, default 1024); the next one is closed at once,
   * logged and counted. Lowered at start when the process' file limit (RLIMIT_NOFILE) is smaller.
   */
  maxConnections?: number;
  /** Lower-cased keys to redact in request_args (CONTRACT.md §6). */
  redactKeys: ReadonlySet<string>;
  /** How long a stop waits for clients and writes before giving up, in ms. */
  shutdownTimeoutMs: number;
}

/** The outcome of a stop. */
export interface StopResult {
  /** Entries (and rejects) neither written to Postgres nor spooled: data at risk. */
  unwritten: number;
  /** Entries that went to the spool because the deadline passed. */
  spilled: number;
}

/**
 * Throws when a live daemon answers on the socket `path` (known-traps C20); resolves otherwise.
 * @throws AuditGatewayError naming the socket.
 */
export async function ensureSocketNotLive(path: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe: Socket = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) {
    throw new AuditGatewayError(
      `--socket ${path}: socket in use by another process (is another 'audit-gateway serve' running?); stop it or choose another --socket`,
    );
  }
}

/** Checks `path` for a socket file: a live one is an error, a stale one is removed (C20). */
async function claimSocketPath(path: string, log: Logger): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) {
    throw new AuditGatewayError(
      `--socket ${path}: a file that is not a socket is in the way; remove it or choose another path`,
    );
  }
  await ensureSocketNotLive(path);
  await unlink(path);
  log.info({ socket: path }, 'removed a stale socket file');
}

function listenOn(server: Server, target: string | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (typeof target === 'string') server.listen(target, done);
    else server.listen(target.port, target.host, done);
  });
}

/** `--max-connections` when none is given (CONTRACT.md §4). */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** File descriptors kept free of connections for Postgres, the spool, logs and metrics. */
const FD_RESERVE = 64;
/**
 * Unfinished bytes below which a connection is never paused for them: a client sending whole lines
 * holds only the tail of its last read, and stays served while others hold the byte budget.
 */
const PARTIAL_PAUSE_MIN = 16 * 1024;

/** The soft limit of open files (RLIMIT_NOFILE) from /proc/self/limits, or null where unknown. */
function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The writer daemon; see the module header. */
export class Daemon {
  readonly queue: IngestQueue;
  readonly counters: SourceCounters = {
    rejectedByCode: {},
    received: 0,
    blank: 0,
    sanitized: 0,
    redacted: 0,
    truncated: 0,
    invalid: 0,
    connectionsRefused: 0,
    acceptErrors: 0,
    tlsErrors: 0,
  };
  /** Bytes all connections hold for unterminated lines (they count against maxQueueBytes). */
  private partialBytes = 0;
  /** Connections paused for holding unfinished bytes (see {@link checkByteBudget}). */
  private readonly partialPaused = new Set<Connection>();
  /** The one paused holder let through to finish its line when nothing else can make room. */
  private finishing: Connection | null = null;
  private partialTimer: NodeJS.Timeout | null = null;
  private maxConnections = DEFAULT_MAX_CONNECTIONS;
  private readonly servers: Server[] = [];
  private readonly connections = new Set<Connection>();
  /** One encoder for every connection: lines are encoded one at a time on this thread. */
  private readonly encoder: EntryEncoder;
  private nextConnId = 1;
  private stopping: Promise<StopResult> | null = null;
  private state: 'new' | 'running' | 'draining' | 'stopped' = 'new';
  /** The TCP port actually bound (useful with port 0). */
  tcpPort: number | null = null;

  private forced: (() => void) | null = null;
  private forceRequested = false;

  constructor(
    private readonly config: DaemonConfig,
    sink: BatchSink,
    private readonly log: Logger,
    private readonly spool: Spool | null = null,
    observer: QueueObserver = {},
  ) {
    this.encoder = new EntryEncoder({ redactKeys: config.redactKeys });
    this.queue = new IngestQueue(sink, config, log, spool, observer);
    this.queue.onRoom = () => {
      for (const c of this.connections) c.resume();
      this.checkPartialPaused();
    };
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Bytes held for unterminated lines, all connections together. */
  get unfinishedBytes(): number {
    return this.partialBytes;
  }

  /** The effective `--max-connections` (after the file limit). */
  get connectionLimit(): number {
    return this.maxConnections;
  }

  /** Picks the connection limit: the flag, lowered to what the file limit leaves (logged). */
  private chooseMaxConnections(): void {
    const wanted = this.config.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const files = openFileLimit();
    this.maxConnections = wanted;
    if (files !== null && wanted + FD_RESERVE > files) {
      this.maxConnections = Math.max(1, files - FD_RESERVE);
      this.log.warn(
        { max_connections: wanted, open_file_limit: files, using: this.maxConnections },
        'the open file limit (ulimit -n) is too low for --max-connections; using fewer connections',
      );
    }
  }

  /** A connection's unfinished bytes changed (Connection.reportPartial). */
  private readonly onPartial = (conn: Connection, delta: number): void => {
    this.partialBytes += delta;
    if (delta > 0) this.checkByteBudget();
    else if (conn === this.finishing && conn.partialBytes === 0) this.finishing = null;
    if (delta < 0 && this.partialPaused.size > 0) this.checkPartialPaused();
  };

  /**
   * CONTRACT.md §4 "Neighbours": the bytes of unterminated lines count against `--max-queue-bytes`
   * with the queue's own bytes. Past it, the connections holding the most unfinished bytes (at
   * least {@link PARTIAL_PAUSE_MIN}) are paused, largest first, so that memory stops growing while
   * clients sending whole lines are still read.
   */
  private checkByteBudget(): void {
    if (this.queue.bytes + this.partialBytes < this.config.maxQueueBytes) return;
    const holders = [...this.connections]
      .filter((c) => c !== this.finishing && !c.isPausedForPartial && c.partialBytes >= PARTIAL_PAUSE_MIN)
      .sort((a, b) => b.partialBytes - a.partialBytes);
    if (holders.length === 0) return;
    for (const c of holders) {
      c.pauseForPartial();
      this.partialPaused.add(c);
    }
    this.log.warn(
      {
        paused: holders.length,
        biggest: { conn: holders[0]!.id, bytes: holders[0]!.partialBytes },
        unfinished_bytes: this.partialBytes,
        queue_bytes: this.queue.bytes,
        max_queue_bytes: this.config.maxQueueBytes,
      },
      'byte budget spent: paused the connections holding the most unfinished bytes',
    );
    this.partialTimer ??= setInterval(() => this.checkPartialPaused(), 50);
  }

  /**
   * Resumes the connections paused for unfinished bytes once the budget is half free. Until then,
   * the largest holder is let through alone to finish its line (or to see that its client left: a
   * paused socket does not notice), one at a time, each bounded by --max-line-bytes: the unfinished
   * bytes of the paused ones can never free the budget by themselves, so without this they would
   * wait forever.
   */
  private checkPartialPaused(): void {
    for (const c of this.partialPaused) if (c.isClosed) this.partialPaused.delete(c);
    if (this.finishing?.isClosed) this.finishing = null;
    if (this.partialPaused.size === 0) {
      if (this.partialTimer) clearInterval(this.partialTimer);
      this.partialTimer = null;
      return;
    }
    if (this.queue.bytes + this.partialBytes < this.config.maxQueueBytes / 2) {
      for (const c of this.partialPaused) c.resumeForPartial();
      this.partialPaused.clear();
      return;
    }
    if (this.finishing === null) {
      let largest: Connection | null = null;
      for (const c of this.partialPaused) if (!largest || c.partialBytes > largest.partialBytes) largest = c;
      if (largest) {
        this.partialPaused.delete(largest);
        this.finishing = largest;
        largest.resumeForPartial();
      }
    }
  }

  /**
   * Binds the listeners.
   * @throws AuditGatewayError naming the socket or address when it cannot listen.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') return;
    this.state = 'running';
    this.chooseMaxConnections();
    await this.queue.resumeSpool();
    const { socketPath } = this.config;
    await claimSocketPath(socketPath, this.log);
    const unix = createServer({ allowHalfOpen: true }, (s) => this.accept(s, 'unix'));
    try {
      await listenOn(unix, socketPath);
    } catch (err) {
      throw new AuditGatewayError(`--socket ${socketPath}: cannot listen (${messageOf(err)})`);
    }
    this.servers.push(unix);
    this.watchAcceptErrors(unix, `--socket ${socketPath}`);
    await chmod(socketPath, this.config.socketMode);
    if (this.config.listen) {
      const { host, port } = this.config.listen;
      const tcp = this.config.tls
        ? this.tlsServer(this.config.tls)
        : createServer({ allowHalfOpen: true }, (s) => this.accept(s, 'tcp'));
      try {
        await listenOn(tcp, { host, port });
      } catch (err) {
        throw new AuditGatewayError(`--listen ${host}:${port}: cannot listen (${messageOf(err)})`);
      }
      const addr = tcp.address();
      this.tcpPort = typeof addr === 'object' && addr ? addr.port : null;
      this.servers.push(tcp);
      this.watchAcceptErrors(tcp, `--listen ${host}:${this.tcpPort}`);
    }
    this.log.info(
      {
        socket: socketPath,
        tcp: this.config.listen ? `${this.config.listen.host}:${this.tcpPort}` : undefined,
        tls: this.config.listen
          ? this.config.tls
            ? this.config.tls.clientCa
              ? 'client certificates required'
              : 'server certificate only'
            : 'off'
          : undefined,
        batch_size: this.config.batchSize,
        max_write_entries: this.config.maxWriteEntries,
        flush_ms: this.config.flushMs,
        max_queue: this.config.maxQueue,
        max_queue_bytes: this.config.maxQueueBytes,
        max_line_bytes: this.config.maxLineBytes,
        max_connections: this.maxConnections,
        redact_keys: [...this.config.redactKeys],
        spool: this.spool ? 'on' : 'off',
      },
      'serve: listening',
    );
  }

  /**
   * The TLS listener: a client that fails the handshake (no certificate or one the CA did not sign,
   * when `clientCa` is given; not TLS at all) is refused, logged and counted (`tlsErrors`).
   */
  private tlsServer(tls: NonNullable<DaemonConfig['tls']>): Server {
    const server = createTlsServer(
      {
        cert: tls.cert,
        key: tls.key,
        ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        minVersion: 'TLSv1.2',
        handshakeTimeout: 10_000,
        allowHalfOpen: true,
      },
      (s) => this.accept(s, 'tcp'),
    );
    server.on('tlsClientError', (err: NodeJS.ErrnoException, s: TLSSocket) => {
      this.counters.tlsErrors++;
      this.log.warn(
        { remote: `${s.remoteAddress}:${s.remotePort}`, code: err.code, err: err.message },
        'refused a TCP client: TLS handshake failed',
      );
    });
    return server;
  }

  /**
   * Logs and counts a failed accept (EMFILE when out of file descriptors): never silent. libuv
   * passes such errors to the server's 'error' event.
   */
  private watchAcceptErrors(server: Server, what: string): void {
    server.on('error', (err: NodeJS.ErrnoException) => {
      this.counters.acceptErrors++;
      this.log.error(
        { listener: what, code: err.code, err: err.message, connections: this.connections.size },
        err.code === 'EMFILE' || err.code === 'ENFILE'
          ? 'cannot accept a connection: out of file descriptors (raise ulimit -n or lower --max-connections)'
          : 'cannot accept a connection',
      );
    });
  }

  private accept(socket: Socket, kind: 'unix' | 'tcp'): void {
    if (this.state !== 'running') {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      // CONTRACT.md §4: closed at once, logged and counted (audit_gateway_connections_refused_total).
      socket.destroy();
      this.counters.connectionsRefused++;
      this.log.warn(
        {
          listener: kind,
          remote: kind === 'tcp' ? `${socket.remoteAddress}:${socket.remotePort}` : undefined,
          max_connections: this.maxConnections,
          refused_total: this.counters.connectionsRefused,
        },
        'refused a connection: --max-connections clients are connected',
      );
      return;
    }
    const id =
      kind === 'unix'
        ? `unix#${this.nextConnId++}`
        : `tcp#${this.nextConnId++}:${socket.remoteAddress}:${socket.remotePort}`;
    if (socket instanceof TLSSocket && this.config.tls?.clientCa) {
      const subject = socket.getPeerCertificate().subject;
      this.log.info(
        { conn: id, client_cert: subject ? { CN: subject.CN, O: subject.O } : null },
        'TLS client',
      );
    }
    const conn = new Connection(id, socket, {
      queue: this.queue,
      encoder: this.encoder,
      maxLineBytes: this.config.maxLineBytes,
      counters: this.counters,
      log: this.log,
      onPartial: this.onPartial,
    });
    this.connections.add(conn);
    socket.on('close', () => {
      this.connections.delete(conn);
      if (this.partialPaused.delete(conn) || conn === this.finishing) this.checkPartialPaused();
    });
    // Backpressure: a full queue stops every socket; IngestQueue.onRoom resumes them.
    socket.on('data', () => {
      if (this.queue.full) for (const c of this.connections) c.pause();
    });
    if (this.queue.full) conn.pause();
    this.log.debug({ conn: id }, 'connection opened');
  }

  /**
   * Stops: no new connections; reads what connected clients already sent (until each closes or is
   * idle for `idleMs`); writes every accepted entry; removes the socket file. Idempotent.
   * @param deadlineMs overall limit (default: `shutdownTimeoutMs`); past it, writing is abandoned and
   *   the count of unwritten items is returned.
   */
  stop(deadlineMs = this.config.shutdownTimeoutMs, idleMs = 200): Promise<StopResult> {
    this.stopping ??= this.doStop(deadlineMs, idleMs);
    return this.stopping;
  }

  /** A second signal: stop waiting for Postgres now; what is not written goes to the spool. */
  force(): void {
    this.forceRequested = true;
    for (const c of this.connections) c.stopReading();
    this.forced?.();
  }

  private async doStop(deadlineMs: number, idleMs: number): Promise<StopResult> {
    this.state = 'draining';
    const deadline = Date.now() + deadlineMs;
    const closed = this.servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    await unlink(this.config.socketPath).catch(() => {});
    this.log.info(
      { connections: this.connections.size },
      'serve: stopping; reading what clients already sent',
    );
    // Read each connection to its end, or until it has been idle (and not paused) for idleMs; then
    // it only waits for its acks to be sent.
    while (this.connections.size > 0 && Date.now() < deadline && !this.forceRequested) {
      for (const c of this.connections) {
        if (!c.isPaused && c.idleMs >= idleMs) c.stopReading();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const drained = this.queue.drain();
    let deadlineTimer: NodeJS.Timeout | undefined;
    const timer = new Promise<'timeout'>((r) => {
      deadlineTimer = setTimeout(
        () => r('timeout'),
        this.forceRequested ? 0 : Math.max(0, deadline - Date.now()),
      );
      this.forced = () => r('timeout');
    });
    let unwritten = 0;
    let spilled = 0;
    const outcome = await Promise.race([drained.then(() => 'done' as const), timer]);
    clearTimeout(deadlineTimer);
    this.forced = null;
    if (outcome === 'timeout') {
      const pending = this.queue.depth;
      unwritten = await this.queue.spill();
      spilled = pending - unwritten;
      if (spilled > 0)
        this.log.warn(
          { spilled, spool: this.spool ? 'yes' : 'no' },
          'shutdown deadline: entries spooled instead of written',
        );
    }
    // Let the ack lines of spilled entries reach their clients before the sockets go.
    for (const c of this.connections) c.stopReading();
    const ackDeadline = Date.now() + 500;
    while (this.connections.size > 0 && Date.now() < ackDeadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.connections) c.destroy();
    this.queue.close();
    if (this.partialTimer) clearInterval(this.partialTimer);
    this.partialTimer = null;
    this.spool?.closeCurrent();
    await Promise.all(closed);
    this.state = 'stopped';
    const level = unwritten > 0 ? 'error' : 'info';
    this.log[level]({ ...this.counters, ...this.queue.counters, unwritten, spilled }, 'serve: stopped');
    return { unwritten, spilled };
  }
}
