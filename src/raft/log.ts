import { assert, assertIndex } from '../base/assert.ts';
import type { Entry, MembershipConfig, SnapshotMeta } from './types.ts';

/** Size of an entry for batching bounds: its payload plus a fixed header estimate. */
export const ENTRY_OVERHEAD_BYTES = 32;

export function entrySizeBytes(entry: Entry): number {
  if (entry.kind === 'command') return ENTRY_OVERHEAD_BYTES + entry.data.byteLength;
  if (entry.kind === 'config') {
    const config = entry.config;
    return (
      ENTRY_OVERHEAD_BYTES +
      8 * (config.voters.length + config.votersOutgoing.length + config.learners.length)
    );
  }
  return ENTRY_OVERHEAD_BYTES;
}

/**
 * The in-memory Raft log of one node: entries after the snapshot point, with the index up to which
 * they are known durable (`stableIndex`), committed and applied. Invariants (checked by `check`):
 * applied <= committed <= lastIndex, stableIndex <= lastIndex, entries are contiguous with
 * non-decreasing terms.
 */
export class RaftLog {
  private entries: Entry[] = [];
  /** Index and term of the entry just before `entries[0]` (the snapshot point; 0/0 for none). */
  private offsetIndex = 0;
  private offsetTerm = 0;
  stableIndex = 0;
  committed = 0;
  applied = 0;
  /** The snapshot the log starts after (null before the first compaction). */
  snapshot: SnapshotMeta | null = null;

  /** Load the durable snapshot and entries at startup: they are stable by definition. */
  restore(snapshot: SnapshotMeta | null, entries: readonly Entry[], committed: number): void {
    assert(this.entries.length === 0 && this.offsetIndex === 0, 'restore only into an empty log');
    if (snapshot !== null) {
      this.setOffset(snapshot);
      this.applied = snapshot.index;
    }
    this.appendContiguous(entries);
    this.stableIndex = this.lastIndex();
    assert(
      committed <= this.lastIndex(),
      `restored commit ${committed} beyond last index ${this.lastIndex()}`,
    );
    this.committed = Math.max(committed, this.offsetIndex);
  }

  private setOffset(snapshot: SnapshotMeta): void {
    assertIndex(snapshot.index, 'snapshot index');
    assertIndex(snapshot.term, 'snapshot term');
    this.snapshot = snapshot;
    this.offsetIndex = snapshot.index;
    this.offsetTerm = snapshot.term;
  }

  /** Drop the entries a local snapshot covers (the state machine already holds them). */
  compact(snapshot: SnapshotMeta): void {
    assert(
      snapshot.index > this.offsetIndex,
      `compaction must move forward: ${snapshot.index} <= ${this.offsetIndex}`,
    );
    assert(snapshot.index <= this.applied, `compact ${snapshot.index} beyond applied ${this.applied}`);
    assert(snapshot.index <= this.stableIndex, `compact ${snapshot.index} beyond stable ${this.stableIndex}`);
    assert(
      this.matchTerm(snapshot.index, snapshot.term),
      `snapshot ${snapshot.index}:${snapshot.term} does not match the log`,
    );
    this.entries = this.entries.slice(snapshot.index - this.offsetIndex);
    this.setOffset(snapshot);
  }

  /**
   * Replace the whole log by a snapshot from the leader. Everything the snapshot covers is
   * committed by definition; the state machine catches up when the driver installs it.
   */
  installSnapshot(snapshot: SnapshotMeta): void {
    assert(
      snapshot.index > this.committed,
      `installing snapshot ${snapshot.index} at or below commit ${this.committed}`,
    );
    this.entries = [];
    this.setOffset(snapshot);
    this.committed = snapshot.index;
    this.stableIndex = snapshot.index;
  }

  /** The configuration in effect at `index`: the newest config entry at or before it, else the snapshot's. */
  configAt(index: number): MembershipConfig | null {
    assert(index >= this.offsetIndex && index <= this.lastIndex(), `configAt ${index} outside the log`);
    for (let position = index - this.offsetIndex - 1; position >= 0; position -= 1) {
      const entry = this.entries[position];
      if (entry !== undefined && entry.kind === 'config') return entry.config;
    }
    return this.snapshot?.config ?? null;
  }

  firstIndex(): number {
    return this.offsetIndex + 1;
  }

  lastIndex(): number {
    return this.offsetIndex + this.entries.length;
  }

  lastTerm(): number {
    const last = this.entries.at(-1);
    return last === undefined ? this.offsetTerm : last.term;
  }

  /** Term of the entry at `index`, or null when it is not in the log (compacted or beyond the end). */
  term(index: number): number | null {
    if (index === this.offsetIndex) return this.offsetTerm;
    const entry = this.entries[index - this.offsetIndex - 1];
    return entry === undefined ? null : entry.term;
  }

