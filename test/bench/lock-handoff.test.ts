import { afterAll, describe, expect, it } from 'vitest';
import { LOCK_CLIENTS, runLockHandoff } from '../../src/bench/coordination-load.ts';
import { aspenCoordination, aspenTarget } from '../../src/bench/protocols.ts';
import { realNode } from '../client/real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A short run: enough for every client to take the lock several times. */
const DURATION_MS = 1_000;

describe('the bench lock hand-off run', () => {
  it('takes and releases one lock from every client against a real node, without errors', async () => {
    const endpoint = await realNode(cleanups);
    const result = await runLockHandoff(aspenTarget([endpoint]), aspenCoordination, DURATION_MS, () => 0);
    expect(result).toMatchObject({ system: 'aspen', clients: LOCK_CLIENTS, errors: 0 });
    expect(result.handoffs).toBeGreaterThan(LOCK_CLIENTS);
    expect(result.handoffsPerSecond).toBeGreaterThan(0);
    expect(result.waitP50Ms).toBeLessThanOrEqual(result.waitP99Ms);
    expect(result.waitP99Ms).toBeLessThanOrEqual(result.waitMaxMs);
  });

  it('counts a lock that is refused as an error (an unknown lease), never as a hand-off', async () => {
    const endpoint = await realNode(cleanups);
    const refused = {
      ...aspenCoordination,
      grant: () => aspenCoordination.grant(1),
      leaseId: () => '999999',
    };
    const result = await runLockHandoff(aspenTarget([endpoint]), refused, DURATION_MS, () => 0);
    expect(result.handoffs).toBe(0);
    expect(result.errors).toBeGreaterThan(0);
  });
});
