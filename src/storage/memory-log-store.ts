import type { LogStore, PersistBatch, Snapshot } from '../node/interfaces.ts';
import { assert } from '../base/assert.ts';
import {
  EMPTY_HARD_STATE,
  type Entry,
  type HardState,
  type PersistedState,
  type SnapshotMeta,
} from '../raft/types.ts';

/**
 * The entries of a contiguous run that a snapshot leaves: those after it when the run holds its
 * last entry (same index and term), none when the run does not continue it.
 */
export function entriesKeptBy(entries: readonly Entry[], meta: SnapshotMeta): Entry[] {
  const first = entries[0];
  if (first === undefined) return [];
  const offset = meta.index - first.index;
  const covered = offset >= 0 ? entries[offset] : undefined;
  return covered?.term === meta.term ? entries.slice(offset + 1) : [];
}

/**
 * What a log store holds, in memory: hard state, the newest snapshot and the entries after it.
 * Applying a batch follows the LogStore contract exactly (snapshot first, then the suffix
 * replacement, then the hard state), so the simulator's disk and `--storage memory` share it.
 */
export class MemoryLogState {
  private hardState: HardState = EMPTY_HARD_STATE;
  private snapshot: Snapshot | null = null;
  /** Entries after the snapshot: entries[0] has index snapshotIndex + 1. */
  private entries: Entry[] = [];

  get snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  get lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  apply(batch: PersistBatch): void {
    if (batch.snapshot !== null) this.applySnapshot(batch.snapshot);
    const first = batch.entries[0];
    if (first !== undefined) {
      const lastIndex = this.snapshotIndex + this.entries.length;
      assert(
        first.index > this.snapshotIndex && first.index <= lastIndex + 1,
        `log gap: ${first.index} after ${lastIndex}`,
      );
      this.entries.length = first.index - this.snapshotIndex - 1;
      for (const entry of batch.entries) this.entries.push(entry);
    }
    if (batch.hardState !== null) this.hardState = batch.hardState;
  }

  /** Keep the snapshot; drop the entries it covers, or all of them when they do not continue it. */
  private applySnapshot(snapshot: Snapshot): void {
    const meta = snapshot.meta;
    assert(
      meta.index > this.snapshotIndex,
      `snapshot ${meta.index} does not move past ${this.snapshotIndex}`,
    );
    this.entries = entriesKeptBy(this.entries, meta);
    this.snapshot = snapshot;
  }

  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    return {
      persisted: {
        hardState: this.hardState,
        snapshot: this.snapshot?.meta ?? null,
        entries: this.entries.slice(),
      },
      snapshot: this.snapshot,
    };
  }

  /** The stored entry at `index`, or undefined when absent or compacted. */
  entry(index: number): Entry | undefined {
    return this.entries[index - this.snapshotIndex - 1];
  }

  /** Term of the stored entry at `index` (or of the snapshot's last entry); -1 when unknown. */
  termAt(index: number): number {
    if (index === 0) return 0;
    if (this.snapshot !== null && index === this.snapshot.meta.index) return this.snapshot.meta.term;
    return this.entry(index)?.term ?? -1;
  }

  /** Whether (index, term) is held: as an entry, or covered by the snapshot. */
  holds(index: number, term: number): boolean {
    if (this.snapshot !== null && index <= this.snapshot.meta.index)
      return index < this.snapshot.meta.index || this.snapshot.meta.term === term;
    return this.entry(index)?.term === term;
  }

  get storedHardState(): HardState {
    return this.hardState;
  }
}

/**
 * The log store of `--storage memory` and of single-process tests: a batch is "synced" on the
 * next turn of the event loop. Everything is lost with the process, by design.
 */
export class MemoryLogStore implements LogStore {
  private readonly state = new MemoryLogState();

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    this.state.apply(batch);
    setImmediate(() => {
      done(null);
    });
  }

  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    return this.state.load();
  }
}
