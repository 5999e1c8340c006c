/**
 * End to end with real MCP software from the npm registry (CONTRACT.md §11): the official
 * TypeScript SDK's Client over StdioClientTransport spawns `audit-gateway wrap -- <server>` for
 * @modelcontextprotocol/server-everything and @modelcontextprotocol/server-filesystem; every result
 * is compared with a direct run of the same server, and the entries are read back from Postgres
 * through a real `serve`. Server-to-client requests are real too: sampling (server-everything) and
 * roots/list (server-filesystem).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CreateMessageRequestSchema, ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  BIN,
  cleanEnv,
  cleanupServes,
  type ServeProcess,
  startServe,
  tempDir,
  waitFor,
} from '../helpers/serve.js';
import { EVERYTHING, FILESYSTEM, WRAP_ROWS_SQL, type WrapRow } from '../helpers/wrap.js';

let db: TestDatabase;
let serve: ServeProcess;

beforeAll(async () => {
  db = await createTestDatabase('e2e_wrap_real');
  serve = await startServe({ databaseUrl: db.url });
});

afterAll(async () => {
  if (serve?.alive) await serve.stop();
  await cleanupServes();
  await db?.drop();
});

interface Session {
  client: Client;
  close(): Promise<void>;
}

/** A connected SDK client, to the server directly or through wrap. */
async function connect(server: string[], wrapArgs: string[] | null, roots?: string): Promise<Session> {
  const [command, args] =
    wrapArgs === null
      ? [process.execPath, server]
      : [process.execPath, [BIN, 'wrap', ...wrapArgs, '--', process.execPath, ...server]];
  const transport = new StdioClientTransport({
    command,
    args,
    env: cleanEnv() as Record<string, string>,
    stderr: 'ignore',
  });
  const client = new Client(
    { name: 'wrap-e2e', version: '1.2.3' },
    { capabilities: { sampling: {}, ...(roots ? { roots: {} } : {}) } },
  );
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
    model: 'test-model',
    role: 'assistant',
    content: { type: 'text', text: `sampled ${req.params.maxTokens}` },
  }));
  if (roots) {
    client.setRequestHandler(ListRootsRequestSchema, async () => ({
      roots: [{ uri: pathToFileURL(roots).href, name: 'data' }],
    }));
  }
  await client.connect(transport);
  return { client, close: () => client.close() };
}

/** The outcome of a call as a comparable value: the result, or the thrown error's code and message. */
async function outcome(s: Session, name: string, args: Record<string, unknown>): Promise<unknown> {
  try {
    return { result: await s.client.callTool({ name, arguments: args }) };
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    return { error: { code: e.code, message: e.message } };
  }
}

async function waitRows(subj: string, n: number): Promise<WrapRow[]> {
  return waitFor(
    async () => {
      const r = (await db.query<WrapRow>(WRAP_ROWS_SQL, [subj])).rows;
      return r.length >= n ? r : false;
    },
    `${n} entries of ${subj}`,
    20_000,
  );
}

/** Runs the same calls directly and through wrap; returns both outcome lists and the stored rows. */
async function compare(
  server: string[],
  calls: [string, Record<string, unknown>][],
  roots?: string,
): Promise<{ direct: unknown[]; wrapped: unknown[]; rows: WrapRow[]; subj: string }> {
  const subj = `real-${randomBytes(4).toString('hex')}`;
  const spool = await tempDir('ag-wrap-real-');
  const direct = await connect(server, null, roots);
  const wrapped = await connect(
    server,
    ['--subject', subj, '--socket', serve.socket, '--spool-dir', spool],
    roots,
  );
  try {
    expect((await wrapped.client.listTools()).tools).toEqual((await direct.client.listTools()).tools);
    expect(wrapped.client.getServerVersion()).toEqual(direct.client.getServerVersion());
    const d: unknown[] = [];
    const w: unknown[] = [];
    for (const [name, args] of calls) {
      d.push(await outcome(direct, name, args));
      w.push(await outcome(wrapped, name, args));
    }
    return { direct: d, wrapped: w, rows: await waitRows(subj, calls.length), subj };
  } finally {
    await direct.close();
    await wrapped.close();
  }
}

