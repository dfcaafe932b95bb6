import { afterAll, describe, expect, it } from 'vitest';
import { removeWalkthroughDir, runWalkthrough, type WalkthroughRun } from './walkthrough.ts';

/** Three nodes start and form a cluster, one stops: a slow CI machine's bound. */
const WALKTHROUGH_TIMEOUT_MS = 120_000;

const runs: WalkthroughRun[] = [];
afterAll(() => {
  for (const run of runs) removeWalkthroughDir(run);
});

describe('docs/cli.md "Day one", run as written', () => {
  it(
    'a value from stdin; health exits 0 with every member found from one endpoint, then 8 with a node down',
    async () => {
      const run = await runWalkthrough('docs/cli.md', 'cli', WALKTHROUGH_TIMEOUT_MS);
      runs.push(run);
      expect(run.code, run.output).toBe(0);
      const out = run.output;
      expect(out).toMatch(/^initialized: voters 1, 2, 3$/m);
      expect(out).toMatch(/^maintenance at 22:00\nback by 23:00\n$/m);
      expect(out).toMatch(/^NODE\s+ROLE\s+ENDPOINT\s+STATUS\s+LEADER\s+CHECKS$/m);
      expect(out).toMatch(/^healthy: 3 members answered healthy; leader \d$/m);
      expect(out).toMatch(/^\d http:\/\/127\.0\.0\.1:\d+$/m);
      expect(out).toMatch(/^3\s+voter\s+http:\/\/127\.0\.0\.1:\d+\s+unreachable \(CONNECTION\)$/m);
      // (Under load another node may be late to hear its leader and be named too.)
      expect(out).toMatch(
        /^unhealthy: (.*; )?node 3: unreachable \(CONNECTION\)(;.*)?\nunhealthy: exit code 8$/m,
      );
      expect(out).toMatch(/^leader \d; voters 1, 2, 3; learners none$/m);
    },
    WALKTHROUGH_TIMEOUT_MS + 10_000,
  );
});
