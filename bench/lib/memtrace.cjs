/** Preloaded into serve by bench/quick-serve.mjs (MEMTRACE=1): prints the peak of each process.memoryUsage() figure, in MB, at exit. */
const max = {};
setInterval(() => {
  const m = process.memoryUsage();
  for (const k in m) max[k] = Math.max(max[k] ?? 0, Math.round(m[k] / 1048576));
}, 50).unref();
process.on('exit', () => console.error('mem max MB', JSON.stringify(max)));
