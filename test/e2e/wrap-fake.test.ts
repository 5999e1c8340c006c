/**
 * End to end: `audit-gateway wrap` (CONTRACT.md §11) around the tests' own MCP server
 * (test/fixtures/wrap/fake-server.mjs), for what real servers cannot be made to do on demand: dying
 * mid-call, ids 1 and "1" at once, batches, a slow call then cancelled, server-to-client requests
 * reusing the client's ids, a line too long to inspect, a server that ignores SIGTERM; and the
 * audit path: entries acked into Postgres through a real `serve`, the local spool while serve is
 * away (sent once it is back, readable by `replay`), `--fail-closed`, `--print-config`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { BIN, cleanupServes, type ServeProcess, startServe, tempDir, waitFor } from '../helpers/serve.js';
import {
  FAKE_SERVER,
  INITIALIZE,
  isResponseTo,
  type RawWrap,
  startRawWrap,
  WRAP_ROWS_SQL,
  type WrapRow,
} from '../helpers/wrap.js';

let db: TestDatabase;
let serve: ServeProcess;

beforeAll(async () => {
  db = await createTestDatabase('e2e_wrap_fake');
  serve = await startServe({ databaseUrl: db.url });
});

afterAll(async () => {
  if (serve?.alive) await serve.stop();
  await cleanupServes();
  await db?.drop();
});

const subject = (tag: string) => `${tag}-${randomBytes(4).toString('hex')}`;

async function rows(subj: string): Promise<WrapRow[]> {
  return (await db.query<WrapRow>(WRAP_ROWS_SQL, [subj])).rows;
}

async function waitRows(subj: string, n: number, timeoutMs = 20_000): Promise<WrapRow[]> {
  return waitFor(
    async () => {
      const r = await rows(subj);
      return r.length >= n ? r : false;
    },
    `${n} entries of ${subj}`,
    timeoutMs,
  );
}

const call = (id: unknown, name: string, args?: unknown) =>
  `${JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, ...(args === undefined ? {} : { arguments: args }) } })}\n`;

/** Starts wrap around the fake server with serve's socket, and initializes. */
async function fake(
  subj: string,
  opts: { args?: string[]; env?: NodeJS.ProcessEnv; socket?: string; init?: boolean } = {},
): Promise<RawWrap> {
  const dir = await tempDir('ag-wrap-');
  const w = startRawWrap(
    [
      '--subject',
      subj,
      '--socket',
      opts.socket ?? serve.socket,
      '--spool-dir',
      join(dir, 'spool'),
      ...(opts.args ?? []),
    ],
    [process.execPath, FAKE_SERVER],
    opts.env,
  );
  if (opts.init !== false) {
    w.write(INITIALIZE);
    await w.waitFor(isResponseTo('init'), 'the initialize response');
  }
  return w;
}

