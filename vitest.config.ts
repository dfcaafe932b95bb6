import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// Tests start many `aspen-node` and `aspen` processes: Node's on-disk compile cache (keyed by each
// file's content) saves most of each one's start-up. Inherited by every process a test spawns.
process.env.NODE_COMPILE_CACHE ??= join(tmpdir(), 'aspen-test-compile-cache');

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Two files at a time: most test time is real processes waiting on timers and the network, so
    // two share the CI machine's 2 cores (8.8 min against 12.4 min one at a time, 2026-12-02).
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 30_000,
  },
});
