/**
 * Counting what a test leaves open: Node's active resources (`process.getActiveResourcesInfo()`,
 * Node ≥ 17) of the kinds that stand for a child process, a socket or a server. Timers and file
 * requests are not counted: they end by themselves.
 */

/** The resource kinds that stand for a process, a socket or a server. */
export const WATCHED_KINDS = [
  'ProcessWrap',
  'TCPSocketWrap',
  'TCPServerWrap',
  'PipeWrap',
  'PipeServerWrap',
  'TLSWrap',
] as const;

/** How many resources of each watched kind are active now. */
export function openHandles(): Map<string, number> {
  const m = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) {
    if ((WATCHED_KINDS as readonly string[]).includes(kind)) m.set(kind, (m.get(kind) ?? 0) + 1);
  }
  return m;
}

/** The kinds whose count is above `baseline` in `now`, each as `kind +n`; empty when none is. */
export function excess(baseline: Map<string, number>, now: Map<string, number>): string[] {
  const out: string[] = [];
  for (const [kind, n] of now) {
    const extra = n - (baseline.get(kind) ?? 0);
    if (extra > 0) out.push(`${kind} +${extra}`);
  }
  return out;
}
