/**
 * Observability of `serve` (CONTRACT.md §4 `--metrics-listen`): Prometheus `/metrics` (prom-client),
 * `/healthz` (the process is alive) and `/readyz` (Postgres reachable, or the spool accepting).
 *
 * Counters are read from the daemon's own running totals at scrape time, so the hot path pays
 * nothing for them; only the batch histograms are observed per batch.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { SourceCounters } from './connection.js';
import type { QueueCounters, QueueObserver } from './queue.js';

/** What the metrics read at scrape time. */
export interface MetricsSource {
  source(): SourceCounters;
  queue(): QueueCounters;
  depth(): number;
  oldestAgeMs(): number;
  spoolBytes(): number;
  spooling(): boolean;
  /** Clients connected now. */
  connections?(): number;
  /** Bytes held for unterminated lines (they count against --max-queue-bytes). */
  unfinishedBytes?(): number;
}

/** The registry, the per-batch observer, and the readiness state. */
export class DaemonMetrics {
  readonly registry = new Registry();
  private pgUp = true;
  readonly observer: QueueObserver;

  constructor(src: MetricsSource) {
    const r = this.registry;
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [r],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counter(
      'audit_gateway_entries_received_total',
      'Entry lines received (blank lines excluded).',
      () => src.source().received,
    );
    counter(
      'audit_gateway_entries_stored_total',
      'Entries committed to audit_log.',
      () => src.queue().stored,
    );
    counter(
      'audit_gateway_entries_duplicate_total',
      'Entries whose (request_id, timestamp) was already stored.',
      () => src.queue().duplicates,
    );
    counter(
      'audit_gateway_entries_sanitized_total',
      'Entries stored with characters replaced by U+FFFD.',
      () => src.source().sanitized,
    );
    counter(
      'audit_gateway_entries_redacted_total',
      'Entries with redacted request_args values.',
      () => src.source().redacted,
    );
    counter(
      'audit_gateway_entries_spooled_total',
      'Entries appended to the spool.',
      () => src.queue().spooled,
    );
    counter(
      'audit_gateway_entries_unspooled_total',
      'Entries loaded from the spool.',
      () => src.queue().unspooled,
    );
    counter('audit_gateway_lines_blank_total', 'Blank lines skipped.', () => src.source().blank);
    counter(
      'audit_gateway_connections_refused_total',
      'Connections closed at once because --max-connections clients were connected.',
      () => src.source().connectionsRefused,
    );
    counter(
      'audit_gateway_tls_handshake_errors_total',
      'TCP clients refused in the TLS handshake (no or a wrong client certificate, not TLS).',
      () => src.source().tlsErrors,
    );
    counter(
      'audit_gateway_accept_errors_total',
      'Connections that could not be accepted (EMFILE: out of file descriptors, ...).',
      () => src.source().acceptErrors,
    );
    counter(
      'audit_gateway_lines_truncated_total',
      'Partial lines lost to a connection reset.',
      () => src.source().truncated,
    );
    counter(
      'audit_gateway_batch_retries_total',
      'Batch write attempts retried after a connection or resource error.',
      () => src.queue().retries,
    );
    new Counter({
      name: 'audit_gateway_entries_rejected_total',
      help: 'Lines rejected, by reason code.',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(src.source().rejectedByCode)) this.inc({ reason }, n);
        if (src.queue().refused > 0) this.inc({ reason: 'db_refused' }, src.queue().refused);
      },
    });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(read());
        },
      });
    gauge('audit_gateway_queue_depth', 'Entries waiting in memory.', () => src.depth());
    gauge('audit_gateway_connections', 'Clients connected now.', () => src.connections?.() ?? 0);
    gauge(
      'audit_gateway_unfinished_line_bytes',
      'Bytes held for lines not yet ended by a newline (counted against --max-queue-bytes).',
      () => src.unfinishedBytes?.() ?? 0,
    );
    gauge('audit_gateway_spool_bytes', 'Bytes in spool files.', () => src.spoolBytes());
    gauge(
      'audit_gateway_oldest_unwritten_age_seconds',
      'Age of the oldest entry neither written nor spooled.',
      () => src.oldestAgeMs() / 1000,
    );
    gauge('audit_gateway_postgres_up', '1 when the last contact with Postgres succeeded.', () =>
      this.pgUp ? 1 : 0,
    );
    const batchSize = new Histogram({
      name: 'audit_gateway_batch_entries',
      help: 'Entries per written batch.',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers: [r],
    });
    const duration = new Histogram({
      name: 'audit_gateway_batch_write_seconds',
      help: 'Time to write and commit one batch, by path (copy or insert).',
      labelNames: ['path'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [r],
    });
    this.observer = {
      batchWritten: (entries, ms, path) => {
        batchSize.observe(entries);
        duration.observe({ path }, ms / 1000);
      },
      postgresUp: (up) => {
        this.pgUp = up;
      },
    };
    this.ready = () => this.pgUp || src.spooling();
  }

  /** True when entries can be taken: Postgres reachable, or the spool accepting. */
  ready: () => boolean;

  /**
   * Serves `/metrics`, `/healthz` and `/readyz` on host:port.
   * @returns the server (close it at shutdown) once it listens.
   */
  async listen(host: string, port: number, log: Logger): Promise<Server> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/metrics') {
        this.registry
          .metrics()
          .then((text) => {
            res.writeHead(200, { 'content-type': this.registry.contentType });
            res.end(text);
          })
          .catch((err: Error) => {
            res.writeHead(500);
            res.end(err.message);
          });
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else if (path === '/readyz') {
        const ok = this.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
        res.end(ok ? 'ready\n' : 'not ready: Postgres unreachable and the spool is not accepting\n');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    log.info({ metrics: `${host}:${port}` }, 'serving /metrics, /healthz, /readyz');
    return server;
  }
}
