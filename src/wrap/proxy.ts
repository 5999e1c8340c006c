/**
 * `wrap`'s stdio proxy (CONTRACT.md §11): runs the MCP server as a child and sits between the
 * client (our stdin/stdout) and it.
 *
 * - **Byte-exact.** Each chunk read from one side is written to the other as it is: nothing is
 *   parsed into the stream or re-serialised. Lines are only copied aside for inspection (up to
 *   `maxMessageBytes`; a longer line still passes, it is just not inspected). The one exception is
 *   `--fail-closed`, where client lines are held until whole so that a `tools/call` can be stopped;
 *   the bytes forwarded are still the line's own.
 * - **Backpressure both ways**: a side whose write buffer is full pauses the reading of the other.
 * - **stderr** is inherited (the server's stderr is wrap's).
 * - **Shutdown** (MCP 2025-06-18 "Lifecycle" § stdio): at the end of the client's input the
 *   server's stdin is closed; after `graceMs` it gets SIGTERM, after `graceMs` more SIGKILL. The
 *   server runs in its own process group, and signals go to the group (an `npx` launcher and the
 *   server it starts both get them). Signals sent to wrap are passed on ({@link WrapRun.signal}).
 * - **Exit code**: the server's, or 128 + the signal number when a signal ended it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { AuditGatewayError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { type CallRecord, Correlator } from './correlate.js';
import { entryLine, type SessionInfo } from './entry.js';
import { peekOverlong, readLine } from './jsonrpc.js';
import { type LineSink, LineSplitter } from './lines.js';

/** Where audit entries go: {@link AuditSender} or a test's stand-in. */
export interface EntrySink {
  send(line: string): void;
  /** True while a `tools/call` can be audited durably (what `--fail-closed` asks). */
  readonly healthy: boolean;
}

/** Options of {@link startWrap}. */
export interface WrapOptions {
  command: string;
  args: string[];
  session: SessionInfo;
  sink: EntrySink;
  /** Answer `tools/call` with a JSON-RPC error while the sink is not healthy (§11). */
  failClosed: boolean;
  /** Wait after closing the server's stdin before SIGTERM, and after SIGTERM before SIGKILL, ms. */
  graceMs: number;
  /** Longest line inspected, bytes (longer ones pass uninspected; refused under failClosed). */
  maxMessageBytes: number;
  log: Logger;
  stdin?: Readable;
  stdout?: Writable;
  env?: NodeJS.ProcessEnv;
}

/** A running wrap. */
export interface WrapRun {
  /** Resolves with wrap's exit code once the server has ended and its output is written. */
  exited: Promise<number>;
  /** Passes a signal on to the server; SIGINT/SIGTERM/SIGHUP also start the SIGKILL countdown. */
  signal(sig: NodeJS.Signals): void;
  readonly pid: number | undefined;
}

/** The JSON-RPC error code wrap answers a refused `tools/call` with (the server-error range of JSON-RPC 2.0 §5.1). */
export const AUDIT_UNAVAILABLE_CODE = -32001;
const DENIED_MESSAGE =
  'audit-gateway wrap --fail-closed: this tool call was not forwarded because it cannot be audited now (serve is unreachable or not acking)';

const LF = Buffer.from('\n');

/** Exit code of a child that ended by `signal`: 128 + its number (as shells report it). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/**
 * Starts the server and the proxy.
 * @throws AuditGatewayError when the command cannot be started (not found, not executable).
 */
