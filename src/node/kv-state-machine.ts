import { Packr } from 'msgpackr';
import type { WriteCommand } from '../api/types.ts';
import { assert } from '../raft/assert.ts';

const snapshotPackr = new Packr({ useRecords: false, moreTypes: false });

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
  /** The whole state after `appliedIndex`, as bytes. */
  snapshot(): Uint8Array;
  /** Replace the whole state with a snapshot taken at `index`. */
  restore(data: Uint8Array, index: number): void;
}

interface SnapshotBody {
  readonly appliedIndex: number;
  readonly records: readonly (readonly [string, KvRecord])[];
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

  snapshot(): Uint8Array {
    const body: SnapshotBody = { appliedIndex: this.appliedIndex, records: [...this.records.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)) };
    return snapshotPackr.pack(body);
  }

  restore(data: Uint8Array, index: number): void {
    const body = snapshotPackr.unpack(data) as SnapshotBody;
    assert(body.appliedIndex === index, `snapshot data is at ${body.appliedIndex}, metadata says ${index}`);
    this.records.clear();
    for (const [key, record] of body.records) this.records.set(key, record);
    this.appliedIndex = index;
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
