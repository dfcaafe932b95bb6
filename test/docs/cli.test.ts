import { afterAll, describe, expect, it } from 'vitest';
import { removeWalkthroughDir, runWalkthrough, type WalkthroughRun } from './walkthrough.ts';

/** Four nodes, every command of docs/cli.md in order, a few 1–2 s pauses: a slow CI machine's bound. */
const WALKTHROUGH_TIMEOUT_MS = 150_000;

const runs: WalkthroughRun[] = [];
afterAll(() => {
  for (const run of runs) removeWalkthroughDir(run);
});

describe('docs/cli.md, run as written', () => {
  it(
    'every example command: keys, CAS, a transaction, scans, membership, tickets, leases, watch, a lock, an election, the CAS loop',
    async () => {
      const run = await runWalkthrough('docs/cli.md', 'cli', WALKTHROUGH_TIMEOUT_MS);
      runs.push(run);
      expect(run.code, run.output).toBe(0);
      const out = run.output;
      expect(out).toMatch(/^initialized: voters 1, 2, 3$/m);
      expect(out).toMatch(/^hello world$/m);
      expect(out).toMatch(/^back at 23:00\n$/m);
      expect(out).toMatch(/aspen: KEY_NOT_FOUND: .*\nexit code 3$/m);
      // stderr and stdout reach the output through two pipes: their lines may interleave either way.
      expect(out).toMatch(/^42\n/m);
      expect(out).toMatch(/^aspen: COMPARE_FAILED: nothing written: "counter" holds another value/m);
      expect(out).toMatch(/^exit code 5$/m);
      expect(out).toMatch(/… more: --continuation-token YXBwLzI/);
      expect(out).toMatch(/^app\/3\s+c$/m);
      expect(out).toMatch(/^learner 4 caught up/m);
      expect(out).toMatch(/^voters 1, 2, 3, 4; learners none$/m);
      expect(out).toMatch(/^voters 1, 2, 3; learners 4$/m);
      expect(out).toMatch(/^learner 4 removed; learners none$/m);
      expect(out).toMatch(/^lease 31 granted/m);
      expect(out).toMatch(/^lease 31 renewed/m);
      expect(out).toMatch(/^\d+ PUT svc\/api\/node-2 10\.0\.0\.2:8080$/m);
      expect(out).toMatch(/^job ran with fencing token \d+$/m);
      expect(out).toMatch(/^working, fenced by \d+$/m);
      expect(out).toMatch(/^elected: db = 10\.0\.0\.5:5432/m);
      expect(out).toMatch(/^\d+ PUT svc\/api\/node-1 10\.0\.0\.1:8080$/m);
      expect(out).toMatch(/^leader 10\.0\.0\.5:5432/m);
    },
    WALKTHROUGH_TIMEOUT_MS + 10_000,
  );
});

describe('docs/cli.md "Day one", run as written', () => {
  it(
    'a value from stdin; health exits 0 with every member found from one endpoint, then 8 with a node down',
    async () => {
      const run = await runWalkthrough('docs/cli.md', 'day-one', WALKTHROUGH_TIMEOUT_MS);
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
