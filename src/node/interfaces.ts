import type { Entry, HardState, Message, Ready } from '../raft/types.ts';

/** Unreliable, unordered datagram-style delivery of Raft messages (the simulator or libp2p). */
export interface Transport {
  send(message: Message): void;
}

export interface PersistBatch {
  readonly hardState: HardState | null;
  /** Entries to append; every stored entry at or after `entries[0].index` is dropped first. */
  readonly entries: readonly Entry[];
}

/**
 * Durable Raft log and hard state. `persist` calls `done` once the whole batch is synced (one synced
 * write per batch: group commit), or with an error, which stops the node.
 */
export interface LogStore {
  persist(batch: PersistBatch, done: (error: Error | null) => void): void;
}

/**
 * Time as the node sees it: wall-clock timers in production, virtual time in the simulator.
 * `setTimer(0, …)` runs the callback after the current one (the next turn).
 */
export interface Clock {
  nowMs(): number;
  /** Run `callback` after `delayMs`; the returned function cancels it. */
  setTimer(delayMs: number, callback: () => void): () => void;
}

/** Hooks for the simulator's checkers; production passes none. */
export interface RaftNodeObserver {
  /** Called with every Ready after its batch is durable, before messages are sent. */
  ready?(nodeId: number, ready: Ready): void;
  persisted?(nodeId: number, batch: PersistBatch): void;
  applied?(nodeId: number, entry: Entry): void;
  readServed?(nodeId: number, readIndex: number, appliedIndex: number): void;
}
