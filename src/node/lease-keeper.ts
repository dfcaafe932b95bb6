import { AspenError } from '../api/errors.ts';
import { utf8Length } from '../api/limits.ts';
import type {
  LeaseInfoResult,
  LeaseKeepAliveResult,
  LeaseListResult,
  LeaseSummary,
  LogCommand,
} from '../api/types.ts';
import { assert } from '../base/assert.ts';
import {
  KEY_BYTES_MAX,
  LEASE_INFO_KEYS_BYTES_MAX,
  LEASE_INFO_KEYS_MAX,
  LEASE_KEEPALIVES_PER_SECOND_MAX,
  LEASES_MAX,
} from '../base/limits.ts';
import { TokenBucket } from '../base/token-bucket.ts';
import type { NodeId } from '../raft/types.ts';
import { toAspenError } from './errors.ts';
import type { ApplyListener, Clock } from './interfaces.ts';
import type { ApplyOutcome, StateMachine } from './kv-state-machine.ts';
import { LEASE_CHECK_INTERVAL_MS, LEASE_REVOKES_PER_CHECK_MAX, Lessor } from './lessor.ts';
import type { Callback, ReadServed, WriteApplied } from './request-tracker.ts';

/**
 * Simulator-only lease faults (src/sim/mutants.ts): bugs the lease checkers must catch. Production
 * never sets them. `lessorOnFollowers`: every node starts deadlines from the grants it applies and
 * a node that becomes leader keeps them (so a lease can expire before TTL after a keepalive the old
 * leader acknowledged). `lessorKeepsDeadlines`: a node keeps its deadlines across losing and
 * regaining leadership instead of restarting them at full TTL.
 */
export interface LeaseMutations {
  readonly lessorOnFollowers?: boolean;
  readonly lessorKeepsDeadlines?: boolean;
}

/** What the keeper needs of its RaftNode. */
export interface LeaseKeeperHost {
  readonly id: NodeId;
  readonly clock: Clock;
  readonly stateMachine: StateMachine;
  /** The node's core, read for its role and log terms only. */
  readonly core: {
    readonly knownLeader: NodeId;
    readonly log: { lastTerm(): number; term(index: number): number | null };
  };
  isStopped(): boolean;
  /** Propose a command through the log, like a client write. */
  propose(command: LogCommand, callback: Callback<WriteApplied>): void;
  /** A ReadIndex barrier: confirms leadership and waits until the state machine caught up. */
  barrier(callback: Callback<ReadServed>): void;
}

/**
 * The RaftNode's lease side: it keeps the Lessor in step with authority (checked after every Ready
 * and every tick), with the applied grants and revokes (it is the node's apply listener and passes
 * every call on to the owner's), proposes the expiry revokes, and answers keepalive, info and list.
 */
export class LeaseKeeper implements ApplyListener {
  private readonly host: LeaseKeeperHost;
  private readonly lessor: Lessor;
  private readonly downstream: ApplyListener | undefined;
  /** Keepalives this node may still serve as leader (LEASE_KEEPALIVES_PER_SECOND_MAX by default). */
  private readonly keepAlives: TokenBucket;
  private lastCheckMs = Number.NEGATIVE_INFINITY;

  constructor(
    host: LeaseKeeperHost,
    mutations: LeaseMutations = {},
    downstream?: ApplyListener,
    keepAlivesPerSecondMax: number = LEASE_KEEPALIVES_PER_SECOND_MAX,
  ) {
    this.host = host;
    this.downstream = downstream;
    this.keepAlives = new TokenBucket(keepAlivesPerSecondMax, keepAlivesPerSecondMax, host.clock.nowMs());
    this.lessor = new Lessor({
      trackWhileInactive: mutations.lessorOnFollowers === true,
      keepDeadlines: mutations.lessorKeepsDeadlines === true,
    });
  }

  /** The term of the authority the deadlines belong to (null: none). */
  get authority(): number | null {
    return this.lessor.term;
  }

  /** The deadline this node tracks for a lease (tests and the simulator's checkers). */
  deadline(leaseId: number): number | undefined {
    return this.lessor.deadline(leaseId);
  }

