import type {
  LeaseGrantResult,
  LeaseInfoResult,
  LeaseKeepAliveResult,
  LeaseListResult,
  LeaseRevokeResult,
} from '../api/types.ts';
import { LEASE_ID_MAX, LEASE_KEYS_MAX, LEASE_TTL_SECONDS_MAX } from '../base/limits.ts';
import { KvError } from './errors.ts';
import type { CallOptions } from './options.ts';
import { assert, PREFER_LEADER, type Call } from './retry.ts';

/** Renewals per TTL a keeper sends by default (etcd's clients renew at a third of the TTL too). */
export const KEEPER_RENEWALS_PER_TTL = 3;
/** Shortest pause between a keeper's renewals, and after a failed one before it tries again. */
export const KEEPER_INTERVAL_MS_MIN = 50;
/** Longest pause after a failed renewal (the retry inside each renewal has its own backoff). */
export const KEEPER_RETRY_PAUSE_MS_MAX = 500;

/**
 * One renewal attempt waits at most TTL / KEEPER_ATTEMPTS_PER_TTL, and never more than
 * KEEPER_ATTEMPT_TIMEOUT_MS_MAX, for its answer before the keeper tries the next endpoint. A node
 * whose leader just died holds a forwarded keepalive until its forward timeout (seconds, longer than
 * a short TTL): without this bound one such attempt would use up the whole lease.
 */
export const KEEPER_ATTEMPTS_PER_TTL = 4;
export const KEEPER_ATTEMPT_TIMEOUT_MS_MAX = 1_000;

/** The bound on one renewal attempt for a TTL of `ttlMs` (null, not yet known: the longest). */
export function keeperAttemptTimeoutMs(ttlMs: number | null): number {
  assert(ttlMs === null || ttlMs > 0, `a TTL is positive, got ${ttlMs}`);
  if (ttlMs === null) return KEEPER_ATTEMPT_TIMEOUT_MS_MAX;
  return Math.min(KEEPER_ATTEMPT_TIMEOUT_MS_MAX, Math.ceil(ttlMs / KEEPER_ATTEMPTS_PER_TTL));
}

/** How KvClient runs one call: with its routing and retries; `mutating` calls carry a session. */
export type LeaseCaller = <T>(call: Call, options: CallOptions | undefined, mutating: boolean) => Promise<T>;

export interface GrantOptions extends CallOptions {
  /** The id to grant (a positive integer); absent: the cluster chooses one. */
  readonly leaseId?: number;
}

export interface InfoOptions extends CallOptions {
  /**
   * Also list the lease's keys (key order), one page of them: `keys_truncated` says more follow;
   * `infoWithKeys` reads every page.
   */
  readonly keys?: boolean;
  /** With `keys`: the page starts after this key (the last key of the previous page). */
  readonly after?: string;
}

/**
 * Pages `infoWithKeys` reads at most: each holds at least one key and a lease holds at most
 * LEASE_KEYS_MAX at any time (keys added behind the cursor while it reads could make it longer).
 */
export const LEASE_KEYS_PAGES_MAX = LEASE_KEYS_MAX;

/** Why a keeper stopped: its `stop()`, or the lease is (or must be presumed) gone. */
export type KeeperEnd =
  | { readonly reason: 'stopped' }
  | {
      readonly reason: 'lost';
      /**
       * not_found: the leader answered LEASE_NOT_FOUND (expired or revoked). deadline: no renewal was
       * acknowledged before the local deadline (send time of the last acknowledged renewal + TTL).
       * refused: a renewal failed with an error no retry can fix (bad input, a route the node lacks).
       */
      readonly cause: 'not_found' | 'deadline' | 'refused';
      readonly error: KvError | null;
    };

