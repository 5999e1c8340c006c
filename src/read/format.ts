/**
 * Output for people (CONTRACT.md §5 "text and table"): tail's aligned lines, search's and stats'
 * tables that fit the terminal width, coloured by status through the chalk instance given (one with
 * level 0 when colours are off).
 *
 * Values from the database are shown, never interpreted: control characters are written as escapes
 * (`\n`, `\u001b`), so an entry cannot break the layout or send escape sequences to the terminal.
 */
import type { ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import type { EntryRow, StatsGroup, StatsRow } from '../db/queries.js';

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const CONTROL_NAMES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Replaces control characters by visible escapes (`\n`, `\t`, `\u001b`). */
export function visible(text: string): string {
  return text.replace(
    CONTROL,
    (c) => CONTROL_NAMES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Display width estimate: code points (wide characters count as one; cli-table3 measures exactly). */
function width(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** Cuts `text` to at most `max` code points, ending in `…` when cut. */
export function truncate(text: string, max: number): string {
  if (max <= 0) return '';
  const cps = [...text];
  if (cps.length <= max) return text;
  return `${cps.slice(0, Math.max(0, max - 1)).join('')}…`;
}

/** Colours a status: success green, denied yellow, timeout magenta, anything else red. */
export function colorStatus(c: ChalkInstance, status: string, text: string = status): string {
  if (status === 'success') return c.green(text);
  if (status === 'denied') return c.yellow(text);
  if (status === 'timeout') return c.magenta(text);
  return c.red(text);
}

/** `2026-11-01T10:00:00.123456Z` → `2026-11-01T10:00:00.123Z` (milliseconds are enough to read). */
export function shortTime(ts: string): string {
  return ts.length >= 27 ? `${ts.slice(0, 23)}Z` : ts;
}

function who(row: EntryRow): string {
  const subject = row.client_subject === '' ? '(anonymous)' : visible(row.client_subject);
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
    const fixed = 24 + 2 + Math.min(w.who, 40) + 2 + Math.min(w.where, 48) + 2 + w.status + 2 + w.latency + 2;
    const room = this.maxWidth === undefined ? 200 : Math.max(10, this.maxWidth - fixed);
    const argsText = argsSummary(r.args);
    let tailText: string;
    if (r.error_message === null) {
      tailText = truncate(argsText, room);
    } else {
      // an error shares the room with the args: the args get at most half of it
      const msg = visible(r.error_message);
      const args = truncate(argsText, Math.max(8, Math.floor(room / 2)));
      const rest = this.maxWidth === undefined ? undefined : Math.max(8, room - width(args) - 2);
      tailText = `${args}  ${this.c.red(rest === undefined ? msg : truncate(msg, rest))}`;
    }
    return [
      this.c.dim(shortTime(r.ts).padEnd(24)),
      this.c.bold(pad(truncate(who(r), 40), Math.min(w.who, 40))),
      pad(truncate(where(r), 48), Math.min(w.where, 48)),
      colorStatus(this.c, r.response_status, pad(status, w.status)),
      latency(r).padStart(w.latency),
      tailText,
    ].join('  ');
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
  minWidth = 6,
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
  /** Dropped first (highest number) when even the minimum widths do not fit. */
  dropOrder: number;
  align?: 'left' | 'right';
  cell(row: number): string;
  /** The cell with colour, for the given (possibly cut) text. */
  paint?(row: number, text: string): string;
}

function renderTable(columns: Column[], rows: number, c: ChalkInstance, total: number): string {
  let cols = columns;
  let widths: number[] | null = null;
  for (;;) {
    const natural = cols.map((col) => {
      let w = width(col.head);
      for (let r = 0; r < rows; r++) w = Math.max(w, width(col.cell(r)));
      return w + 2;
    });
    widths = fitColumns(
      natural,
      cols.map((col) => col.flexible),
      total,
    );
    if (widths !== null || cols.length <= 1) break;
    const drop = cols.reduce((a, b) => (b.dropOrder > a.dropOrder ? b : a));
    if (drop.dropOrder === 0) break;
    cols = cols.filter((col) => col !== drop);
  }
  const colWidths = widths ?? cols.map(() => 8);
  const table = new Table({
    head: cols.map((col) => c.bold(col.head)),
    colWidths,
    colAligns: cols.map((col) => col.align ?? 'left'),
    style: { head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 1 },
    wordWrap: false,
  });
  for (let r = 0; r < rows; r++) {
    table.push(
      cols.map((col, i) => {
        const text = truncate(col.cell(r), colWidths[i]! - 2);
        return col.paint ? col.paint(r, text) : text;
      }),
    );
  }
  return `${table.toString()}\n`;
}

/** search's table: one row per entry, fitting `total` columns of terminal. */
export function renderEntriesTable(rows: readonly EntryRow[], c: ChalkInstance, total: number): string {
  const columns: Column[] = [
    { head: 'time (UTC)', flexible: false, dropOrder: 0, cell: (i) => shortTime(rows[i]!.ts) },
    {
      head: 'subject',
      flexible: true,
      dropOrder: 0,
      cell: (i) => (rows[i]!.client_subject === '' ? '(anonymous)' : visible(rows[i]!.client_subject)),
    },
    { head: 'role', flexible: true, dropOrder: 3, cell: (i) => visible(rows[i]!.client_role ?? '-') },
    { head: 'tool', flexible: true, dropOrder: 0, cell: (i) => visible(rows[i]!.tool_name) },
    { head: 'backend', flexible: true, dropOrder: 4, cell: (i) => visible(rows[i]!.backend_name ?? '-') },
    {
      head: 'status',
      flexible: false,
      dropOrder: 0,
      cell: (i) => visible(rows[i]!.response_status),
      paint: (i, text) => colorStatus(c, rows[i]!.response_status, text),
    },
    { head: 'latency', flexible: false, dropOrder: 0, align: 'right', cell: (i) => latency(rows[i]!) },
    { head: 'args', flexible: true, dropOrder: 2, cell: (i) => argsSummary(rows[i]!.args) },
    {
      head: 'error',
      flexible: true,
      dropOrder: 1,
      cell: (i) => visible(rows[i]!.error_message ?? ''),
      paint: (_i, text) => c.red(text),
    },
  ];
  return renderTable(columns, rows.length, c, total);
}

function ms(v: number | null): string {
  if (v === null) return '-';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/** stats' table: group, count, errors, error rate (%), p50/p95/p99 (ms). */
export function renderStatsTable(
  rows: readonly StatsRow[],
  by: StatsGroup,
  c: ChalkInstance,
  total: number,
): string {
  const columns: Column[] = [
    {
      head: by,
      flexible: true,
      dropOrder: 0,
      cell: (i) =>
        rows[i]!.group === null ? '(none)' : rows[i]!.group === '' ? '(empty)' : visible(rows[i]!.group!),
    },
    { head: 'count', flexible: false, dropOrder: 0, align: 'right', cell: (i) => String(rows[i]!.count) },
    { head: 'errors', flexible: false, dropOrder: 0, align: 'right', cell: (i) => String(rows[i]!.errors) },
    {
      head: 'error rate',
      flexible: false,
      dropOrder: 0,
      align: 'right',
      cell: (i) => `${(rows[i]!.error_rate * 100).toFixed(1)}%`,
      paint: (i, text) => (rows[i]!.errors > 0 ? c.red(text) : c.green(text)),
    },
    { head: 'p50 ms', flexible: false, dropOrder: 0, align: 'right', cell: (i) => ms(rows[i]!.p50_ms) },
    { head: 'p95 ms', flexible: false, dropOrder: 0, align: 'right', cell: (i) => ms(rows[i]!.p95_ms) },
    { head: 'p99 ms', flexible: false, dropOrder: 0, align: 'right', cell: (i) => ms(rows[i]!.p99_ms) },
  ];
  return renderTable(columns, rows.length, c, total);
}
