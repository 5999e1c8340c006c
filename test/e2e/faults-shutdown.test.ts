/**
 * Issue 4: `serve` stopped (SIGTERM, once or twice) while its Postgres is unavailable — stopped, or
 * frozen behind a proxy that no longer forwards anything (CONTRACT.md §4 "Shutdown", known-traps
 * C19 variant). Every accepted entry must be stored or in the spool, a restart must store them all
 * exactly once, and the process must exit 0 within about the --shutdown-timeout.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  counts,
  faultLine,
  serveArgs,
  spoolEntryCount,
  startPgProxy,
  streamLines,
  useOwnPostgres,
  waitStored,
  withPort,
} from '../helpers/ownPostgres.js';
import { sleep, startServe, tempDir, waitFor } from '../helpers/serve.js';

const own = useOwnPostgres();

describe('faults: shutdown while Postgres is unavailable (C19 variant)', () => {
  /**
   * Sends N acked lines to a fresh `serve` whose Postgres is made unavailable by `outage`, waits
   * until the client handed them all to the kernel, then sends SIGTERM (twice with `twice`).
   * Checks that every line is stored or in the spool, that a restart stores them all exactly once,
   * and (last, so that the data checks run in any case) the exit code and time.
   */
  async function shutdownCase(opts: {
    tag: string;
    n: number;
    shutdownTimeout: string;
    outage: 'stopped' | 'frozen';
    twice?: boolean;
    maxExitMs: number;
  }): Promise<void> {
    const db = await own().createDatabase(`term${opts.outage}`);
    const proxy = opts.outage === 'frozen' ? await startPgProxy(own().port) : null;
    try {
      const dir = await tempDir();
      const socket = join(dir, 's.sock');
      const spoolDir = join(dir, 'spool');
      const s1 = await startServe({
        databaseUrl: proxy ? withPort(db.url, proxy.port) : db.url,
        dataDir: dir,
        socket,
        args: serveArgs(['--batch-size', '200', '--shutdown-timeout', opts.shutdownTimeout]),
      });
      if (proxy) proxy.freeze();
      else await own().stop();
      const st = streamLines(s1.socket, opts.n, (i) => faultLine(opts.tag, i), { ack: true, chunk: 1000 });
      await waitFor(() => st.flushed === opts.n, 'the client to hand every line to the kernel', 30_000);
      await sleep(300);
      const t0 = Date.now();
      s1.proc.kill('SIGTERM');
      if (opts.twice) {
        await s1.waitForLog(
          (l) => typeof l.msg === 'string' && l.msg.startsWith('stopping gracefully'),
          5000,
        );
        await sleep(500);
        s1.proc.kill('SIGTERM');
      }
      // Bounded wait: a daemon that hangs is killed so that the data checks still run.
      const exited = await Promise.race([s1.exited, sleep(opts.maxExitMs + 5000).then(() => null)]);
      const ms = Date.now() - t0;
      const stoppedLine = s1.logs().find((l) => l.msg === 'serve: stopped');
      if (!exited) {
        s1.proc.kill('SIGKILL');
        await s1.exited;
      }
      await st.done;
      const inSpool = await spoolEntryCount(spoolDir);
      await own().start();
      const storedBefore = (await counts(db)).rows;
      console.log(
        `[faults] SIGTERM${opts.twice ? ' x2' : ''}, Postgres ${opts.outage}, --shutdown-timeout ${opts.shutdownTimeout}: ${
          exited ? `exit ${exited.code}` : 'STILL RUNNING (killed)'
        } after ${ms} ms; 'serve: stopped' logged: ${stoppedLine ? 'yes' : 'no'}; in spool ${inSpool}, stored ${storedBefore}, acks ok ${st.okSeqs.size}`,
      );
      expect(st.failed).toEqual([]);
      // Every accepted entry is stored or in the spool …
      expect(inSpool + storedBefore).toBe(opts.n);
      expect(stoppedLine?.unwritten).toBe(0);
      // … and a restart stores them all, once.
      const s2 = await startServe({
        databaseUrl: db.url,
        dataDir: dir,
        socket,
        args: serveArgs(['--batch-size', '200']),
      });
      await waitStored(db, opts.n, spoolDir);
      expect(await counts(db)).toEqual({ rows: opts.n, distinct: opts.n });
      expect(await s2.stop()).toBe(0);
      // The process itself must end, with 0, in time.
      expect(
        exited,
        `serve still running ${ms} ms after SIGTERM; its last log lines:\n${s1.stderrLines.slice(-3).join('\n')}`,
      ).not.toBeNull();
      expect(exited?.code).toBe(0);
      expect(ms).toBeLessThan(opts.maxExitMs);
    } finally {
      await proxy?.close();
    }
  }

  it('SIGTERM with --shutdown-timeout 2s and Postgres stopped: exit 0 within ~3 s; every accepted entry stored or spooled, all stored after a restart', async () => {
    await shutdownCase({
      tag: 'fa080000',
      n: 5000,
      shutdownTimeout: '2s',
      outage: 'stopped',
      maxExitMs: 4500,
    });
  });

  it('SIGTERM with --shutdown-timeout 2s and Postgres unresponsive (frozen connections): exit 0 within ~3 s; nothing lost', async () => {
    await shutdownCase({
      tag: 'fa081000',
      n: 5000,
      shutdownTimeout: '2s',
      outage: 'frozen',
      maxExitMs: 4500,
    });
  });

  it('a second SIGTERM forces a faster stop (--shutdown-timeout 60s, Postgres unresponsive): exit within seconds; nothing lost', async () => {
    await shutdownCase({
      tag: 'fa082000',
      n: 3000,
      shutdownTimeout: '60s',
      outage: 'frozen',
      twice: true,
      maxExitMs: 4500,
    });
  });
});
