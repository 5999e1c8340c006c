import { defineConfig } from 'vitest/config';

/**
 * Three projects (as node-pg-migrate splits `unit` and `integration`):
 * - `unit`: pure functions, no Postgres, no build (`npm run test:unit`, seconds);
 * - `integration`: modules against the real Postgres at TEST_DATABASE_URL (127.0.0.1:5432);
 * - `e2e`: the built binary (`dist/`) spawned as a user would run it.
 * Every file runs with test/setup/leaks.ts, which fails a file that leaves a child process, a
 * socket or a server open. Coverage is c8's (`.c8rc.json`, run by `npm test`): it wraps the whole
 * run, so the binaries the e2e tests spawn are measured too (NODE_V8_COVERAGE is inherited, dist/
 * maps back to src/ through the source maps); `scripts/coverage-floor` holds the floors.
 */
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    setupFiles: ['test/setup/leaks.ts'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'integration', include: ['test/integration/**/*.test.ts'] } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'] } },
    ],
  },
});
