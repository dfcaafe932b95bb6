import type {
  KeyValueStore,
  LockService,
  WatchService,
  WatchSink,
  WatchSubscription,
} from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { checkedLock, checkedUnlockKey, lockKey, lockKeyLease } from '../api/lock-validation.ts';
import type {
  KeyValue,
  LockRequest,
  LockResult,
  UnlockRequest,
  UnlockResult,
  WriteResult,
} from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { LOCK_WAITERS_MAX } from '../base/limits.ts';
import type { Clock } from './interfaces.ts';

/**
 * Rounds of one lock call's wait (an owner check, then a watch of the predecessor until it is
 * deleted or the watch ends). A round ends with a key ahead gone (fewer than LOCK_WAITERS_MAX were
 * ahead, and no later key gets ahead) or with a watch ended early and retried; past this many the
 * call gives up as on a timeout.
 */
export const LOCK_WAIT_ROUNDS_MAX = 4 * LOCK_WAITERS_MAX;
/** Pause before checking again after the node refused a watch (TOO_MANY_WATCHERS, shutting down). */
export const LOCK_WATCH_RETRY_MS = 100;

export interface NodeLockServiceOptions {
  /** Linearizable and leader-bound (a follower's ForwardingStore forwards each write). */
  readonly store: KeyValueStore;
  /** This node's watch hub: a waiter watches its predecessor here. */
  readonly watch: WatchService;
  readonly clock: Clock;
}

/** How a wait for the predecessor ended. */
type WaitEnd = 'gone' | 'recheck' | 'timeout' | 'aborted';

/** The key this call holds: its create revision, and whether this call created it. */
interface Held {
  readonly key: string;
  readonly revision: number;
  readonly created: boolean;
}

/** What an owner check found: owned, or the key just ahead to wait for (seen at `revision`). */
type OwnerCheck =
  { readonly owned: true } | { readonly owned: false; readonly ahead: string; readonly revision: number };

/**
 * Locks on any node (docs/api.md "Locks"), on the KeyValueStore and WatchService contracts only:
 * the lease's key under the name is created (or found: re-entrant), then, at a linearizable point
 * (a Transaction's Scan through the log), the call owns the lock when no lock key of the name has a
 * lower create revision; else it watches only the key just ahead and checks again when that key is
 * deleted. The answer is given only from such a check, which also saw the key alive (so its lease).
 */
export class NodeLockService implements LockService {
  private readonly store: KeyValueStore;
  private readonly watch: WatchService;
  private readonly clock: Clock;

  constructor(options: NodeLockServiceOptions) {
    this.store = options.store;
    this.watch = options.watch;
    this.clock = options.clock;
  }

