/**
 * Found by review: a client in ack mode that stops reading its acks makes `serve` hold every ack
 * line it cannot send, without limit (CONTRACT.md §4 "Backpressure": "Memory stays bounded whatever
 * the load"). Connection.flushAcks writes each batch's ack lines with `socket.write` and never looks
 * at the socket's writable buffer, and the socket is never paused for it, so the daemon keeps
 * reading, storing and acking; the unsent acks (kept as concatenated strings, ~200 bytes of heap per
 * entry) pile up in the socket's write queue until the client closes.
 *
 * A client that reads its acks holds the daemon at a flat RSS; this one must too.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { procMemBytes } from '../helpers/ownPostgres.js';
import { cleanupServes, sleep, startServe } from '../helpers/serve.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('qbreak_e2e');
});
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

it('an ack client that never reads its acks: the daemon stays bounded in memory (it stops reading, or drops nothing and holds little)', async () => {
  const s = await startServe({ databaseUrl: t.url, args: ['--log-level', 'info'] });
  const sock = connect(s.socket);
  await new Promise((r) => sock.once('connect', r));
  sock.pause(); // never reads its acks
  sock.on('error', () => {});
  sock.write('{"ack":true}\n');
  const N = 1_000_000;
  const CHUNK = 5000;
  let rssAt250k = 0;
  let stalledAt = 0;
  for (let i = 1; i <= N; i += CHUNK) {
    let chunk = '';
    for (let k = i; k < i + CHUNK; k++)
      chunk += `{"request_id":"f7700000-0000-4000-8000-${k.toString().padStart(12, '0')}","timestamp":"2024-05-01T12:00:00Z","client_subject":"a","tool_name":"t","response_status":"ok"}\n`;
    // Bounded: the daemon may stop reading (the write blocks); give up waiting after 5 s.
    if (!sock.write(chunk)) {
      const drained = await Promise.race([
        new Promise((r) => sock.once('drain', () => r(true))),
        sleep(5000).then(() => false),
      ]);
      if (!drained) {
        // The daemon stopped reading: the reference point is now, if 250k was not reached.
        stalledAt = i;
        if (!rssAt250k) rssAt250k = (await procMemBytes(s.pid, 'VmRSS'))!;
        break;
      }
    }
    if (i === 250_001) {
      await sleep(500);
      rssAt250k = (await procMemBytes(s.pid, 'VmRSS'))!;
    }
  }
  await sleep(2000);
  const rssEnd = (await procMemBytes(s.pid, 'VmRSS'))!;
  const growthMb = Math.round((rssEnd - rssAt250k) / 1e6);
  console.log(
    `[queue-break] ack client not reading: ${stalledAt ? `the daemon stopped reading before entry ${stalledAt}` : 'all sent'}; RSS at 250k (or at the stall) ${Math.round(rssAt250k / 1e6)} MB, at the end ${Math.round(rssEnd / 1e6)} MB`,
  );
  sock.destroy();
  await s.stop();
  // A reading client: ~+2 MB over the same span. Not reading: ~+150 MB, growing with every entry.
  expect(rssAt250k).toBeGreaterThan(0);
  expect(growthMb).toBeLessThan(50);
  expect(rssEnd).toBeLessThan(200 * 1024 * 1024);
}, 120_000);
