import type { LogStore, PersistBatch, Snapshot } from '../node/interfaces.ts';
import { assert } from '../raft/assert.ts';
import { EMPTY_HARD_STATE, type Entry, type HardState, type PersistedState } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';

/**
 * A simulated disk with explicit crash semantics: a batch becomes durable only when its sync
 * completes after a seeded latency; a crash before then loses it (and its callback never runs).
 * It keeps the newest snapshot and the entries after it, exactly as a real log store must.
 */
export class SimDisk implements LogStore {
  private hardState: HardState = EMPTY_HARD_STATE;
  private snapshot: Snapshot | null = null;
  /** Entries after the snapshot: entries[0] has index snapshotIndex + 1. */
  private entries: Entry[] = [];
  private generation = 0;
  private readonly events: EventQueue;
  private readonly latencyMs: () => number;
  syncs = 0;

  constructor(events: EventQueue, latencyMs: () => number) {
    this.events = events;
    this.latencyMs = latencyMs;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    const generation = this.generation;
    this.events.after(this.latencyMs(), () => {
      if (generation !== this.generation) return; // crashed before the sync completed: lost
      this.applyBatch(batch);
      this.syncs += 1;
      done(null);
    });
  }

  private get snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  private applyBatch(batch: PersistBatch): void {
    if (batch.snapshot !== null) this.applySnapshot(batch.snapshot);
    const first = batch.entries[0];
    if (first !== undefined) {
      const lastIndex = this.snapshotIndex + this.entries.length;
      assert(first.index > this.snapshotIndex && first.index <= lastIndex + 1, `disk gap: ${first.index} after ${lastIndex}`);
      this.entries.length = first.index - this.snapshotIndex - 1;
      for (const entry of batch.entries) this.entries.push(entry);
    }
    if (batch.hardState !== null) this.hardState = batch.hardState;
  }

  /** Keep the snapshot; drop the entries it covers, or all of them when they do not continue it. */
  private applySnapshot(snapshot: Snapshot): void {
    const meta = snapshot.meta;
    assert(meta.index > this.snapshotIndex, `snapshot ${meta.index} does not move past ${this.snapshotIndex}`);
    const covered = this.entries[meta.index - this.snapshotIndex - 1];
    const keep = covered !== undefined && covered.term === meta.term;
    this.entries = keep ? this.entries.slice(meta.index - this.snapshotIndex) : [];
    this.snapshot = snapshot;
  }

  /** Power loss: every sync in flight is lost. */
  crash(): void {
    this.generation += 1;
  }

  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    return {
      persisted: { hardState: this.hardState, snapshot: this.snapshot?.meta ?? null, entries: this.entries.slice() },
      snapshot: this.snapshot,
    };
  }

  /** The durable entry at `index`, or undefined when absent or compacted. */
  durableEntry(index: number): Entry | undefined {
    return this.entries[index - this.snapshotIndex - 1];
  }

  /** Term of the durable entry at `index` (or of the snapshot's last entry); -1 when unknown. */
  termAt(index: number): number {
    if (index === 0) return 0;
    if (this.snapshot !== null && index === this.snapshot.meta.index) return this.snapshot.meta.term;
    return this.durableEntry(index)?.term ?? -1;
  }

  /** Whether (index, term) is durable here: as an entry, or as the snapshot's last entry or prefix. */
  holds(index: number, term: number): boolean {
    if (this.snapshot !== null && index <= this.snapshot.meta.index) return index < this.snapshot.meta.index || this.snapshot.meta.term === term;
    return this.durableEntry(index)?.term === term;
  }

  get durableHardState(): HardState {
    return this.hardState;
  }
}