export interface KeeperOptions {
  /** Pause between renewals; default TTL / KEEPER_RENEWALS_PER_TTL (at least KEEPER_INTERVAL_MS_MIN). */
  readonly intervalMs?: number;
  /**
   * The lease's TTL, when known (from the grant): until the first renewal is acknowledged the keeper
   * gives up once this long has passed since it started. Default: the TTL the first answer states;
   * before any answer, the first renewal may take the client's whole retry budget.
   */
  readonly ttlSeconds?: number;
  /** Each acknowledged renewal: the answer and the local instant until which the lease is surely alive. */
  readonly onRenewed?: (renewal: LeaseKeepAliveResult, aliveUntilMs: number) => void;
  /** Called once when the lease is lost (never after stop()). */
  readonly onLost?: (end: Extract<KeeperEnd, { reason: 'lost' }>) => void;
}

/** A running background keepalive: `stop()` ends it; `done` resolves with why it ended. */
export interface LeaseKeeper {
  readonly leaseId: number;
  readonly done: Promise<KeeperEnd>;
  /**
   * The local (performance.now()) instant until which the lease is surely alive: the send time of
   * the last acknowledged renewal + its TTL; null before the first acknowledgement.
   */
  readonly aliveUntilMs: number | null;
  stop(): void;
}

function refused(message: string): KvError {
  return new KvError('INVALID_INPUT', message, { definite: true });
}

function checkLeaseId(leaseId: number): void {
  if (!Number.isSafeInteger(leaseId) || leaseId < 1 || leaseId > LEASE_ID_MAX)
    throw refused(`a lease id is an integer in [1, ${LEASE_ID_MAX}], got ${leaseId}`);
}

function checkTtl(ttlSeconds: number): void {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > LEASE_TTL_SECONDS_MAX)
    throw refused(`a TTL is a whole number of seconds in [1, ${LEASE_TTL_SECONDS_MAX}], got ${ttlSeconds}`);
}

/**
 * `kv.lease`: the lease calls of docs/api.md ("Leases"). grant and revoke are writes (they carry the
 * client's session and are resent when in doubt); a keepalive changes nothing in the log and is
 * retried freely; info and list are reads. Every call goes to the leader when known (followers
 * forward). The local checks (ids, TTL bounds) reject before sending, definite; the server checks
 * again, including the shortest TTL its election timeout allows.
 */
export class LeaseApi {
  private readonly caller: LeaseCaller;

  constructor(caller: LeaseCaller) {
    this.caller = caller;
  }

  async grant(ttlSeconds: number, options?: GrantOptions): Promise<LeaseGrantResult> {
    checkTtl(ttlSeconds);
    if (options?.leaseId !== undefined) checkLeaseId(options.leaseId);
    const body =
      options?.leaseId === undefined
        ? { ttl_seconds: ttlSeconds }
        : { ttl_seconds: ttlSeconds, lease_id: options.leaseId };
    return this.caller(
      { method: 'POST', path: '/lease/grant', body, idempotent: false, route: PREFER_LEADER },
      options,
      true,
    );
  }

  /** One renewal. Rejects with LEASE_NOT_FOUND once the lease expired or was revoked. */
  async keepAlive(leaseId: number, options?: CallOptions): Promise<LeaseKeepAliveResult> {
    checkLeaseId(leaseId);
    return this.caller(
      {
        method: 'POST',
        path: '/lease/keepalive',
        body: { lease_id: leaseId },
        idempotent: true,
        route: PREFER_LEADER,
      },
      options,
      false,
    );
  }

  /** Delete the lease and every key on it (one revision). LEASE_NOT_FOUND when there is no such lease. */
  async revoke(leaseId: number, options?: CallOptions): Promise<LeaseRevokeResult> {
    checkLeaseId(leaseId);
    return this.caller(
      {
        method: 'POST',
        path: '/lease/revoke',
        body: { lease_id: leaseId },
        idempotent: false,
        route: PREFER_LEADER,
      },
      options,
      true,
    );
  }

