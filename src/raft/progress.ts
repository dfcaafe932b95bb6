import { assert } from '../base/assert.ts';

/**
 * A bounded ring of the last indexes of in-flight AppendEntries to one follower. Callers check
 * `full()` before `add()`; adding to a full ring is a programmer error.
 */
export class Inflights {
  private readonly buffer: number[];
  private start = 0;
  count = 0;
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    assert(
      Number.isSafeInteger(capacity) && capacity > 0,
      `inflight capacity must be positive, got ${capacity}`,
    );
    this.buffer = new Array<number>(capacity).fill(0);
  }

  full(): boolean {
    return this.count === this.capacity;
  }

  add(lastIndex: number): void {
    assert(!this.full(), 'inflights full: callers must check full() first');
    const newest = this.count === 0 ? -1 : this.at(this.count - 1);
    assert(lastIndex > newest, `inflight indexes must increase: ${lastIndex} after ${newest}`);
    this.buffer[(this.start + this.count) % this.capacity] = lastIndex;
    this.count += 1;
  }

  /** Free every in-flight append whose last index is <= `index`. */
  freeLE(index: number): void {
    while (this.count > 0 && this.at(0) <= index) {
      this.start = (this.start + 1) % this.capacity;
      this.count -= 1;
    }
  }

  freeFirstOne(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.capacity;
    this.count -= 1;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }

  private at(offset: number): number {
    const value = this.buffer[(this.start + offset) % this.capacity];
    assert(value !== undefined, 'inflight slot in range');
    return value;
  }
}

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** The leader's view of one follower or learner (etcd's Progress). */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** In probe state at most one append is outstanding until a response or heartbeat ack arrives. */
  probeSent = false;
  /** Heard from since the last CheckQuorum round. */
  recentActive = false;
  /** The leader tick of this peer's latest response (-1: none in this term). */
  lastAckTick = -1;
  /** Highest read round this peer acknowledged in the current term. */
  readRoundAcked = 0;
  /** In snapshot state: the index of the snapshot sent, and ticks since it was sent. */
  pendingSnapshotIndex = 0;
  snapshotTicks = 0;
  readonly inflights: Inflights;

  constructor(next: number, inflightsMax: number) {
    this.next = next;
    this.inflights = new Inflights(inflightsMax);
  }

  becomeProbe(): void {
    this.state = 'probe';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflights.reset();
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflights.reset();
  }

  /** Waiting for a snapshot to arrive: nothing else is sent until it is acknowledged or retried. */
  becomeSnapshot(snapshotIndex: number): void {
    this.state = 'snapshot';
    this.pendingSnapshotIndex = snapshotIndex;
    this.snapshotTicks = 0;
    this.probeSent = false;
    this.inflights.reset();
  }

  isPaused(): boolean {
    if (this.state === 'snapshot') return true;
    return this.state === 'probe' ? this.probeSent : this.inflights.full();
  }

  /** A success acknowledged `index`; false when the ack is stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of prevLogIndex `rejected`, with the follower's hint of where the logs may match.
   * Returns false for a stale rejection (one that no longer concerns the current `next`).
   */
  maybeDecreaseTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'snapshot') return false;
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }
}
