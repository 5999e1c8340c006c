/**
 * A finished call → its audit entry, as a wire line of CONTRACT.md §3 with the fields §11 lists,
 * and back: a spooled COPY line → the wire line to send to `serve` once it is reachable again.
 */
import { randomUUID } from 'node:crypto';
import { decodeCopyRow } from '../entry/copyDecode.js';
import { ENTRY_COLUMNS } from '../entry/parse.js';
import type { CallRecord } from './correlate.js';

/** What every entry of one wrap run shares (§11). */
export interface SessionInfo {
  /** `mcp_session`: one UUID per wrap run. */
  session: string;
  /** `client_subject`: `--subject`, else `AUDIT_GATEWAY_SUBJECT`, else the OS user name. */
  subject: string;
  /** `client_role` from `--role`, or null. */
  role: string | null;
  /** `backend_name` from `--backend`; null: the server's `serverInfo.name`. */
  backend: string | null;
}

/** What the session has learned from the `initialize` exchange. */
export interface Learned {
  serverName: string | null;
  /** The raw JSON text of the client's `clientInfo`, or null. */
  clientInfoText: string | null;
}

const str = (s: string | null): string => (s === null ? 'null' : JSON.stringify(s));

/**
 * The wire line (newline included) of one call's entry. Raw JSON texts (`request_args`, the id,
 * `clientInfo`) are put in as they came, so numbers keep every digit (§3).
 */
export function entryLine(call: CallRecord, session: SessionInfo, learned: Learned): string {
  return `{"request_id":"${randomUUID()}","timestamp":"${new Date(call.startedAt).toISOString()}","client_subject":${JSON.stringify(session.subject)},"client_role":${str(session.role)},"tool_name":${JSON.stringify(call.toolName)},"backend_name":${str(session.backend ?? learned.serverName)},"request_args":${call.argsText ?? 'null'},"response_status":"${call.status}","error_message":${str(call.errorMessage)},"latency_ms":${call.latencyMs},"mcp_session":"${session.session}","jsonrpc_id":${call.idText},"mcp_client":${learned.clientInfoText ?? 'null'}}\n`;
}

/**
 * The wire line (newline included) that stands for a spooled entry's COPY line (columns in
 * ENTRY_COLUMNS order; `request_args` and `extra` are JSON texts, `latency_ms` digits).
 */
export function wireFromCopy(copy: Buffer): string {
  const end = copy.length > 0 && copy[copy.length - 1] === 0x0a ? copy.length - 1 : copy.length;
  const cols = decodeCopyRow(copy.subarray(0, end));
  const parts: string[] = [];
  ENTRY_COLUMNS.forEach((name, i) => {
    const v = cols[i] ?? null;
    if (name === 'extra') {
      const inner = v?.trim().slice(1, -1).trim();
      if (inner) parts.push(inner);
    } else if (name === 'request_args' || name === 'latency_ms') {
      parts.push(`"${name}":${v ?? 'null'}`);
    } else {
      parts.push(`"${name}":${str(v)}`);
    }
  });
  return `{${parts.join(',')}}\n`;
}
