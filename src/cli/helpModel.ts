/**
 * The program's commands and flags as data, read from commander itself, so that shell completion
 * and the man page are generated from the same definitions (and help texts) as `--help`.
 */
import type { Command, Help, Option } from 'commander';

/** One flag of a command. */
export interface FlagModel {
  long: string;
  short?: string | undefined;
  /** The value's name (`<path>`), or undefined for a switch. */
  value?: string | undefined;
  /** Allowed values, when commander knows them. */
  choices?: readonly string[] | undefined;
  description: string;
  /** The environment variable commander reads for it. */
  env?: string | undefined;
  /** The default as `--help` shows it. */
  default?: string | undefined;
}

/** One command: name, arguments, summary, flags and the text `--help` prints after the flags. */
export interface CommandModel {
  name: string;
  usage: string;
  description: string;
  flags: FlagModel[];
  /** The `addHelpText('after', …)` text (examples, notes). */
  after: string;
}

/**
 * Values of flags whose allowed values are checked in the action (so commander does not know
 * them): completion offers them too. Keyed by `command --flag`.
 */
const KNOWN_VALUES: Record<string, readonly string[]> = {
  'tail --output': ['text', 'json'],
  'search --output': ['table', 'vertical', 'json', 'ndjson', 'csv'],
  'search --order': ['desc', 'asc'],
  'export --format': ['ndjson', 'csv'],
  'stats --by': ['tool', 'subject', 'backend', 'status', 'role'],
  'stats --sort': ['count', 'errors', 'error_rate', 'p50', 'p95', 'p99'],
  'stats --output': ['table', 'vertical', 'json'],
  'rejects --output': ['table', 'vertical', 'json', 'ndjson'],
  'config --output': ['text', 'json'],
};

function flagModel(cmd: string, o: Option): FlagModel | undefined {
  if (!o.long || o.hidden) return undefined;
  const value = o.flags.match(/[<[][^>\]]+[>\]]/)?.[0];
  return {
    long: o.long,
    short: o.short,
    value,
    choices: o.argChoices ?? KNOWN_VALUES[`${cmd} ${o.long}`],
    description: o.description,
    env: o.envVar,
    default:
      o.defaultValueDescription ??
      (o.defaultValue === undefined || o.negate ? undefined : JSON.stringify(o.defaultValue)),
  };
}

/** The help text added after the options (commander keeps it in its `afterHelp` listeners). */
function afterText(cmd: Command): string {
  let text = '';
  const ctx = { error: false, command: cmd, write: (s: string) => (text += s) };
  // commander emits 'afterHelp' with a context whose write() collects the text
  (cmd as unknown as NodeJS.EventEmitter).emit('afterHelp', ctx);
  return text.replace(/^\n+/, '').trimEnd();
}

/** The model of every command of `program` (help and the hidden ones left out). */
export function programModel(program: Command): {
  name: string;
  description: string;
  global: FlagModel[];
  commands: CommandModel[];
} {
  const help: Help = program.createHelp();
  const commands = program.commands
    .filter((c) => c.name() !== 'help' && !(c as unknown as { _hidden?: boolean })._hidden)
    .map((c) => ({
      name: c.name(),
      usage: help.commandUsage(c).replace(/^audit-gateway /, ''),
      description: c.description(),
      flags: c.options.map((o) => flagModel(c.name(), o)).filter((f): f is FlagModel => f !== undefined),
      after: afterText(c),
    }));
  const global = program.options.map((o) => flagModel('', o)).filter((f): f is FlagModel => f !== undefined);
  return { name: program.name(), description: program.description(), global, commands };
}
