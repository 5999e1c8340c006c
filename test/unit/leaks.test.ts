/**
 * The leak check of test/setup/leaks.ts sees what it must: a child process, a listening server and a
 * connected socket each count, and each is gone from the count once closed.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { excess, openHandles } from '../setup/handles.js';

async function settled(baseline: Map<string, number>): Promise<string[]> {
  for (let i = 0; i < 60 && excess(baseline, openHandles()).length > 0; i++) await sleep(50);
  return excess(baseline, openHandles());
}

describe('leak check', () => {
  it('counts a child process until it has exited', async () => {
    const before = openHandles();
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    expect(excess(before, openHandles())).toContain('ProcessWrap +1');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(await settled(before)).toEqual([]);
  });

  it('counts a listening server and a connected client until both are closed', async () => {
    const before = openHandles();
    const server = createServer((s) => s.on('error', () => {}));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP address');
    const client = createConnection(address.port, '127.0.0.1');
    await once(client, 'connect');
    const open = excess(before, openHandles());
    expect(open).toContain('TCPServerWrap +1');
    expect(open.find((k) => k.startsWith('TCPSocketWrap'))).toBeDefined();
    client.destroy();
    server.close();
    expect(await settled(before)).toEqual([]);
  });
});
