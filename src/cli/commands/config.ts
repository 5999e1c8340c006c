/**
 * `audit-gateway config [COMMAND]`: the settings each command would run with, and where each came
 * from (flag, environment variable, configuration file and table, default), secrets masked
 * (docs/configuration.md).
 */
import type { Command, Option } from 'commander';
import { maskUrl } from '../../db/databaseUrl.js';
import { readServedDatabase } from '../../db/servedDatabase.js';
import { UsageError } from '../../errors.js';
import {
  type ConfigFile,
  configCandidates,
  configKey,
  configValue,
  convertConfigValue,
  loadConfigFile,
  SECONDARY_ENV,
  validateConfig,
} from '../config.js';
import { writeOut } from '../output.js';
import { choiceOption } from '../readOptions.js';

/** One resolved setting. */
export interface ResolvedSetting {
  command: string;
  flag: string;
  /** The value as it would run (secrets masked); null when unset. */
  value: unknown;
  /** `default`, `env NAME`, `config FILE [table]`, or `unset`. */
  source: string;
}

const SECRET_KEY = /password|secret|token|passphrase/i;

/** The value shown for a setting: passwords in URLs and secret-named keys masked. */
export function maskSetting(key: string, value: unknown): unknown {
  if (typeof value === 'string' && /url$/i.test(key)) return maskUrl(value);
  if (SECRET_KEY.test(key) && value !== undefined && value !== null && value !== '') return '****';
  return value;
}

function commandName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Resolves one option as {@link applyConfig} and commander would, without a command line. */
function resolveOption(
  cmd: Command,
  option: Option,
  file: ConfigFile | undefined,
  env: NodeJS.ProcessEnv,
): ResolvedSetting {
  const key = configKey(option)!;
  const base = { command: commandName(cmd), flag: `--${key}` };
  const parse = (text: string) => (option.parseArg ? option.parseArg(text, undefined as never) : text);
  for (const name of [option.envVar, SECONDARY_ENV[key]]) {
    if (name && env[name] !== undefined && env[name] !== '') {
      let value: unknown = env[name];
      try {
        value = option.negate ? false : option.required || option.optional ? parse(env[name]!) : true;
      } catch (err) {
        throw new UsageError(`${name}: '${env[name]}' is invalid for --${key}: ${(err as Error).message}`);
      }
      return { ...base, value: maskSetting(key, value), source: `env ${name}` };
    }
  }
  const found = file ? configValue(file, cmd, key) : undefined;
  if (file && found) {
    const value = convertConfigValue(option, found.value, file, found.table);
    return {
      ...base,
      value: maskSetting(key, value),
      source: `config ${file.path}${found.table ? ` ${found.table}` : ''}`,
    };
  }
  if (option.defaultValue !== undefined) {
    return { ...base, value: maskSetting(key, option.defaultValue), source: 'default' };
  }
  return { ...base, value: option.negate ? true : null, source: option.negate ? 'default' : 'unset' };
}

/** Every setting of every command (or of `only`), resolved. */
export function resolveSettings(
  program: Command,
  file: ConfigFile | undefined,
  only?: Command,
  env: NodeJS.ProcessEnv = process.env,
): ResolvedSetting[] {
  const cmds = only ? [only] : program.commands.filter((c) => c.name() !== 'config' && c.name() !== 'help');
  const out: ResolvedSetting[] = [];
  const walk = (c: Command) => {
    for (const o of c.options)
      if (configKey(o) !== undefined && !o.hidden) out.push(resolveOption(c, o, file, env));
    for (const sub of c.commands) walk(sub);
  };
  for (const c of cmds) walk(c);
  return out;
}

function show(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** Which database the read commands would read, and why (CONTRACT.md §2, db/servedDatabase.ts). */
async function databaseLine(settings: ResolvedSetting[]): Promise<string> {
  const of = (flag: string) => settings.find((s) => s.command === 'search' && s.flag === flag);
  const url = of('--database-url');
  if (url && url.value !== null && url.value !== '') return `${String(url.value)} (${url.source})`;
  const dataDir = String(of('--data-dir')?.value ?? '');
  const served = dataDir ? await readServedDatabase(dataDir) : undefined;
  if (served) return `${maskUrl(served.url)} (the running serve, pid ${served.pid})`;
  return `the embedded Postgres in ${dataDir}`;
}

/** Registers `config`. */
export function registerConfig(program: Command): void {
  program
    .command('config')
    .description('print the settings each command runs with and where each came from (secrets masked)')
    .argument('[command]', 'only this command (e.g. serve, search)')
    .option('--output <format>', 'text or json', 'text')
    .addHelpText(
      'after',
      `
The file: --config FILE (or AUDIT_GATEWAY_CONFIG), else $XDG_CONFIG_HOME/audit-gateway/config.toml
(~/.config/… without XDG_CONFIG_HOME), else /etc/audit-gateway/config.toml. Keys are the long flag
names without --, at the top level (every command) or in a table named after a command ([serve]).
Precedence: flag > environment variable > file > default. See docs/configuration.md.

Examples:
  $ audit-gateway config                 # every command's settings and their sources
  $ audit-gateway config serve --output json`,
    )
    .action(async (name: string | undefined, opts: { output: string }, cmd: Command) => {
      const output = choiceOption('--output', opts.output, ['text', 'json'] as const);
      const root = cmd.parent!;
      const only = name === undefined ? undefined : root.commands.find((c) => c.name() === name);
      if (name !== undefined && (only === undefined || name === 'config')) {
        throw new UsageError(
          `config: unknown command '${name}' (expected one of ${root.commands
            .map((c) => c.name())
            .filter((n) => n !== 'config')
            .join(', ')})`,
        );
      }
      const file = loadConfigFile(root.opts().config as string | undefined);
      if (file !== undefined) validateConfig(file, root);
      const settings = resolveSettings(root, file, only);
      const search = root.commands.find((c) => c.name() === 'search');
      const database = await databaseLine(search ? resolveSettings(root, file, search) : settings);
      if (output === 'json') {
        const config_file = file ? { path: file.path, chosen_by: file.chosenBy } : null;
        await writeOut(`${JSON.stringify({ config_file, database, settings }, null, 2)}\n`);
        return;
      }
      let text = file
        ? `config file: ${file.path} (chosen by ${file.chosenBy})\n`
        : `config file: none (looked for ${configCandidates()
            .map((c) => c.path)
            .join(', ')})\n`;
      text += `database (read commands): ${database}\n`;
      let current = '';
      const flagW = Math.max(...settings.map((s) => s.flag.length));
      const valueW = Math.min(60, Math.max(...settings.map((s) => show(s.value).length)));
      for (const s of settings) {
        if (s.command !== current) {
          current = s.command;
          text += `\n${current}\n`;
        }
        text += `  ${s.flag.padEnd(flagW)}  ${show(s.value).padEnd(valueW)}  ${s.source}\n`;
      }
      await writeOut(text);
    });
}
