import type { NodeId, ReadFailure, ReadState } from './types.ts';

const NO_STATES: readonly ReadState[] = Object.freeze([]);
const NO_FAILURES: readonly ReadFailure[] = Object.freeze([]);

interface PendingRead {
  readonly requestId: number;
  readonly round: number;
  /** Commit index when the read arrived, or 0 when the leader had not yet committed in its term. */
  readonly index: number;
}

/**
 * ReadIndex (after etcd-io/raft's read_only.go): the leader's queued linearizable reads and its
 * heartbeat rounds. Reads queued between two `ready()` calls share one round; a quorum of acks
 * for round r confirms every read queued for a round <= r. Confirmed reads come out as ReadStates,
 * reads of a leader that stepped down as ReadFailures.
 */
export class ReadOnly {
  /** Queued reads, by increasing round (bounded by the config's pendingReadsMax, checked by the core). */
  private pending: PendingRead[] = [];
  /** The newest heartbeat round sent. */
  private roundSent = 0;
  /** Reads were queued since the last Ready: its heartbeat round carries them. */
  broadcastPending = false;
  private states: ReadState[] = [];
  private failures: ReadFailure[] = [];

  get pendingCount(): number {
    return this.pending.length;
  }

  get round(): number {
    return this.roundSent;
  }

  /** Queue a read for the next round; `index` is the commit index now (0: not yet committed in this term). */
  add(requestId: number, index: number): void {
    this.pending.push({ requestId, round: this.roundSent + 1, index });
    this.broadcastPending = true;
  }

  /** Start the next heartbeat round; returns its number. */
  nextRound(): number {
    this.roundSent += 1;
    return this.roundSent;
  }

  /** Release every read whose round a quorum confirmed (`confirmedRound`), at `committed` when it had none. */
  release(confirmedRound: number, committed: number): void {
    let released = 0;
    for (const read of this.pending) {
      if (read.round > confirmedRound) break;
      this.states.push({ requestId: read.requestId, index: read.index === 0 ? committed : read.index });
      released += 1;
    }
    if (released > 0) this.pending = this.pending.slice(released);
  }

  /** The leader stepped down: every queued read fails, pointing at `leaderId` when known. */
  failAll(leaderId: NodeId): void {
    for (const read of this.pending) {
      this.failures.push({ requestId: read.requestId, reason: 'not_leader', leaderId });
    }
    this.pending = [];
    this.broadcastPending = false;
  }

  /** A new leader starts with no reads and round 0. */
  reset(): void {
    this.pending = [];
    this.roundSent = 0;
  }

  hasOutput(): boolean {
    return this.states.length > 0 || this.failures.length > 0;
  }

  /** The reads released since the last call (handed out with a Ready; never mutated afterwards). */
  takeStates(): readonly ReadState[] {
    if (this.states.length === 0) return NO_STATES;
    const states = this.states;
    this.states = [];
    return states;
  }

  takeFailures(): readonly ReadFailure[] {
    if (this.failures.length === 0) return NO_FAILURES;
    const failures = this.failures;
    this.failures = [];
    return failures;
  }
}
