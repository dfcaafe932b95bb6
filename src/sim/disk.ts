import type { LogStore, PersistBatch, Snapshot } from '../node/interfaces.ts';
import type { Entry, HardState, PersistedState } from '../raft/types.ts';
import { MemoryLogState } from '../storage/memory-log-store.ts';
import type { EventQueue } from './event-queue.ts';

/**
 * A simulated disk with explicit crash semantics: a batch becomes durable only when its sync
 * completes after a seeded latency; a crash before then loses it (and its callback never runs).
 */
export class SimDisk implements LogStore {
  private readonly durable = new MemoryLogState();
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
      this.durable.apply(batch);
      this.syncs += 1;
      done(null);
    });
  }

  /** Power loss: every sync in flight is lost. */
  crash(): void {
    this.generation += 1;
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
