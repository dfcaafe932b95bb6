import { describe, expect, it } from 'vitest';
import { runSeed } from '../../src/sim/simulation.ts';
import { type SimResult } from '../../src/sim/outcome.ts';

/** The fixed seed set CI runs on every change (the closing notes report far larger runs). */
export const CI_SEED_COUNT = 300;
const CHUNK_SEEDS = 50;

function describeFailure(result: SimResult): string {
  return `seed ${result.seed} ${result.status}: ${result.message}\nreplay: npm run sim -- --seed ${result.seed}\n${result.trace.join('\n')}`;
}

describe('deterministic simulator', () => {
  for (let first = 1; first <= CI_SEED_COUNT; first += CHUNK_SEEDS) {
    const last = first + CHUNK_SEEDS - 1;
    it(`seeds ${first}..${last}: no safety, liveness or linearizability violation`, async () => {
      for (let seed = first; seed <= last; seed += 1) {
        const result = await runSeed(seed);
        if (result.status !== 'ok') expect.fail(describeFailure(result));
        expect(result.stats.convergedAfterMs).toBeGreaterThanOrEqual(0);
      }
    });
  }

  it('replays a seed exactly', async () => {
    const first = await runSeed(4242);
    const second = await runSeed(4242);
    expect(second.stats).toEqual(first.stats);
    expect(second.trace).toEqual(first.trace);
    expect(first.stats.events).toBeGreaterThan(1_000);
  });

  it('different seeds explore different schedules', async () => {
    const a = await runSeed(11);
    const b = await runSeed(12);
    expect(a.stats).not.toEqual(b.stats);
  });

  it('runs do real work: commits, elections, faults and client operations', async () => {
    let committed = 0;
    let crashes = 0;
    let partitions = 0;
    let ops = 0;
    let grants = 0;
    let proclaims = 0;
    let observations = 0;
    for (let seed = 1; seed <= 20; seed += 1) {
      const result = await runSeed(seed);
      committed += result.stats.committedEntries;
      crashes += result.stats.crashes;
      partitions += result.stats.partitions;
      ops += result.stats.opsOk;
      grants += result.stats.lockGrants;
      proclaims += result.stats.proclaims;
      observations += result.stats.observations;
    }
    expect(committed).toBeGreaterThan(1_000);
    expect(crashes).toBeGreaterThan(10);
    expect(partitions).toBeGreaterThan(10);
    expect(ops).toBeGreaterThan(1_000);
    // Locks and elections (issue 16): grants, leaders' proclaims, observers' leader reports checked.
    expect(grants).toBeGreaterThan(50);
    expect(proclaims).toBeGreaterThan(10);
    expect(observations).toBeGreaterThan(50);
  });
});
