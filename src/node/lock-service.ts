import type { KeyValueStore, LockService, WatchService } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { checkedLock, checkedUnlockKey } from '../api/lock-validation.ts';
import type { LockRequest, LockResult, UnlockRequest, UnlockResult } from '../api/types.ts';
import type { Clock } from './interfaces.ts';
import { OwnerQueue } from './owner-queue.ts';

export interface NodeLockServiceOptions {
  /** Linearizable and leader-bound (a follower's ForwardingStore forwards each write). */
  readonly store: KeyValueStore;
  /** This node's watch hub: a waiter watches its predecessor here. */
  readonly watch: WatchService;
  readonly clock: Clock;
}

/**
 * Locks on any node (docs/api.md "Locks"), on the OwnerQueue of the name: the lease's key under the
 * name is created (or found: re-entrant), and the call answers once an owner check at a linearizable
 * point found no lock key of the name with a lower create revision (and its own key alive, so its
 * lease). A wait that ends without the lock removes the key it created.
 */
export class NodeLockService implements LockService {
  private readonly store: KeyValueStore;
  private readonly clock: Clock;
  private readonly queue: OwnerQueue;

  constructor(options: NodeLockServiceOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.queue = new OwnerQueue(options);
  }

  async lock(request: LockRequest, signal?: AbortSignal): Promise<LockResult> {
    const { name, leaseId, timeoutMs } = checkedLock(request);
    const deadlineMs = this.clock.nowMs() + timeoutMs;
    const held = await this.queue.enter(name, leaseId, '');
    const timeout = (why: string): AspenError =>
      new AspenError(
        'LOCK_TIMEOUT',
        `lock ${name.slice(0, 64)}: ${why} waiting for the owner (a key this call created was removed)`,
      );
    try {
      await this.queue.waitUntilFirst(name, held, deadlineMs, timeout, signal);
    } catch (error) {
      throw await this.queue.leave(held, error, 'LOCK_TIMEOUT');
    }
    return { name, key: held.key, fencing_token: held.revision };
  }

  async unlock(request: UnlockRequest): Promise<UnlockResult> {
    const key = checkedUnlockKey(request);
    const result = await this.store.delete({ key });
    if (!result.deleted)
      throw new AspenError(
        'NOT_FOUND',
        `no such lock key (released, or its lease expired): ${key.slice(0, 64)}`,
      );
    return { released: true };
  }
}
