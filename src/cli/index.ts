/**
 * The commander layer: builds the program, runs it, and maps every outcome to the exit codes and
 * one-line errors of CONTRACT.md §7 (stack traces only with --verbose).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { AuditGatewayError, EXIT, messageOf, sqlState } from '../errors.js';
import { registerCompletion } from './commands/completion.js';
import { registerConfig } from './commands/config.js';
import { registerExport } from './commands/export.js';
import { registerMigrate } from './commands/migrate.js';
import { registerRejects } from './commands/rejects.js';
import { registerReplay } from './commands/replay.js';
import { registerRetention } from './commands/retention.js';
import { registerSearch } from './commands/search.js';
import { registerServe } from './commands/serve.js';
import { registerStats } from './commands/stats.js';
import { registerTail } from './commands/tail.js';
import { registerVerify } from './commands/verify.js';
import { registerWrap } from './commands/wrap.js';
import { applyConfig, type ConfigFile, loadConfigFile, validateConfig } from './config.js';
import { guardStdout } from './output.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** The command being run and the configuration file applied to it (for error messages). */
let configured: { action: Command; file: ConfigFile | undefined } | undefined;

/**
 * A usage error about a flag whose value came from the configuration file names the file too: the
 * user did not type that value (e.g. `--limit: '-1' is not … (set in config file F)`).
 */
function withConfigSource(message: string): string {
  const flag = /^(--[a-z][a-z0-9-]*):/.exec(message)?.[1];
  if (!flag || !configured?.file) return message;
  const option = configured.action.options.find((o) => o.long === flag);
  if (!option || configured.action.getOptionValueSource(option.attributeName()) !== 'config') return message;
  return `${message} (set in config file ${configured.file.path})`;
}

/** The program with every command registered. */
export function buildProgram(): Command {
  const program = new Command('audit-gateway')
    .description(
      'The audit sink of a tool-call (MCP) gateway: a writer daemon and admin commands over Postgres',
    )
    .version(version())
    .option(
      '--config <file>',
      'configuration file (TOML; env AUDIT_GATEWAY_CONFIG; default $XDG_CONFIG_HOME/audit-gateway/config.toml, then /etc/audit-gateway/config.toml)',
    )
    .exitOverride()
    // Usage errors stay one line (CONTRACT.md §7), with the way to more help.
    .configureOutput({
      outputError: (str, write) =>
        write(`audit-gateway: ${str.trim().replace(/\s*\n\s*/g, ' ')} (see --help)\n`),
    });
  registerServe(program);
  registerMigrate(program);
  registerTail(program);
  registerSearch(program);
  registerExport(program);
  registerStats(program);
  registerReplay(program);
  registerRejects(program);
  registerConfig(program);
  registerCompletion(program, version());
  registerVerify(program);
  registerRetention(program);
  registerWrap(program);
  for (const cmd of program.commands) cmd.exitOverride();
  // The configuration file fills every option left at its default, for every command (cli/config.ts).
  program.hook('preAction', (root, action) => {
    if (action.name() === 'config') return;
    const file = loadConfigFile(root.opts().config as string | undefined);
    if (file !== undefined) validateConfig(file, root);
    applyConfig(action, file);
    configured = { action, file };
  });
  return program;
}

/**
 * Runs the CLI and resolves to the exit code; never throws.
 * @param argv `process.argv`
 */
export async function runCli(argv: string[]): Promise<number> {
  // Help or output into a pipe that closes early (`| head`) ends quietly, for every command.
  guardStdout();
  const program = buildProgram();
  const verbose = argv.includes('--verbose');
  try {
    await program.parseAsync(argv);
    return EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version end "with an error" of exit code 0
      if (err.exitCode === 0) return EXIT.OK;
      return EXIT.USAGE;
    }
    if (err instanceof AuditGatewayError) {
      const message = err.exitCode === EXIT.USAGE ? withConfigSource(err.message) : err.message;
      if (message !== '') process.stderr.write(`audit-gateway: ${message}\n`);
      if (verbose && err.stack) process.stderr.write(`${err.stack}\n`);
      return err.exitCode;
    }
    // undefined_table (PostgreSQL docs, Appendix A): a database nobody migrated.
    const fix =
      sqlState(err) === '42P01'
        ? ': this database has no audit-gateway schema; run `audit-gateway migrate` first (with the same --database-url or --data-dir)'
        : '';
    process.stderr.write(`audit-gateway: ${messageOf(err)}${fix}\n`);
    if (verbose && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    return EXIT.FAILED;
  }
}
