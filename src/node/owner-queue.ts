import type { KeyValueStore, WatchService, WatchSink, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { lockKey, lockKeyLease } from '../api/lock-validation.ts';
import type { KeyValue, TxnOp } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { LOCK_WAITERS_MAX } from '../base/limits.ts';
import type { Clock } from './interfaces.ts';

/**
 * Rounds of one wait for ownership (an owner check, then a watch of the predecessor until it is
 * deleted or the watch ends). A round ends with a key ahead gone (fewer than LOCK_WAITERS_MAX were
 * ahead, and no later key gets ahead) or with a watch ended early and retried; past this many the
 * call gives up as on a timeout.
 */
export const LOCK_WAIT_ROUNDS_MAX = 4 * LOCK_WAITERS_MAX;
/** Pause before checking again after the node refused a watch (TOO_MANY_WATCHERS, shutting down). */
export const LOCK_WATCH_RETRY_MS = 100;

export interface OwnerQueueOptions {
  /** Linearizable and leader-bound (a follower's ForwardingStore forwards each write). */
  readonly store: KeyValueStore;
  /** This node's watch hub: a waiter watches its predecessor here. */
  readonly watch: WatchService;
  readonly clock: Clock;
}

/** How a wait for the predecessor ended. */
type WaitEnd = 'gone' | 'recheck' | 'timeout' | 'aborted';

/** The key a call holds: its create revision, and whether this call created it. */
export interface Held {
  readonly key: string;
  readonly revision: number;
  readonly created: boolean;
  /**
   * The key's mod revision as this call left it: a call that finds its lease's key already there
   * writes it again (same value rules, same lease), so a call that gives up later removes the key
   * only while nobody re-entered it since (a compare on this revision).
   */
  readonly modRevision: number;
  /**
   * The name's queue keys as the Transaction that created the key saw them (its own Scan, after the
   * Set): the first owner check without another entry in the log. Absent for a key found again.
   */
  readonly entryScan?: TxnScan;
}

/** A Transaction's Scan of a name's queue keys, and the revision it was read at. */
interface TxnScan {
  readonly entries: readonly KeyValue[];
  readonly truncated: boolean;
  readonly revision: number;
}

/** The queue keys of a name (`<name>/<lease hex16>`) at one linearizable revision. */
export interface QueueScan {
  readonly entries: readonly KeyValue[];
  readonly revision: number;
}

/** What an owner check found: owned, or the key just ahead to wait for (seen at `revision`). */
type OwnerCheck =
  { readonly owned: true } | { readonly owned: false; readonly ahead: string; readonly revision: number };

/** A wait's failure: the timeout error of the caller's kind (LOCK_TIMEOUT, CAMPAIGN_TIMEOUT). */
export type TimeoutError = (why: string) => AspenError;

/**
 * The queue under a name that locks and elections share (docs/api.md "Locks", "Elections"), on the
 * KeyValueStore and WatchService contracts only: a lease's key under the name is created (or found),
 * then, at a linearizable point (a Transaction's Scan through the log), it is first when no queue key
 * of the name has a lower create revision; else it watches only the key just ahead and checks again
 * when that key is deleted. Ownership is decided only from such a check, which also saw the key alive.
 */
export class OwnerQueue {
  private readonly store: KeyValueStore;
  private readonly watch: WatchService;
  private readonly clock: Clock;

  constructor(options: OwnerQueueOptions) {
    this.store = options.store;
    this.watch = options.watch;
    this.clock = options.clock;
  }

  /**
   * The lease's key with `value`, created on the lease unless it exists (LEASE_NOT_FOUND: no such
   * lease). A key that exists is written again with `value` (its create revision, the token, stays),
   * so that an earlier call on the same lease that gives up does not remove it (see `leave`).
   */
  async enter(name: string, leaseId: number, value: string): Promise<Held> {
    const key = lockKey(name, leaseId);
    const result = await this.store.write({
      command: {
        Transaction: {
          compare: [{ key, target: 'create_index', op: 'equal', value: 0 }],
          success: [{ Set: { key, value, lease_id: leaseId } }, queueScanOp(name)],
          failure: [{ Get: { key } }],
        },
      },
    });
    if (result.succeeded === true) {
      const scan = result.results?.[1];
      assert(scan !== undefined && 'Scan' in scan, 'the entering Transaction ends with a Scan');
      const entryScan = {
        entries: scan.Scan.entries,
        truncated: scan.Scan.is_truncated,
        revision: result.revision,
      };
      return { key, revision: result.revision, created: true, modRevision: result.revision, entryScan };
    }
    const found = result.results?.[0];
    assert(found !== undefined && 'Get' in found && found.Get !== null, 'the failure branch found the key');
    if (found.Get.lease_id !== leaseId)
      throw new AspenError(
        'INVALID_INPUT',
        `key ${key.slice(0, 64)} exists on lease ${found.Get.lease_id}, not ${leaseId}: it was written outside the lock and election calls`,
      );
    return this.reenter(key, leaseId, value, found.Get.create_index);
  }

  /** Write an existing key of the lease again (only while it is the same key on the same lease). */
  private async reenter(key: string, leaseId: number, value: string, revision: number): Promise<Held> {
    const result = await this.store.write({
      command: {
        Transaction: {
          compare: [
            { key, target: 'create_index', op: 'equal', value: revision },
            { key, target: 'lease_id', op: 'equal', value: leaseId },
          ],
          success: [{ Set: { key, value, lease_id: leaseId } }],
          failure: [],
        },
      },
    });
    // Gone meanwhile (released, or its lease ended): the owner check says which.
    if (result.succeeded !== true) return { key, revision, created: false, modRevision: revision };
    return { key, revision, created: false, modRevision: result.revision };
  }

  /**
   * Every queue key of the name, read through the log (a Transaction Scan), in key order;
   * TOO_MANY_WAITERS when there are LOCK_WAITERS_MAX keys or more under `<name>/`.
   */
  async scan(name: string): Promise<QueueScan> {
    const result = await this.store.write({
      command: { Transaction: { compare: [], success: [queueScanOp(name)], failure: [] } },
    });
    const scan = result.results?.[0];
    assert(result.succeeded === true && scan !== undefined && 'Scan' in scan, 'an owner check is one Scan');
    return queueScanOf(name, {
      entries: scan.Scan.entries,
      truncated: scan.Scan.is_truncated,
      revision: result.revision,
    });
  }

  /** Wait, bounded by the deadline and LOCK_WAIT_ROUNDS_MAX, until `held` is the name's first key. */
  async waitUntilFirst(
    name: string,
    held: Held,
    deadlineMs: number,
    timeout: TimeoutError,
    signal?: AbortSignal,
  ): Promise<void> {
    let entryScan = held.entryScan ?? null;
    for (let round = 0; round < LOCK_WAIT_ROUNDS_MAX; round += 1) {
      throwIfAborted(signal, timeout);
      const check = ownerOf(held, entryScan === null ? await this.scan(name) : queueScanOf(name, entryScan));
      entryScan = null;
      if (check.owned) return;
      throwIfAborted(signal, timeout);
      const end = await this.waitForDeletion(check.ahead, check.revision + 1, deadlineMs, signal);
      if (end === 'timeout') throw timeout('timed out');
      if (end === 'aborted') throwIfAborted(signal, timeout);
    }
    throw timeout(`gave up after ${LOCK_WAIT_ROUNDS_MAX} rounds`);
  }

  /**
   * Watch only `key` on this node from `fromRevision`; ends when it is deleted, the watch ends or is
   * refused (check again), the deadline passes or the caller goes away.
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
   * A wait that ends without ownership removes the key this call created (only that one, and only
   * while no later call on the same lease re-entered it: a compare on its mod revision), and answers the error to reject with: a timeout (`timeoutCode`) stays
   * definite once removed and becomes not definite if the removal failed (the key stays until its
   * lease ends); any other failure as it was.
   */
  async leave(held: Held, error: unknown, timeoutCode: AspenError['code']): Promise<unknown> {
    const leaseGone = error instanceof AspenError && error.code === 'LEASE_NOT_FOUND';
    if (!held.created || leaseGone) return error;
    try {
      await this.store.write({
        command: {
          Transaction: {
            compare: [{ key: held.key, target: 'mod_index', op: 'equal', value: held.modRevision }],
            success: [{ Delete: { key: held.key } }],
            failure: [],
          },
        },
      });
    } catch (removal) {
      if (error instanceof AspenError && error.code === timeoutCode)
        return new AspenError(
          timeoutCode,
          `${error.message}; removing its key failed, it stays until its lease ends`,
          { definite: false, cause: removal },
        );
    }
    return error;
  }
}

/** The Transaction op that reads a name's queue keys (one more than a name may hold, to tell). */
function queueScanOp(name: string): TxnOp {
  return { Scan: { prefix: `${name}/`, limit: LOCK_WAITERS_MAX } };
}

/** A name's queue keys from its Scan; TOO_MANY_WAITERS when there are LOCK_WAITERS_MAX or more. */
function queueScanOf(name: string, scan: TxnScan): QueueScan {
  if (scan.truncated)
    throw new AspenError('TOO_MANY_WAITERS', `${name.slice(0, 64)} has ${LOCK_WAITERS_MAX} or more waiters`);
  const entries = scan.entries.filter((entry) => lockKeyLease(entry.key, name) !== null);
  return { entries, revision: scan.revision };
}

/** The first queue key of a scan: the lowest create revision (null: none). */
export function firstOf<T extends { readonly create_index: number }>(entries: Iterable<T>): T | null {
  let first: T | null = null;
  // bounded: callers hold at most LOCK_WAITERS_MAX keys
  for (const entry of entries) if (first === null || entry.create_index < first.create_index) first = entry;
  return first;
}

/** The owner check's verdict on one scan of the name's queue keys. */
function ownerOf(held: Held, scan: QueueScan): OwnerCheck {
  let own: KeyValue | null = null;
  let ahead: KeyValue | null = null;
  // bounded: the scan returned fewer than LOCK_WAITERS_MAX entries
  for (const entry of scan.entries) {
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
      `key ${held.key.slice(0, 64)} is gone (its lease expired or was revoked, or it was released)`,
    );
  if (ahead === null) return { owned: true };
  assert(ahead.create_index < scan.revision, 'a key seen by the scan was created before it');
  return { owned: false, ahead: ahead.key, revision: scan.revision };
}

/** The caller went away: reject with its reason (an Error), so the wait ends and the key is removed. */
function throwIfAborted(signal: AbortSignal | undefined, timeout: TimeoutError): void {
  if (signal?.aborted !== true) return;
  const reason: unknown = signal.reason;
  throw reason instanceof Error ? reason : timeout('abandoned by its caller');
}