  entry(index: number): Entry | undefined {
    return this.entries[index - this.offsetIndex - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Raft section 5.4.1: is a candidate's log at least as up to date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Leader append: entries continue the log exactly. */
  append(entries: readonly Entry[]): void {
    this.appendContiguous(entries);
  }

  /**
   * Follower append (etcd's maybeAppend). Returns the index of the last new entry when the log
   * matches at (prevIndex, prevTerm), or null when it does not. Never truncates committed entries.
   */
  maybeAppend(
    prevIndex: number,
    prevTerm: number,
    leaderCommit: number,
    entries: readonly Entry[],
  ): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNewIndex = prevIndex + entries.length;
    const conflictIndex = this.findConflict(entries);
    if (conflictIndex !== 0) {
      assert(
        conflictIndex > this.committed,
        `conflict at ${conflictIndex} would truncate committed ${this.committed}`,
      );
      const from = conflictIndex - prevIndex - 1;
      this.truncateAndAppend(entries.slice(from));
    }
    this.commitTo(Math.min(leaderCommit, lastNewIndex));
    return lastNewIndex;
  }

  /** First index where `entries` disagree with the log (or extend it); 0 when all are present. */
  private findConflict(entries: readonly Entry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term` (etcd's findConflictByTerm): the last
   * position where a log ending in `term` at `index` could match ours.
   */
  findConflictByTerm(index: number, term: number): number {
    let candidate = Math.min(index, this.lastIndex());
    while (candidate > this.offsetIndex) {
      const candidateTerm = this.term(candidate);
      assert(candidateTerm !== null, 'term lookup inside the log');
      if (candidateTerm <= term) break;
      candidate -= 1;
    }
    return candidate;
  }

  private truncateAndAppend(entries: readonly Entry[]): void {
    const first = entries[0];
    assert(first !== undefined, 'truncateAndAppend needs entries');
    assert(first.index > this.offsetIndex, 'cannot truncate into the snapshot');
    assert(first.index <= this.lastIndex() + 1, `gap: appending ${first.index} after ${this.lastIndex()}`);
    this.entries.length = first.index - this.offsetIndex - 1;
    this.stableIndex = Math.min(this.stableIndex, first.index - 1);
    this.appendContiguous(entries);
  }

  private appendContiguous(entries: readonly Entry[]): void {
    let expectedIndex = this.lastIndex() + 1;
    let previousTerm = this.lastTerm();
    for (const entry of entries) {
      assertIndex(entry.term, 'entry term');
      assert(entry.index === expectedIndex, `log gap: expected index ${expectedIndex}, got ${entry.index}`);
      assert(
        entry.term >= previousTerm,
        `log term decreases at ${entry.index}: ${entry.term} < ${previousTerm}`,
      );
      this.entries.push(entry);
      expectedIndex += 1;
      previousTerm = entry.term;
    }
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  /** Entries in [lo, hi] bounded by count and bytes; always at least one entry when the range is non-empty. */
  slice(lo: number, hi: number, countMax: number, bytesMax: number): Entry[] {
    assert(lo >= this.firstIndex(), `slice from ${lo} before first index ${this.firstIndex()}`);
    const result: Entry[] = [];
    let bytes = 0;
    const end = Math.min(hi, this.lastIndex());
    for (let index = lo; index <= end && result.length < countMax; index += 1) {
      const entry = this.entry(index);
      assert(entry !== undefined, `missing entry ${index}`);
      bytes += entrySizeBytes(entry);
      if (result.length > 0 && bytes > bytesMax) break;
      result.push(entry);
    }
    return result;
  }

  unstableEntries(): Entry[] {
    return this.entries.slice(this.stableIndex - this.offsetIndex);
  }

  /** Mark entries up to `index` durable, unless the entry there was replaced meanwhile. */
  stableTo(index: number, term: number): boolean {
    if (index <= this.stableIndex || !this.matchTerm(index, term)) return false;
    this.stableIndex = index;
    return true;
  }

  /**
   * Committed entries that are durable locally and not yet applied, at most `countMax`. After a
   * snapshot install the state machine jumps to the snapshot, so applying resumes after it.
   */
  nextCommittedEntries(countMax: number): Entry[] {
    const hi = Math.min(this.committed, this.stableIndex);
    const lo = Math.max(this.applied, this.offsetIndex) + 1;
    if (hi < lo) return [];
    return this.slice(lo, hi, countMax, Number.MAX_SAFE_INTEGER);
  }

  hasNextCommittedEntries(): boolean {
    return Math.min(this.committed, this.stableIndex) > Math.max(this.applied, this.offsetIndex);
  }

  appliedTo(index: number): void {
    assert(index >= this.applied, `applied moves backwards: ${index} < ${this.applied}`);
    assert(index <= this.committed, `applied ${index} beyond committed ${this.committed}`);
    this.applied = index;
  }

  /** Newest config entry in the log (scans back; bounded by the log length, called rarely). */
  lastConfigEntry(): Entry | null {
    for (let position = this.entries.length - 1; position >= 0; position -= 1) {
      const entry = this.entries[position];
      if (entry !== undefined && entry.kind === 'config') return entry;
    }
    return null;
  }

  check(): void {
    assert(
      this.offsetIndex <= this.committed,
      `snapshot ${this.offsetIndex} beyond committed ${this.committed}`,
    );
    assert(this.applied <= this.committed, `applied ${this.applied} > committed ${this.committed}`);
    assert(this.committed <= this.lastIndex(), `committed ${this.committed} > last ${this.lastIndex()}`);
    assert(this.stableIndex <= this.lastIndex(), `stable ${this.stableIndex} > last ${this.lastIndex()}`);
  }
}
