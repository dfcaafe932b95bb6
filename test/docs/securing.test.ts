import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeWalkthroughDir, runWalkthrough, type WalkthroughRun } from './walkthrough.ts';

/** Four nodes start, a cluster forms, a node joins (and, later, the cookie rotates): a slow CI machine's bound. */
const WALKTHROUGH_TIMEOUT_MS = 240_000;

const runs: WalkthroughRun[] = [];
afterAll(() => {
  for (const run of runs) removeWalkthroughDir(run);
});

function read(run: WalkthroughRun, file: string): string {
  return readFileSync(join(run.dir, file), 'utf8');
}

describe('docs/operations.md "Securing a cluster", run as written', () => {
  it(
    'tokens, TLS, a cluster formed by the admin, 403 and 401, identities recorded, a join ticket used once, the cookie rotated; no secret in any log',
    async () => {
      const run = await runWalkthrough('docs/operations.md', 'securing', WALKTHROUGH_TIMEOUT_MS);
      runs.push(run);
      expect(run.code, run.output).toBe(0);
      const out = run.output;
      expect(out).toMatch(/initialized: voters 1, 2, 3/);
      expect(out).toMatch(/aspen: FORBIDDEN: /);
      expect(out).toMatch(/refused with exit code 1/);
      expect(out).toMatch(/"code":"UNAUTHENTICATED"/);
      expect(out).toMatch(/^hello$/m);
      for (const id of [1, 2, 3])
        expect(out).toMatch(new RegExp(`^${id}\\s+(leader|voter)\\s+.*12D3KooW\\w+$`, 'm'));
      expect(out).toMatch(/aspen-node: cannot join: .*\n.*ticket refused with exit code 2/);

      // The cookie rotated with the cluster serving; the old cookie opens nothing afterwards.
      expect(out).toMatch(/^hello after rotation$/m);
      const peers = out.split('\n').filter((line) => line.startsWith('{"peers":'));
      expect(peers).toHaveLength(1);
      expect(peers[0]).toMatch(/"node_id":2/);
      expect(peers[0]).not.toMatch(/"node_id":9/);
      const refusals = [1, 2, 3, 4].map((id) => read(run, `node-${id}.log`)).join('\n');
      expect(refusals).toMatch(/auth: refused connection from /);

      // The cookie reached node 4 only through the join, and no log line holds a secret.
      const cookie = read(run, 'data/node-4/cluster.cookie');
      expect(cookie.length).toBeGreaterThanOrEqual(40);
      const secrets = [cookie, read(run, 'ops.token').trim(), read(run, 'app.token').trim()];
      const logs = readdirSync(run.dir).filter((file) => file.endsWith('.log'));
      expect(logs.length).toBeGreaterThanOrEqual(4);
      const lines = logs.flatMap((file) => read(run, file).split('\n'));
      expect(lines.some((line) => line.includes('"node_id":4') && line.includes(' up: '))).toBe(true);
      for (const secret of secrets) {
        expect(secret.length).toBeGreaterThan(20);
        expect(lines.filter((line) => line.includes(secret))).toEqual([]);
        expect(out.includes(secret)).toBe(false);
      }
      expect(existsSync(join(run.dir, 'data/node-1/node.key'))).toBe(true);
    },
    WALKTHROUGH_TIMEOUT_MS + 10_000,
  );
});