  /**
   * TTL, whole seconds left (the leader's clock) and, with `keys: true`, a page of the keys on it
   * (after `after`; `keys_truncated`: more follow).
   */
  async info(leaseId: number, options?: InfoOptions): Promise<LeaseInfoResult> {
    checkLeaseId(leaseId);
    if (options?.after !== undefined && options.keys !== true)
      throw new RangeError('after pages the keys: it needs keys: true');
    const query = new URLSearchParams({ lease_id: String(leaseId) });
    if (options?.keys === true) query.set('keys', 'true');
    if (options?.after !== undefined) query.set('after', options.after);
    return this.caller(
      { method: 'GET', path: `/lease/info?${query.toString()}`, idempotent: true, route: PREFER_LEADER },
      options,
      false,
    );
  }

  /**
   * The lease's info with every key on it, reading page after page (each page as the leader sees
   * the lease then: keys added or removed meanwhile may show or not). Throws past LEASE_KEYS_PAGES_MAX.
   */
  async infoWithKeys(leaseId: number, options?: CallOptions): Promise<LeaseInfoResult> {
    const first = await this.info(leaseId, { ...options, keys: true });
    const keys = [...(first.keys ?? [])];
    let truncated = first.keys_truncated === true;
    for (let pages = 1; truncated; pages += 1) {
      const after = keys.at(-1);
      assert(after !== undefined, 'a truncated page lists a key');
      if (pages === LEASE_KEYS_PAGES_MAX)
        throw new RangeError(`lease ${leaseId} still had keys after ${LEASE_KEYS_PAGES_MAX} pages`);
      const page = await this.info(leaseId, { ...options, keys: true, after });
      keys.push(...(page.keys ?? []));
      truncated = page.keys_truncated === true;
    }
    return { ...first, keys, keys_truncated: false };
  }

  /** Every lease of the cluster, by id. */
  async list(options?: CallOptions): Promise<LeaseListResult> {
    return this.caller(
      { method: 'GET', path: '/leases', idempotent: true, route: PREFER_LEADER },
      options,
      false,
    );
  }

  /**
   * Renew the lease in the background (every TTL / 3 by default) until `stop()` or until it is lost:
   * a LEASE_NOT_FOUND answer, or no renewal acknowledged before the send time of the last
   * acknowledged one + TTL (the only instant the client can be sure of). A failed renewal is retried
   * on the other endpoints until then; an attempt that gets no answer within keeperAttemptTimeoutMs
   * (min(TTL / 4, 1 s)) counts as failed, so a node stuck forwarding to a dead leader costs little.
   */
  keepAliveForever(leaseId: number, options: KeeperOptions = {}): LeaseKeeper {
    checkLeaseId(leaseId);
    if (options.ttlSeconds !== undefined) checkTtl(options.ttlSeconds);
    if (options.intervalMs !== undefined && !(options.intervalMs >= KEEPER_INTERVAL_MS_MIN))
      throw new RangeError(
        `intervalMs must be at least ${KEEPER_INTERVAL_MS_MIN}, got ${options.intervalMs}`,
      );
    return new Keeper(this, leaseId, options);
  }
}

