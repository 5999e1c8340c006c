/**
 * The reference travels with the code (issue 12 item 7): every flag that any command's `--help`
 * shows is described in docs/commands.md, in that command's section (or in the sections of flags
 * every command has, or of the filters for the four read commands); README and docs link only to
 * files the repository has. Also: shell completion and the man page come from the same
 * definitions (issue 12 item 6).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO, run, runCommand } from '../helpers/cli.js';

const docs = readFileSync(join(REPO, 'docs', 'commands.md'), 'utf8');

/** The text of `## NAME` up to the next `## `. */
function section(name: string): string {
  const start = docs.indexOf(`\n## ${name}\n`);
  if (start < 0) return '';
  const end = docs.indexOf('\n## ', start + 1);
  return docs.slice(start, end < 0 ? undefined : end);
}

/** The flags `--help` lists (long and short names). */
function flagsOf(help: string): string[] {
  const opts = help.split(/\nOptions:\n/)[1]?.split(/\n\n/)[0] ?? '';
  return [...opts.matchAll(/^ {2}(?:(-\w), )?(--[a-z][a-z0-9-]*)/gm)].flatMap((m) =>
    m[1] ? [m[1], m[2]!] : [m[2]!],
  );
}

async function commands(): Promise<string[]> {
  const top = await run(['--help']);
  const list = top.stdout.split('\nCommands:\n')[1]!;
  return [...list.matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
}

describe('docs/commands.md', () => {
  it('describes every flag of every command, in its section', async () => {
    const cmds = await commands();
    expect(cmds).toEqual(
      expect.arrayContaining(['serve', 'tail', 'search', 'export', 'stats', 'rejects', 'config']),
    );
    const missing: string[] = [];
    const common = section('Flags of every command');
    const filters = section('Filters');
    for (const cmd of cmds) {
      const own = section(cmd);
      if (own === '') {
        missing.push(`${cmd}: no "## ${cmd}" section`);
        continue;
      }
      const help = (await run([cmd, '--help'], { env: { COLUMNS: '200' } })).stdout;
      const allowed = own + common + (['tail', 'search', 'export', 'stats'].includes(cmd) ? filters : '');
      for (const flag of flagsOf(help)) {
        if (!new RegExp(`\`${flag}[\` ,]`).test(allowed)) missing.push(`${cmd} ${flag}`);
      }
    }
    const top = await run(['--help']);
    for (const flag of flagsOf(top.stdout))
      if (!new RegExp(`\`${flag}[\` ,]`).test(common)) missing.push(`(program) ${flag}`);
    expect(missing).toEqual([]);
  });

  it('README and docs link to files the clone has (no ../shared)', () => {
    for (const file of [
      'README.md',
      ...['README.md', 'commands.md', 'configuration.md', 'wire-format.md', 'schema.md'].map((f) =>
        join('docs', f),
      ),
    ]) {
      const text = readFileSync(join(REPO, file), 'utf8');
      expect(text, file).not.toMatch(/CONTRACT\.md|\.\.\/shared/);
      for (const m of text.matchAll(/\]\(([^)#:]+)(?:#[^)]*)?\)/g)) {
        expect(
          existsSync(join(REPO, file.startsWith('docs') ? 'docs' : '', m[1]!)),
          `${file} → ${m[1]}`,
        ).toBe(true);
      }
    }
  });
});

describe('completion and man page', () => {
  it("bash: completes commands, a command's flags and a flag's values", async () => {
    const script = (await run(['completion', 'bash'])).stdout;
    const complete = async (words: string[]) => {
      const line = words.map((w) => `'${w}'`).join(' ');
      const r = await runCommand('bash', [
        '-c',
        `${script}\nCOMP_WORDS=(${line}); COMP_CWORD=${words.length - 1}; _audit_gateway; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ]);
      expect(r.stderr).toBe('');
      return r.stdout.trim().split('\n').filter(Boolean);
    };
    expect((await complete(['audit-gateway', 're'])).sort()).toEqual(['rejects', 'replay', 'retention']);
    expect(await complete(['audit-gateway', 'stats', '--so'])).toEqual(['--sort']);
    expect(await complete(['audit-gateway', 'stats', '--sort', 'p'])).toEqual(['p50', 'p95', 'p99']);
    expect(await complete(['audit-gateway', 'serve', '--log-level', 'd'])).toEqual(['debug']);
    expect(await complete(['audit-gateway', 'search', '--output', ''])).toEqual([
      'table',
      'vertical',
      'json',
      'ndjson',
      'csv',
    ]);
    expect(await complete(['audit-gateway', 'tail', '-'])).toEqual(
      expect.arrayContaining(['-n', '--lines', '--no-follow', '--subject']),
    );
  });

  it('zsh and fish scripts name every command and flag; an unknown shell is exit 2', async () => {
    const zsh = (await run(['completion', 'zsh'])).stdout;
    const fish = (await run(['completion', 'fish'])).stdout;
    expect(zsh).toMatch(/^#compdef audit-gateway/);
    expect(zsh).toContain(
      "'--sort[largest first by count, errors, error_rate, p50, p95 or p99]:key:(count errors error_rate p50 p95 p99)'",
    );
    expect(fish).toContain(
      "complete -c audit-gateway -n '__fish_seen_subcommand_from stats' -l sort -x -a 'count errors error_rate p50 p95 p99'",
    );
    for (const cmd of await commands()) {
      expect(zsh).toContain(`'${cmd}:`);
      expect(fish).toContain(`-a ${cmd} -d`);
    }
    const bad = await run(['completion', 'tcsh']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown shell 'tcsh' \(expected bash, zsh or fish\)/);
  });

  it('man: renders without warnings and lists every command and flag', async () => {
    const page = (await run(['man'])).stdout;
    const r = await runCommand('bash', ['-c', `groff -man -Tutf8 -ww 2>&1 >/dev/null <<'EOF'\n${page}\nEOF`]);
    expect(r.stdout.split('\n').filter((l) => l && !/cannot adjust/.test(l))).toEqual([]);
    const text = (await runCommand('bash', ['-c', `MANWIDTH=200 man -l - 2>/dev/null <<'EOF'\n${page}\nEOF`]))
      .stdout;
    for (const cmd of await commands()) {
      expect(text).toMatch(new RegExp(`^ {3}${cmd} `, 'm'));
      const help = (await run([cmd, '--help'])).stdout;
      for (const flag of flagsOf(help))
        if (flag !== '--help' && flag !== '-h') expect(text, `${cmd} ${flag}`).toContain(flag);
    }
  });
});
