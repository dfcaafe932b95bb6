import type { LogStore, PersistBatch } from '../node/interfaces.ts';
import { assert } from '../raft/assert.ts';
import { EMPTY_HARD_STATE, type Entry, type HardState, type PersistedState } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';

/**
 * A simulated disk with explicit crash semantics: a batch becomes durable only when its sync
 * completes after a seeded latency; a crash before then loses it (and its callback never runs).
 */
export class SimDisk implements LogStore {
  private hardState: HardState = EMPTY_HARD_STATE;
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

  private applyBatch(batch: PersistBatch): void {
    const first = batch.entries[0];
    if (first !== undefined) {
      assert(first.index >= 1 && first.index <= this.entries.length + 1, `disk gap: ${first.index} after ${this.entries.length}`);
      this.entries.length = first.index - 1;
      for (const entry of batch.entries) this.entries.push(entry);
    }
    if (batch.hardState !== null) this.hardState = batch.hardState;
  }

  /** Power loss: every sync in flight is lost. */
  crash(): void {
    this.generation += 1;
  }

  load(): PersistedState {
    return { hardState: this.hardState, entries: this.entries.slice() };
  }

  durableEntry(index: number): Entry | undefined {
    return this.entries[index - 1];
  }

  get durableHardState(): HardState {
    return this.hardState;
  }
}
