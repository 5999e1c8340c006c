/**
 * Leak check, run around every test file (vitest setupFiles): a test file that leaves a child
 * process (a daemon, `psql`), a socket (a pg pool's client, a Unix or TCP client) or a listening
 * server open once its own afterAll hooks have run fails with the list of what it left, as
 * graphile-worker fails a test that leaks workers. Vitest runs after-hooks in stack order, so this
 * afterAll (registered first) runs last. The baseline, taken before the file's first hook, holds the
 * vitest worker's own IPC pipe. Closing a socket frees its handle a turn or two later, so the check
 * waits up to LEAK_GRACE_MS.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll } from 'vitest';
import { excess, openHandles } from './handles.js';

/** How long closed handles get to go away before they count as leaked (ms). */
const LEAK_GRACE_MS = 3000;

let baseline = new Map<string, number>();

beforeAll(() => {
  baseline = openHandles();
});

afterAll(async () => {
  const deadline = Date.now() + LEAK_GRACE_MS;
  let left = excess(baseline, openHandles());
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = excess(baseline, openHandles());
  }
  if (left.length > 0) {
    throw new Error(
      `this test file left open: ${left.join(', ')} (a daemon, pool or socket its hooks did not close)`,
    );
  }
});
