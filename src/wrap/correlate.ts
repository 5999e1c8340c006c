/**
 * Correlation of MCP traffic (CONTRACT.md §11): each client `tools/call` request is matched with the
 * server's response by id type and value (`1` and `"1"` are different calls), in batches too, and
 * ends as one audit call record. Requests the server sends to the client (sampling, elicitation,
 * roots) have their own id space: they and the client's answers to them are never matched with the
 * client's calls, because only client requests open a call and only server responses close one.
 *
 * Outcomes (§11 `response_status`): `success`; `error` (a result with `isError: true`, the tool's own
 * failure, MCP 2025-06-18 "Tools" § Error Handling); `rpc_error` (a JSON-RPC error response);
 * `cancelled` (the client sent `notifications/cancelled` for it first: MCP "Cancellation", which
 * races with the response; whichever the proxy sees first decides); `no_response` (the server ended
 * first); `denied` (`--fail-closed` answered it without the server).
 */
import {
  idKeyOf,
  memberText,
  type OverlongPeek,
  peekOverlong,
  type RpcLine,
  type RpcMessage,
} from './jsonrpc.js';

/** The outcome of a call. */
export type CallStatus = 'success' | 'error' | 'rpc_error' | 'cancelled' | 'no_response' | 'denied';

/** A finished `tools/call`: what the audit entry is made of. */
export interface CallRecord {
  /** When the request arrived, epoch ms. */
  startedAt: number;
  /** Request to outcome, ms (whole). */
  latencyMs: number;
  toolName: string;
  /** Raw JSON text of `params.arguments`, or null when absent. */
  argsText: string | null;
  /** Raw JSON text of the request id. */
  idText: string;
  status: CallStatus;
  errorMessage: string | null;
}

const RESULT = Buffer.from('"result"');
const ERROR = Buffer.from('"error"');
const IS_ERROR = Buffer.from('"isError"');
const METHOD = Buffer.from('"method"');
/** Bytes of each end of a line that the fast path looks at for the id. */
const PEEK_BYTES = 512;

/** The longest `error_message` kept, in characters (an entry must fit serve's line limit). */
export const MAX_ERROR_CHARS = 16 * 1024;

interface Pending {
  startedAt: number;
  t0: number;
  toolName: string;
  argsText: string | null;
  idText: string;
  /** Why the record is partial (an overlong request), added to error_message. */
  note?: string;
}

function clip(s: string): string {
  return s.length > MAX_ERROR_CHARS
    ? `${s.slice(0, MAX_ERROR_CHARS)}… (cut at ${MAX_ERROR_CHARS} characters)`
    : s;
}

/** The text of a tool result's content items of type `text`, joined by newlines. */
function resultText(result: unknown): string | null {
  const content = (result as { content?: unknown } | null)?.content;
  if (!Array.isArray(content)) return null;
  const texts = content
    .filter((c): c is { type: 'text'; text: string } => c?.type === 'text' && typeof c.text === 'string')
    .map((c) => c.text);
  return texts.length > 0 ? clip(texts.join('\n')) : null;
}

/**
 * Tracks one wrap session's calls. Feed it every line of each direction, in order; it calls
 * `onCall` once per finished `tools/call`. Also learns `clientInfo` and `serverInfo.name` from the
 * `initialize` exchange.
 */
export class Correlator {
  private readonly pending = new Map<string, Pending>();
  private initializeKey: string | null = null;
  /** The client's `clientInfo` ({name, version}) as raw JSON text, once seen. */
  clientInfoText: string | null = null;
  /** The server's `serverInfo.name`, once seen. */
  serverName: string | null = null;

  constructor(
    private readonly onCall: (call: CallRecord) => void,
    private readonly now: () => number = performance.now.bind(performance),
  ) {}

  /** Calls waiting for their response. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /** True while a server line may close something (so it must be parsed). */
  get waiting(): boolean {
    return this.pending.size > 0 || this.initializeKey !== null;
  }

  /** A line from the client (already parsed by readLine). */
  fromClient(line: RpcLine): void {
    for (const m of line.messages) this.clientMessage(m);
  }

  /** True when the message is a `tools/call` request (the ones `--fail-closed` guards). */
  static isToolCall(m: RpcMessage): boolean {
    return m.kind === 'request' && m.method === 'tools/call' && m.idKey !== null;
  }

  private clientMessage(m: RpcMessage): void {
    if (m.kind === 'request' && m.idKey !== null) {
      if (m.method === 'tools/call') {
        const params = m.value?.params as Record<string, unknown> | undefined;
        const paramsText = params && typeof params === 'object' ? memberText(m.text, 'params') : undefined;
        const argsText = paramsText !== undefined ? (memberText(paramsText, 'arguments') ?? null) : null;
        const name = params?.name;
        const earlier = this.pending.get(m.idKey);
        if (earlier)
          this.finish(m.idKey, earlier, 'no_response', 'the client reused this id before the response');
        this.pending.set(m.idKey, {
          startedAt: Date.now(),
          t0: this.now(),
          toolName: typeof name === 'string' && name.length > 0 ? name : '(no tool name)',
          argsText: argsText === 'null' ? null : argsText,
          idText: m.idText ?? 'null',
        });
      } else if (m.method === 'initialize') {
        this.initializeKey = m.idKey;
        const params = m.value?.params;
        if (params && typeof params === 'object') {
          const paramsText = memberText(m.text, 'params');
          this.clientInfoText = (paramsText && memberText(paramsText, 'clientInfo')) ?? null;
        }
      }
    } else if (m.kind === 'notification' && m.method === 'notifications/cancelled') {
      const params = m.value?.params as { requestId?: unknown; reason?: unknown } | undefined;
      const key = idKeyOf(params?.requestId);
      const p = key !== null ? this.pending.get(key) : undefined;
      if (key !== null && p) {
        this.finish(key, p, 'cancelled', typeof params?.reason === 'string' ? clip(params.reason) : null);
      }
    }
  }

