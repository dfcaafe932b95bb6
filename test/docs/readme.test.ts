import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  REPO,
  removeWalkthroughDir,
  runWalkthrough,
  startWalkthrough,
  type RunningWalkthrough,
  type WalkthroughRun,
} from './walkthrough.ts';

/** Three nodes start, a cluster forms and serves the README's calls, a lease runs out (12 s): a slow CI machine's bound. */
const CLUSTER_WALKTHROUGH_TIMEOUT_MS = 150_000;
/** The simulator, mutants, core and storage benches, crash rounds and a short bench, each bounded below. */
const DEV_TOOLS_TIMEOUT_MS = 240_000;
/** `npm start` prints its endpoints once its three nodes are up and the cluster initialized. */
const START_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 200;

const cleanups: { readonly dir: string }[] = [];
afterAll(() => {
  for (const run of cleanups) removeWalkthroughDir(run);
});

async function run(name: string, timeoutMs: number, inRepo = false): Promise<WalkthroughRun> {
  const result = await runWalkthrough('README.md', name, timeoutMs, {
    inRepo,
    ...(name === 'dev-tools' ? { bounds: DEV_TOOL_BOUNDS } : {}),
  });
  cleanups.push(result);
  return result;
}

/**
 * The README's developer commands as written, each bounded to a few seconds: fewer seeds, one
 * mutant, short benches. `npm run bench:etcd` is asked for its usage only: the comparison installs
 * Debian's etcd-server with apt, which no test may do (docs/benchmarks.md has its measured runs).
 */
const DEV_TOOL_BOUNDS: readonly (readonly [RegExp, string])[] = [
  [/^npm run sim( +#)/m, 'npm run sim -- --seeds 2$1'],
  [/--seeds 10000 --first-seed 1/, '--seeds 2 --first-seed 1'],
  [/--seeds 500 --keep-going/, '--seeds 2 --keep-going'],
  [
    /^npm run sim:mutants( +#)/m,
    'npm run sim:mutants -- --seeds 30 --only "vote granted without the log up-to-date check"$1',
  ],
  [/^npm run bench:core( +#)/m, 'npm run bench:core -- --entries 5000$1'],
  [/^npm run bench:storage( +#)/m, 'npm run bench:storage -- --seconds 1$1'],
  [/--rounds 1000/, '--rounds 2'],
  [/^npm run bench( +#)/m, 'npm run bench -- --duration-ms 1000 --runs kv$1'],
  [/^npm run bench:etcd( +#)/m, 'npm run bench:etcd -- --help$1'],
];

describe('README.md, run as written', () => {
  it(
    'a cluster by hand: formed through any node, writes and reads anywhere, a lease runs out under a watch, the CLI, CAS, a transaction, an exactly-once retry',
    async () => {
      const result = await run('by-hand', CLUSTER_WALKTHROUGH_TIMEOUT_MS);
      expect(result.code, result.output).toBe(0);
      const out = result.output;
      expect(out).toMatch(/"key":"greeting","value":"hello world"/);
      expect(out).toMatch(/"members":\[1,2,3\]/);
      expect(out).toMatch(/event: put[\s\S]*svc\/api[\s\S]*event: delete/);
      expect(out).toMatch(/"code":"KEY_NOT_FOUND"/);
      expect(out).toMatch(/"code":"COMPARE_FAILED"/);
      expect(out).toMatch(/^exit code 5$/m);
      expect(out).toMatch(/"succeeded":false/);
      const sessionAnswers =
        out.match(/\{"command":\{"CompareAndSwap":\{"key":"counter","expected":"1"[^\n]*\}/g) ?? [];
      expect(sessionAnswers).toHaveLength(2);
      expect(sessionAnswers[0]).toBe(sessionAnswers[1]);
    },
    CLUSTER_WALKTHROUGH_TIMEOUT_MS + 10_000,
  );

  it(
    'without typing addresses: nodes found by mDNS and gossip, added by id; a fourth joins with a join ticket',
    async () => {
      const result = await run('discovery', CLUSTER_WALKTHROUGH_TIMEOUT_MS);
      expect(result.code, result.output).toBe(0);
      expect(result.output).toMatch(/"members":\[1,2,3\]/);
      expect(result.output).toMatch(/^4\s+learner\s+.*12D3KooW\w+$/m);
    },
    CLUSTER_WALKTHROUGH_TIMEOUT_MS + 10_000,
  );

  it(
    'the simulator, the mutants, the benches and the crash test start and finish as the README says',
    async () => {
      const result = await run('dev-tools', DEV_TOOLS_TIMEOUT_MS, true);
      expect(result.code, result.output).toBe(0);
      expect(result.output).toMatch(/sim: 2 seeds from 1, 0 failed/);
      expect(result.output).toMatch(/^caught {2}vote granted without the log up-to-date check/m);
    },
    DEV_TOOLS_TIMEOUT_MS + 10_000,
  );

  it(
    '`npm ci && npm start`: a local cluster that takes a write and serves it back; CI runs `npm ci` and `npm test`',
    async () => {
      const ci = readFileSync(join(REPO, '.ci/run'), 'utf8');
      expect(ci).toMatch(/^npm ci\b/m);
      expect(ci).toMatch(/^npm test$/m);
      const running = await startWalkthrough('README.md', 'start', {
        inRepo: true,
        // CI ran `npm ci` on this checkout already and runs `npm test` itself (this test is part of it).
        bounds: [
          [/^npm ci && /m, ''],
          [/^npm test .*$/m, ''],
        ],
      });
      cleanups.push(running);
      try {
        await waitFor(running, /Aspen is running/, START_TIMEOUT_MS);
        const url = `http://127.0.0.1:${running.ports.httpBase + 1}`;
        const write = await fetch(`${url}/write`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ command: { Set: { key: 'greeting', value: 'hello world' } } }),
        });
        expect(write.status, running.output()).toBe(200);
        const read = await fetch(`http://127.0.0.1:${running.ports.httpBase + 3}/read?key=greeting`);
        expect(await read.json()).toMatchObject({ key: 'greeting', value: 'hello world' });
      } finally {
        running.stop();
      }
    },
    START_TIMEOUT_MS + 20_000,
  );
});

async function waitFor(running: RunningWalkthrough, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(running.output())) {
    if (Date.now() > deadline)
      throw new Error(`no ${String(pattern)} within ${timeoutMs} ms:\n${running.output()}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}
