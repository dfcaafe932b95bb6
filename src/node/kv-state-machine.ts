import { Packr } from 'msgpackr';
import { SCAN_PAGE_BYTES_MAX, utf8Length } from '../api/limits.ts';
import type { WriteCommand } from '../api/types.ts';
import { assert, AssertionError } from '../base/assert.ts';
import type { MembershipConfig } from '../raft/types.ts';

const snapshotPackr = new Packr({ useRecords: false, moreTypes: false });

/** A stored value with etcd-style revisions: Raft index of creation and of the last change, and a per-key version. */
export interface KvRecord {
  readonly value: string;
  readonly createIndex: number;
  readonly modIndex: number;
  readonly version: number;
}

/** What one op of a Transaction branch did, in op order. */
export type TxnOpOutcome =
  | { readonly kind: 'set'; readonly key: string }
  | { readonly kind: 'delete'; readonly key: string; readonly deleted: boolean }
  | { readonly kind: 'get'; readonly key: string; readonly record: KvRecord | null }
  | {
      readonly kind: 'scan';
      readonly records: readonly (readonly [string, KvRecord])[];
      /** More records match than the op's limit returned. */
      readonly more: boolean;
    };

/** What applying one command did. */
export interface ApplyOutcome {
  readonly index: number;
  /** Delete and DeleteMulti: whether each key existed (in command order); CompareAndDelete: [true] when it deleted. */
  readonly deleted: readonly boolean[];
  /**
   * False when a CompareAndSwap or CompareAndDelete found another value (nothing was written), or a
   * Transaction's compares did not all hold (its `failure` branch ran). True for every other command.
   */
  readonly succeeded: boolean;
  /** A CompareAndSwap or CompareAndDelete that failed: the record it found (null: absent). */
  readonly current?: KvRecord | null;
  /** A Transaction: one outcome per op of the branch that ran. */
  readonly results?: readonly TxnOpOutcome[];
}

/** The replicated state machine: a deterministic function of the applied log prefix. */
export interface StateMachine {
  readonly appliedIndex: number;
  apply(index: number, command: WriteCommand): ApplyOutcome;
  /**
   * Blank and configuration entries advance the applied index without touching data; a
   * configuration is recorded as the membership in effect at `index`.
   */
  applyNoop(index: number, config?: MembershipConfig): void;
  /**
   * Run several applies as one unit of storage work (one LMDB transaction for all the entries of a
   * Ready). Not nested; `run` must not answer clients (an exception inside aborts the whole unit).
   */
  batch(run: () => void): void;
  /** The membership applied last (null before any configuration entry). */
  readonly appliedMembership: MembershipConfig | null;
  get(key: string): KvRecord | undefined;
  /**
   * Up to `limit` records whose key starts with `prefix`, in key order, after `afterKey` (exclusive),
   * and at most SCAN_PAGE_BYTES_MAX of keys and values (at least one record).
   */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage;
  /** The whole state after `appliedIndex`, as bytes. */
  snapshot(): Uint8Array;
  /** Replace the whole state with a snapshot taken at `index` (with the membership in effect there). */
  restore(data: Uint8Array, index: number, config: MembershipConfig): void;
}

export interface ScanPage {
  readonly records: readonly (readonly [string, KvRecord])[];
  /** More records match after the last one returned. */
  readonly more: boolean;
}

/**
 * One scan page from records in key order starting at the page's first candidate: it ends at the
 * first key outside `prefix`, after `limit` records, or before the record that would take the page
 * past SCAN_PAGE_BYTES_MAX (a page always holds at least one record; one record is far below it).
 */
export function collectScanPage(
  ordered: Iterable<readonly [string, KvRecord]>,
  prefix: string,
  limit: number,
): ScanPage {
  const records: (readonly [string, KvRecord])[] = [];
  let bytes = 0;
  for (const entry of ordered) {
    const [key, record] = entry;
    if (!key.startsWith(prefix)) break;
    const size = utf8Length(key) + utf8Length(record.value);
    if (records.length === limit || (records.length > 0 && bytes + size > SCAN_PAGE_BYTES_MAX))
      return { records, more: true };
    records.push(entry);
    bytes += size;
  }
  return { records, more: false };
}

