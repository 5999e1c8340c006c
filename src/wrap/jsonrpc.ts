/**
 * Reading JSON-RPC 2.0 messages off an MCP stdio line without re-serialising anything: the proxy
 * forwards the line's own bytes, and this module only looks at them.
 *
 * A line is one message (an object) or a batch (an array of messages: JSON-RPC 2.0 §6; MCP
 * 2025-03-26 allowed them, 2025-06-18 removed them, older peers still send them). Values that go
 * into an audit entry (`params.arguments`, the id) are taken as their raw JSON text, so numbers
 * keep every digit (CONTRACT.md §3); only the fields that steer correlation are parsed.
 */
import { scanMembers } from '../entry/jsonText.js';

/** One JSON-RPC message of a line, classified. */
export interface RpcMessage {
  kind: 'request' | 'notification' | 'response' | 'invalid';
  /** The id as a key that keeps its type: `n:1` and `s:1` differ (JSON-RPC 2.0 §4). Null: none. */
  idKey: string | null;
  /** The id's raw JSON text (`1`, `"1"`), or null without an id. */
  idText: string | null;
  method: string | null;
  /** The parsed message (objects only). */
  value: Record<string, unknown> | null;
  /** The message's raw JSON text. */
  text: string;
}

/** What {@link readLine} found on a line. */
export interface RpcLine {
  /** True when the line is a JSON array (a batch). */
  batch: boolean;
  messages: RpcMessage[];
}

/** An id's type-keeping key, or null for an absent or null id (and for ids of other types). */
export function idKeyOf(id: unknown): string | null {
  if (typeof id === 'string') return `s:${id}`;
  if (typeof id === 'number' && Number.isFinite(id)) return `n:${id}`;
  return null;
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function skipString(text: string, i: number): number {
  i++;
  for (;;) {
    const q = text.indexOf('"', i);
    let bs = 0;
    for (let j = q - 1; text.charCodeAt(j) === 0x5c; j--) bs++;
    if (bs % 2 === 0) return q + 1;
    i = q + 1;
  }
}

/** Index just past the value starting at `i`, in text `JSON.parse` accepted. */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x22) return skipString(text, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < text.length) {
      const d = text.charCodeAt(i);
      if (d === 0x22) {
        i = skipString(text, i);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    return i;
  }
  while (i < text.length) {
    const d = text.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    i++;
  }
  return i;
}

/** The raw texts of the elements of the top-level array in `text` (already accepted by JSON.parse). */
export function arrayElements(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (isWs(text.charCodeAt(i))) i++;
  i++; // past '['
  for (;;) {
    while (i < text.length && isWs(text.charCodeAt(i))) i++;
    const c = text.charCodeAt(i);
    if (c === 0x5d || i >= text.length) return out;
    const end = skipValue(text, i);
    out.push(text.slice(i, end));
    i = end;
    while (i < text.length && isWs(text.charCodeAt(i))) i++;
    if (text.charCodeAt(i) === 0x2c) i++;
  }
}

/** The raw JSON text of member `key` of the object text `objText`, or undefined. */
export function memberText(objText: string, key: string): string | undefined {
  const b = Buffer.from(objText, 'utf8');
  const scan = scanMembers(b, Number.MAX_SAFE_INTEGER);
  const span = scan.ok ? scan.members.get(key) : undefined;
  return span ? b.toString('utf8', span.start, span.end) : undefined;
}

function classify(value: unknown, text: string): RpcMessage {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { kind: 'invalid', idKey: null, idText: null, method: null, value: null, text };
  }
  const v = value as Record<string, unknown>;
  const method = typeof v.method === 'string' ? v.method : null;
  const hasId = 'id' in v && v.id !== null && v.id !== undefined;
  const idKey = hasId ? idKeyOf(v.id) : null;
  const idText = hasId ? (memberText(text, 'id') ?? null) : null;
  let kind: RpcMessage['kind'];
  if (method !== null) kind = hasId ? 'request' : 'notification';
  else if ('result' in v || 'error' in v) kind = 'response';
  else kind = 'invalid';
  return { kind, idKey, idText, method, value: v, text };
}

/**
 * Reads one line (without its line ending). Returns null when the line is not JSON (it still
 * passes through; it just carries nothing to correlate).
 */
export function readLine(text: string): RpcLine | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (Array.isArray(parsed)) {
    const texts = arrayElements(text);
    return { batch: true, messages: parsed.map((m, i) => classify(m, texts[i] ?? JSON.stringify(m))) };
  }
  return { batch: false, messages: [classify(parsed, text)] };
}

/** What can be told of a message too long to parse, from its ends (see {@link peekOverlong}). */
export interface OverlongPeek {
  idKey: string | null;
  idText: string | null;
  /** The method, when the message starts with its members (a request or a notification). */
  method: string | null;
  /** For a tools/call: the tool name, when it is in the head. */
  toolName: string | null;
  /** A JSON-RPC error response (its `error` member comes first). */
  rpcError: boolean;
  /** A tool result with `isError: true` in its tail. */
  isError: boolean;
}

const ID = String.raw`(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"(?:[^"\\]|\\.)*")`;
const SCALAR_MEMBER = String.raw`\s*"(?:jsonrpc|id)"\s*:\s*(?:"(?:[^"\\]|\\.)*"|-?[\d.eE+-]+)\s*,`;
const HEAD_ID = new RegExp(
  String.raw`^\s*\{(?:\s*"(?:jsonrpc|method)"\s*:\s*"(?:[^"\\]|\\.)*"\s*,)*\s*"id"\s*:\s*${ID}`,
);
const TAIL_ID = new RegExp(String.raw`"id"\s*:\s*${ID}\s*\}\s*\r?$`);
const HEAD_METHOD = new RegExp(String.raw`^\s*\{(?:${SCALAR_MEMBER})*\s*"method"\s*:\s*"((?:[^"\\]|\\.)*)"`);
const HEAD_ERROR = new RegExp(String.raw`^\s*\{(?:${SCALAR_MEMBER})*\s*"error"\s*:`);
const TOOL_NAME = /"params"\s*:\s*\{\s*(?:"_meta"\s*:\s*\{[^{}]*\}\s*,\s*)?"name"\s*:\s*("(?:[^"\\]|\\.)*")/;

/**
 * Reads what it can of a message too long to parse from its first and last bytes: SDKs write the
 * `jsonrpc`, `id` and `method` members first in requests and the `id` last in responses, so the id
 * of most long messages can still be found; when it cannot, the fields are null.
 */
export function peekOverlong(head: Buffer, tail: Buffer): OverlongPeek {
  const h = head.toString('utf8');
  const t = tail.toString('utf8');
  const idText = HEAD_ID.exec(h)?.[1] ?? TAIL_ID.exec(t)?.[1] ?? null;
  let idKey: string | null = null;
  if (idText !== null) {
    try {
      idKey = idKeyOf(JSON.parse(idText));
    } catch {}
  }
  const m = HEAD_METHOD.exec(h)?.[1];
  let method: string | null = null;
  let toolName: string | null = null;
  try {
    method = m !== undefined ? (JSON.parse(`"${m}"`) as string) : null;
    const n = method === 'tools/call' ? TOOL_NAME.exec(h)?.[1] : undefined;
    toolName = n !== undefined ? (JSON.parse(n) as string) : null;
  } catch {}
  return {
    idKey,
    idText: idKey === null ? null : idText,
    method,
    toolName,
    rpcError: HEAD_ERROR.test(h),
    isError: /"isError"\s*:\s*true/.test(t),
  };
}