/** The response_status an outcome must be stored with (§11). */
function statusOf(o: unknown): string {
  const r = o as { result?: { isError?: boolean }; error?: unknown };
  if (r.error) return 'rpc_error';
  return r.result?.isError === true ? 'error' : 'success';
}

describe('wrap around @modelcontextprotocol/server-everything', () => {
  it('gives the SDK client the same results as a direct run, and stores one entry per tools/call', async () => {
    const calls: [string, Record<string, unknown>][] = [
      ['echo', { message: 'héllo "quoted"\n\t\u2028 ✓' }],
      ['get-sum', { a: 12345678901, b: 0.25 }],
      ['get-tiny-image', {}],
      ['get-structured-content', { location: 'New York' }],
      ['trigger-sampling-request', { prompt: 'say hi', maxTokens: 7 }],
      ['trigger-long-running-operation', { duration: 0.2, steps: 2 }],
      ['echo', {}],
      ['no-such-tool', { x: 1 }],
    ];
    const { direct, wrapped, rows } = await compare([EVERYTHING], calls);
    expect(wrapped).toEqual(direct);
    expect(JSON.stringify(wrapped[4])).toContain('sampled 7');
    expect(rows).toHaveLength(calls.length);
    rows.forEach((row, i) => {
      expect(row.tool_name).toBe(calls[i]![0]);
      expect(row.request_args).toEqual(calls[i]![1]);
      expect(row.response_status).toBe(statusOf(direct[i]));
      expect(row.backend_name).toBe('mcp-servers/everything');
      expect(row.client_role).toBeNull();
      expect(row.extra.mcp_client).toEqual({ name: 'wrap-e2e', version: '1.2.3' });
      expect(Number(row.latency_ms)).toBeGreaterThanOrEqual(0);
    });
    // The SDK server reports bad arguments and unknown tools as tool failures (isError results).
    expect(rows.slice(0, 6).map((r) => r.response_status)).toEqual(Array(6).fill('success'));
    expect(rows[6]!.response_status).toBe('error');
    expect(rows[6]!.error_message).toContain('Input validation error');
    expect(rows[7]!.error_message).toContain('no-such-tool');
    expect(new Set(rows.map((r) => r.extra.mcp_session)).size).toBe(1);
    expect(new Set(rows.map((r) => JSON.stringify(r.extra.jsonrpc_id))).size).toBe(calls.length);
  });
});

describe('wrap around @modelcontextprotocol/server-filesystem', () => {
  it('gives the same results as a direct run (roots/list from the server included) and stores the errors', async () => {
    const dir = await tempDir('ag-wrap-fs-');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'a.txt'), 'alpha\nβeta\n');
    writeFileSync(join(dir, 'sub', 'b.json'), '{"n": 1}\n');
    const calls: [string, Record<string, unknown>][] = [
      ['list_allowed_directories', {}],
      ['list_directory', { path: dir }],
      ['read_text_file', { path: join(dir, 'a.txt') }],
      ['read_text_file', { path: join(dir, 'a.txt'), head: 1 }],
      ['search_files', { path: dir, pattern: '*.json' }],
      ['read_text_file', { path: join(dir, 'missing.txt') }],
      ['read_text_file', { path: '/etc/passwd' }],
    ];
    const { direct, wrapped, rows } = await compare([FILESYSTEM, dir], calls, dir);
    expect(wrapped).toEqual(direct);
    expect(JSON.stringify(wrapped[2])).toContain('βeta');
    expect(rows).toHaveLength(calls.length);
    rows.forEach((row, i) => {
      expect(row.tool_name).toBe(calls[i]![0]);
      expect(row.request_args).toEqual(calls[i]![1]);
      expect(row.response_status).toBe(statusOf(direct[i]));
      expect(row.backend_name).toBe('secure-filesystem-server');
    });
    expect(rows[5]!.response_status).toBe('error');
    expect(rows[5]!.error_message).toMatch(/missing\.txt|ENOENT|no such file/i);
    expect(rows[6]!.response_status).toBe('error');
  });
});
