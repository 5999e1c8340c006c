/**
 * Process accounting from /proc (Linux): CPU ticks, peak RSS, and the machine description.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

/** Clock ticks per second (`getconf CLK_TCK`); 100 on Linux when getconf is missing. */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Fields of /proc/<pid>/stat after the command name: index 0 is field 3 (state). */
function statFields(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** utime + stime of a process, in clock ticks (null when it is gone). */
export function cpuTicks(pid) {
  const f = statFields(pid);
  if (!f) return null;
  return Number(f[11]) + Number(f[12]);
}

/**
 * CPU ticks of a process tree rooted at `rootPid` (e.g. the postmaster): its own utime + stime, the
 * cutime + cstime of children it has reaped (backends that exited), and utime + stime of its live
 * children.
 */
export function treeCpuTicks(rootPid) {
  const f = statFields(rootPid);
  if (!f) return null;
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const c = statFields(name);
    if (c && Number(c[1]) === rootPid) ticks += Number(c[11]) + Number(c[12]);
  }
  return ticks;
}

/** A field of /proc/<pid>/status in kB (VmHWM: peak RSS, VmRSS: current). */
export function statusKb(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The machine: cores, CPU model, RAM, kernel. */
export function machine() {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) model = m[1].trim();
  } catch {}
  let nproc = cpus().length;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {}
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {}
  return { nproc, model, ramGiB: totalmem() / 2 ** 30, kernel };
}
