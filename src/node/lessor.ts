import { assert } from '../base/assert.ts';
import { LEASE_ID_MAX, LEASE_TTL_SECONDS_MAX, LEASES_MAX } from '../base/limits.ts';

/** How often the leader looks for leases past their deadline (node clock milliseconds). */
export const LEASE_CHECK_INTERVAL_MS = 500;
/** Expiry revokes proposed at most per check (the rest wait for the next check). */
export const LEASE_REVOKES_PER_CHECK_MAX = 128;
/** An expiry revoke proposed this long ago and still not applied is proposed again. */
export const LEASE_REVOKE_RETRY_MS = 3_000;

/**
 * Simulator-only faults (src/sim/mutants.ts), each a bug the lease checkers must catch; production
 * never sets them. `trackWhileInactive`: deadlines start from grants on every node, and a node that
 * becomes leader keeps them (followers expiring leases by their own old clocks). `keepDeadlines`:
 * deadlines survive losing leadership and are used again when it is regained.
 */
export interface LessorMutations {
  readonly trackWhileInactive?: boolean;
  readonly keepDeadlines?: boolean;
}

interface Deadline {
  readonly ttlSeconds: number;
  deadlineMs: number;
  /** When this lease's expiry revoke was last proposed; null while none is in flight. */
  revokeProposedAtMs: number | null;
}

function checkLease(id: number, ttlSeconds: number): void {
  assert(Number.isSafeInteger(id) && id >= 1 && id <= LEASE_ID_MAX, `lease id ${id} is a positive integer`);
  assert(
    Number.isSafeInteger(ttlSeconds) && ttlSeconds >= 1 && ttlSeconds <= LEASE_TTL_SECONDS_MAX,
    `lease ttl ${ttlSeconds} is in [1, ${LEASE_TTL_SECONDS_MAX}] seconds`,
  );
}

function checkTime(nowMs: number): void {
  assert(Number.isFinite(nowMs), 'a clock reading is a finite number');
}

/**
 * The deadlines of a leader with authority (role leader, and an entry of its term applied): pure,
 * told the time by its caller. Gaining authority (`start`) gives every lease its full TTL from now,
 * never an older deadline; losing it (`stop`) drops them all. A renewal moves a deadline only later;
 * once a deadline has passed the lease cannot be renewed, and `due` hands it out to be revoked
 * through the log (again after LEASE_REVOKE_RETRY_MS while the revoke has not applied).
 */
export class Lessor {
  private readonly deadlines = new Map<number, Deadline>();
  private readonly mutations: LessorMutations;
  private activeTerm: number | null = null;

  constructor(mutations: LessorMutations = {}) {
    this.mutations = mutations;
  }

  /** The term whose authority the deadlines belong to; null while this node has none. */
  get term(): number | null {
    return this.activeTerm;
  }

  get size(): number {
    return this.deadlines.size;
  }

  /** Authority gained in `term`: every lease of the applied state gets deadline now + its full TTL. */
  start(term: number, leases: Iterable<readonly [number, number]>, nowMs: number): void {
    assert(Number.isSafeInteger(term) && term >= 1, 'authority belongs to a term');
    checkTime(nowMs);
    const kept = this.mutations.keepDeadlines === true || this.mutations.trackWhileInactive === true;
    const previous = kept ? new Map(this.deadlines) : new Map<number, Deadline>();
    this.deadlines.clear();
    this.activeTerm = term;
    for (const [id, ttlSeconds] of leases) {
      checkLease(id, ttlSeconds);
      assert(this.deadlines.size < LEASES_MAX, `at most ${LEASES_MAX} leases`);
      const old = previous.get(id);
      const deadlineMs = old === undefined ? nowMs + ttlSeconds * 1000 : old.deadlineMs;
      this.deadlines.set(id, { ttlSeconds, deadlineMs, revokeProposedAtMs: null });
    }
  }

