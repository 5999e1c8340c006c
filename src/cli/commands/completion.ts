/**
 * `audit-gateway completion bash|zsh|fish` and `audit-gateway man`: shell completion scripts and a
 * man page (roff), both generated from the commander definitions behind `--help` (cli/helpModel.ts),
 * so they cannot drift from the flags.
 */
import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { type CommandModel, type FlagModel, programModel } from '../helpModel.js';
import { writeOut } from '../output.js';

type Model = ReturnType<typeof programModel>;

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function bash(m: Model): string {
  const names = m.commands.map((c) => c.name).join(' ');
  const cases = m.commands
    .map((c) => {
      const flags = [...c.flags.flatMap((f) => (f.short ? [f.short, f.long] : [f.long])), '--help'].join(' ');
      return `    ${c.name}) opts=${sq(flags)} ;;`;
    })
    .join('\n');
  const valueCases: string[] = [];
  for (const c of m.commands) {
    for (const f of c.flags) {
      if (!f.value) continue;
      const words = f.choices
        ? `COMPREPLY=($(compgen -W ${sq(f.choices.join(' '))} -- "$cur"))`
        : 'COMPREPLY=()';
      valueCases.push(
        `    ${c.name}:${f.long}${f.short ? `|${c.name}:${f.short}` : ''}) ${words}; return ;;`,
      );
    }
  }
  return `# bash completion for ${m.name} (generated: ${m.name} completion bash)
# install: ${m.name} completion bash > /etc/bash_completion.d/${m.name}
#      or: source <(${m.name} completion bash)   in ~/.bashrc
_${m.name.replace(/-/g, '_')}() {
  local cur prev cmd="" i opts
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      ${m.commands.map((c) => c.name).join('|')}) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    if [[ "$prev" == --config ]]; then COMPREPLY=(); return; fi
    COMPREPLY=($(compgen -W ${sq(`${names} ${m.global.map((f) => f.long).join(' ')} --help`)} -- "$cur"))
    return
  fi
  case "$cmd:$prev" in
${valueCases.join('\n')}
  esac
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" == -* || -z "$cur" ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); fi
}
complete -o default -F _${m.name.replace(/-/g, '_')} ${m.name}
`;
}

