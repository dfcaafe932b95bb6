import { afterEach, describe, expect, it } from 'vitest';
import type { ElectionSink, WatchService } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import { lockKey } from '../../src/api/lock-validation.ts';
import type { LeaderResult } from '../../src/api/types.ts';
import { LOCK_WAITERS_MAX } from '../../src/base/limits.ts';
import { NodeElectionService } from '../../src/node/election-service.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { realNodeParts } from '../client/real-node.ts';

const stops: (() => void)[] = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** Bound on waiting for an observer's calls. */
const WAIT_MS_MAX = 5_000;

async function started(watch?: WatchService) {
  const parts = realNodeParts();
  stops.push(() => {
    parts.node.stop();
  });
  await parts.control.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
  const elections = new NodeElectionService({
    store: parts.control,
    watch: watch ?? parts.watch,
    clock: systemClock,
  });
  const grant = async () => (await parts.leases.grant({ ttl_seconds: 60 })).lease_id;
  return { ...parts, elections, grant };
}

/** A sink that records what an observation passes on. */
function recorder() {
  const calls: (['leader', LeaderResult | null] | ['canceled', string])[] = [];
  const sink: ElectionSink = {
    leader: (_revision, leader) => calls.push(['leader', leader]),
    progress: () => undefined,
    canceled: (reason) => calls.push(['canceled', reason]),
    ready: () => true,
  };
  const seen = async (count: number) => {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (calls.length < count && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect(calls.length).toBeGreaterThanOrEqual(count);
  };
  return { calls, sink, seen };
}

describe('NodeElectionService.observe', () => {
  it('passes on only changes of the leader or its value, not other keys or candidates behind it', async () => {
    const { control, elections, grant } = await started();
    const [a, b] = [await grant(), await grant()];
    const { calls, sink, seen } = recorder();
    const subscription = await elections.observe({ name: 'o' }, sink);
    stops.push(() => {
      subscription.close();
    });
    await control.write({ command: { Set: { key: 'o/not-a-candidate', value: 'x' } } });
    const first = await elections.campaign({ name: 'o', lease_id: a, value: 'v1' });
    const behind = elections.campaign({ name: 'o', lease_id: b, value: 'w', timeout_ms: 100 });
    await elections.proclaim({ key: first.key, value: 'v1' }); // the same value: no change
    await elections.proclaim({ key: first.key, value: 'v2' });
    expect((await behind.catch((error: unknown) => error)) as AspenError).toMatchObject({
      code: 'CAMPAIGN_TIMEOUT',
    });
    await seen(3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(
      calls.map(([kind, leader]) => [kind, leader === null ? null : (leader as LeaderResult).value]),
    ).toEqual([
      ['leader', null],
      ['leader', 'v1'],
      ['leader', 'v2'],
    ]);
  });

  it('ends the observation when more than LOCK_WAITERS_MAX candidates appear', async () => {
    const { control, elections } = await started();
    const { calls, sink, seen } = recorder();
    const subscription = await elections.observe({ name: 'big' }, sink);
    stops.push(() => {
      subscription.close();
    });
    const batch = 100;
    for (let first = 1; first <= LOCK_WAITERS_MAX + 1; first += batch) {
      const count = Math.min(batch, LOCK_WAITERS_MAX + 2 - first);
      const pairs = Array.from(
        { length: count },
        (_, i) => [lockKey('big', first + i), ''] as [string, string],
      );
      await control.write({ command: { SetMulti: { pairs } } });
    }
    await seen(3);
    expect(calls[0]).toEqual(['leader', null]);
    expect(calls[1]?.[0]).toBe('leader');
    expect(calls[2]).toEqual(['canceled', `more than ${LOCK_WAITERS_MAX} candidates`]);
    expect(calls).toHaveLength(3);
  });

  it('rejects before passing anything on when the watch is refused', async () => {
    const refusing: WatchService = {
      open: () => {
        throw new AspenError('TOO_MANY_WATCHERS', 'full');
      },
    };
    const { elections } = await started(refusing);
    const { calls, sink } = recorder();
    await expect(elections.observe({ name: 'r' }, sink)).rejects.toMatchObject({ code: 'TOO_MANY_WATCHERS' });
    expect(calls).toEqual([]);
  });
});