  applied(index: number, outcome: ApplyOutcome | null): void {
    // A retried session sequence answers with the first apply's outcome: nothing happened now.
    if (outcome !== null && outcome.duplicate !== true) {
      const now = this.host.clock.nowMs();
      if (outcome.lease !== undefined) this.lessor.granted(outcome.lease.id, outcome.lease.ttlSeconds, now);
      if (outcome.revoked !== undefined) this.lessor.forget(outcome.revoked.id);
      if (outcome.leaseRefusal?.kind === 'not_found') this.lessor.forget(outcome.leaseRefusal.leaseId);
    }
    this.downstream?.applied(index, outcome);
  }

  restored(index: number): void {
    // Another lease table: deadlines start over (at full TTL if this node still has authority).
    this.lessor.stop();
    this.refresh();
    this.downstream?.restored(index);
  }

  /**
   * Leases are the business of a leader with authority: one whose state machine applied an entry
   * of its term (its blank entry, so every grant and revoke before it). A leader's last entry is
   * always of its current term. Null: no authority.
   */
  private authorityTerm(): number | null {
    const { core } = this.host;
    if (this.host.isStopped() || core.knownLeader !== this.host.id) return null;
    const term = core.log.lastTerm();
    return core.log.term(this.host.stateMachine.appliedIndex) === term ? term : null;
  }

  /** Gain or lose authority as the node's role and applied index now say. */
  refresh(): void {
    const term = this.authorityTerm();
    if (term === this.lessor.term) return;
    if (this.lessor.term !== null) this.lessor.stop();
    if (term === null) return;
    const leases = this.host.stateMachine.leases(0, LEASES_MAX);
    this.lessor.start(
      term,
      leases.map(([id, record]) => [id, record.ttlSeconds] as const),
      this.host.clock.nowMs(),
    );
  }

  /** A tick: every LEASE_CHECK_INTERVAL_MS the authority proposes revokes of leases past their deadline. */
  tick(): void {
    this.refresh();
    const term = this.lessor.term;
    const now = this.host.clock.nowMs();
    if (term === null || now - this.lastCheckMs < LEASE_CHECK_INTERVAL_MS) return;
    this.lastCheckMs = now;
    for (const leaseId of this.lessor.due(now, LEASE_REVOKES_PER_CHECK_MAX)) {
      // Stamped with our term: applied in any other term (we were deposed) it is ignored. A revoke
      // that fails or never applies is proposed again after LEASE_REVOKE_RETRY_MS.
      this.host.propose({ LeaseRevoke: { lease_id: leaseId, expired_in_term: term } }, () => undefined);
    }
  }

  /**
   * Renew a lease once a ReadIndex barrier confirmed this node's leadership: the deadline moves to
   * TTL after the moment the renewal is answered, when the barrier completes (later than its receipt
   * and than the client's send time, from which the client counts). LEASE_NOT_FOUND when the lease
   * is absent, its deadline passed, or its expiry revoke is in flight. Past
   * LEASE_KEEPALIVES_PER_SECOND_MAX (or the injected bound) OVERLOADED, definite: nothing renewed.
   */
  keepAlive(leaseId: number, callback: Callback<LeaseKeepAliveResult>): void {
    // Counted at receipt, before the ReadIndex round it would cost; a node that does not lead
    // spends nothing (it answers NOT_LEADER, and the keepalive is counted where it is served).
    if (this.host.core.knownLeader === this.host.id && !this.keepAlives.take(this.host.clock.nowMs())) {
      const rate = this.keepAlives.ratePerSecond;
      const message = `node ${this.host.id} serves at most ${rate} keepalives per second; lease ${leaseId} was not renewed, retry later`;
      callback({ ok: false, error: new AspenError('OVERLOADED', message) });
      return;
    }
    this.withAuthority(callback, () => {
      if (this.host.stateMachine.lease(leaseId) === undefined) throw leaseNotFound(leaseId);
      // From the answer time, not the receipt: later, so still safe for a client counting from its send.
      const ttl = this.lessor.renew(leaseId, this.host.clock.nowMs());
      if (ttl === null) throw leaseNotFound(leaseId);
      return { lease_id: leaseId, ttl_seconds: ttl };
    });
  }