/** Where records live: a Map in memory, an LMDB database inside a write transaction. */
export interface RecordStore {
  get(key: string): KvRecord | undefined;
  set(key: string, record: KvRecord): void;
  delete(key: string): boolean;
}

/** The KV semantics, shared by every state machine: set with revisions, delete. */
export function applyCommand(store: RecordStore, index: number, command: WriteCommand): ApplyOutcome {
  const deleted: boolean[] = [];
  const set = (key: string, value: string): void => {
    const previous = store.get(key);
    store.set(key, {
      value,
      createIndex: previous?.createIndex ?? index,
      modIndex: index,
      version: (previous?.version ?? 0) + 1,
    });
  };
  if ('Set' in command) {
    set(command.Set.key, command.Set.value);
  } else if ('SetMulti' in command) {
    for (const [key, value] of command.SetMulti.pairs) set(key, value);
  } else if ('Delete' in command) {
    deleted.push(store.delete(command.Delete.key));
  } else if ('DeleteMulti' in command) {
    for (const key of command.DeleteMulti.keys) deleted.push(store.delete(key));
  } else {
    // TODO(issue 14, r14-sm): CompareAndSwap, CompareAndDelete, Transaction. Not on main until done.
    throw new AssertionError(`not applied yet: ${Object.keys(command).join()}`);
  }
  return { index, deleted, succeeded: true };
}

interface SnapshotBody {
  readonly appliedIndex: number;
  readonly records: readonly (readonly [string, KvRecord])[];
}

/** Snapshot bytes: the applied index and every record, sorted by key (so equal states give equal bytes). */
export function encodeSnapshot(
  appliedIndex: number,
  records: Iterable<readonly [string, KvRecord]>,
): Uint8Array {
  const sorted = [...records].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const body: SnapshotBody = { appliedIndex, records: sorted };
  return snapshotPackr.pack(body);
}

export function decodeSnapshot(data: Uint8Array, index: number): readonly (readonly [string, KvRecord])[] {
  const body = snapshotPackr.unpack(data) as SnapshotBody;
  assert(body.appliedIndex === index, `snapshot data is at ${body.appliedIndex}, metadata says ${index}`);
  return body.records;
}

/** The in-memory KV state machine (the simulator's and `--storage memory`'s). */
export class MemoryKvStateMachine implements StateMachine {
  private readonly records = new Map<string, KvRecord>();
  appliedIndex = 0;
  appliedMembership: MembershipConfig | null = null;

  apply(index: number, command: WriteCommand): ApplyOutcome {
    this.advanceTo(index);
    return applyCommand(this.records, index, command);
  }

  applyNoop(index: number, config?: MembershipConfig): void {
    this.advanceTo(index);
    if (config !== undefined) this.appliedMembership = config;
  }

  batch(run: () => void): void {
    run();
  }

  get(key: string): KvRecord | undefined {
    return this.records.get(key);
  }

  get size(): number {
    return this.records.size;
  }

  /** Sorts the matching keys on every call: fine at control-plane sizes (LMDB scans in order natively). */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage {
    const keys = [...this.records.keys()]
      .filter((key) => key.startsWith(prefix) && (afterKey === null || key > afterKey))
      .sort();
    const records = this.records;
    function* ordered(): Generator<[string, KvRecord]> {
      for (const key of keys) {
        const record = records.get(key);
        assert(record !== undefined, 'scanned key exists');
        yield [key, record];
      }
    }
    return collectScanPage(ordered(), prefix, limit);
  }

  snapshot(): Uint8Array {
    return encodeSnapshot(this.appliedIndex, this.records.entries());
  }

  restore(data: Uint8Array, index: number, config: MembershipConfig): void {
    const records = decodeSnapshot(data, index);
    this.records.clear();
    for (const [key, record] of records) this.records.set(key, record);
    this.appliedIndex = index;
    this.appliedMembership = config;
  }

  private advanceTo(index: number): void {
    assert(index === this.appliedIndex + 1, `apply out of order: ${index} after ${this.appliedIndex}`);
    this.appliedIndex = index;
  }
}