export async function startWrap(o: WrapOptions): Promise<WrapRun> {
  const stdin = o.stdin ?? process.stdin;
  const stdout = o.stdout ?? process.stdout;
  const log = o.log;
  const learned = { serverName: null as string | null, clientInfoText: null as string | null };
  // latency_ms runs from the moment a chunk holding the request arrived to the moment the one
  // holding the response did: taken before the chunk is forwarded and inspected.
  let arrivedAt = performance.now();
  const correlator = new Correlator(
    (call: CallRecord) => {
      learned.serverName = correlator.serverName;
      learned.clientInfoText = correlator.clientInfoText;
      o.sink.send(entryLine(call, o.session, learned));
    },
    () => arrivedAt,
  );

  const child: ChildProcess = spawn(o.command, o.args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    detached: true,
    env: o.env ?? process.env,
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) =>
      reject(
        new AuditGatewayError(
          `wrap: cannot start ${o.command}: ${messageOf(err)} (check the command after --)`,
        ),
      ),
    );
  });
  const childIn = child.stdin!;
  const childOut = child.stdout!;
  childIn.on('error', (err) => log.debug({ err: messageOf(err) }, 'wrap: server stdin closed'));

  let serverEnded = false;
  let killTimer: NodeJS.Timeout | null = null;
  const signalGroup = (sig: NodeJS.Signals) => {
    if (serverEnded || child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      try {
        child.kill(sig);
      } catch {}
    }
  };
  /** SIGTERM after graceMs, SIGKILL graceMs later (unless the server ends first). */
  const countdown = (fromTerm: boolean) => {
    if (killTimer) return;
    const kill = () => {
      log.warn({ pid: child.pid }, 'wrap: the server did not end after SIGTERM; SIGKILL');
      signalGroup('SIGKILL');
    };
    killTimer = setTimeout(() => {
      if (fromTerm) kill();
      else {
        log.info({ pid: child.pid }, 'wrap: the server did not end after its stdin closed; SIGTERM');
        signalGroup('SIGTERM');
        killTimer = setTimeout(kill, o.graceMs);
      }
    }, o.graceMs);
  };

  // ---- server → client
  let serverMidLine = false;
  const injections: Buffer[] = [];
  const writeOut = (buf: Buffer) => {
    if (stdoutClosed) return;
    if (!stdout.write(buf)) {
      childOut.pause();
      stdout.once('drain', () => childOut.resume());
    }
  };
  let stdoutClosed = false;
  stdout.on('error', () => {
    stdoutClosed = true;
    // The client is gone: end its input too, which starts the shutdown.
    endClientInput();
  });
  const inject = (line: string) => {
    const b = Buffer.from(line);
    if (serverMidLine) injections.push(b);
    else writeOut(b);
  };
  const serverLines = new LineSplitter(o.maxMessageBytes, () => correlator.waiting);
  const inspectServer: LineSink = (line, overlong) => {
    if (line !== null) {
      if (correlator.fastServerResult(line)) return;
      const rpc = readLine(line.toString('utf8'));
      if (rpc) correlator.fromServer(rpc);
    } else if (overlong) {
      correlator.fromServerOverlong(peekOverlong(overlong.head, overlong.tail), overlong.size);
    }
  };
  childOut.on('data', (chunk: Buffer) => {
    arrivedAt = performance.now();
    if (injections.length > 0 && serverMidLine) {
      const nl = chunk.indexOf(0x0a);
      if (nl >= 0) {
        writeOut(chunk.subarray(0, nl + 1));
        for (const b of injections.splice(0)) writeOut(b);
        if (nl + 1 < chunk.length) writeOut(chunk.subarray(nl + 1));
      } else writeOut(chunk);
    } else writeOut(chunk);
    serverMidLine = chunk.length > 0 ? chunk[chunk.length - 1] !== 0x0a : serverMidLine;
    serverLines.push(chunk, inspectServer);
  });

  // ---- client → server
  const writeIn = (buf: Buffer) => {
    if (serverEnded || childIn.destroyed) return;
    if (!childIn.write(buf)) {
      stdin.pause();
      childIn.once('drain', () => stdin.resume());
    }
  };
  const inspectClient: LineSink = (line, overlong) => {
    if (line !== null) {
      const rpc = readLine(line.toString('utf8'));
      if (rpc) correlator.fromClient(rpc);
    } else if (overlong) {
      correlator.fromClientOverlong(peekOverlong(overlong.head, overlong.tail), overlong.size);
    }
  };
  const clientLines = new LineSplitter(o.maxMessageBytes);
  let clientEnded = false;
  const endClientInput = () => {
    if (clientEnded) return;
    clientEnded = true;
    arrivedAt = performance.now();
    if (o.failClosed) clientLines.end((line) => failClosedLine(line, false));
    else clientLines.end(inspectClient);
    childIn.end();
    countdown(false);
  };
  /** Under --fail-closed: decide on one whole client line, then forward it (or answer it). */
  const failClosedLine = (line: Buffer | null, terminated: boolean) => {
    if (line === null) {
      // Too long to inspect: it might be a tools/call, so it does not pass unaudited.
      inject(
        `{"jsonrpc":"2.0","id":null,"error":{"code":${AUDIT_UNAVAILABLE_CODE},"message":"audit-gateway wrap --fail-closed: a message longer than --max-message-bytes (${o.maxMessageBytes}) cannot be inspected, so it was not forwarded"}}\n`,
      );
      return;
    }
    const text = line.toString('utf8');
    const rpc = readLine(text);
    const calls = rpc?.messages.filter(Correlator.isToolCall) ?? [];
    if (calls.length > 0 && !o.sink.healthy) {
      // Refuse the whole line (a batch too: its bytes are not rewritten), answering each request.
      const answers = rpc!.messages
        .filter((m) => m.kind === 'request' && m.idText !== null)
        .map(
          (m) =>
            `{"jsonrpc":"2.0","id":${m.idText},"error":{"code":${AUDIT_UNAVAILABLE_CODE},"message":${JSON.stringify(DENIED_MESSAGE)}}}`,
        );
      for (const m of calls) correlator.denied(m, DENIED_MESSAGE);
      log.warn({ calls: calls.length }, 'wrap: --fail-closed refused tools/call: cannot audit now');
      if (answers.length > 0) inject(`${rpc!.batch ? `[${answers.join(',')}]` : answers[0]}\n`);
      return;
    }
    if (rpc) correlator.fromClient(rpc);
    writeIn(terminated ? Buffer.concat([line, LF]) : line);
  };
  stdin.on('data', (chunk: Buffer) => {
    arrivedAt = performance.now();
    if (o.failClosed) {
      clientLines.push(chunk, (line) => failClosedLine(line, true));
    } else {
      writeIn(chunk);
      clientLines.push(chunk, inspectClient);
    }
  });
  stdin.on('end', endClientInput);
  stdin.on('error', endClientInput);

  const exited = new Promise<number>((resolve) => {
    child.on('close', (code, signal) => {
      serverEnded = true;
      if (killTimer) clearTimeout(killTimer);
      serverLines.end(inspectServer);
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      arrivedAt = performance.now();
      correlator.endAll(`the server ended (${how}) before it answered`);
      for (const b of injections.splice(0)) writeOut(b);
      stdin.removeAllListeners('data');
      stdin.pause();
      if (typeof (stdin as { unref?: () => void }).unref === 'function')
        (stdin as { unref: () => void }).unref();
      resolve(signal ? signalExitCode(signal) : (code ?? 1));
    });
  });

  return {
    exited,
    pid: child.pid,
    signal(sig: NodeJS.Signals) {
      log.debug({ signal: sig, pid: child.pid }, 'wrap: passing a signal on to the server');
      signalGroup(sig);
      if (sig === 'SIGTERM' || sig === 'SIGINT' || sig === 'SIGHUP') countdown(true);
    },
  };
}
