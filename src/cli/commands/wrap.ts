/** `audit-gateway wrap [options] -- COMMAND [ARG...]` (CONTRACT.md §11). */
import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { defaultDataDir } from '../../db/embedded.js';
import { DEFAULT_REDACT_KEYS, parseRedactKeys } from '../../entry/parse.js';
import { UsageError } from '../../errors.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../log.js';
import { startWrap } from '../../wrap/proxy.js';
import { AuditSender } from '../../wrap/sender.js';
import { intAtLeast } from '../common.js';
import { onForwardedSignals } from '../signals.js';
import { defaultSocketPath, parseDurationMs } from './serve.js';

interface WrapCliOptions {
  subject?: string;
  role?: string;
  backend?: string;
  socket: string;
  failClosed?: boolean;
  grace: number;
  spoolDir?: string;
  maxSpoolBytes: number;
  redactKeys: string;
  maxMessageBytes: number;
  printConfig?: boolean;
  name?: string;
  logLevel: LogLevel;
  verbose?: boolean;
}

/** The longest grace period before SIGTERM (and before SIGKILL) that `--grace` accepts (§11). */
export const MAX_GRACE_MS = 30_000;

function parseGrace(value: string): number {
  const ms = parseDurationMs(value);
  if (ms > MAX_GRACE_MS) throw new InvalidArgumentError('at most 30s');
  return ms;
}

/** `client_subject` of §11: `--subject`, else AUDIT_GATEWAY_SUBJECT, else the OS user name. */
export function subjectOf(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined) return flag;
  if (env.AUDIT_GATEWAY_SUBJECT !== undefined) return env.AUDIT_GATEWAY_SUBJECT;
  try {
    return userInfo().username;
  } catch {
    return env.USER ?? env.LOGNAME ?? `uid:${process.getuid?.() ?? '?'}`;
  }
}

const LAUNCHERS = new Set([
  'npx',
  'uvx',
  'bunx',
  'pnpx',
  'node',
  'python',
  'python3',
  'uv',
  'deno',
  'bun',
  'docker',
  'pipx',
]);