  async lock(request: LockRequest, signal?: AbortSignal): Promise<LockResult> {
    const { name, leaseId, timeoutMs } = checkedLock(request);
    const deadlineMs = this.clock.nowMs() + timeoutMs;
    const held = await this.createOrReuse(lockKey(name, leaseId), leaseId);
    try {
      await this.waitUntilOwner(name, held, deadlineMs, signal);
    } catch (error) {
      throw await this.giveUp(held, error);
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

  /** Step 1: the lease's key, created on the lease unless it exists (LEASE_NOT_FOUND: no such lease). */
  private async createOrReuse(key: string, leaseId: number): Promise<Held> {
    const result = await this.store.write({
      command: {
        Transaction: {
          compare: [{ key, target: 'create_index', op: 'equal', value: 0 }],
          success: [{ Set: { key, value: '', lease_id: leaseId } }],
          failure: [{ Get: { key } }],
        },
      },
    });
    if (result.succeeded === true) return { key, revision: result.revision, created: true };
    const found = result.results?.[0];
    assert(found !== undefined && 'Get' in found && found.Get !== null, 'the failure branch found the key');
    if (found.Get.lease_id !== leaseId)
      throw new AspenError(
        'INVALID_INPUT',
        `key ${key.slice(0, 64)} exists on lease ${found.Get.lease_id}, not ${leaseId}: it was written outside the lock calls`,
      );
    return { key, revision: found.Get.create_index, created: false };
  }

  /** Steps 2 and 3, bounded by the deadline and LOCK_WAIT_ROUNDS_MAX. */
  private async waitUntilOwner(
    name: string,
    held: Held,
    deadlineMs: number,
    signal?: AbortSignal,
  ): Promise<void> {
    for (let round = 0; round < LOCK_WAIT_ROUNDS_MAX; round += 1) {
      throwIfAborted(signal);
      const check = await this.checkOwner(name, held);
      if (check.owned) return;
      throwIfAborted(signal);
      const end = await this.waitForDeletion(check.ahead, check.revision + 1, deadlineMs, signal);
      if (end === 'timeout') throw lockTimeout(name, 'timed out');
      if (end === 'aborted') throwIfAborted(signal);
    }
    throw lockTimeout(name, `gave up after ${LOCK_WAIT_ROUNDS_MAX} rounds`);
  }

  /**
   * Step 2: every lock key of the name, read through the log. Our key must be there with our create
   * revision (else its lease ended: LEASE_NOT_FOUND); owned when no lock key was created before it.
   */
  private async checkOwner(name: string, held: Held): Promise<OwnerCheck> {
    const result = await this.store.write({
      command: {
        Transaction: {
          compare: [],
          success: [{ Scan: { prefix: `${name}/`, limit: LOCK_WAITERS_MAX } }],
          failure: [],
        },
      },
    });
    const scan = result.results?.[0];
    assert(result.succeeded === true && scan !== undefined && 'Scan' in scan, 'an owner check is one Scan');
    if (scan.Scan.is_truncated)
      throw new AspenError(
        'TOO_MANY_WAITERS',
        `lock ${name.slice(0, 64)} has ${LOCK_WAITERS_MAX} or more waiters`,
      );
    return ownerOf(name, held, scan.Scan.entries, result);
  }

  /**
   * Step 3: watch only `key` on this node from `fromRevision`; ends when it is deleted, the watch
   * ends or is refused (check again), the deadline passes or the caller goes away.
   */
  private waitForDeletion(
    key: string,
    fromRevision: number,
    deadlineMs: number,
    signal?: AbortSignal,
  ): Promise<WaitEnd> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let subscription: WatchSubscription | null = null;
      let cancelTimer = (): void => undefined;
      const finish = (end: WaitEnd): void => {
        if (settled) return;
        settled = true;
        cancelTimer();
        signal?.removeEventListener('abort', onAbort);
        subscription?.close();
        resolve(end);
      };
      const onAbort = (): void => {
        finish('aborted');
      };
      const remainingMs = deadlineMs - this.clock.nowMs();
      if (remainingMs <= 0 || signal?.aborted === true) {
        finish(remainingMs <= 0 ? 'timeout' : 'aborted');
        return;
      }
      cancelTimer = this.clock.setTimer(remainingMs, () => {
        finish('timeout');
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      const sink: WatchSink = {
        events: (_revision, events) => {
          if (events.some((event) => event.type === 'delete')) finish('gone');
        },
        progress: () => undefined,
        canceled: () => {
          finish('recheck');
        },
        ready: () => !settled,
      };
      try {
        subscription = this.watch.open({ key, start_revision: fromRevision, progress_interval_ms: 0 }, sink);
      } catch (error) {
        // COMPACTED: check again at a newer revision now; a refusal (too many watchers): after a pause.
        if (error instanceof AspenError && error.code === 'COMPACTED') finish('recheck');
        else if (error instanceof AspenError) cancelTimer = this.retryTimer(remainingMs, cancelTimer, finish);
        else {
          settled = true;
          cancelTimer();
          signal?.removeEventListener('abort', onAbort);
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      }
      if (settled) subscription?.close(); // ended while opening
    });
  }

  /** A pause before the next round (never past the deadline, whose timer it keeps). */
  private retryTimer(
    remainingMs: number,
    deadlineTimer: () => void,
    finish: (end: WaitEnd) => void,
  ): () => void {
    if (remainingMs <= LOCK_WATCH_RETRY_MS) return deadlineTimer;
    const cancelRetry = this.clock.setTimer(LOCK_WATCH_RETRY_MS, () => {
      finish('recheck');
    });
    return () => {
      cancelRetry();
      deadlineTimer();
    };
  }

  /**
   * Step 4: a wait that ends without the lock removes the key this call created (only that one: a
   * compare on its create revision), then rejects: LOCK_TIMEOUT definite once removed, not definite
   * if the removal failed (the key stays until its lease ends); any other failure as it was.
   */
  private async giveUp(held: Held, error: unknown): Promise<unknown> {
    const leaseGone = error instanceof AspenError && error.code === 'LEASE_NOT_FOUND';
    if (!held.created || leaseGone) return error;
    try {
      await this.store.write({
        command: {
          Transaction: {
            compare: [{ key: held.key, target: 'create_index', op: 'equal', value: held.revision }],
            success: [{ Delete: { key: held.key } }],
            failure: [],
          },
        },
      });
    } catch (removal) {
      if (error instanceof AspenError && error.code === 'LOCK_TIMEOUT')
        return new AspenError(
          'LOCK_TIMEOUT',
          `${error.message}; removing its key failed, it stays until its lease ends`,
          {
            definite: false,
            cause: removal,
          },
        );
    }
    return error;
  }
}

/** The owner check's verdict on one Scan of the name's keys (at `result.revision`). */
function ownerOf(name: string, held: Held, entries: readonly KeyValue[], result: WriteResult): OwnerCheck {
  let own: KeyValue | null = null;
  let ahead: KeyValue | null = null;
  // bounded: the Scan returned at most LOCK_WAITERS_MAX entries
  for (const entry of entries) {
    if (lockKeyLease(entry.key, name) === null) continue; // not a lock key of this name
    if (entry.key === held.key) own = entry;
    else if (
      entry.create_index < held.revision &&
      (ahead === null || entry.create_index > ahead.create_index)
    )
      ahead = entry;
  }
  if (own?.create_index !== held.revision)
    throw new AspenError(
      'LEASE_NOT_FOUND',
      `lock key ${held.key.slice(0, 64)} is gone (its lease expired or was revoked, or it was unlocked)`,
    );
  if (ahead === null) return { owned: true };
  assert(ahead.create_index < result.revision, 'a key seen by the scan was created before it');
  return { owned: false, ahead: ahead.key, revision: result.revision };
}

function lockTimeout(name: string, why: string): AspenError {
  return new AspenError(
    'LOCK_TIMEOUT',
    `lock ${name.slice(0, 64)}: ${why} waiting for the owner (a key this call created was removed)`,
  );
}

/** The caller went away: reject with its reason (an Error), so the wait ends and the key is removed. */
function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted !== true) return;
  const reason: unknown = signal.reason;
  throw reason instanceof Error
    ? reason
    : new AspenError('LOCK_TIMEOUT', 'the lock call was abandoned by its caller');
}
