/**
 * A preload for child processes the bench measures: `node --import <this file> bin/audit-gateway …`
 * with `BENCH_EXIT_STATS=<file>` in the environment. When the process exits, it writes its peak RSS
 * (`VmHWM` of /proc/self/status, in kB) and its own CPU time to that file as JSON, so the figures
 * cover the whole run up to the last byte (polling /proc from outside can miss the end).
 */
import { readFileSync, writeFileSync } from 'node:fs';

const target = process.env.BENCH_EXIT_STATS;
if (target) {
  process.on('exit', (code) => {
    let hwmKb = null;
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (m) hwmKb = Number(m[1]);
    } catch {}
    const ru = process.resourceUsage();
    const cpu = process.cpuUsage();
    try {
      writeFileSync(
        target,
        JSON.stringify({
          code,
          hwmKb: hwmKb ?? ru.maxRSS,
          cpuSeconds: (cpu.user + cpu.system) / 1e6,
        }),
      );
    } catch {}
  });
}
