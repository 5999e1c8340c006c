/** Queued entries for tests of the writer, the queue and the spool, made the way serve makes them. */
import type { WriteEntry } from '../../src/db/writer.js';
import { EntryEncoder } from '../../src/entry/encode.js';
import { DEFAULT_REDACT_KEYS } from '../../src/entry/parse.js';

const encoder = new EntryEncoder({ redactKeys: new Set(DEFAULT_REDACT_KEYS) });

/**
 * The {@link WriteEntry} of one wire line (default redaction).
 * @throws Error with the reject reason when the line is not a valid entry.
 */
export function writeEntryOf(line: string | Buffer, source = 'test'): WriteEntry {
  const raw = typeof line === 'string' ? Buffer.from(line) : line;
  const r = encoder.encode(raw);
  if (!r.ok) throw new Error(r.reason);
  return { copy: r.copy, raw, source };
}
