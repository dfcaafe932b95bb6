import type { LogStore, PersistBatch } from '../node/interfaces.ts';
import { assert } from '../raft/assert.ts';
import { EMPTY_HARD_STATE, type Entry, type HardState, type PersistedState } from '../raft/types.ts';

/**
 * The in-memory log store of `--storage memory` and of single-process tests: a batch is "synced"
 * on the next turn of the event loop. Everything is lost with the process, by design.
 */
export class MemoryLogStore implements LogStore {
  private hardState: HardState = EMPTY_HARD_STATE;
  private entries: Entry[] = [];

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    const first = batch.entries[0];
    if (first !== undefined) {
      assert(first.index >= 1 && first.index <= this.entries.length + 1, `log gap: ${first.index} after ${this.entries.length}`);
      this.entries.length = first.index - 1;
      for (const entry of batch.entries) this.entries.push(entry);
    }
    if (batch.hardState !== null) this.hardState = batch.hardState;
    setImmediate(() => { done(null); });
  }

  load(): PersistedState {
    return { hardState: this.hardState, entries: this.entries.slice() };
  }
}
