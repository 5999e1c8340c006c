/**
 * The architecture of README.md, enforced: each module imports only from its own layer or the
 * layers below it (entry < db < ingest | read < retention | wrap < cli < bin), and
 * errors/log/util/integrity are leaves.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../../src');

/** The layer of a module path relative to src/, and what it may import. */
function layerOf(rel: string): string {
  if (rel === 'bin.ts') return 'bin';
  if (rel === 'errors.ts' || rel === 'log.ts' || rel.startsWith('util/') || rel.startsWith('integrity/')) {
    return 'leaf';
  }
  return rel.split('/')[0]!;
}
const MAY_IMPORT: Record<string, string[]> = {
  leaf: ['leaf'],
  entry: ['entry', 'leaf'],
  db: ['db', 'entry', 'leaf'],
  ingest: ['ingest', 'db', 'entry', 'leaf'],
  read: ['read', 'db', 'entry', 'leaf'],
  retention: ['retention', 'read', 'db', 'entry', 'leaf'],
  // wrap reuses ingest's spool format (so replay reads its spool); db only for the spool's types.
  wrap: ['wrap', 'ingest', 'db', 'entry', 'leaf'],
  cli: ['cli', 'wrap', 'ingest', 'read', 'retention', 'db', 'entry', 'leaf'],
  bin: ['cli'],
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('layering', () => {
  it('every import points down (or sideways within a layer)', () => {
    const violations: string[] = [];
    for (const file of files(SRC)) {
      const rel = relative(SRC, file);
      const from = layerOf(rel);
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
        const target = relative(SRC, resolve(dirname(file), m[1]!)).replace(/\.js$/, '.ts');
        const to = layerOf(target);
        if (!MAY_IMPORT[from]?.includes(to)) violations.push(`${rel} (${from}) imports ${target} (${to})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('the entry layer depends on nothing but Node built-ins', () => {
    for (const file of files(join(SRC, 'entry'))) {
      const text = readFileSync(file, 'utf8');
      const packages = [...text.matchAll(/from\s+'([^.'][^']*)'/g)]
        .map((m) => m[1]!)
        .filter((p) => !p.startsWith('node:'));
      expect(packages, relative(SRC, file)).toEqual([]);
    }
  });
});
