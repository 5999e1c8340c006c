/**
 * The configuration file, applied to every command in one place (docs/configuration.md).
 *
 * Where: `--config FILE` (or env `AUDIT_GATEWAY_CONFIG`), else `$XDG_CONFIG_HOME/audit-gateway/
 * config.toml` (`~/.config/…` when XDG_CONFIG_HOME is unset), else `/etc/audit-gateway/config.toml`;
 * the first that exists is read (TOML, smol-toml), a named one must exist.
 *
 * What: keys are the long flag names without `--` (`database-url`, `data-dir`, `socket`,
 * `no-color`); top-level keys apply to every command that has the flag, a table named after a
 * command (`[serve]`, `[search]`, `[migrate]`) applies to that command and overrides the top level.
 * A key that no command has (a typo) is a usage error naming the file and the key.
 *
 * Precedence: flag > environment variable > file > default. It is generic: a commander `preAction`
 * hook fills each option whose value came from its default (or has none) from the file, through
 * the option's own parser and choices, with the value source `config`; so a command added later,
 * or a flag added to `serve`, is configurable without any change here.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, type Option } from 'commander';
import { parse as parseToml } from 'smol-toml';
import { UsageError } from '../errors.js';

/** A value of a TOML key that maps to a flag. */
type TomlValue = string | number | boolean | TomlValue[] | { [k: string]: TomlValue };

/** The loaded file: its path, why that path, and its tables. */
export interface ConfigFile {
  path: string;
  /** How the path was chosen: `--config`, `AUDIT_GATEWAY_CONFIG`, `$XDG_CONFIG_HOME`, `/etc`. */
  chosenBy: string;
  data: Record<string, TomlValue>;
}

/** The places searched when no file is named, in order, with how each was chosen. */
export function configCandidates(env: NodeJS.ProcessEnv = process.env): { path: string; chosenBy: string }[] {
  const xdg = env.XDG_CONFIG_HOME;
  return [
    xdg
      ? { path: join(xdg, 'audit-gateway', 'config.toml'), chosenBy: '$XDG_CONFIG_HOME' }
      : { path: join(homedir(), '.config', 'audit-gateway', 'config.toml'), chosenBy: '~/.config' },
    { path: '/etc/audit-gateway/config.toml', chosenBy: '/etc' },
  ];
}

/**
 * Finds and parses the configuration file.
 * @param named the `--config` value, if any
 * @returns undefined when none is named and none of the default places has one
 * @throws {UsageError} for a named file that is missing, unreadable TOML, or not a table (exit 2)
 */
export function loadConfigFile(
  named: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ConfigFile | undefined {
  let path: string;
  let chosenBy: string;
  if (named !== undefined && named !== '') {
    path = named;
    chosenBy = '--config';
  } else if (env.AUDIT_GATEWAY_CONFIG) {
    path = env.AUDIT_GATEWAY_CONFIG;
    chosenBy = 'AUDIT_GATEWAY_CONFIG';
  } else {
    const found = configCandidates(env).find((c) => existsSync(c.path));
    if (!found) return undefined;
    ({ path, chosenBy } = found);
  }
  let text: string;
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
    if (!st.isFile()) throw new Error('not a regular file');
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const why = (err as { code?: string }).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new UsageError(`config file ${path} (${chosenBy}): cannot read it: ${why}`);
  }
  // As ssh does with its config: a file that another user can change could point every command at
  // a database of theirs, so it is refused (the file names the database the audit trail goes to).
  const uid = process.getuid?.();
  if (uid !== undefined && ((st.mode & 0o022) !== 0 || (st.uid !== uid && st.uid !== 0))) {
    throw new UsageError(
      `config file ${path}: other users can change it (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}); run chmod go-w ${path}, owned by you or root`,
    );
  }
  let data: Record<string, TomlValue>;
  try {
    data = parseToml(text) as Record<string, TomlValue>;
  } catch (err) {
    const first = String((err as Error).message).split('\n')[0];
    throw new UsageError(`config file ${path}: not valid TOML: ${first}`);
  }
  return { path, chosenBy, data };
}

/** Options that never come from the file. */
const NOT_CONFIGURABLE = new Set(['config', 'help', 'version']);

/** The key of an option in the file: its long flag without `--` (`no-color` for `--no-color`). */
export function configKey(option: Option): string | undefined {
  const key = option.long?.replace(/^--/, '');
  return key === undefined || NOT_CONFIGURABLE.has(key) ? undefined : key;
}

/** A command's path below the program (`['migrate']`, `['serve']`). */
function commandPath(cmd: Command): string[] {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names;
}

/** Every command below `root` (depth first). */
function allCommands(root: Command): Command[] {
  return root.commands.flatMap((c) => [c, ...allCommands(c)]);
}

