/**
 * Output for people (CONTRACT.md §5 "text and table"): tail's aligned lines, search's and stats'
 * tables that fit the terminal width, coloured by status through the chalk instance given (one with
 * level 0 when colours are off).
 *
 * Values from the database are shown, never interpreted: control characters are written as escapes
 * (`\n`, `\u001b`), so an entry cannot break the layout or send escape sequences to the terminal.
 */
import type { ChalkInstance } from 'chalk';
import stringWidth from 'string-width';
import type { EntryRow, RejectRow, StatsGroup, StatsRow } from '../db/queries.js';

/**
 * Characters shown as escapes in text and table output (never in json/ndjson/csv, which stay exact;
 * CONTRACT.md §7, issue 10 "Terminals"): C0 controls, DEL, C1 controls (U+0080–009F: CSI, OSC …),
 * the bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E/F, U+202A–202E,
 * U+2066–2069: "Trojan Source", CVE-2021-42574), the line and paragraph separators (U+2028/9), and
 * the invisible U+200B and U+FEFF. A value can then neither move the cursor, retitle the window,
 * nor reorder what an auditor reads. (U+200D, the zero-width joiner, stays: emoji need it.)
 */
const UNSAFE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;
const ESCAPE_NAMES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Replaces control and bidi characters by visible escapes (`\n`, `\t`, `\u001b`, `\u202e`). */
export function visible(text: string): string {
  return text.replace(
    UNSAFE,
    (c) => ESCAPE_NAMES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Display width in terminal columns (string-width: East Asian wide and emoji count two). */
export function width(text: string): number {
  return stringWidth(text);
}

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/**
 * Cuts `text` to at most `max` terminal columns, ending in `…` when cut; never splits a grapheme
 * (an emoji with its modifiers, a letter with its accents).
 */
export function truncate(text: string, max: number): string {
  if (max <= 0) return '';
  if (width(text) <= max) return text;
  let out = '';
  let used = 0;
  for (const { segment } of graphemes.segment(text)) {
    const w = width(segment);
    if (used + w > max - 1) break;
    out += segment;
    used += w;
  }
  return `${out}…`;
}

/** `2026-11-01T10:00:00.123456Z` → `2026-11-01 10:00:00` (UTC), for narrow terminals. */
export function compactTime(ts: string | null | undefined): string {
  if (typeof ts !== 'string') return '-';
  return ts.length >= 20 && ts.endsWith('Z') ? `${ts.slice(0, 10)} ${ts.slice(11, 19)}` : ts;
}

/** How the anonymous caller (client_subject `""`) is named in every output for people. */
export const ANONYMOUS = '(anonymous)';

/** A client_subject for people: {@link ANONYMOUS} for `""`, escaped otherwise. */
export function subjectText(subject: string): string {
  return subject === '' ? ANONYMOUS : visible(subject);
}

/** Colours a status: success green, denied yellow, timeout magenta, anything else red. */
export function colorStatus(c: ChalkInstance, status: string, text: string = status): string {
  if (status === 'success') return c.green(text);
  if (status === 'denied') return c.yellow(text);
  if (status === 'timeout') return c.magenta(text);
  return c.red(text);
}

/**
 * `2026-11-01T10:00:00.123456Z` → `2026-11-01T10:00:00.123Z` (milliseconds are enough to read);
 * anything else (`infinity`, a missing value) as it is.
 */
export function shortTime(ts: string | null | undefined): string {
  if (typeof ts !== 'string') return '-';
  return ts.length >= 27 && ts.endsWith('Z') ? `${ts.slice(0, 23)}Z` : ts;
}

function who(row: EntryRow): string {
  const subject = subjectText(row.client_subject);
  return row.client_role === null ? subject : `${subject} (${visible(row.client_role)})`;
}

function where(row: EntryRow): string {
  const tool = visible(row.tool_name);
  return row.backend_name === null ? tool : `${tool}@${visible(row.backend_name)}`;
}

function latency(row: EntryRow): string {
  return row.latency_ms === null ? '-' : `${row.latency_ms}ms`;
}

/** request_args as one short line: Postgres' jsonb text (every digit kept), `-` for none. */
export function argsSummary(args: string | null): string {
  return args === null ? '-' : visible(args);
}

/**
 * tail's text lines: time, subject (role), tool@backend, status, latency, args, and the error
 * message. Columns grow to the widest value seen so far, so lines stay aligned as they stream.
 */
export class TextLineFormatter {
  private readonly widths = { who: 12, where: 16, status: 7, latency: 6 };

  /**
   * @param c chalk instance (level 0: no colour)
   * @param maxWidth terminal width to cut lines to; undefined: no cut (args still cut at 200)
   */
  constructor(
    private readonly c: ChalkInstance,
    private readonly maxWidth: number | undefined,
  ) {}

  /** Formats rows (newline-terminated lines), widening columns for the whole group first. */
  format(rows: readonly EntryRow[]): string {
    for (const r of rows) {
      this.widths.who = Math.max(this.widths.who, width(who(r)));
      this.widths.where = Math.max(this.widths.where, width(where(r)));
      this.widths.status = Math.max(this.widths.status, width(visible(r.response_status)));
      this.widths.latency = Math.max(this.widths.latency, latency(r).length);
    }
    let out = '';
    for (const r of rows) out += `${this.line(r)}\n`;
    return out;
  }

  private line(r: EntryRow): string {
    const w = this.widths;
    const status = visible(r.response_status);
    const statusW = Math.min(w.status, 12);
    // below 100 columns the time drops its milliseconds and zone letter (UTC all the same)
    const narrow = this.maxWidth !== undefined && this.maxWidth < 100;
    const time = narrow ? compactTime(r.ts) : shortTime(r.ts);
    const timeW = Math.max(narrow ? 19 : 24, width(time));
    let whoW = Math.min(w.who, 40);
    let whereW = Math.min(w.where, 48);
    let room: number;
    if (this.maxWidth === undefined) {
      room = 200;
    } else {
      // fit the terminal: subject and tool give way first, down to 8 columns each, so that the
      // args/error get about half of what is left; what still does not fit is cut at the end
      const fixed = timeW + 2 + statusW + 2 + w.latency + 2;
      const avail = this.maxWidth - fixed;
      const minRoom = Math.max(12, Math.floor(avail * 0.45));
      const over = whoW + 2 + whereW + 2 + minRoom - avail;
      if (over > 0) {
        const cutWho = Math.min(over, Math.max(0, whoW - 8), Math.ceil(over / 2));
        whoW -= cutWho;
        whereW -= Math.min(over - cutWho, Math.max(0, whereW - 8));
        // a very narrow terminal: subject and tool down to 4 columns each
        const still = whoW + 2 + whereW + 2 + minRoom - avail;
        if (still > 0) {
          const cut = Math.min(still, whoW - 4);
          whoW -= cut;
          whereW -= Math.min(still - cut, whereW - 4);
        }
      }
      room = avail - whoW - 2 - whereW - 2;
      if (room < 1) return truncate(this.plainLine(r, timeW), this.maxWidth);
    }
    const argsText = argsSummary(r.args);
    let tailText: string;
    if (r.error_message === null) {
      tailText = truncate(argsText, room);
    } else if (this.maxWidth !== undefined && room < 12) {
      // too little room for both: the error is what matters
      tailText = this.c.red(truncate(visible(r.error_message), room));
    } else {
      // an error shares the room with the args: the args get at most a third of it
      const msg = visible(r.error_message);
      const args = truncate(argsText, Math.max(4, Math.floor(room / 3) - 1));
      const rest = this.maxWidth === undefined ? undefined : Math.max(1, room - width(args) - 2);
      tailText = `${args}  ${this.c.red(rest === undefined ? msg : truncate(msg, rest))}`;
    }
    return [
      this.c.dim(pad(time, timeW)),
      this.c.bold(pad(truncate(who(r), whoW), whoW)),
      pad(truncate(where(r), whereW), whereW),
      colorStatus(this.c, r.response_status, pad(truncate(status, statusW), statusW)),
      latency(r).padStart(w.latency),
      tailText,
    ].join('  ');
  }

  /** The line without colours or widths, for terminals too narrow for the columns. */
  private plainLine(r: EntryRow, timeW: number): string {
    const error = r.error_message === null ? '' : `  ${visible(r.error_message)}`;
    return (
      [pad(shortTime(r.ts), timeW), who(r), where(r), visible(r.response_status), latency(r)].join('  ') +
      error
    );
  }
}

function pad(text: string, n: number): string {
  const w = width(text);
  return w >= n ? text : text + ' '.repeat(n - w);
}

/**
 * Column widths (padding included) that fit `total` characters of table (borders included):
 * natural widths when they fit, else the flexible columns are capped at one common width
 * (water-filling), never below `minWidth`. Returns null when even the minimums do not fit.
 */
export function fitColumns(
  natural: readonly number[],
  flexible: readonly boolean[],
  total: number,
  minWidth = 10,
): number[] | null {
  const borders = natural.length + 1;
  const avail = total - borders;
  const sum = (ws: readonly number[]) => ws.reduce((a, b) => a + b, 0);
  if (sum(natural) <= avail) return [...natural];
  const fixedSum = sum(natural.filter((_, i) => !flexible[i]));
  const flex = natural.map((w, i) => (flexible[i] ? w : 0));
  const minSum = fixedSum + flex.reduce((a, w) => a + (w > 0 ? Math.min(w, minWidth) : 0), 0);
  if (minSum > avail) return null;
  // the largest cap c with fixedSum + Σ min(w, max(c, minWidth)) <= avail
  let lo = minWidth;
  let hi = Math.max(...flex, minWidth);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const s = fixedSum + flex.reduce((a, w) => a + (w > 0 ? Math.min(w, mid) : 0), 0);
    if (s <= avail) lo = mid;
    else hi = mid - 1;
  }
  const widths = natural.map((w, i) => (flexible[i] ? Math.min(w, Math.max(lo, Math.min(w, minWidth))) : w));
  // hand out what the integer cap left over, left to right
  let spare = avail - sum(widths);
  for (let i = 0; i < widths.length && spare > 0; i++) {
    if (!flexible[i]) continue;
    const grow = Math.min(spare, natural[i]! - widths[i]!);
    widths[i]! += grow;
    spare -= grow;
  }
  return widths;
}

interface Column {
  head: string;
  flexible: boolean;
  align?: 'left' | 'right';
  cell(row: number): string;
  /** The cell with colour, for the given (possibly cut) text. */
  paint?(row: number, text: string): string;
}

/** How a table is laid out: rows and columns, one record per block (psql's `\\x`), or the first that fits. */
export type Layout = 'table' | 'vertical' | 'auto';

/**
 * A table for people, `total` columns wide at most: a box of rows and columns when every column
 * fits at its minimum width (long cells cut with `…`), else (or with `layout: 'vertical'`) one
 * block per record, `column | value`, long values wrapped, like psql's expanded display.
 * Widths are display widths (string-width), so CJK and emoji keep the borders straight.
 */
function renderTable(
  columns: Column[],
  rows: number,
  c: ChalkInstance,
  total: number,
  layout: Layout = 'auto',
): string {
  const natural = columns.map((col) => {
    let w = width(col.head);
    for (let r = 0; r < rows; r++) w = Math.max(w, width(col.cell(r)));
    return w + 2;
  });
  const widths =
    layout === 'vertical'
      ? null
      : fitColumns(
          natural,
          columns.map((col) => col.flexible),
          total,
        );
  if (widths === null) return renderVertical(columns, rows, c, total);
  const line = (l: string, m: string, r: string) =>
    c.dim(`${l}${widths.map((w) => '─'.repeat(w)).join(m)}${r}`);
  const bar = c.dim('│');
  const cellText = (text: string, i: number, align: 'left' | 'right' | undefined) => {
    const inner = widths[i]! - 2;
    const gap = ' '.repeat(Math.max(0, inner - width(text)));
    return align === 'right' ? ` ${gap}${text} ` : ` ${text}${gap} `;
  };
  let out = `${line('┌', '┬', '┐')}\n`;
  out += `${bar}${columns.map((col, i) => cellText(c.bold(truncate(col.head, widths[i]! - 2)), i, col.align)).join(bar)}${bar}\n`;
  out += `${line('├', '┼', '┤')}\n`;
  for (let r = 0; r < rows; r++) {
    const cells = columns.map((col, i) => {
      const text = truncate(col.cell(r), widths[i]! - 2);
      const inner = widths[i]! - 2;
      const gap = ' '.repeat(Math.max(0, inner - width(text)));
      const painted = col.paint ? col.paint(r, text) : text;
      return col.align === 'right' ? ` ${gap}${painted} ` : ` ${painted}${gap} `;
    });
    out += `${bar}${cells.join(bar)}${bar}\n`;
  }
  out += `${line('└', '┴', '┘')}\n`;
  return out;
}

/** Splits `text` into pieces of at most `max` columns (graphemes kept whole). */
function wrap(text: string, max: number): string[] {
  if (max <= 0 || width(text) <= max) return [text];
  const lines: string[] = [];
  let cur = '';
  let used = 0;
  for (const { segment } of graphemes.segment(text)) {
    const w = width(segment);
    if (used + w > max && cur !== '') {
      lines.push(cur);
      cur = '';
      used = 0;
    }
    cur += segment;
    used += w;
  }
  if (cur !== '') lines.push(cur);
  return lines;
}

/** The vertical layout of {@link renderTable}: `-[ RECORD n ]---` then `column | value` lines. */
function renderVertical(columns: Column[], rows: number, c: ChalkInstance, total: number): string {
  const headW = Math.max(...columns.map((col) => width(col.head)));
  const valueW = Math.max(10, total - headW - 3);
  let out = '';
  for (let r = 0; r < rows; r++) {
    const title = `-[ RECORD ${r + 1} ]`;
    out += `${c.dim(title + '-'.repeat(Math.max(0, Math.min(total, headW + 3 + 20) - width(title))))}\n`;
    for (const col of columns) {
      const pieces = wrap(col.cell(r), valueW);
      pieces.forEach((piece, k) => {
        const head = k === 0 ? pad(col.head, headW) : ' '.repeat(headW);
        const value = piece === '' ? '' : ` ${col.paint ? col.paint(r, piece) : piece}`;
        out += `${c.bold(head)} ${c.dim('│')}${value}\n`;
      });
    }
  }
  return out;
}

/** search's table: one row per entry, fitting `total` columns of terminal. */
export function renderEntriesTable(
  rows: readonly EntryRow[],
  c: ChalkInstance,
  total: number,
  layout: Layout = 'auto',
): string {
  const columns: Column[] = [
    { head: 'time (UTC)', flexible: false, cell: (i) => shortTime(rows[i]!.ts) },
    { head: 'subject', flexible: true, cell: (i) => subjectText(rows[i]!.client_subject) },
    { head: 'role', flexible: true, cell: (i) => visible(rows[i]!.client_role ?? '-') },
    { head: 'tool', flexible: true, cell: (i) => visible(rows[i]!.tool_name) },
    { head: 'backend', flexible: true, cell: (i) => visible(rows[i]!.backend_name ?? '-') },
    {
      head: 'status',
      flexible: true,
      cell: (i) => visible(rows[i]!.response_status),
      paint: (i, text) => colorStatus(c, rows[i]!.response_status, text),
    },
    { head: 'latency', flexible: false, align: 'right', cell: (i) => latency(rows[i]!) },
    { head: 'args', flexible: true, cell: (i) => argsSummary(rows[i]!.args) },
    {
      head: 'error',
      flexible: true,
      cell: (i) => visible(rows[i]!.error_message ?? ''),
      paint: (_i, text) => c.red(text),
    },
  ];
  return renderTable(columns, rows.length, c, total, layout);
}

/** A latency in ms with one decimal, the same format for every row of a column. */
function ms(v: number | null): string {
  return v === null ? '-' : v.toFixed(1);
}

/** A count with thousands separators (`12,345`). */
function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** A stats group for people: `(none)` for NULL; the anonymous subject and `""` named. */
export function groupText(group: string | null, by: StatsGroup): string {
  if (group === null) return '(none)';
  if (group === '') return by === 'subject' ? ANONYMOUS : '(empty)';
  return visible(group);
}

/** stats' table: group, count, errors, error rate (%), p50/p95/p99 (ms), numbers right-aligned. */
export function renderStatsTable(
  rows: readonly StatsRow[],
  by: StatsGroup,
  c: ChalkInstance,
  total: number,
  layout: Layout = 'auto',
): string {
  const columns: Column[] = [
    { head: by, flexible: true, cell: (i) => groupText(rows[i]!.group, by) },
    { head: 'count', flexible: false, align: 'right', cell: (i) => count(rows[i]!.count) },
    { head: 'errors', flexible: false, align: 'right', cell: (i) => count(rows[i]!.errors) },
    {
      head: 'error rate',
      flexible: false,
      align: 'right',
      cell: (i) => `${(rows[i]!.error_rate * 100).toFixed(1)}%`,
      paint: (i, text) => (rows[i]!.errors > 0 ? c.red(text) : c.green(text)),
    },
    { head: 'p50 ms', flexible: false, align: 'right', cell: (i) => ms(rows[i]!.p50_ms) },
    { head: 'p95 ms', flexible: false, align: 'right', cell: (i) => ms(rows[i]!.p95_ms) },
    { head: 'p99 ms', flexible: false, align: 'right', cell: (i) => ms(rows[i]!.p99_ms) },
  ];
  return renderTable(columns, rows.length, c, total, layout);
}

/** The raw bytes of a reject as text: UTF-8, invalid bytes as U+FFFD (CONTRACT.md §5). */
export function rawText(raw: Buffer): string {
  return new TextDecoder('utf-8', { fatal: false }).decode(raw);
}

/** rejects' table: received at, source, reason, and the raw line (escaped, cut to fit). */
export function renderRejectsTable(
  rows: readonly RejectRow[],
  c: ChalkInstance,
  total: number,
  layout: Layout = 'auto',
): string {
  const columns: Column[] = [
    { head: 'received (UTC)', flexible: false, cell: (i) => shortTime(rows[i]!.received_at) },
    { head: 'source', flexible: true, cell: (i) => visible(rows[i]!.source) },
    { head: 'reason', flexible: true, cell: (i) => visible(rows[i]!.reason), paint: (_i, t) => c.red(t) },
    { head: 'raw line', flexible: true, cell: (i) => visible(rawText(rows[i]!.raw)) },
  ];
  return renderTable(columns, rows.length, c, total, layout);
}

/**
 * One reject as a JSON object text (json/ndjson of CONTRACT.md §5): `id`, `received_at`, `source`,
 * `reason`, `raw` (text, invalid bytes as U+FFFD) and `raw_base64` (the exact bytes).
 */
export function rejectJson(r: RejectRow): string {
  return `{"id":${r.id},"received_at":${JSON.stringify(r.received_at)},"source":${JSON.stringify(r.source)},"reason":${JSON.stringify(r.reason)},"raw":${JSON.stringify(rawText(r.raw))},"raw_base64":${JSON.stringify(r.raw.toString('base64'))}}`;
}