/** A pause that `stop` cuts short. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener('abort', done, { once: true });
  });
}

class Keeper implements LeaseKeeper {
  readonly leaseId: number;
  readonly done: Promise<KeeperEnd>;
  private readonly api: LeaseApi;
  private readonly options: KeeperOptions;
  private readonly stopper = new AbortController();
  private readonly startedMs = performance.now();
  private aliveUntil: number | null = null;
  private ttlMs: number | null;

  constructor(api: LeaseApi, leaseId: number, options: KeeperOptions) {
    this.api = api;
    this.leaseId = leaseId;
    this.options = options;
    this.ttlMs = options.ttlSeconds === undefined ? null : options.ttlSeconds * 1000;
    this.done = this.run();
  }

  get aliveUntilMs(): number | null {
    return this.aliveUntil;
  }

  stop(): void {
    this.stopper.abort();
  }

  private stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** The instant past which, without an acknowledgement, the lease must be presumed gone (null: unknown). */
  private deadlineMs(): number | null {
    if (this.aliveUntil !== null) return this.aliveUntil;
    return this.ttlMs === null ? null : this.startedMs + this.ttlMs;
  }

  /**
   * Renew, pause, renew… The loop ends only by stop() or by loss: it runs as long as the lease is kept
   * (no count bounds it), and each streak of failures is bounded by the deadline.
   */
  private async run(): Promise<KeeperEnd> {
    const stopSignal = this.stopper.signal;
    for (;;) {
      if (this.stopped()) return { reason: 'stopped' };
      const sentMs = performance.now();
      const deadline = this.deadlineMs();
      if (deadline !== null && sentMs >= deadline) return this.lost('deadline', null);
      const outcome = await this.renewOnce(sentMs, deadline);
      if (this.stopped()) return { reason: 'stopped' };
      if (outcome instanceof KvError) {
        const end = this.judgeFailure(outcome, deadline);
        if (end !== null) return end;
        const pauseMs = Math.min(KEEPER_RETRY_PAUSE_MS_MAX, Math.max(0, (deadline ?? Infinity) - sentMs));
        await pause(Math.max(KEEPER_INTERVAL_MS_MIN, pauseMs / 4), stopSignal);
        continue;
      }
      await pause(this.intervalMs(), stopSignal);
    }
  }

  /** One renewal (with the client's retries, never past the deadline): its answer or its error. */
  private async renewOnce(sentMs: number, deadline: number | null): Promise<LeaseKeepAliveResult | KvError> {
    const signals = [this.stopper.signal];
    if (deadline !== null) signals.push(AbortSignal.timeout(Math.max(1, Math.ceil(deadline - sentMs))));
    const budget = deadline === null ? {} : { retry: { totalMsMax: Math.max(0, deadline - sentMs) } };
    // A hung attempt times out soon and the retry moves on to the next endpoint, well inside the TTL.
    const timeoutMs = keeperAttemptTimeoutMs(this.ttlMs);
    try {
      const signal = AbortSignal.any(signals);
      const answer = await this.api.keepAlive(this.leaseId, { signal, timeoutMs, ...budget });
      assert(answer.ttl_seconds > 0, 'a keepalive answers a positive TTL');
      this.ttlMs = answer.ttl_seconds * 1000;
      // The leader's deadline is its answer time (after sentMs) + TTL: the lease lives at least until here.
      this.aliveUntil = Math.max(this.aliveUntil ?? -Infinity, sentMs + this.ttlMs);
      this.options.onRenewed?.(answer, this.aliveUntil);
      return answer;
    } catch (error) {
      if (!(error instanceof KvError)) throw error;
      return error;
    }
  }

  /** The end a failed renewal means, or null to try again. */
  private judgeFailure(error: KvError, deadline: number | null): KeeperEnd | null {
    if (error.code === 'LEASE_NOT_FOUND') return this.lost('not_found', error);
    if (deadline !== null && performance.now() >= deadline) return this.lost('deadline', error);
    const transient = error.status === null || error.status >= 500 || error.code === 'ABORTED';
    if (!transient) return this.lost('refused', error);
    if (deadline === null) return this.lost('deadline', error); // the first renewal used the whole budget
    return null;
  }

  private lost(cause: 'not_found' | 'deadline' | 'refused', error: KvError | null): KeeperEnd {
    const end = { reason: 'lost', cause, error } as const;
    this.options.onLost?.(end);
    return end;
  }

  private intervalMs(): number {
    if (this.options.intervalMs !== undefined) return this.options.intervalMs;
    assert(this.ttlMs !== null, 'an acknowledged renewal taught the TTL');
    return Math.max(KEEPER_INTERVAL_MS_MIN, this.ttlMs / KEEPER_RENEWALS_PER_TTL);
  }
}