  /** Authority lost: no deadline is kept (the next leader restarts them all). */
  stop(): void {
    this.activeTerm = null;
    if (this.mutations.keepDeadlines === true || this.mutations.trackWhileInactive === true) return;
    this.deadlines.clear();
  }

  /** A grant applied: its deadline starts now (only with authority). */
  granted(id: number, ttlSeconds: number, nowMs: number): void {
    checkLease(id, ttlSeconds);
    checkTime(nowMs);
    if (this.activeTerm === null && this.mutations.trackWhileInactive !== true) return;
    assert(this.deadlines.has(id) || this.deadlines.size < LEASES_MAX, `at most ${LEASES_MAX} leases`);
    this.deadlines.set(id, { ttlSeconds, deadlineMs: nowMs + ttlSeconds * 1000, revokeProposedAtMs: null });
  }

  /** The lease is gone from the applied state (revoked, expired, or never there). */
  forget(id: number): void {
    this.deadlines.delete(id);
  }

  /**
   * Renew lease `id` from `fromMs`, checked at `nowMs` (not before `fromMs`): the deadline moves to
   * fromMs + TTL unless it is already later. LeaseKeeper passes the moment it answers the keepalive,
   * after the ReadIndex round that confirmed its leadership, as both: later than the keepalive's
   * receipt and than the client's send time, so the client's `send time + TTL` still holds. Null when
   * the lease is unknown, its deadline has passed, or its expiry revoke is in flight: it can no longer
   * be renewed.
   */
  renew(id: number, fromMs: number, nowMs: number = fromMs): number | null {
    checkTime(fromMs);
    assert(nowMs >= fromMs, 'a keepalive counts from a moment no later than its check');
    if (this.activeTerm === null) return null;
    const lease = this.deadlines.get(id);
    if (lease === undefined || lease.revokeProposedAtMs !== null || lease.deadlineMs <= nowMs) return null;
    lease.deadlineMs = Math.max(lease.deadlineMs, fromMs + lease.ttlSeconds * 1000);
    return lease.ttlSeconds;
  }

  /**
   * Leases past their deadline whose revoke is not in flight (or was proposed LEASE_REVOKE_RETRY_MS
   * ago and has not applied), at most `max`, in round-robin order: each is marked as being revoked now.
   */
  due(nowMs: number, max: number): number[] {
    checkTime(nowMs);
    assert(Number.isSafeInteger(max) && max >= 0, 'a revoke batch bound');
    const ids: number[] = [];
    if (this.activeTerm === null) return ids;
    for (const [id, lease] of this.deadlines) {
      if (ids.length >= max) break;
      if (lease.deadlineMs > nowMs) continue;
      const sentAt = lease.revokeProposedAtMs;
      if (sentAt !== null && nowMs - sentAt < LEASE_REVOKE_RETRY_MS) continue;
      lease.revokeProposedAtMs = nowMs;
      ids.push(id);
    }
    // Round robin: the leases handed out move to the back, so a later check reaches the others
    // first (with more due than `max` per retry interval, the first ones would otherwise be handed
    // out again and again while the rest wait forever).
    for (const id of ids) {
      const lease = this.deadlines.get(id);
      assert(lease !== undefined, 'a lease just handed out is tracked');
      this.deadlines.delete(id);
      this.deadlines.set(id, lease);
    }
    return ids;
  }

  /** Whole seconds until the lease's deadline, rounded up (0 once passed); null when not tracked. */
  remaining(id: number, nowMs: number): number | null {
    checkTime(nowMs);
    const lease = this.deadlines.get(id);
    if (lease === undefined) return null;
    return Math.max(0, Math.ceil((lease.deadlineMs - nowMs) / 1000));
  }

  /** The deadline of a tracked lease (tests and the simulator's checkers). */
  deadline(id: number): number | undefined {
    return this.deadlines.get(id)?.deadlineMs;
  }
}
