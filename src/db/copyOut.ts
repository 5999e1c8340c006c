/**
 * `COPY (SELECT …) TO STDOUT` on a dedicated pool client (never `pool.query`, style.md rule 7), with
 * the stream handed to a consumer that pipes it on (pg-copy-streams `to`).
 *
 * States: connect → COPY running → done (client released) | failed or stopped early (the backend's
 * COPY is cancelled with `pg_cancel_backend` from a second connection, then the client is destroyed,
 * so no `COPY … TO STDOUT` backend is left running and no pooled client is left mid-COPY:
 * known-traps C16).
 */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { type Database, unreachable } from './connect.js';

/**
 * Runs `sql` (a `COPY … TO STDOUT`) and gives the data stream (Buffers of whole or partial rows) to
 * `consume`, which must read it to the end or throw.
 * @throws {DatabaseUnavailableError} when no connection can be made (naming host and port)
 * @throws whatever `consume` or the COPY throws, after cancelling the COPY
 */
export async function copyOut(
  pool: pg.Pool,
  db: Database,
  log: Logger,
  sql: string,
  consume: (stream: NodeJS.ReadableStream & AsyncIterable<Buffer>) => Promise<void>,
): Promise<void> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw unreachable(db, err);
  }
  const stream = client.query(copyTo(sql));
  try {
    await consume(stream as unknown as NodeJS.ReadableStream & AsyncIterable<Buffer>);
  } catch (err) {
    await cancelBackend(db, client, log);
    stream.destroy();
    client.release(true);
    throw err;
  }
  client.release();
}

/** Asks the server to cancel what `client`'s backend runs, from a short-lived second connection. */
async function cancelBackend(db: Database, client: pg.PoolClient, log: Logger): Promise<void> {
  const pid = (client as unknown as { processID: number | null }).processID;
  if (!pid) return;
  const other = new pg.Client({ ...db.config, connectionTimeoutMillis: 2000 });
  other.on('error', () => {});
  try {
    await other.connect();
    await other.query('SELECT pg_cancel_backend($1)', [pid]);
  } catch (err) {
    log.debug({ err: messageOf(err) }, 'could not cancel the COPY backend; closing its connection instead');
  } finally {
    await other.end().catch(() => {});
  }
}
