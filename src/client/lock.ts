import { AspenError } from '../api/errors.ts';
import { checkedLockName } from '../api/lock-validation.ts';
import type { LockResult } from '../api/types.ts';
import { LOCK_TIMEOUT_MS_DEFAULT, LOCK_TIMEOUT_MS_MAX } from '../base/limits.ts';
import { KvError } from './errors.ts';
import type { LeaseApi, LeaseCaller, LeaseKeeper } from './lease.ts';
import { assert, backoff, PREFER_LEADER, TRANSIENT_CODES, type Call } from './retry.ts';
import type { RetryPolicy } from './options.ts';

/**
 * How much longer than the server's `timeout_ms` one POST /lock attempt waits for its answer: the
 * server answers LOCK_TIMEOUT at timeout_ms, plus the removal of its key and a forward.
 */
export const LOCK_ANSWER_MARGIN_MS = 5_000;
/** POST /lock attempts one `lock` call makes at most (each with the time left of the one timeout). */
export const LOCK_ATTEMPTS_MAX = 8;

export interface LockOptions {
  /** The TTL of the lease the lock lives on (whole seconds; the cluster's minimum applies). */
  readonly ttlSeconds: number;
  /** How long to wait for the lock, in total (default LOCK_TIMEOUT_MS_DEFAULT, at most LOCK_TIMEOUT_MS_MAX). */
  readonly timeoutMs?: number;
  /** Aborts the wait (ABORTED); the lease is revoked. It does not end a lock once held. */
  readonly signal?: AbortSignal;
}

/** A held lock: its key, its fencing token, `lost` (its lease is gone), and `release()`. */
export interface Lock {
  readonly name: string;
  readonly key: string;
  /** The key's create revision: compare it (create_index) in every protected write. */
  readonly fencingToken: number;
  readonly leaseId: number;
  /** Aborted (with a KvError reason) when the lease keeper reports the lease lost; never by release(). */
  readonly lost: AbortSignal;
  /** Unlock, stop the keeper, revoke the lease. Resolves once the lease is gone (also when it already was). */
  release(): Promise<void>;
}

function invalid(message: string): KvError {
  return new KvError('INVALID_INPUT', message, { definite: true });
}

/** The server's name rule, checked before anything is sent: non-empty, no "/", within the byte bound. */
export function checkName(name: string, what: string): void {
  try {
    checkedLockName(name);
  } catch (error) {
    if (error instanceof AspenError) throw invalid(`${what} ${error.message}`);
    throw error;
  }
}

export function checkTimeout(timeoutMs: number): void {
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > LOCK_TIMEOUT_MS_MAX)
    throw invalid(`timeoutMs must be an integer in [1, ${LOCK_TIMEOUT_MS_MAX}], got ${timeoutMs}`);
}

/** Whether a failed POST /lock attempt is worth another with the same lease (re-entrant on the server). */
function retryable(error: KvError): boolean {
  return TRANSIENT_CODES.has(error.code);
}

/** One wait for ownership under a name: POST /lock or /election/campaign. */
export interface OwnerWait {
  /** The call for one attempt, asking the server to wait `leftMs`. */
  readonly call: (leaseId: number, leftMs: number) => Call;
  /** The error when no attempt was answered within the timeout. */
  readonly timedOut: (timeoutMs: number) => KvError;
  /** "lock jobs", "campaign db": for messages. */
  readonly what: string;
}

/** An owner's answer with the lease it lives on: kept alive by `keeper`, `lost` once it is gone. */
export interface Held<T> {
  readonly result: T;
  readonly leaseId: number;
  readonly keeper: LeaseKeeper;
  readonly lost: AbortSignal;
}

/**
 * `kv.lock`: POST /lock and /unlock (docs/api.md "Locks") on a lease of its own, kept alive in the
 * background. A lock call is retried only with the same lease: the server finds that lease's key
 * again (re-entrant), so a call that may have been received is never doubled into a second waiter.
 */
export class LockApi {
  private readonly caller: LeaseCaller;
  private readonly leases: LeaseApi;
  private readonly retry: RetryPolicy;

  constructor(caller: LeaseCaller, leases: LeaseApi, retry: RetryPolicy) {
    this.caller = caller;
    this.leases = leases;
    this.retry = retry;
  }

