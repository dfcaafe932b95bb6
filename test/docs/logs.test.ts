import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeWalkthroughDir, runWalkthrough, type WalkthroughRun } from './walkthrough.ts';

/** Three nodes start, elect, lose their leader, elect again and see it back: a slow CI machine's bound. */
const WALKTHROUGH_TIMEOUT_MS = 120_000;

const runs: WalkthroughRun[] = [];
afterAll(() => {
  for (const run of runs) removeWalkthroughDir(run);
});

interface Line {
  readonly node_id: number;
  readonly level: string;
  readonly component: string;
  readonly msg: string;
  readonly event?: string;
  readonly leader_id?: number;
  readonly peer_node_id?: number;
}

function logOf(run: WalkthroughRun, id: number): Line[] {
  return readFileSync(join(run.dir, `node-${id}.log`), 'utf8')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Line);
}

describe('docs/operations.md "Reading the logs", run as written', () => {
  it(
    'every node names the leader elected; after the leader dies the new one names it unreachable, then reachable; debug adds discovery',
    async () => {
      const run = await runWalkthrough('docs/operations.md', 'logs', WALKTHROUGH_TIMEOUT_MS);
      runs.push(run);
      expect(run.code, run.output).toBe(0);
      const out = run.output;
      expect(out).toMatch(/initialized: voters 1, 2, 3/);
      const first = /^(\d) info leader elected: node (\d) \(this node\) in term (\d+)$/m.exec(out);
      expect(first, out).not.toBeNull();
      const [, , leader = '', term = ''] = first ?? [];
      for (const id of [1, 2, 3].filter((other) => String(other) !== leader))
        expect(out).toContain(`${id} info leader elected: node ${leader} in term ${term}`);
      for (const id of [1, 2, 3])
        expect(out).toContain(`${id} info membership: voters [1, 2, 3], learners []`);
      expect(out).toMatch(new RegExp(`^\\d node ${leader} unreachable: no answer for \\d+ ms$`, 'm'));
      expect(out).toMatch(new RegExp(`^node ${leader} reachable again$`, 'm'));
      expect(out).toMatch(/^\{"component":"discovery","msg":"/m);
      expect(out).toMatch(
        /^\{"component":"http","reqId":"req-\d+","msg":"GET \/health \d{3} in [\d.]+ ms"\}$/m,
      );

      // Every line of every log is JSON with node_id and component; only the restarted node logged at debug.
      const logs = [1, 2, 3].map((id) => logOf(run, id));
      for (const [index, lines] of logs.entries())
        for (const line of lines)
          expect(line).toMatchObject({ node_id: index + 1, component: expect.any(String) as string });
      for (const [index, lines] of logs.entries()) {
        const debug = lines.filter((line) => line.level === 'debug');
        if (String(index + 1) === leader) expect(debug.length).toBeGreaterThan(0);
        else expect(debug).toEqual([]);
      }
    },
    WALKTHROUGH_TIMEOUT_MS + 10_000,
  );
});
