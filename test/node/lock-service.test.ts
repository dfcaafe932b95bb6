import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import type { KeyValueStore, WatchService } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import { checkedUnlockKey, lockKey, lockKeyLease } from '../../src/api/lock-validation.ts';
import type { WriteRequest } from '../../src/api/types.ts';
import { LEASE_ID_MAX, LOCK_WAITERS_MAX } from '../../src/base/limits.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { NodeLockService } from '../../src/node/lock-service.ts';
import { realNodeParts } from '../client/real-node.ts';

const stops: (() => void)[] = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** A started, initialized node; `store` and `watch` wrap its own so a test can make them fail. */
async function started() {
  const parts = realNodeParts();
  stops.push(() => {
    parts.node.stop();
  });
  await parts.control.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
  const grant = async () => (await parts.leases.grant({ ttl_seconds: 60 })).lease_id;
  const keys = async (prefix: string) =>
    (await parts.control.scan({ prefix })).entries.map((entry) => entry.key);
  return { ...parts, grant, keys };
}

/** Until `prefix` holds `count` keys (bounded: 5 s). */
async function untilKeys(keys: (prefix: string) => Promise<string[]>, prefix: string, count: number) {
  const deadline = Date.now() + 5_000;
  while ((await keys(prefix)).length < count && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 10));
}

function isRemoval(request: WriteRequest): boolean {
  const command = request.command;
  return 'Transaction' in command && command.Transaction.success.some((op) => 'Delete' in op);
}

async function rejection(promise: Promise<unknown>): Promise<AspenError> {
  const error: unknown = await promise.then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(AspenError);
  return error as AspenError;
}

describe('lock keys', () => {
  it('a lease id round-trips through its lock key, and the key is a valid unlock key', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: LEASE_ID_MAX }),
        fc.stringMatching(/^[a-z0-9.-]{1,20}$/),
        (id, name) => {
          const key = lockKey(name, id);
          expect(key).toMatch(/\/[0-9a-f]{16}$/);
          expect(lockKeyLease(key, name)).toBe(id);
          expect(checkedUnlockKey({ key })).toBe(key);
          expect(lockKeyLease(`${key}0`, name)).toBeNull();
          expect(lockKeyLease(`x${key}`, name)).toBeNull();
        },
      ),
    );
  });
});

describe('NodeLockService failure paths', () => {
  it('refuses a name with 1,000 keys under it (TOO_MANY_WAITERS) and removes the key it created', async () => {
    const { control, watch, grant, keys } = await started();
    const lease = await grant();
    const batch = 100;
    for (let first = 0; first < LOCK_WAITERS_MAX; first += batch) {
      const pairs = Array.from({ length: batch }, (_, i) => [`big/k${first + i}`, ''] as [string, string]);
      await control.write({ command: { SetMulti: { pairs } } });
    }
    const locks = new NodeLockService({ store: control, watch, clock: systemClock });
    const error = await rejection(locks.lock({ name: 'big', lease_id: lease }));
    expect(error.code).toBe('TOO_MANY_WAITERS');
    expect(await keys(lockKey('big', lease))).toEqual([]);
  });

  it('checks again when a watch is refused (COMPACTED at once, TOO_MANY_WATCHERS after a pause)', async () => {
    const { control, watch, grant } = await started();
    const [a, b] = [await grant(), await grant()];
    const refusals = [
      new AspenError('COMPACTED', 'compacted', { compactRevision: 1 }),
      new AspenError('TOO_MANY_WATCHERS', 'full'),
    ];
    let opens = 0;
    const flaky: WatchService = {
      open: (request, sink) => {
        opens += 1;
        const refusal = refusals.shift();
        if (refusal !== undefined) throw refusal;
        return watch.open(request, sink);
      },
    };
    const locks = new NodeLockService({ store: control, watch: flaky, clock: systemClock });
    const owner = await locks.lock({ name: 'w', lease_id: a });
    const waiter = locks.lock({ name: 'w', lease_id: b });
    const deadline = Date.now() + 5_000;
    while (opens < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(opens).toBe(3);
    await locks.unlock({ key: owner.key });
    expect((await waiter).fencing_token).toBeGreaterThan(owner.fencing_token);
  });

  it('a timeout whose removal fails is LOCK_TIMEOUT, not definite', async () => {
    const { control, watch, grant, keys } = await started();
    const [a, b] = [await grant(), await grant()];
    const failing: KeyValueStore = {
      read: (request) => control.read(request),
      scan: (request) => control.scan(request),
      delete: (request) => control.delete(request),
      write: (request) =>
        isRemoval(request)
          ? Promise.reject(new AspenError('NO_LEADER', 'no leader'))
          : control.write(request),
    };
    const locks = new NodeLockService({ store: failing, watch, clock: systemClock });
    await locks.lock({ name: 'f', lease_id: a });
    const error = await rejection(locks.lock({ name: 'f', lease_id: b, timeout_ms: 50 }));
    expect([error.code, error.definite]).toEqual(['LOCK_TIMEOUT', false]);
    expect(await keys('f/')).toHaveLength(2);
  });

  it('an aborted wait rejects with the reason and removes its key; a re-entrant wait keeps the key', async () => {
    const { control, watch, grant, keys } = await started();
    const [a, b] = [await grant(), await grant()];
    const locks = new NodeLockService({ store: control, watch, clock: systemClock });
    await locks.lock({ name: 'g', lease_id: a });
    const alone = new AbortController();
    const waitingAlone = locks.lock({ name: 'g', lease_id: b }, alone.signal);
    await untilKeys(keys, 'g/', 2);
    const reason = new AspenError('LOCK_TIMEOUT', 'went away');
    alone.abort(reason);
    expect(await waitingAlone.then(null, (error: unknown) => error)).toBe(reason);
    expect(await keys('g/')).toEqual([lockKey('g', a)]);
    // A second call of the same lease re-enters the key: its timeout leaves the key to the first
    // call, and the first call giving up then leaves it to the re-entry (it stays until the lease ends).
    const caller = new AbortController();
    const waiting = locks.lock({ name: 'g', lease_id: b }, caller.signal);
    await untilKeys(keys, 'g/', 2);
    expect((await rejection(locks.lock({ name: 'g', lease_id: b, timeout_ms: 30 }))).code).toBe(
      'LOCK_TIMEOUT',
    );
    expect(await keys('g/')).toHaveLength(2);
    caller.abort(reason);
    expect(await waiting.then(null, (error: unknown) => error)).toBe(reason);
    expect(await keys('g/')).toHaveLength(2);
  });

  it('a call that gives up never removes a key a later call of the same lease re-entered (a client retry)', async () => {
    const { control, watch, grant, keys } = await started();
    const [owner, retrier] = [await grant(), await grant()];
    const locks = new NodeLockService({ store: control, watch, clock: systemClock });
    const held = await locks.lock({ name: 'r', lease_id: owner });
    const first = new AbortController();
    const dropped = locks.lock({ name: 'r', lease_id: retrier }, first.signal);
    await untilKeys(keys, 'r/', 2);
    const retry = locks.lock({ name: 'r', lease_id: retrier, timeout_ms: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 50)); // the retry has re-entered the key
    first.abort(new AspenError('LOCK_TIMEOUT', 'the client dropped the first attempt'));
    await dropped.then(null, () => undefined);
    expect(await keys('r/')).toHaveLength(2);
    await locks.unlock({ key: held.key });
    const won = await retry;
    expect(won.key).toBe(lockKey('r', retrier));
    expect(won.fencing_token).toBeGreaterThan(held.fencing_token);
    expect(await keys('r/')).toEqual([won.key]);
  });
});
