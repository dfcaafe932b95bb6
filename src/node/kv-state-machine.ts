import type { WriteCommand } from '../api/types.ts';
import { assert } from '../raft/assert.ts';

/** A stored value with etcd-style revisions: Raft index of creation and of the last change, and a per-key version. */
export interface KvRecord {
  readonly value: string;
  readonly createIndex: number;
  readonly modIndex: number;
  readonly version: number;
}

/** What applying one command did, per key (in command order). */
export interface ApplyOutcome {
  readonly index: number;
  readonly deleted: readonly boolean[];
}

/** The replicated state machine: a deterministic function of the applied log prefix. */
export interface StateMachine {
  readonly appliedIndex: number;
  apply(index: number, command: WriteCommand): ApplyOutcome;
  /** Blank and configuration entries advance the applied index without touching data. */
  applyNoop(index: number): void;
  get(key: string): KvRecord | undefined;
}

/** The in-memory KV state machine (the simulator's and `--storage memory`'s). */
export class MemoryKvStateMachine implements StateMachine {
  private readonly records = new Map<string, KvRecord>();
  appliedIndex = 0;

  apply(index: number, command: WriteCommand): ApplyOutcome {
    this.advanceTo(index);
    const deleted: boolean[] = [];
    if ('Set' in command) {
      this.set(index, command.Set.key, command.Set.value);
    } else if ('SetMulti' in command) {
      for (const [key, value] of command.SetMulti.pairs) this.set(index, key, value);
    } else if ('Delete' in command) {
      deleted.push(this.records.delete(command.Delete.key));
    } else {
      for (const key of command.DeleteMulti.keys) deleted.push(this.records.delete(key));
    }
    return { index, deleted };
  }

  applyNoop(index: number): void {
    this.advanceTo(index);
  }

  get(key: string): KvRecord | undefined {
    return this.records.get(key);
  }

  get size(): number {
    return this.records.size;
  }

  private advanceTo(index: number): void {
    assert(index === this.appliedIndex + 1, `apply out of order: ${index} after ${this.appliedIndex}`);
    this.appliedIndex = index;
  }

  private set(index: number, key: string, value: string): void {
    const previous = this.records.get(key);
    this.records.set(key, {
      value,
      createIndex: previous?.createIndex ?? index,
      modIndex: index,
      version: (previous?.version ?? 0) + 1,
    });
  }
}