  /**
   * A lease's TTL and remaining time by this authority's deadline; with `keys`, one page of its keys
   * after `keys.after` (see leaseKeysPage).
   */
  info(leaseId: number, keys: { after: string | null } | null, callback: Callback<LeaseInfoResult>): void {
    this.withAuthority(callback, () => {
      const record = this.host.stateMachine.lease(leaseId);
      const remaining = this.lessor.remaining(leaseId, this.host.clock.nowMs());
      if (record === undefined || remaining === null) throw leaseNotFound(leaseId);
      const result = { lease_id: leaseId, ttl_seconds: record.ttlSeconds, remaining_seconds: remaining };
      if (keys === null) return result;
      // One more than a page can hold tells whether keys remain after it.
      const candidates = this.host.stateMachine.leaseKeys(leaseId, keys.after, LEASE_INFO_KEYS_MAX + 1);
      const page = leaseKeysPage(candidates, LEASE_INFO_KEYS_MAX, LEASE_INFO_KEYS_BYTES_MAX);
      return { ...result, keys: page.keys, keys_truncated: page.truncated };
    });
  }

  /** Every lease, by id, with its remaining time. */
  list(callback: Callback<LeaseListResult>): void {
    this.withAuthority(callback, () => {
      const now = this.host.clock.nowMs();
      const leases: LeaseSummary[] = this.host.stateMachine.leases(0, LEASES_MAX).map(([id, record]) => {
        const remaining = this.lessor.remaining(id, now);
        assert(remaining !== null, `the authority tracks every applied lease (${id})`);
        return { lease_id: id, ttl_seconds: record.ttlSeconds, remaining_seconds: remaining };
      });
      return { leases };
    });
  }

  /**
   * Answer with `serve` once a ReadIndex barrier confirmed this node's leadership and its state
   * machine caught up, and the node has authority then; else NOT_LEADER (with the leader it knows).
   * `serve` throws an AspenError to refuse.
   */
  private withAuthority<T>(callback: Callback<T>, serve: () => T): void {
    if (this.host.core.knownLeader !== this.host.id) {
      callback({ ok: false, error: this.notLeader() });
      return;
    }
    this.host.barrier((outcome) => {
      if (!outcome.ok) {
        callback(outcome);
        return;
      }
      this.refresh();
      if (this.lessor.term === null) {
        callback({ ok: false, error: this.notLeader() });
        return;
      }
      let value: T;
      try {
        value = serve();
      } catch (error) {
        if (!(error instanceof AspenError)) throw error;
        callback({ ok: false, error });
        return;
      }
      callback({ ok: true, value });
    });
  }

  private notLeader(): AspenError {
    const leaderId = this.host.core.knownLeader;
    if (leaderId === this.host.id)
      return new AspenError('NOT_LEADER', `node ${leaderId} lost its leadership before it could answer`);
    return toAspenError({ code: 'not_leader', leaderId });
  }
}

/**
 * The longest prefix of `candidates` (keys in order) within `countMax` keys and `bytesMax` UTF-8
 * bytes, and whether keys were left out. A page holds at least one key (one is far below bytesMax).
 */
export function leaseKeysPage(
  candidates: readonly string[],
  countMax: number,
  bytesMax: number,
): { keys: string[]; truncated: boolean } {
  assert(countMax >= 1 && bytesMax >= KEY_BYTES_MAX, `a page holds a key (${countMax}, ${bytesMax} bytes)`);
  const keys: string[] = [];
  let bytes = 0;
  for (const key of candidates) {
    const size = utf8Length(key);
    if (keys.length === countMax || bytes + size > bytesMax) return { keys, truncated: true };
    keys.push(key);
    bytes += size;
  }
  return { keys, truncated: false };
}

function leaseNotFound(leaseId: number): AspenError {
  return new AspenError('LEASE_NOT_FOUND', `lease ${leaseId} not found (never granted, revoked, or expired)`);
}