function isTable(v: TomlValue | undefined): v is { [k: string]: TomlValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks every key of the file against the program's commands and flags.
 * @throws {UsageError} naming the file, the table and the key that no command has
 */
export function validateConfig(file: ConfigFile, program: Command): void {
  const commands = allCommands(program);
  const flagsOf = (cmds: Command[]) =>
    new Set(cmds.flatMap((c) => c.options.map(configKey).filter((k): k is string => k !== undefined)));
  const everyFlag = flagsOf(commands);
  const check = (table: Record<string, TomlValue>, cmds: Command[], where: string) => {
    const flags = flagsOf(cmds);
    for (const [key, value] of Object.entries(table)) {
      const sub = cmds.length === 1 ? cmds[0]!.commands.find((c) => c.name() === key) : undefined;
      const top = where === '' ? commands.find((c) => c.parent === program && c.name() === key) : undefined;
      const cmd = sub ?? top;
      if (cmd && isTable(value)) {
        check(value, [cmd], `${where}[${commandPath(cmd).join('.')}] `);
        continue;
      }
      if (isTable(value)) {
        throw new UsageError(
          `config file ${file.path}: ${where}[${key}] is a table, but no command is named ${key}`,
        );
      }
      if (!flags.has(key)) {
        const hint = everyFlag.has(key) ? ` (that flag belongs to other commands)` : '';
        throw new UsageError(
          `config file ${file.path}: ${where}unknown key '${key}'${hint}; keys are long flag names without --, e.g. database-url`,
        );
      }
    }
  };
  check(file.data, commands, '');
}

/** The file's value for `key` as the command sees it: its most specific table wins. */
export function configValue(
  file: ConfigFile,
  cmd: Command,
  key: string,
): { value: TomlValue; table: string } | undefined {
  let found: { value: TomlValue; table: string } | undefined;
  if (file.data[key] !== undefined && !isTable(file.data[key])) found = { value: file.data[key]!, table: '' };
  let table: TomlValue | undefined = file.data;
  const path = commandPath(cmd);
  for (let i = 0; i < path.length; i++) {
    table = isTable(table) ? table[path[i]!] : undefined;
    if (!isTable(table)) break;
    const v: TomlValue | undefined = table[key];
    if (v !== undefined && !isTable(v)) found = { value: v, table: `[${path.slice(0, i + 1).join('.')}]` };
  }
  return found;
}

/**
 * The value of a file setting, converted as the flag would be: through the option's parser and
 * choices, booleans for switches (`--no-x` with `true` sets x to false), arrays for repeatable ones.
 * @throws {UsageError} naming the file, the key and what it expects
 */
export function convertConfigValue(option: Option, raw: TomlValue, file: ConfigFile, table: string): unknown {
  const where = `config file ${file.path}: ${table ? `${table} ` : ''}${configKey(option)}`;
  const takesValue = option.required || option.optional;
  if (!takesValue) {
    if (typeof raw !== 'boolean')
      throw new UsageError(`${where}: expected true or false, got ${JSON.stringify(raw)}`);
    return option.negate ? !raw : raw;
  }
  const values = Array.isArray(raw) ? raw : [raw];
  let result: unknown;
  for (const v of values) {
    if (typeof v === 'object') throw new UsageError(`${where}: expected a string or number, got a table`);
    const text = String(v);
    try {
      result = option.parseArg ? option.parseArg(text, result as never) : text;
    } catch (err) {
      const why = err instanceof InvalidArgumentError ? err.message : String((err as Error).message);
      throw new UsageError(`${where}: '${text}' is invalid: ${why}`);
    }
    if (option.argChoices && !option.argChoices.includes(text)) {
      throw new UsageError(`${where}: '${text}' is not one of ${option.argChoices.join(', ')}`);
    }
  }
  return result;
}

/**
 * Environment variables read after an option's own `.env()` and before the file (CONTRACT.md §2:
 * DATABASE_URL after AUDIT_GATEWAY_DATABASE_URL).
 */
export const SECONDARY_ENV: Readonly<Record<string, string>> = { 'database-url': 'DATABASE_URL' };

/**
 * Fills the options of `cmd` that hold their default (or nothing) from the secondary environment
 * variables, then from the file, with the value source `env` / `config`.
 * @throws {UsageError} for a bad value (exit 2)
 */
export function applyConfig(
  cmd: Command,
  file: ConfigFile | undefined,
  env: NodeJS.ProcessEnv = process.env,
): void {
  for (const option of cmd.options) {
    const key = configKey(option);
    if (key === undefined) continue;
    const attr = option.attributeName();
    const source = cmd.getOptionValueSource(attr);
    if (source !== undefined && source !== 'default') continue;
    const secondary = SECONDARY_ENV[key];
    if (secondary !== undefined && env[secondary]) {
      let value: unknown = env[secondary];
      try {
        value = option.parseArg ? option.parseArg(env[secondary]!, undefined as never) : value;
      } catch (err) {
        throw new UsageError(
          `${secondary}: '${env[secondary]}' is invalid for --${key}: ${(err as Error).message}`,
        );
      }
      cmd.setOptionValueWithSource(attr, value, 'env');
      continue;
    }
    if (file === undefined) continue;
    const found = configValue(file, cmd, key);
    if (found === undefined) continue;
    cmd.setOptionValueWithSource(attr, convertConfigValue(option, found.value, file, found.table), 'config');
  }
}
