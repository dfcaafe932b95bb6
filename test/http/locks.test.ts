import { afterEach, describe, expect, it } from 'vitest';
import type { WatchService } from '../../src/api/contracts.ts';
import type { WatchRequest } from '../../src/api/types.ts';
import { LOCK_NAME_BYTES_MAX, LOCK_TIMEOUT_MS_MAX } from '../../src/base/limits.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { NodeLockService } from '../../src/node/lock-service.ts';
import type { WatchHub } from '../../src/node/watch-hub.ts';
import { hex, pending, post, servedNode, until } from './queue-helpers.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** A WatchService that records what each waiter watches, then opens it on the real hub. */
class SpyWatch implements WatchService {
  readonly opened: WatchRequest[] = [];
  private readonly hub: WatchHub;
  constructor(hub: WatchHub) {
    this.hub = hub;
  }
  open(...args: Parameters<WatchService['open']>): ReturnType<WatchService['open']> {
    this.opened.push(args[0]);
    return this.hub.open(...args);
  }
}

/** A real single node (initialized) with the lock routes, whose watches a SpyWatch records. */
async function lockNode() {
  const made: SpyWatch[] = [];
  const served = await servedNode(stops, ({ watch, control }) => {
    made.push(new SpyWatch(watch));
    return { locks: new NodeLockService({ store: control, watch: made[0] ?? watch, clock: systemClock }) };
  });
  const [spy] = made;
  if (spy === undefined) throw new Error('the lock service was made with a SpyWatch');
  return { ...served, spy, hub: served.watch };
}