  async lock(name: string, options: LockOptions): Promise<Lock> {
    checkName(name, 'lock');
    const held = await this.hold<LockResult>(options, {
      what: `lock ${name}`,
      call: (leaseId, leftMs) => ({
        method: 'POST',
        path: '/lock',
        body: { name, lease_id: leaseId, timeout_ms: leftMs },
        idempotent: true,
        route: PREFER_LEADER,
      }),
      timedOut: (timeoutMs) =>
        new KvError('LOCK_TIMEOUT', `lock ${name}: not owned within ${timeoutMs} ms`, {
          status: 409,
          definite: false,
        }),
    });
    const token = held.result.fencing_token;
    assert(Number.isSafeInteger(token) && token > 0, 'a fencing token is positive');
    let released: Promise<void> | null = null;
    const release = (): Promise<void> => {
      const unlock: Call = {
        method: 'POST',
        path: '/unlock',
        body: { key: held.result.key },
        idempotent: true,
        route: PREFER_LEADER,
      };
      released ??= this.end(unlock, held);
      return released;
    };
    const { leaseId, lost } = held;
    return { name: held.result.name, key: held.result.key, fencingToken: token, leaseId, lost, release };
  }

  /**
   * A new lease of `options.ttlSeconds`, kept alive in the background, and the owner's answer of
   * `wait` on it. On any failure the keeper stops and the lease is revoked; the lease lost while
   * waiting rejects with LEASE_NOT_FOUND.
   */
  async hold<T>(options: LockOptions, wait: OwnerWait): Promise<Held<T>> {
    const timeoutMs = options.timeoutMs ?? LOCK_TIMEOUT_MS_DEFAULT;
    checkTimeout(timeoutMs);
    const grant = await this.leases.grant(
      options.ttlSeconds,
      options.signal === undefined ? {} : { signal: options.signal },
    );
    const lostController = new AbortController();
    const keeper = this.leases.keepAliveForever(grant.lease_id, {
      ttlSeconds: grant.ttl_seconds,
      onLost: (end) => {
        lostController.abort(
          end.error ??
            new KvError('LEASE_NOT_FOUND', `lease ${grant.lease_id} lost (${end.cause})`, { definite: true }),
        );
      },
    });
    const signals = [lostController.signal, ...(options.signal === undefined ? [] : [options.signal])];
    try {
      const result = await this.acquire<T>(wait, grant.lease_id, timeoutMs, AbortSignal.any(signals));
      return { result, leaseId: grant.lease_id, keeper, lost: lostController.signal };
    } catch (error) {
      keeper.stop();
      await this.leases.revoke(grant.lease_id).catch(() => undefined); // best effort: else its TTL ends it
      if (lostController.signal.aborted && error instanceof KvError && error.code === 'ABORTED')
        throw new KvError('LEASE_NOT_FOUND', `${wait.what}: its lease was lost while waiting`, {
          definite: true,
        });
      throw error;
    }
  }

  /**
   * The wait's call until answered, each attempt asking for the time left and given a margin more for
   * its answer. Transient failures (also a lost connection: the call may have been received) are
   * tried again with the same lease, at most LOCK_ATTEMPTS_MAX times, never past the timeout.
   */
  private async acquire<T>(
    wait: OwnerWait,
    leaseId: number,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<T> {
    const deadlineMs = Date.now() + timeoutMs;
    let inDoubt = false;
    for (let attempt = 1; attempt <= LOCK_ATTEMPTS_MAX; attempt += 1) {
      const leftMs = Math.ceil(deadlineMs - Date.now());
      if (leftMs < 1) break;
      try {
        return await this.caller<T>(
          wait.call(leaseId, leftMs),
          { signal, timeoutMs: leftMs + LOCK_ANSWER_MARGIN_MS, retry: { attemptsMax: 1 } },
          false,
        );
      } catch (error) {
        if (!(error instanceof KvError)) throw error;
        // An abandoned earlier attempt removes the key it created: ours may be gone though the lease lives.
        const keyRemoved = inDoubt && error.code === 'LEASE_NOT_FOUND' && !signal.aborted;
        if (!retryable(error) && !keyRemoved) throw error;
        inDoubt ||= !error.definite;
        await backoff(this.retry, attempt, deadlineMs, signal);
      }
    }
    throw wait.timedOut(timeoutMs);
  }

  /**
   * `call` (unlock, resign: the next waiter gets in), stop the keeper, revoke: the lease's end deletes
   * the key in any case. Resolves once the lease is gone (also when it already was).
   */
  async end(call: Call, held: Held<unknown>): Promise<void> {
    await this.caller(call, undefined, false).catch(() => undefined); // gone already, or unreachable
    held.keeper.stop();
    try {
      await this.leases.revoke(held.leaseId);
    } catch (error) {
      if (!(error instanceof KvError) || error.code !== 'LEASE_NOT_FOUND') throw error;
    }
  }
}
