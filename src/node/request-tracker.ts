import { AspenError } from '../api/errors.ts';
import { assert } from '../base/assert.ts';
import type { ProposeAccepted } from '../raft/core.ts';
import type { Entry, MembershipConfig, NodeId, Ready } from '../raft/types.ts';
import { indeterminate } from './errors.ts';
import type { ApplyOutcome, KvRecord, StateMachine } from './kv-state-machine.ts';

/** Requests that may wait for an answer at once: proposals awaiting apply, reads awaiting confirmation or apply. */
export const PENDING_WRITES_MAX = 20_000;
export const PENDING_READS_MAX = 10_000;

export type Outcome<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: AspenError };
export type Callback<T> = (outcome: Outcome<T>) => void;

export interface WriteApplied {
  readonly index: number;
  readonly outcome: ApplyOutcome;
}

/** A read answered at a linearizable point: the record, or undefined when the key is absent. */
export interface ReadServed {
  readonly record: KvRecord | undefined;
  readonly appliedIndex: number;
}

/** A membership change waiting to take effect: its entry, then (for a joint change) C_new. */
interface PendingMembership {
  readonly index: number;
  readonly term: number;
  readonly callback: Callback<MembershipConfig>;
  /** The joint entry applied; now waiting for the C_new that follows it. */
  awaitingLeave: boolean;
}

interface PendingWrite {
  readonly term: number;
  readonly callback: Callback<WriteApplied>;
}

interface PendingRead {
  /** The key to read, or null for a plain linearizability barrier (scans). */
  readonly key: string | null;
  readonly callback: Callback<ReadServed>;
  /** Set once the core released the read: serve after applying this index. */
  index: number;
}

/**
 * The node's requests waiting for the core: writes by log index, reads by request id, and the one
 * membership change in progress. Each is answered exactly once: applied, served, or failed.
 */
export class RequestTracker {
  private readonly writes = new Map<number, PendingWrite>();
  private readonly reads = new Map<number, PendingRead>();
  private membership: PendingMembership | null = null;
  private nextReadId = 1;

  /** Why one more write cannot wait now, or null when it can. */
  writeRefusal(): AspenError | null {
    if (this.writes.size < PENDING_WRITES_MAX) return null;
    return new AspenError('OVERLOADED', `${PENDING_WRITES_MAX} writes are already waiting; retry later`);
  }

  trackWrite(accepted: ProposeAccepted, callback: Callback<WriteApplied>): void {
    const displaced = this.writes.get(accepted.index);
    if (displaced !== undefined) {
      // We lost leadership and regained it; our log dropped the older proposal at this index, but
      // another node may still hold it and commit it later, so its outcome is unknown.
      assert(displaced.term < accepted.term, `two proposals at index ${accepted.index} in one term`);
      displaced.callback({
        ok: false,
        error: indeterminate('leadership changed; the write may or may not have been applied'),
      });
    }
    this.writes.set(accepted.index, { term: accepted.term, callback });
  }

  /** Why one more read cannot wait now, or null when it can. */
  readRefusal(): AspenError | null {
    if (this.reads.size < PENDING_READS_MAX) return null;
    return new AspenError('OVERLOADED', `${PENDING_READS_MAX} reads are already waiting; retry later`);
  }

  /** The id of the next read to queue in the core. */
  takeReadId(): number {
    const requestId = this.nextReadId;
    this.nextReadId += 1;
    return requestId;
  }

  trackRead(requestId: number, key: string | null, callback: Callback<ReadServed>): void {
    this.reads.set(requestId, { key, callback, index: 0 });
  }

  get membershipInProgress(): boolean {
    return this.membership !== null;
  }

  trackMembership(accepted: ProposeAccepted, callback: Callback<MembershipConfig>): void {
    assert(this.membership === null, 'one membership change at a time');
    this.membership = { index: accepted.index, term: accepted.term, callback, awaitingLeave: false };
  }

  /** Reads the core confirmed (serve once applied) or failed (leadership lost), from a Ready. */
  readsReleased(ready: Ready): void {
    for (const failure of ready.readFailures) {
      this.resolveRead(failure.requestId, {
        ok: false,
        error: new AspenError('NOT_LEADER', 'leadership lost before the read was confirmed', {
          leaderId: failure.leaderId || null,
        }),
      });
    }
    for (const state of ready.readStates) {
      const pending = this.reads.get(state.requestId);
      if (pending !== undefined) pending.index = state.index;
    }
  }

  /** Serve every confirmed read the state machine has caught up with. */
  serveReads(machine: StateMachine, served?: (readIndex: number, appliedIndex: number) => void): void {
    const appliedIndex = machine.appliedIndex;
    for (const [requestId, pending] of this.reads) {
      if (pending.index === 0 || pending.index > appliedIndex) continue;
      served?.(pending.index, appliedIndex);
      const record = pending.key === null ? undefined : machine.get(pending.key);
      this.resolveRead(requestId, { ok: true, value: { record, appliedIndex } });
    }
  }

  private resolveRead(requestId: number, outcome: Outcome<ReadServed>): void {
    const pending = this.reads.get(requestId);
    if (pending === undefined) return;
    this.reads.delete(requestId);
    pending.callback(outcome);
  }

  /** An entry was applied with `outcome` (null for blank and config entries): answer who waits on it. */
  applied(entry: Entry, outcome: ApplyOutcome | null, leaderId: () => NodeId): void {
    if (entry.kind === 'config') this.resolveMembership(entry);
    const pending = this.writes.get(entry.index);
    if (pending === undefined) return;
    this.writes.delete(entry.index);
    if (pending.term === entry.term && outcome !== null) {
      pending.callback({ ok: true, value: { index: entry.index, outcome } });
    } else {
      // Another leader's entry took this index: ours can never be applied.
      const error = new AspenError('NOT_LEADER', 'leadership changed before the write committed', {
        leaderId: leaderId() || null,
      });
      pending.callback({ ok: false, error });
    }
  }

  /** A config entry applied: the pending change took effect, or lost to another leader's entry. */
  private resolveMembership(entry: Entry & { readonly kind: 'config' }): void {
    const pending = this.membership;
    if (pending === null || entry.index < pending.index) return;
    if (!pending.awaitingLeave && (entry.index !== pending.index || entry.term !== pending.term)) {
      this.membership = null;
      pending.callback({
        ok: false,
        error: new AspenError('NOT_LEADER', 'leadership changed before the membership change committed'),
      });
      return;
    }
    if (entry.config.votersOutgoing.length > 0) {
      pending.awaitingLeave = true;
      return;
    }
    this.membership = null;
    pending.callback({ ok: true, value: entry.config });
  }

  /** A snapshot replaced the log up to `index`: proposals it covers can no longer be matched to their entries. */
  failCoveredBy(index: number): void {
    const error = indeterminate('replaced by a snapshot before the write was seen applied');
    for (const [writeIndex, pending] of this.writes) {
      if (writeIndex > index) continue;
      this.writes.delete(writeIndex);
      pending.callback({ ok: false, error });
    }
    if (this.membership !== null && this.membership.index <= index) {
      this.membership.callback({ ok: false, error });
      this.membership = null;
    }
  }

  /** The node stopped: fail everything that waits. */
  failAll(error: AspenError): void {
    for (const pending of this.writes.values()) pending.callback({ ok: false, error });
    for (const pending of this.reads.values()) pending.callback({ ok: false, error });
    this.membership?.callback({ ok: false, error });
    this.writes.clear();
    this.reads.clear();
    this.membership = null;
  }
}