/** A name for the `mcpServers` entry: the package or script a launcher runs, else the command's name. */
export function serverNameOf(command: string, args: string[]): string {
  let name = basename(command);
  if (LAUNCHERS.has(name)) {
    const target = args.find((a) => !a.startsWith('-') && !['run', 'exec', 'dlx', 'x'].includes(a));
    if (target) name = target;
  }
  name = name
    .replace(/^@[^/]+\//, '')
    .replace(/@[^@/]*$/, '')
    .replace(/\.(m?js|py|ts)$/, '');
  return name.split('/').pop() || 'mcp-server';
}

/**
 * The `mcpServers` snippet of a desktop client's config (Claude Desktop, Cursor, VS Code use this
 * shape) that runs `command args` through wrap with the given wrap flags.
 */
export function printConfig(
  self: string,
  wrapFlags: string[],
  command: string,
  args: string[],
  name: string,
): string {
  const config = {
    mcpServers: { [name]: { command: self, args: ['wrap', ...wrapFlags, '--', command, ...args] } },
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Registers `wrap`. */
export function registerWrap(program: Command): void {
  const env = (name: string) => `AUDIT_GATEWAY_${name}`;
  program
    .command('wrap')
    .description('run an MCP server over stdio and audit every tools/call it answers (through serve)')
    .argument('[command...]', 'the MCP server command and its arguments, after --')
    .option(
      '--subject <subject>',
      'client_subject of the entries (default: $AUDIT_GATEWAY_SUBJECT, else the OS user)',
    )
    .option('--role <role>', 'client_role of the entries (default: null)')
    .option('--backend <name>', "backend_name of the entries (default: the server's serverInfo.name)")
    .addOption(
      new Option('--socket <path>', "serve's Unix socket")
        .env(env('SOCKET'))
        .default(defaultSocketPath(defaultDataDir())),
    )
    .option(
      '--fail-closed',
      'answer a tools/call with a JSON-RPC error instead of forwarding it while serve cannot ack',
    )
    .addOption(
      new Option(
        '--grace <duration>',
        'wait after closing the server stdin before SIGTERM, and after it before SIGKILL (at most 30s)',
      )
        .default(5000, '5s')
        .argParser(parseGrace),
    )
    .addOption(
      new Option('--spool-dir <dir>', 'where entries wait while serve is unreachable')
        .env(env('WRAP_SPOOL_DIR'))
        .default(undefined, '<data dir>/wrap-spool'),
    )
    .addOption(
      new Option('--max-spool-bytes <bytes>', "cap of this run's spool")
        .default(1024 ** 3)
        .argParser(intAtLeast(4096)),
    )
    .addOption(
      new Option(
        '--redact-keys <keys>',
        "request_args keys redacted before an entry is spooled; '' turns it off",
      )
        .env(env('REDACT_KEYS'))
        .default(DEFAULT_REDACT_KEYS.join(',')),
    )
    .addOption(
      new Option(
        '--max-message-bytes <bytes>',
        'longest message inspected (longer ones pass unaudited; refused with --fail-closed)',
      )
        .default(16 * 1024 * 1024)
        .argParser(intAtLeast(1024)),
    )
    .option('--print-config', 'print the client config (mcpServers JSON) that wraps the command, and exit')
    .option('--name <name>', 'the mcpServers key for --print-config (default: from the command)')
    .addOption(
      new Option('--log-level <level>', 'log level of the JSON log lines on stderr')
        .choices(LOG_LEVELS)
        .env(env('LOG_LEVEL'))
        .default('warn'),
    )
    .option('--verbose', 'print stack traces with errors')
    .addHelpText(
      'after',
      `
Every byte passes unchanged both ways; each tools/call becomes one audit entry, sent (acked) to serve
when it ends, or kept in a local spool (fsynced) while serve is unreachable and sent later.
Exit code: the server's (128 + signal when a signal ended it).

Examples:
  $ audit-gateway wrap --subject alice -- npx -y @modelcontextprotocol/server-filesystem /data
  $ audit-gateway wrap --print-config --subject alice -- npx -y @modelcontextprotocol/server-filesystem /data`,
    )
    .action(async (words: string[], opts: WrapCliOptions, cmd: Command) => {
      if (words.length === 0)
        throw new UsageError(
          'wrap: name the MCP server command after --, e.g. wrap -- npx -y @modelcontextprotocol/server-everything',
        );
      const [command, ...args] = words as [string, ...string[]];
      if (opts.printConfig) {
        // Repeat the flags given on the command line or by environment variables (a desktop client
        // starts servers without your shell's environment), and always the socket: the client's
        // environment may not give the default the same value (XDG_RUNTIME_DIR).
        const flags: string[] = [];
        for (const o of [
          'subject',
          'role',
          'backend',
          'socket',
          'spoolDir',
          'redactKeys',
          'grace',
          'maxSpoolBytes',
          'maxMessageBytes',
        ] as const) {
          const source = cmd.getOptionValueSource(o);
          if (source === 'cli' || source === 'env' || o === 'socket') {
            const flag = `--${o.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
            flags.push(
              flag,
              o === 'grace'
                ? `${opts.grace}ms`
                : o === 'socket' || o === 'spoolDir'
                  ? resolve(String(opts[o]))
                  : String(opts[o]),
            );
          }
        }
        if (opts.failClosed) flags.push('--fail-closed');
        const self = resolve(process.argv[1] ?? 'audit-gateway');
        process.stdout.write(
          printConfig(self, flags, command, args, opts.name ?? serverNameOf(command, args)),
        );
        return;
      }
      const log = createLogger(opts.logLevel);
      const session = randomUUID();
      const sender = new AuditSender({
        socket: opts.socket,
        spoolRoot: opts.spoolDir ?? join(defaultDataDir(), 'wrap-spool'),
        session,
        redactKeys: parseRedactKeys(opts.redactKeys),
        maxSpoolBytes: opts.maxSpoolBytes,
        log,
      });
      // --fail-closed needs to know whether serve answers before the first call.
      if (opts.failClosed) await sender.ready();
      let run: Awaited<ReturnType<typeof startWrap>>;
      try {
        run = await startWrap({
          command,
          args,
          session: {
            session,
            subject: subjectOf(opts.subject),
            role: opts.role ?? null,
            backend: opts.backend ?? null,
          },
          sink: sender,
          failClosed: opts.failClosed === true,
          graceMs: opts.grace,
          maxMessageBytes: opts.maxMessageBytes,
          log,
        });
      } catch (err) {
        await sender.close(0);
        throw err;
      }
      // Signals sent to wrap go on to the server; wrap ends when the server does.
      const detach = onForwardedSignals((sig) => run.signal(sig));
      const code = await run.exited;
      const counts = await sender.close(1500);
      detach();
      log.info({ session, ...counts, exitCode: code }, 'wrap: the server ended');
      // The exit code is the server's (§11), 128 + signal included, which runCli's 0/1/2 cannot
      // carry: exit here, once what the server wrote has reached our stdout.
      await new Promise<void>((r) => process.stdout.write('', () => r()));
      process.exit(code);
    });
}
