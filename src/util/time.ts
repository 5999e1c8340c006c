/**
 * The TIME values of `--since` and `--until` (CONTRACT.md §5), turned into exact instants.
 *
 * Accepted, case-insensitively:
 * - RFC 3339 with a zone: `2026-11-01T10:00:00Z`, `2026-11-01 10:00:00.123456+02:00`;
 * - a date, or a local date-time without a zone, read in the local time zone (`TZ`):
 *   `2026-11-01` (local midnight), `2026-11-01 10:00`, `2026-11-01T10:00:30.5`;
 * - `now`, `today` (local midnight), `yesterday`, `tomorrow`;
 * - a duration before now: a number and a unit, `90s`, `15m`, `2h`, `7d`, `2w`, `500ms`, several
 *   combined (`1h30m`); an optional `-` before or ` ago` after is accepted too (`-2h`, `2h ago`).
 *
 * Results are RFC 3339 UTC texts with microseconds (`2026-11-01T10:00:00.000000Z`), the precision
 * of a Postgres `timestamptz`: fractional seconds beyond milliseconds are kept exactly, never passed
 * through a JS `Date`. Pure: no I/O, the current time is a parameter.
 *
 * Why no date library: the grammar is small and fixed by the contract, it must be strict (anything
 * else is a usage error, exit 2), and microseconds must survive; the platform's `Date` does the one
 * hard part, local-zone arithmetic with the tz database (DST included).
 */

/** What a TIME may be, for one-line error messages (CONTRACT.md §7). */
export const TIME_GRAMMAR =
  "RFC 3339 (2026-11-01T10:00:00Z), a date or local date-time (2026-11-01, '2026-11-01 10:00'), now, today, yesterday, or a duration ago (90s, 15m, 2h, 7d)";

const RFC3339_OR_LOCAL =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?$/;
const DURATION_PART = /(\d+(?:\.\d+)?)\s*(µs|us|ms|secs|sec|s|mins|min|m|hrs|hr|h|days|day|d|wks|wk|w)/gy;
const UNIT_US: Record<string, bigint> = {
  us: 1n,
  µs: 1n,
  ms: 1_000n,
  s: 1_000_000n,
  sec: 1_000_000n,
  secs: 1_000_000n,
  m: 60_000_000n,
  min: 60_000_000n,
  mins: 60_000_000n,
  h: 3_600_000_000n,
  hr: 3_600_000_000n,
  hrs: 3_600_000_000n,
  d: 86_400_000_000n,
  day: 86_400_000_000n,
  days: 86_400_000_000n,
  w: 604_800_000_000n,
  wk: 604_800_000_000n,
  wks: 604_800_000_000n,
};
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
}

/** Epoch microseconds → `YYYY-MM-DDTHH:MM:SS.ffffffZ`. */
export function formatEpochMicros(us: bigint): string {
  let ms = us / 1000n;
  let rest = us % 1000n;
  if (rest < 0n) {
    rest += 1000n;
    ms -= 1n;
  }
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) throw new RangeError(`time out of range: ${us} µs`);
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, 23)}${rest.toString().padStart(3, '0')}Z`;
}

/** Microseconds of a fraction text (`5` → 500000, `1234567` → 123456; digits past µs are cut). */
function fractionMicros(frac: string | undefined): bigint {
  if (!frac) return 0n;
  return BigInt(frac.slice(0, 6).padEnd(6, '0'));
}

/** A duration text (`90s`, `1h30m`, `1.5h`) in microseconds, or null when it is not one. */
export function parseDurationMicros(text: string): bigint | null {
  const t = text.trim().toLowerCase();
  if (t.length === 0) return null;
  DURATION_PART.lastIndex = 0;
  let total = 0n;
  let pos = 0;
  while (pos < t.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(t);
    if (!m) return null;
    const [whole = '0', frac = ''] = m[1]!.split('.');
    const unit = UNIT_US[m[2]!]!;
    // exact decimal arithmetic: whole*unit + frac*unit/10^len
    total += BigInt(whole) * unit + (frac ? (BigInt(frac) * unit) / 10n ** BigInt(frac.length) : 0n);
    pos = DURATION_PART.lastIndex;
    while (t[pos] === ' ') pos++;
  }
  return total;
}

/** Local midnight of the day `offsetDays` from `now`'s local day, in epoch ms. */
function localMidnight(now: Date, offsetDays: number): number {
  return new Date(now.getFullYear(), now.getMonth(), now.getDate() + offsetDays).getTime();
}

/**
 * Parses a TIME value of CONTRACT.md §5.
 * @param text what the user typed
 * @param now the reference for `now`, `today` and durations (one value for the whole command)
 * @returns the instant as RFC 3339 UTC with microseconds, or null when `text` is not a TIME
 */
export function parseTime(text: string, now: Date = new Date()): string | null {
  const t = text.trim();
  const lower = t.toLowerCase();
  const nowUs = BigInt(now.getTime()) * 1000n;
  switch (lower) {
    case 'now':
      return formatEpochMicros(nowUs);
    case 'today':
      return formatEpochMicros(BigInt(localMidnight(now, 0)) * 1000n);
    case 'yesterday':
      return formatEpochMicros(BigInt(localMidnight(now, -1)) * 1000n);
    case 'tomorrow':
      return formatEpochMicros(BigInt(localMidnight(now, 1)) * 1000n);
  }
  const m = RFC3339_OR_LOCAL.exec(t);
  if (m) return absolute(m);
  let d = lower;
  if (d.startsWith('-')) d = d.slice(1);
  else if (d.endsWith(' ago')) d = d.slice(0, -4);
  const us = parseDurationMicros(d);
  if (us === null) return null;
  try {
    return formatEpochMicros(nowUs - us);
  } catch {
    return null;
  }
}

function absolute(m: RegExpExecArray): string | null {
  const y = Number(m[1]);
  const mo = Number(m[2]);
  const d = Number(m[3]);
  const hasTime = m[4] !== undefined;
  const h = hasTime ? Number(m[4]) : 0;
  const mi = hasTime ? Number(m[5]) : 0;
  const s = m[6] !== undefined ? Number(m[6]) : 0;
  const zone = m[8];
  if (mo < 1 || mo > 12 || d < 1 || d > DAYS_IN_MONTH[mo - 1]! || (mo === 2 && d === 29 && !isLeap(y)))
    return null;
  if (h > 23 || mi > 59 || s > 60) return null; // 60: a leap second, as RFC 3339 allows
  const frac = fractionMicros(m[7]);
  let ms: number;
  if (zone === undefined) {
    // local date or date-time: Date's local constructor applies the zone rules of TZ
    const local = new Date(y, mo - 1, d, h, mi, s);
    local.setFullYear(y); // years 0..99 would otherwise mean 1900..1999
    ms = local.getTime();
  } else {
    let offsetMin = 0;
    if (zone !== 'Z' && zone !== 'z') {
      const sign = zone[0] === '-' ? -1 : 1;
      const digits = zone.slice(1).replace(':', '');
      const oh = Number(digits.slice(0, 2));
      const om = digits.length > 2 ? Number(digits.slice(2, 4)) : 0;
      if (oh > 23 || om > 59) return null;
      offsetMin = sign * (oh * 60 + om);
    }
    const utc = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
    utc.setUTCFullYear(y);
    ms = utc.getTime() - offsetMin * 60_000;
  }
  if (Number.isNaN(ms)) return null;
  try {
    return formatEpochMicros(BigInt(ms) * 1000n + frac);
  } catch {
    return null;
  }
}
