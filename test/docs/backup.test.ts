import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeWalkthroughDir, runWalkthrough, type WalkthroughRun } from './walkthrough.ts';

/** Six nodes start, a backup is saved and restored, the new cluster grows: a slow CI machine's bound. */
const WALKTHROUGH_TIMEOUT_MS = 200_000;

const runs: WalkthroughRun[] = [];
afterAll(() => {
  for (const run of runs) removeWalkthroughDir(run);
});

describe('docs/operations.md "Backup and disaster recovery", run as written', () => {
  it(
    'saves a backup of a running cluster, checks a copy, restores it into a new cluster that takes writes and grows; refuses a used directory and a truncated file',
    async () => {
      const run = await runWalkthrough('docs/operations.md', 'backup', WALKTHROUGH_TIMEOUT_MS);
      runs.push(run);
      expect(run.code, run.output).toBe(0);
      const out = run.output;
      const saved =
        /^saved cluster\.backup: revision (\d+) \(snapshot index \1, term \d+\), \d+ bytes, taken by node \d at .*, sha256 ([0-9a-f]{64})$/m.exec(
          out,
        );
      expect(saved, out).not.toBeNull();
      const revision = Number(saved?.[1]);
      expect(out).toContain(`offsite/cluster.backup: intact Aspen backup (format 1): revision ${revision} `);
      expect(out).toContain(`sha256 ${saved?.[2] ?? ''}`);
      // The data survived; the restored cluster's first write comes after the backup's revision.
      expect(out).toMatch(/^on$/m);
      const written = /^OK \(log index (\d+)\)$/gm;
      const indexes = [...out.matchAll(written)].map((match) => Number(match[1]));
      expect(indexes).toHaveLength(3);
      expect(indexes[2]).toBeGreaterThan(revision);
      for (const id of [1, 2, 3]) expect(out).toMatch(new RegExp(`^${id}\\s+(leader|voter)\\s`, 'm'));
      expect(out).toMatch(
        /^aspen-node: --restore refused: the data dir restored\/node-1 is not empty .*\nrefused with exit code 2$/m,
      );
      expect(out).toMatch(
        /^aspen-node: --restore truncated\.backup refused: it is truncated: 100 of the \d+ bytes its header announces\nrefused with exit code 2$/m,
      );
      const log = readFileSync(join(run.dir, 'restored-1.log'), 'utf8');
      expect(log).toMatch(
        new RegExp(`restore: seeded restored/node-1 from offsite/cluster.backup: revision ${revision} `),
      );
      // Tokens and the cookie are not in a backup: the file holds no token.
      const backup = readFileSync(join(run.dir, 'cluster.backup'));
      expect(backup.includes(readFileSync(join(run.dir, 'ops.token'), 'utf8').trim())).toBe(false);
    },
    WALKTHROUGH_TIMEOUT_MS + 10_000,
  );
});