describe('POST /lock and /unlock on one node', () => {
  it('hands the lock to the waiter on unlock, with a larger fencing token', async () => {
    const { url, grant, keys } = await lockNode();
    const [a, b] = [await grant(), await grant()];
    const first = await post(url, '/lock', { name: 'jobs', lease_id: a });
    expect(first).toEqual({
      status: 200,
      json: { name: 'jobs', key: `jobs/${hex(a)}`, fencing_token: expect.any(Number) as number },
    });
    const second = pending(post(url, '/lock', { name: 'jobs', lease_id: b }));
    await until('the waiter key', async () => (await keys('jobs/')).length === 2);
    expect(second.done).toBe(false);
    expect(await post(url, '/unlock', { key: `jobs/${hex(a)}` })).toEqual({
      status: 200,
      json: { released: true },
    });
    const won = await second.answer;
    expect(won.status).toBe(200);
    expect(won.json.key).toBe(`jobs/${hex(b)}`);
    expect(won.json.fencing_token as number).toBeGreaterThan(first.json.fencing_token as number);
    // Unlocking again: the key is gone.
    const again = await post(url, '/unlock', { key: `jobs/${hex(a)}` });
    expect(again.status).toBe(404);
    expect(again.json).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });

  it('hands the lock to the waiter when the owner lease is revoked', async () => {
    const { url, grant, leases } = await lockNode();
    const [a, b] = [await grant(), await grant()];
    const first = await post(url, '/lock', { name: 'n', lease_id: a });
    expect(first.status).toBe(200);
    const second = pending(post(url, '/lock', { name: 'n', lease_id: b }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(second.done).toBe(false);
    await leases.revoke({ lease_id: a });
    const won = await second.answer;
    expect(won.status).toBe(200);
    expect(won.json.fencing_token as number).toBeGreaterThan(first.json.fencing_token as number);
  });

  it('a timed-out wait answers 409 LOCK_TIMEOUT and removes its key', async () => {
    const { url, grant, keys } = await lockNode();
    const [a, b] = [await grant(), await grant()];
    expect((await post(url, '/lock', { name: 't', lease_id: a })).status).toBe(200);
    const timedOut = await post(url, '/lock', { name: 't', lease_id: b, timeout_ms: 200 });
    expect(timedOut.status).toBe(409);
    expect(timedOut.json).toMatchObject({ error: { code: 'LOCK_TIMEOUT', definite: true } });
    expect(await keys('t/')).toEqual([`t/${hex(a)}`]);
  });

  it('is re-entrant for the same lease: the same key and token', async () => {
    const { url, grant, keys } = await lockNode();
    const a = await grant();
    const first = await post(url, '/lock', { name: 'r', lease_id: a });
    const second = await post(url, '/lock', { name: 'r', lease_id: a });
    expect(first.status).toBe(200);
    expect(second).toEqual(first);
    expect(await keys('r/')).toEqual([`r/${hex(a)}`]);
  });

  it('refuses an unknown lease with 404 LEASE_NOT_FOUND and writes nothing', async () => {
    const { url, keys } = await lockNode();
    const answer = await post(url, '/lock', { name: 'u', lease_id: 999 });
    expect(answer.status).toBe(404);
    expect(answer.json).toMatchObject({ error: { code: 'LEASE_NOT_FOUND' } });
    expect(await keys('u/')).toEqual([]);
  });

  it('refuses bad input with 400 and writes nothing', async () => {
    const { url, control, grant } = await lockNode();
    const lease = await grant();
    const before = (await control.getMetrics()).last_applied;
    const bad: [string, unknown][] = [
      ['/lock', { name: '', lease_id: lease }],
      ['/lock', { name: 'x'.repeat(LOCK_NAME_BYTES_MAX + 1), lease_id: lease }],
      ['/lock', { name: 'a/b', lease_id: lease }],
      ['/lock', { name: 'a\u0001', lease_id: lease }],
      ['/lock', { name: '\ud800', lease_id: lease }],
      ['/lock', { name: 'a', lease_id: 0 }],
      ['/lock', { name: 'a', lease_id: -1 }],
      ['/lock', { name: 'a', lease_id: 1.5 }],
      ['/lock', { name: 'a', lease_id: '1' }],
      ['/lock', { name: 'a', lease_id: 2 ** 53 }],
      ['/lock', { name: 'a', lease_id: lease, timeout_ms: 0 }],
      ['/lock', { name: 'a', lease_id: lease, timeout_ms: LOCK_TIMEOUT_MS_MAX + 1 }],
      ['/lock', { name: 'a', lease_id: lease, timeout_ms: 1.5 }],
      ['/lock', { name: 'a', lease_id: lease, extra: 1 }],
      ['/lock', { lease_id: lease }],
      ['/unlock', { key: 'plain' }],
      ['/unlock', { key: 'a/123' }],
      ['/unlock', { key: 'a/00000000000000AB' }],
      ['/unlock', { key: `/${hex(lease)}` }],
      ['/unlock', { key: `a/b/${hex(lease)}` }],
      ['/unlock', { key: `a/${'0'.repeat(16)}` }],
      ['/unlock', { key: '' }],
      ['/unlock', {}],
    ];
    for (const [path, body] of bad) {
      const answer = await post(url, path, body);
      expect({ path, body, status: answer.status }).toEqual({ path, body, status: 400 });
      expect(answer.json).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    }
    expect((await control.getMetrics()).last_applied).toBe(before);
  });

  it('removes the waiter key when the client goes away', async () => {
    const { url, grant, keys } = await lockNode();
    const [a, b] = [await grant(), await grant()];
    expect((await post(url, '/lock', { name: 'd', lease_id: a })).status).toBe(200);
    const gone = new AbortController();
    const waiting = post(url, '/lock', { name: 'd', lease_id: b }, gone.signal).catch(() => null);
    await until('the waiter key', async () => (await keys('d/')).length === 2);
    gone.abort();
    expect(await waiting).toBeNull();
    await until('the waiter key removed', async () => (await keys('d/')).length === 1);
    expect(await keys('d/')).toEqual([`d/${hex(a)}`]);
  });

  it('each waiter watches only its predecessor', async () => {
    const { url, grant, spy } = await lockNode();
    const [a, b, c] = [await grant(), await grant(), await grant()];
    expect((await post(url, '/lock', { name: 'p', lease_id: a })).status).toBe(200);
    const second = pending(post(url, '/lock', { name: 'p', lease_id: b }));
    await until('the second waiter watching', () => spy.opened.length === 1);
    const third = pending(post(url, '/lock', { name: 'p', lease_id: c }));
    await until('the third waiter watching', () => spy.opened.length === 2);
    expect(spy.opened.map((request) => request.key)).toEqual([`p/${hex(a)}`, `p/${hex(b)}`]);
    expect(spy.opened.every((request) => request.prefix === undefined)).toBe(true);
    // Releasing the last waiter's key wakes nobody: the second still watches only the owner.
    expect((await post(url, '/unlock', { key: `p/${hex(c)}` })).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(spy.opened).toHaveLength(2);
    expect(second.done).toBe(false);
    expect(third.done).toBe(false);
    expect((await post(url, '/unlock', { key: `p/${hex(a)}` })).status).toBe(200);
    expect((await second.answer).status).toBe(200);
    // The third wakes when its predecessor goes, and finds its own key gone.
    expect((await post(url, '/unlock', { key: `p/${hex(b)}` })).status).toBe(200);
    const lost = await third.answer;
    expect(lost.status).toBe(404);
    expect(lost.json).toMatchObject({ error: { code: 'LEASE_NOT_FOUND' } });
  });
});