describe('wrap: correlation (ids by type and value, batches, server requests, cancellation)', () => {
  it('matches 1 and "1" apart, batches, the server reusing the client ids, a cancelled slow call; bytes pass unchanged', async () => {
    const subj = subject('corr');
    const dir = await tempDir('ag-wrap-log-');
    const log = join(dir, 'received.bin');
    const w = await fake(subj, {
      env: { FAKE_LOG: log },
      args: ['--role', 'tester', '--backend', 'fake-backend'],
    });
    const sent: string[] = [INITIALIZE];
    const send = (s: string) => {
      sent.push(s);
      w.write(s);
    };
    // 1 (a number) is slow; "1" (a string) fails at once: the answers come in the other order.
    send(call(1, 'slow', { ms: 300 }));
    send(call('1', 'fail', { why: 'string id' }));
    await w.waitFor(isResponseTo(1), 'the answer to id 1');
    // A batch: two calls with ids 2 and "2" and a notification, with odd spacing and exact numbers.
    send(
      '[ {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"big":123456789012345678901234567890,"f":1.50,"s":"\\u00e9\\n"}}} ,{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},\t{"jsonrpc":"2.0","id":"2","method":"tools/call","params":{"name":"rpcfail","arguments":null}} ]\r\n',
    );
    await w.waitFor((m) => Array.isArray(m), 'the batch answer');
    // The server asks the client (sampling) with id 3, the same id as the client's pending call 3.
    send(call(3, 'sample', { id: 3 }));
    await w.waitFor(
      (m) => (m as { method?: string }).method === 'sampling/createMessage',
      'the sampling request',
    );
    send(
      '{"jsonrpc":"2.0","id":3,"result":{"role":"assistant","model":"m","content":{"type":"text","text":"ok"}}}\n',
    );
    await w.waitFor(isResponseTo(3), 'the answer to call 3');
    // A slow call, cancelled by the client: the server never answers it.
    send(call(4, 'slow', { ms: 60_000 }));
    send(
      '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4,"reason":"user pressed stop"}}\n',
    );
    // A response the server formats by hand passes byte for byte.
    const rawLine =
      '{ "jsonrpc" : "2.0" , "id" : 5 , "result" : {"content":[],"n":1.50e0,"big":98765432109876543210} }';
    send(call(5, 'raw', { line: rawLine }));
    await w.waitFor(isResponseTo(5), 'the raw answer');
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);

    expect(readFileSync(log).toString('utf8')).toBe(sent.join(''));
    expect(w.stdout().toString('utf8')).toContain(`\n${rawLine}\n`);
    const r = await waitRows(subj, 7);
    expect(r).toHaveLength(7);
    const by = (id: unknown) => r.filter((x) => x.extra.jsonrpc_id === id);
    expect(by(1).map((x) => [x.tool_name, x.response_status])).toEqual([['slow', 'success']]);
    expect(by('1').map((x) => [x.tool_name, x.response_status, x.error_message])).toEqual([
      ['fail', 'error', 'it failed: string id'],
    ]);
    expect(by(2).map((x) => [x.tool_name, x.response_status])).toEqual([['echo', 'success']]);
    expect(by('2').map((x) => [x.tool_name, x.response_status, x.error_message, x.request_args])).toEqual([
      ['rpcfail', 'rpc_error', 'bad params', null],
    ]);
    expect(by(3).map((x) => [x.tool_name, x.response_status])).toEqual([['sample', 'success']]);
    expect(by(4).map((x) => [x.tool_name, x.response_status, x.error_message])).toEqual([
      ['slow', 'cancelled', 'user pressed stop'],
    ]);
    expect(by(5).map((x) => x.response_status)).toEqual(['success']);
    // Numbers keep every digit (CONTRACT.md §3).
    const big = await db.query<{ big: string; f: string }>(
      `SELECT request_args->>'big' AS big, request_args->>'f' AS f FROM audit_log WHERE client_subject = $1 AND extra->>'jsonrpc_id' = '2' AND jsonb_typeof(extra->'jsonrpc_id') = 'number'`,
      [subj],
    );
    expect(big.rows).toEqual([{ big: '123456789012345678901234567890', f: '1.50' }]);
    for (const x of r) {
      expect(x.client_role).toBe('tester');
      expect(x.backend_name).toBe('fake-backend');
      expect(x.extra.mcp_client).toEqual({ name: 'raw-test', version: '9.9' });
    }
    expect(new Set(r.map((x) => x.extra.mcp_session)).size).toBe(1);
    // The slow call waits 300 ms in the server (whose timers may fire up to a loop turn early).
    expect(Number(by(1)[0]!.latency_ms)).toBeGreaterThanOrEqual(150);
  });

  it('lines too long to inspect still pass through, and the calls they carry are still recorded by their ids', async () => {
    const subj = subject('long');
    const dir = await tempDir('ag-wrap-log-');
    const log = join(dir, 'received.bin');
    const w = await fake(subj, { env: { FAKE_LOG: log }, args: ['--max-message-bytes', '1024'] });
    // A request past the limit, written in two pieces.
    const long = call(1, 'echo', { pad: 'p'.repeat(5000) });
    w.write(long.slice(0, 2000));
    w.write(long.slice(2000));
    const answer = (await w.waitFor(isResponseTo(1), 'the answer to the long call')) as { result: unknown };
    expect(JSON.stringify(answer.result)).toContain('p'.repeat(5000));
    // A response past the limit (the server puts its id last), a tool failure past it, and an id
    // that is a string with escapes.
    w.write(call('two"\\2', 'big', { n: 200_000 }));
    await w.waitFor(isResponseTo('two"\\2'), 'the long answer');
    w.write(call(3, 'fail', { why: 'x'.repeat(3000) }));
    await w.waitFor(isResponseTo(3), 'the long failure');
    w.write(call(4, 'echo', { short: true }));
    await w.waitFor(isResponseTo(4), 'answer 4');
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    expect(readFileSync(log).toString('utf8')).toBe(
      INITIALIZE +
        long +
        call('two"\\2', 'big', { n: 200_000 }) +
        call(3, 'fail', { why: 'x'.repeat(3000) }) +
        call(4, 'echo', { short: true }),
    );
    const r = await waitRows(subj, 4);
    expect(r.map((x) => [x.extra.jsonrpc_id, x.tool_name, x.response_status])).toEqual([
      [1, 'echo', 'success'],
      ['two"\\2', 'big', 'success'],
      [3, 'fail', 'error'],
      [4, 'echo', 'success'],
    ]);
    // The long request's arguments are not recorded, and the entry says why.
    expect(r[0]!.request_args).toBeNull();
    expect(r[0]!.error_message).toContain('too long to inspect');
    expect(r[1]!.request_args).toEqual({ n: 200_000 });
    expect(r[2]!.error_message).toContain('too long to inspect');
    expect(r[3]!.request_args).toEqual({ short: true });
    expect(r[0]!.backend_name).toBe('fake-server');
  });

  it('backpressure: a client that does not read makes wrap stop reading the server (memory stays bounded)', async () => {
    const subj = subject('bp');
    const w = await fake(subj);
    w.proc.stdout!.pause();
    // 40 answers of 4 MB each: 160 MB that wrap must not hold.
    for (let i = 1; i <= 40; i++) w.write(call(i, 'big', { n: 4_000_000 }));
    // Wait until the server has answered every call (it logs each answer's size on stderr).
    await waitFor(
      () => (w.stderr().match(/answered big/g) ?? []).length === 40,
      'the server to answer all',
      120_000,
    );
    // Wrap's resident memory over the next 3 s: bounded by its pipes and one inspected message
    // (without backpressure it would take in the 160 MB the server has queued).
    let maxRssKb = 0;
    for (let i = 0; i < 30; i++) {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${w.proc.pid}/status`, 'utf8'))![1]);
      maxRssKb = Math.max(maxRssKb, kb);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(w.stdoutBytes()).toBeLessThan(1024 * 1024);
    expect(maxRssKb).toBeLessThan(120 * 1024);
    w.proc.stdout!.resume();
    await waitFor(() => w.stdoutBytes() > 40 * 4_000_000, 'every answer', 120_000);
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    expect((await waitRows(subj, 40)).every((x) => x.response_status === 'success')).toBe(true);
  }, 300_000);
});

describe('wrap: the end of the server', () => {
  it('a server dying mid-call: its exit code is wrap’s, pending calls are no_response', async () => {
    const subj = subject('die');
    const w = await fake(subj);
    w.write(call(1, 'slow', { ms: 60_000 }));
    w.write(call(2, 'die', { code: 7 }));
    expect((await w.exited).code).toBe(7);
    const r = await waitRows(subj, 2);
    expect(r.map((x) => [x.extra.jsonrpc_id, x.response_status]).sort()).toEqual([
      [1, 'no_response'],
      [2, 'no_response'],
    ]);
    expect(r[0]!.error_message).toContain('exit code 7');
  });

  it('a server killed by a signal: wrap exits 128 + signal', async () => {
    const subj = subject('sig');
    const w = await fake(subj);
    w.write(call(1, 'selfkill', { signal: 'SIGTERM' }));
    expect((await w.exited).code).toBe(143);
    const r = await waitRows(subj, 1);
    expect(r[0]!.response_status).toBe('no_response');
    expect(r[0]!.error_message).toContain('SIGTERM');
  });

  it('a server that ignores the end of stdin and SIGTERM is killed: exit 137', async () => {
    const subj = subject('stubborn');
    const dir = await tempDir('ag-wrap-sig-');
    const sigLog = join(dir, 'signals');
    const w = await fake(subj, {
      env: { FAKE_IGNORE_SIGTERM: '1', FAKE_SIGNAL_LOG: sigLog },
      args: ['--grace', '300ms'],
    });
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(137);
    expect(readFileSync(sigLog, 'utf8')).toBe('SIGTERM\n');
  });

  it('signals sent to wrap are passed on to the server', async () => {
    const subj = subject('fwd');
    const dir = await tempDir('ag-wrap-sig-');
    const sigLog = join(dir, 'signals');
    const w = await fake(subj, { env: { FAKE_SIGNAL_LOG: sigLog } });
    w.proc.kill('SIGHUP');
    expect((await w.exited).code).toBe(129);
    expect(readFileSync(sigLog, 'utf8')).toBe('SIGHUP\n');
  });

  it('a command that cannot be started, or none: one line, exit 1 or 2', async () => {
    const missing = await run(['wrap', '--', '/nonexistent/mcp-server']);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toContain('/nonexistent/mcp-server');
    const none = await run(['wrap']);
    expect(none.code).toBe(2);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    const grace = await run(['wrap', '--grace', '31s', '--', 'true']);
    expect(grace.code).toBe(2);
    expect(grace.stderr).toContain('--grace');
  });
});

describe('wrap: when serve is away', () => {
  it('entries go to the local spool and are sent once serve is back; nothing is lost or stored twice', async () => {
    const subj = subject('spool');
    const dir = await tempDir('ag-wrap-away-');
    const socket = join(dir, 'later.sock');
    const w = await fake(subj, { socket });
    for (let i = 1; i <= 5; i++) {
      w.write(call(i, 'echo', { i, password: 'hunter2' }));
      await w.waitFor(isResponseTo(i), `answer ${i}`);
    }
    const later = await startServe({ databaseUrl: db.url, socket, dataDir: join(dir, 'data') });
    try {
      const r = await waitRows(subj, 5);
      expect(r.map((x) => x.extra.jsonrpc_id)).toEqual([1, 2, 3, 4, 5]);
      // Spooled entries were redacted before they reached the disk (CONTRACT.md §6).
      expect(r.every((x) => (x.request_args as { password: string }).password === '[REDACTED]')).toBe(true);
      w.write(call(6, 'echo', { i: 6 }));
      await w.waitFor(isResponseTo(6), 'answer 6');
      w.proc.stdin!.end();
      expect((await w.exited).code).toBe(0);
      await waitRows(subj, 6);
      await new Promise((res) => setTimeout(res, 300));
      expect((await rows(subj)).map((x) => x.extra.jsonrpc_id)).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      await later.stop();
    }
  });

  it('a spool left by a run that ended is readable by replay, and a later run sends it (stored once)', async () => {
    const subj = subject('orphan');
    const dir = await tempDir('ag-wrap-orphan-');
    const spoolDir = join(dir, 'spool');
    const away = join(dir, 'none.sock');
    const w = startRawWrap(
      ['--subject', subj, '--socket', away, '--spool-dir', spoolDir],
      [process.execPath, FAKE_SERVER],
    );
    w.write(INITIALIZE);
    for (let i = 1; i <= 3; i++) {
      w.write(call(i, 'echo', { i }));
      await w.waitFor(isResponseTo(i), `answer ${i}`);
    }
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    const runs = readdirSync(spoolDir);
    expect(runs).toHaveLength(1);
    const segs = readdirSync(join(spoolDir, runs[0]!)).filter((f) => f.endsWith('.seg'));
    expect(segs.length).toBeGreaterThan(0);
    expect(existsSync(join(spoolDir, runs[0]!, 'owner.pid'))).toBe(false);
    const rep = await run([
      'replay',
      '--database-url',
      db.url,
      ...segs.map((s) => join(spoolDir, runs[0]!, s)),
    ]);
    expect(rep.code, rep.stderr).toBe(0);
    expect(rep.stdout).toContain('stored 3');
    expect((await rows(subj)).map((x) => x.extra.jsonrpc_id)).toEqual([1, 2, 3]);
    // A later run, with serve reachable, adopts the spool and sends it: duplicates are skipped.
    const w2 = startRawWrap(
      ['--subject', subj, '--socket', serve.socket, '--spool-dir', spoolDir],
      [process.execPath, FAKE_SERVER],
    );
    await waitFor(() => readdirSync(spoolDir).length === 0, 'the orphan spool to be sent and removed');
    w2.proc.stdin!.end();
    expect((await w2.exited).code).toBe(0);
    expect((await rows(subj)).map((x) => x.extra.jsonrpc_id)).toEqual([1, 2, 3]);
  });

  it('--fail-closed answers tools/call with a JSON-RPC error (never forwarded) and lets other methods pass', async () => {
    const subj = subject('closed');
    const dir = await tempDir('ag-wrap-closed-');
    const log = join(dir, 'received.bin');
    const w = await fake(subj, {
      socket: join(dir, 'none.sock'),
      env: { FAKE_LOG: log },
      args: ['--fail-closed'],
    });
    w.write('{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n');
    await w.waitFor(isResponseTo(1), 'tools/list');
    w.write(call(2, 'echo', { x: 1 }));
    const denied = (await w.waitFor(isResponseTo(2), 'the refusal')) as {
      error: { code: number; message: string };
    };
    expect(denied.error.code).toBe(-32001);
    expect(denied.error.message).toContain('--fail-closed');
    w.write(`[${call(3, 'echo').trim()},{"jsonrpc":"2.0","id":4,"method":"ping"}]\n`);
    const batch = (await w.waitFor((m) => Array.isArray(m), 'the batch refusal')) as {
      id: number;
      error?: unknown;
    }[];
    expect(batch.map((m) => m.id)).toEqual([3, 4]);
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    const received = readFileSync(log, 'utf8');
    expect(received).not.toContain('tools/call');
    expect(received).toContain('tools/list');
  });

  it('--fail-closed forwards tools/call while serve acks', async () => {
    const subj = subject('closed-ok');
    const w = await fake(subj, { args: ['--fail-closed'] });
    w.write(call(1, 'echo', { x: 1 }));
    const r = (await w.waitFor(isResponseTo(1), 'the answer')) as { result?: unknown };
    expect(r.result).toBeDefined();
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    expect((await waitRows(subj, 1))[0]!.response_status).toBe('success');
  });
});

describe('wrap --print-config', () => {
  it('prints an mcpServers entry whose args run the same command through wrap, quoting intact', async () => {
    const odd = `/data/with space/"quoted"/and\\backslash`;
    const r = await run(
      [
        'wrap',
        '--print-config',
        '--subject',
        'alice',
        '--role',
        'dev',
        '--',
        'npx',
        '-y',
        '@modelcontextprotocol/server-filesystem',
        odd,
      ],
      { env: { AUDIT_GATEWAY_SOCKET: '/run/ag/test.sock' } },
    );
    expect(r.code, r.stderr).toBe(0);
    const cfg = JSON.parse(r.stdout) as { mcpServers: Record<string, { command: string; args: string[] }> };
    expect(Object.keys(cfg.mcpServers)).toEqual(['server-filesystem']);
    const entry = cfg.mcpServers['server-filesystem']!;
    expect(entry.command).toBe(BIN);
    // The socket is always spelled out: a desktop client does not have the shell's environment.
    expect(entry.args).toEqual([
      'wrap',
      '--subject',
      'alice',
      '--role',
      'dev',
      '--socket',
      '/run/ag/test.sock',
      '--',
      'npx',
      '-y',
      '@modelcontextprotocol/server-filesystem',
      odd,
    ]);
  });

  it('the printed entry works: the SDK-style spawn of its command and args runs the server through wrap', async () => {
    const subj = subject('printed');
    const r = await run([
      'wrap',
      '--print-config',
      '--subject',
      subj,
      '--socket',
      serve.socket,
      '--',
      process.execPath,
      FAKE_SERVER,
    ]);
    const entry = Object.values(
      (JSON.parse(r.stdout) as { mcpServers: Record<string, { command: string; args: string[] }> })
        .mcpServers,
    )[0]!;
    const w = startRawWrap(
      entry.args.slice(1, entry.args.indexOf('--')),
      entry.args.slice(entry.args.indexOf('--') + 1),
    );
    w.write(INITIALIZE);
    w.write(call(1, 'echo', { printed: true }));
    await w.waitFor(isResponseTo(1), 'the answer');
    w.proc.stdin!.end();
    expect((await w.exited).code).toBe(0);
    expect((await waitRows(subj, 1))[0]!.request_args).toEqual({ printed: true });
  });
});
