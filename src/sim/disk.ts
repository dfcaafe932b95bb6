import { assert } from '../base/assert.ts';
import type { LogStore, PersistBatch, Snapshot } from '../node/interfaces.ts';
import type { Entry, HardState, PersistedState } from '../raft/types.ts';
import { MemoryLogState } from '../storage/memory-log-store.ts';
import type { EventQueue } from './event-queue.ts';

/** The snapshot files beside a disk (file mode): a mark names a durable file, and prunes the others. */
export interface MarkedFiles {
  durable(index: number): Uint8Array | undefined;
  /** The mark of `marked` is durable: the files it lets go are deleted (as forgetSnapshotsBefore). */
  forgetBefore(marked: number): void;
}

/**
 * A simulated disk with explicit crash semantics: a batch becomes durable only when its sync
 * completes after a seeded latency; a crash before then loses it (and its callback never runs).
 */
export class SimDisk implements LogStore {
  private readonly durable = new MemoryLogState();
  private generation = 0;
  private readonly events: EventQueue;
  private readonly latencyMs: () => number;
  /**
   * On a crash, how many parts of the batch in flight reached the disk anyway (a torn write), in
   * the order the WAL makes them durable: the snapshot (LMDB, synced before the WAL frame), the
   * entries, the hard state (last in the frame).
   */
  private readonly tornParts: (batchParts: number) => number;
  private inFlight: PersistBatch | null = null;
  syncs = 0;
  tornWrites = 0;
  /** Set in file mode: snapshots without bytes are marks of these files. */
  files: MarkedFiles | null = null;

  constructor(
    events: EventQueue,
    latencyMs: () => number,
    tornParts: (batchParts: number) => number = () => 0,
  ) {
    this.events = events;
    this.latencyMs = latencyMs;
    this.tornParts = tornParts;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    const generation = this.generation;
    const marked = batch.snapshot !== null && batch.snapshot.data === null ? batch.snapshot.meta.index : null;
    // As WalLogStore.persist: a snapshot file is synced before its mark is written.
    if (marked !== null)
      assert(this.files?.durable(marked) !== undefined, `snapshot file ${marked} exists before its mark`);
    this.inFlight = batch;
    this.events.after(this.latencyMs(), () => {
      if (generation !== this.generation) return; // crashed before the sync completed: lost
      this.inFlight = null;
      this.durable.apply(batch);
      this.syncs += 1;
      if (marked !== null) this.files?.forgetBefore(marked);
      done(null);
    });
  }

  /**
   * Power loss: the sync in flight is lost, except that a prefix of its parts may have reached the
   * disk (a torn last write): the snapshot, then entries, then the hard state, as the WAL writes them.
   */
  crash(): PersistBatch | null {
    this.generation += 1;
    const batch = this.inFlight;
    this.inFlight = null;
    if (batch === null) return null;
    const snapshotParts = batch.snapshot === null ? 0 : 1;
    const parts = snapshotParts + batch.entries.length + (batch.hardState === null ? 0 : 1);
    if (parts === 0) return null;
    const count = Math.min(this.tornParts(parts), parts);
    if (count <= 0) return null;
    const torn: PersistBatch = {
      snapshot: batch.snapshot,
      hardState: count === parts ? batch.hardState : null,
      entries: batch.entries.slice(0, Math.max(0, count - snapshotParts)),
    };
    this.durable.apply(torn);
    this.tornWrites += 1;
    return torn;
  }

  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    return this.durable.load();
  }

  durableEntry(index: number): Entry | undefined {
    return this.durable.entry(index);
  }

  termAt(index: number): number {
    return this.durable.termAt(index);
  }

  holds(index: number, term: number): boolean {
    return this.durable.holds(index, term);
  }

  get durableHardState(): HardState {
    return this.durable.storedHardState;
  }
}