/** Escapes a description for zsh's _arguments spec: brackets, colons, backslashes, quotes. */
const zq = (s: string) =>
  s
    .replace(/\\/g, '\\\\')
    .replace(/([[\]:])/g, '\\$1')
    .replace(/'/g, `'\\''`);

function zshFlag(f: FlagModel): string {
  const what = zq(f.description.split(/[;(]/)[0]!.trim());
  const value = f.value
    ? `:${zq(f.value.replace(/[<>[\]]/g, ''))}:${f.choices ? `(${f.choices.join(' ')})` : '_files'}`
    : '';
  const names = f.short ? `{${f.short},${f.long}}` : f.long;
  return f.short ? `'(${f.short} ${f.long})'${names}'[${what}]${value}'` : `'${names}[${what}]${value}'`;
}

function zsh(m: Model): string {
  const cmds = m.commands.map((c) => `    '${c.name}:${zq(c.description)}'`).join('\n');
  const cases = m.commands
    .map(
      (c) =>
        `    (${c.name})\n      _arguments -s \\\n        ${c.flags.map(zshFlag).join(' \\\n        ')} \\\n        '*:file:_files' ;;`,
    )
    .join('\n');
  return `#compdef ${m.name}
# zsh completion for ${m.name} (generated: ${m.name} completion zsh)
# install: ${m.name} completion zsh > "\${fpath[1]}/_${m.name}"   (then: compinit)
_${m.name.replace(/-/g, '_')}() {
  local -a commands
  commands=(
${cmds}
  )
  local cmd=\${words[(r)(${m.commands.map((c) => c.name).join('|')})]}
  if [[ -z $cmd ]]; then
    _arguments '--config[configuration file]:file:_files' '1: :{_describe command commands}'
    return
  fi
  case $cmd in
${cases}
  esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _${m.name.replace(/-/g, '_')} "$@"
else
  compdef _${m.name.replace(/-/g, '_')} ${m.name}
fi
`;
}

function fish(m: Model): string {
  const c0 = `complete -c ${m.name}`;
  const lines = [
    `# fish completion for ${m.name} (generated: ${m.name} completion fish)`,
    `# install: ${m.name} completion fish > ~/.config/fish/completions/${m.name}.fish`,
    `${c0} -f`,
    `${c0} -n __fish_use_subcommand -l config -r -F -d ${sq('configuration file')}`,
  ];
  for (const c of m.commands) {
    lines.push(`${c0} -n __fish_use_subcommand -a ${c.name} -d ${sq(c.description)}`);
    for (const f of c.flags) {
      const short = f.short ? ` -s ${f.short.replace(/^-/, '')}` : '';
      const value = f.value ? (f.choices ? ` -x -a ${sq(f.choices.join(' '))}` : ' -r -F') : '';
      lines.push(
        `${c0} -n ${sq(`__fish_seen_subcommand_from ${c.name}`)}${short} -l ${f.long.replace(/^--/, '')}${value} -d ${sq(f.description.split(/[;(]/)[0]!.trim())}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

/** roff text: backslashes, leading dots and quotes, and dashes made literal. */
const roff = (s: string) =>
  s
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1')
    .replace(
      /[^\u0000-\u007f]/gu,
      (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`,
    );

function manFlag(f: FlagModel): string {
  const names = [f.short, f.long]
    .filter(Boolean)
    .map((n) => `\\fB${roff(n!)}\\fR`)
    .join(', ');
  const value = f.value ? ` \\fI${roff(f.value)}\\fR` : '';
  const choices = f.choices ? ` (${f.choices.join(', ')})` : '';
  const extra = [f.env ? `env ${f.env}` : '', f.default ? `default ${f.default}` : '']
    .filter(Boolean)
    .join('; ');
  return `.TP\n${names}${value}\n${roff(f.description + choices)}${extra ? `\n.br\n[${roff(extra)}]` : ''}\n`;
}

function manCommand(c: CommandModel): string {
  let out = `.SS "${roff(c.usage)}"\n${roff(c.description)}.\n.RS\n`;
  out += c.flags.map(manFlag).join('');
  if (c.after) out += `.PP\n.nf\n${roff(c.after)}\n.fi\n`;
  return `${out}.RE\n`;
}

/** The man page (section 1) of the program. */
export function manPage(program: Command, version: string): string {
  const m = programModel(program);
  const date = new Date().toISOString().slice(0, 7);
  return `.TH AUDIT\\-GATEWAY 1 "${date}" "${m.name} ${version}" "User Commands"
.SH NAME
${m.name} \\- ${roff(m.description)}
.SH SYNOPSIS
.B ${m.name}
[\\fB\\-\\-config\\fR \\fIfile\\fR] \\fIcommand\\fR [\\fIoptions\\fR]
.SH DESCRIPTION
\\fBserve\\fR reads NDJSON audit entries from a Unix socket (and TCP), validates, redacts and
batches them and writes them into Postgres with COPY. The other commands manage the schema and
read the trail. Every flag can also be set by an environment variable (named in each command's
\\fB\\-\\-help\\fR) or in the configuration file; precedence: flag, environment, file, default.
.SH OPTIONS
${m.global.map(manFlag).join('')}.SH COMMANDS
${m.commands.map(manCommand).join('')}.SH FILES
.TP
\\fI$XDG_CONFIG_HOME/audit\\-gateway/config.toml\\fR, \\fI/etc/audit\\-gateway/config.toml\\fR
The configuration file: keys are long flag names, tables are commands.
.TP
\\fI$XDG_DATA_HOME/audit\\-gateway\\fR
The data dir: the embedded Postgres cluster, the spool, serve.pid, serve\\-database.json.
.SH EXIT STATUS
0 done; 1 could not do it (database unreachable, file missing); 2 the command line is wrong;
3 (verify only) the trail is altered, incomplete or unverifiable.
.SH SEE ALSO
The reference in the repository's \\fIdocs/\\fR folder: commands, configuration, wire format, schema.
`;
}

/** Registers `completion` and `man`. */
export function registerCompletion(program: Command, version: string): void {
  program
    .command('completion')
    .description('print a shell completion script for bash, zsh or fish')
    .argument('<shell>', 'bash, zsh or fish')
    .addHelpText(
      'after',
      `
Examples:
  $ source <(audit-gateway completion bash)                            # this shell
  $ audit-gateway completion bash > /etc/bash_completion.d/audit-gateway
  $ audit-gateway completion zsh > "\${fpath[1]}/_audit-gateway"
  $ audit-gateway completion fish > ~/.config/fish/completions/audit-gateway.fish`,
    )
    .action(async (shell: string) => {
      const m = programModel(program);
      if (shell === 'bash') await writeOut(bash(m));
      else if (shell === 'zsh') await writeOut(zsh(m));
      else if (shell === 'fish') await writeOut(fish(m));
      else throw new UsageError(`completion: unknown shell '${shell}' (expected bash, zsh or fish)`);
    });
  program
    .command('man')
    .description('print the man page (roff), generated from the same texts as --help')
    .addHelpText(
      'after',
      `
Examples:
  $ audit-gateway man | man -l -
  $ audit-gateway man > /usr/local/share/man/man1/audit-gateway.1`,
    )
    .action(async () => {
      await writeOut(manPage(program, version));
    });
}
