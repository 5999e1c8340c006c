/**
 * Sanitising: characters Postgres cannot hold become U+FFFD (CONTRACT.md §3).
 *
 * Postgres text and jsonb reject U+0000 ("invalid byte sequence for encoding UTF8: 0x00", SQLSTATE
 * 22021, and jsonb's "unsupported Unicode escape sequence", 22P05) and unpaired UTF-16 surrogates
 * (known-traps C01–C03). Invalid UTF-8 bytes are replaced while decoding (C04). Every replacement is
 * reported so the entry can be counted and logged as sanitized.
 */
import { isUtf8 } from 'node:buffer';

/** The substitute for every character Postgres cannot hold. */
export const REPLACEMENT = '\ufffd';

/**
 * Decodes UTF-8; invalid byte sequences become U+FFFD (WHATWG decoding, one per maximal subpart).
 * @returns the text and whether any byte had to be replaced.
 */
export function decodeUtf8(buf: Buffer): { text: string; replaced: boolean } {
  const text = buf.toString('utf8');
  if (isUtf8(buf)) return { text, replaced: false };
  return { text, replaced: true };
}

/** True when `s` holds U+0000 or an unpaired surrogate. */
export function needsSanitizing(s: string): boolean {
  return s.includes('\u0000') || !s.isWellFormed();
}

/** Replaces U+0000 and unpaired surrogates (a reversed pair counts as two) by U+FFFD. */
export function sanitizeString(s: string): string {
  if (!needsSanitizing(s)) return s;
  return s.toWellFormed().replaceAll('\u0000', REPLACEMENT);
}
