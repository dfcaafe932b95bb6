import type { LogCommand } from '../api/types.ts';
import type { ApplyOutcome } from '../node/kv-state-machine.ts';
import { assert } from '../base/assert.ts';
import type { NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';

/** Leases the checker follows at once (the lease clients grant far fewer). */
export const CHECKED_LEASES_MAX = 10_000;

/** What the clients were told about one lease. */
interface LeaseFacts {
  readonly ttlMs: number;
  /** Send time of the grant or keepalive acknowledged last (the lease lives at least TTL past it). */
  lastAckedSendMs: number;
  /** When the first node applied its expiry (null: not expired). */
  expiredAtMs: number | null;
  /** A client revoked it (its end is the client's doing, not an expiry). */
  revoked: boolean;
}

/**
 * The promises of leases (issue 15), checked on every apply and every acknowledgement:
 *  (b) a lease never expires earlier than TTL after the send time of its last acknowledged grant or
 *      keepalive — across leader changes, crashes and partitions (an expiry is the apply of a
 *      LeaseRevoke stamped with `expired_in_term` that took effect; the earliest apply on any node
 *      counts, as that is when a client could first see the keys gone);
 *  (c) every node applies the same lease commands with the same effect at the same index.
 * (a), keys never outliving their lease once the cluster is healthy, is checked by the simulation
 * at the end of the liveness phase (see `overdueLeases`).
 */
export class LeaseChecker {
  /**
   * The part of a TTL a lease is sure to live in virtual time: a leader whose clock runs fast by a
   * fraction d ends a TTL after TTL / (1 + d) of it (1 when no clock runs fast).
   */
  private readonly ttlFloor: number;
  private readonly leases = new Map<number, LeaseFacts>();
  /** Index → what its lease command did (the first node to apply it sets it). */
  private readonly effects = new Map<number, string>();
  checks = 0;
  expiries = 0;
  keepAlivesAcked = 0;

  /** `clockSkews`: each node's clock runs at 1 / (1 + skew) of virtual time. */
  constructor(clockSkews: readonly number[] = []) {
    this.ttlFloor = 1 + Math.min(0, ...clockSkews);
    assert(this.ttlFloor > 0, 'clocks run forward');
  }

  onGrantAcked(leaseId: number, ttlSeconds: number, sentMs: number): void {
    if (this.leases.size >= CHECKED_LEASES_MAX || this.leases.has(leaseId)) return;
    this.leases.set(leaseId, {
      ttlMs: ttlSeconds * 1000,
      lastAckedSendMs: sentMs,
      expiredAtMs: null,
      revoked: false,
    });
  }

  onKeepAliveAcked(leaseId: number, sentMs: number): void {
    this.keepAlivesAcked += 1;
    const facts = this.leases.get(leaseId);
    if (facts === undefined) return;
    facts.lastAckedSendMs = Math.max(facts.lastAckedSendMs, sentMs);
    this.checkLifetime(leaseId, facts);
  }

  onRevokeAcked(leaseId: number): void {
    const facts = this.leases.get(leaseId);
    if (facts !== undefined) facts.revoked = true;
  }

  /** Every lease command applied on any node, with its outcome and the virtual time. */
  onApplied(nodeId: NodeId, index: number, command: LogCommand, outcome: ApplyOutcome, nowMs: number): void {
    const effect = leaseEffect(command, outcome);
    if (effect === null) return;
    this.checks += 1;
    const first = this.effects.get(index);
    if (first === undefined) this.effects.set(index, effect);
    else if (first !== effect)
      violation(`lease command at index ${index}: node ${nodeId} did ${effect}, another node did ${first}`);
    if (!('LeaseRevoke' in command) || command.LeaseRevoke.expired_in_term === undefined) return;
    if (outcome.revoked === undefined) return;
    const facts = this.leases.get(outcome.revoked.id);
    if (facts === undefined || facts.expiredAtMs !== null) return;
    facts.expiredAtMs = nowMs;
    this.expiries += 1;
    this.checkLifetime(outcome.revoked.id, facts);
  }

  private checkLifetime(leaseId: number, facts: LeaseFacts): void {
    if (facts.expiredAtMs === null || facts.revoked) return;
    const earliestMs = facts.lastAckedSendMs + facts.ttlMs * this.ttlFloor;
    if (facts.expiredAtMs < earliestMs)
      violation(
        `lease ${leaseId} (TTL ${facts.ttlMs} ms, at least ${facts.ttlMs * this.ttlFloor} ms on the fastest clock) expired at ${facts.expiredAtMs} ms, ${earliestMs - facts.expiredAtMs} ms ` +
          `before TTL after the keepalive sent at ${facts.lastAckedSendMs} ms that was acknowledged`,
      );
  }
}

/** A lease command's effect as one comparable line (null: not a lease command, nor a Set on a lease). */
function leaseEffect(command: LogCommand, outcome: ApplyOutcome): string | null {
  const leaseCommand = 'LeaseGrant' in command || 'LeaseRevoke' in command;
  if (!leaseCommand && outcome.leaseRefusal === undefined) return null;
  if (outcome.duplicate === true) return 'duplicate';
  return JSON.stringify({
    lease: outcome.lease ?? null,
    revoked: outcome.revoked ?? null,
    refusal: outcome.leaseRefusal ?? null,
    changes: outcome.changes?.length ?? 0,
  });
}

function violation(message: string): never {
  throw new SimViolation('safety', message);
}
