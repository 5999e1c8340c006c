/**
 * The writer daemon of `serve` (CONTRACT.md §4): listeners (Unix socket, optional TCP), connections,
 * the bounded queue and its writer, and the lifecycle `start → running → draining → stopped`.
 *
 * It never reads the environment nor touches `process`: the CLI passes a config slice and a
 * {@link BatchSink}, and calls {@link Daemon.stop} on signals.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
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
  maxLineBytes: number;
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
  };
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
    };
  }

  /**
   * Binds the listeners.
   * @throws AuditGatewayError naming the socket or address when it cannot listen.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') return;
    this.state = 'running';
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
    await chmod(socketPath, this.config.socketMode);
    if (this.config.listen) {
      const { host, port } = this.config.listen;
      const tcp = createServer({ allowHalfOpen: true }, (s) => this.accept(s, 'tcp'));
      try {
        await listenOn(tcp, { host, port });
      } catch (err) {
        throw new AuditGatewayError(`--listen ${host}:${port}: cannot listen (${messageOf(err)})`);
      }
      const addr = tcp.address();
      this.tcpPort = typeof addr === 'object' && addr ? addr.port : null;
      this.servers.push(tcp);
    }
    this.log.info(
      {
        socket: socketPath,
        tcp: this.config.listen ? `${this.config.listen.host}:${this.tcpPort}` : undefined,
        batch_size: this.config.batchSize,
        max_write_entries: this.config.maxWriteEntries,
        flush_ms: this.config.flushMs,
        max_queue: this.config.maxQueue,
        max_queue_bytes: this.config.maxQueueBytes,
        max_line_bytes: this.config.maxLineBytes,
        redact_keys: [...this.config.redactKeys],
        spool: this.spool ? 'on' : 'off',
      },
      'serve: listening',
    );
  }

  private accept(socket: Socket, kind: 'unix' | 'tcp'): void {
    if (this.state !== 'running') {
      socket.destroy();
      return;
    }
    const id =
      kind === 'unix'
        ? `unix#${this.nextConnId++}`
        : `tcp#${this.nextConnId++}:${socket.remoteAddress}:${socket.remotePort}`;
    const conn = new Connection(id, socket, {
      queue: this.queue,
      encoder: this.encoder,
      maxLineBytes: this.config.maxLineBytes,
      counters: this.counters,
      log: this.log,
    });
    this.connections.add(conn);
    socket.on('close', () => this.connections.delete(conn));
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
    this.spool?.closeCurrent();
    await Promise.all(closed);
    this.state = 'stopped';
    const level = unwritten > 0 ? 'error' : 'info';
    this.log[level]({ ...this.counters, ...this.queue.counters, unwritten, spilled }, 'serve: stopped');
    return { unwritten, spilled };
  }
}