  /**
   * The fast path for a server line (its bytes, LF removed): a plain successful result for a call
   * that waits (an object with a `result` member, no `error`, `isError` or `method` key anywhere, whose id
   * stands among its first members or as its last one) closes that call as `success` without
   * decoding or parsing the line, so a large result (a file's content) costs a few byte scans.
   * Anything else returns false, and the line goes through {@link fromServer}. The line's JSON is
   * not validated here: a malformed line that looks like a result is recorded as `success`.
   */
  fastServerResult(line: Buffer): boolean {
    if (this.pending.size === 0 || line.length < 2 || line[0] !== 0x7b) return false;
    if (!line.includes(RESULT) || line.includes(ERROR) || line.includes(IS_ERROR) || line.includes(METHOD)) {
      return false;
    }
    let end = line.length;
    while (end > 0 && (line[end - 1] === 0x0d || line[end - 1] === 0x20 || line[end - 1] === 0x09)) end--;
    if (line[end - 1] !== 0x7d) return false;
    const p = peekOverlong(line.subarray(0, PEEK_BYTES), line.subarray(Math.max(0, end - PEEK_BYTES), end));
    if (p.method !== null || p.idKey === null || p.idKey === this.initializeKey) return false;
    const pending = this.pending.get(p.idKey);
    if (!pending) return p.idKey !== null;
    this.finish(p.idKey, pending, 'success', null);
    return true;
  }

  /** A line from the server. */
  fromServer(line: RpcLine): void {
    for (const m of line.messages) {
      if (m.kind !== 'response' || m.idKey === null) continue;
      if (m.idKey === this.initializeKey) {
        this.initializeKey = null;
        const name = (m.value?.result as { serverInfo?: { name?: unknown } } | undefined)?.serverInfo?.name;
        if (typeof name === 'string' && name.length > 0) this.serverName = name;
        continue;
      }
      const p = this.pending.get(m.idKey);
      if (!p) continue;
      const v = m.value!;
      if ('error' in v) {
        const msg = (v.error as { message?: unknown } | null)?.message;
        this.finish(m.idKey, p, 'rpc_error', typeof msg === 'string' ? clip(msg) : null);
      } else if ((v.result as { isError?: unknown } | null)?.isError === true) {
        this.finish(m.idKey, p, 'error', resultText(v.result));
      } else {
        this.finish(m.idKey, p, 'success', null);
      }
    }
  }

  /**
   * A client message too long to parse (see peekOverlong): a `tools/call` whose id shows is still
   * recorded, without its arguments (`request_args` null; `args_too_long` says why).
   */
  fromClientOverlong(p: OverlongPeek, size: number): void {
    if (p.method !== 'tools/call' || p.idKey === null || p.idText === null) return;
    this.pending.set(p.idKey, {
      startedAt: Date.now(),
      t0: this.now(),
      toolName: p.toolName && p.toolName.length > 0 ? p.toolName : '(no tool name)',
      argsText: null,
      idText: p.idText,
      note: `the request (${size} bytes) was too long to inspect; its arguments are not recorded`,
    });
  }

  /** A server message too long to parse: a response whose id shows closes its call. */
  fromServerOverlong(p: OverlongPeek, size: number): void {
    if (p.method !== null || p.idKey === null) return;
    const pending = this.pending.get(p.idKey);
    if (!pending) return;
    const note = `the response (${size} bytes) was too long to inspect`;
    if (p.rpcError) this.finish(p.idKey, pending, 'rpc_error', note);
    else if (p.isError) this.finish(p.idKey, pending, 'error', note);
    else this.finish(p.idKey, pending, 'success', null);
  }

  /** A `tools/call` that `--fail-closed` answered itself: recorded as `denied`. */
  denied(m: RpcMessage, reason: string): void {
    const params = m.value?.params as Record<string, unknown> | undefined;
    const paramsText = params && typeof params === 'object' ? memberText(m.text, 'params') : undefined;
    const argsText = paramsText !== undefined ? (memberText(paramsText, 'arguments') ?? null) : null;
    const name = params?.name;
    this.onCall({
      startedAt: Date.now(),
      latencyMs: 0,
      toolName: typeof name === 'string' && name.length > 0 ? name : '(no tool name)',
      argsText: argsText === 'null' ? null : argsText,
      idText: m.idText ?? 'null',
      status: 'denied',
      errorMessage: reason,
    });
  }

  /** The server has ended: every call still waiting becomes `no_response`. */
  endAll(reason: string): void {
    for (const [key, p] of [...this.pending]) this.finish(key, p, 'no_response', reason);
  }

  private finish(key: string, p: Pending, status: CallStatus, errorMessage: string | null): void {
    this.pending.delete(key);
    this.onCall({
      startedAt: p.startedAt,
      latencyMs: Math.max(0, Math.round(this.now() - p.t0)),
      toolName: p.toolName,
      argsText: p.argsText,
      idText: p.idText,
      status,
      errorMessage: p.note ? (errorMessage ? `${errorMessage}; ${p.note}` : p.note) : errorMessage,
    });
  }
}
