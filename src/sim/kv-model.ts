import type { Compare, TxnOp } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { TXN_COMPARES_MAX, TXN_OPS_MAX, TXN_SCAN_LIMIT_MAX } from '../base/limits.ts';

/**
 * The sequential specification the linearizability checker searches against: a set of keys, each
 * absent or holding a value and its version (etcd's per-key version: 1 on creation, +1 per change,
 * gone with the key). Log indexes (create_index, mod_index) are not modelled: the checker does not
 * know which index an operation took, so the workload never compares them.
 */
export type KvOperation =
  | { readonly kind: 'write'; readonly key: string; readonly value: string }
  | { readonly kind: 'delete'; readonly key: string }
  | { readonly kind: 'read'; readonly key: string }
  /** CompareAndSwap: expected null means "the key is absent". */
  | { readonly kind: 'cas'; readonly key: string; readonly expected: string | null; readonly value: string }
  | { readonly kind: 'cad'; readonly key: string; readonly expected: string }
  | {
      readonly kind: 'txn';
      readonly compare: readonly Compare[];
      readonly success: readonly TxnOp[];
      readonly failure: readonly TxnOp[];
    };

/** A record as a client saw it (a CAS failure's `current`, a transaction's Get or Scan). */
export interface ObservedRecord {
  readonly value: string;
  readonly version: number;
}

/** What one op of a transaction branch answered, in op order. */
export type TxnObservation =
  | { readonly kind: 'set' }
  | { readonly kind: 'delete'; readonly deleted: boolean }
  | { readonly kind: 'get'; readonly record: ObservedRecord | null }
  | { readonly kind: 'scan'; readonly records: readonly (readonly [string, ObservedRecord])[] };

export type KvOutcome =
  /** A read: the value seen (null = absent) and, when known, its version; a write or delete: null. */
  | { readonly status: 'ok'; readonly value: string | null; readonly version?: number }
  /** A CAS or CAD that answered: it wrote, or it found `current` (null = absent) and wrote nothing. */
  | { readonly status: 'compared'; readonly succeeded: true }
  | { readonly status: 'compared'; readonly succeeded: false; readonly current: ObservedRecord | null }
  /** A transaction that answered: which branch ran and what each of its ops returned. */
  | { readonly status: 'txn'; readonly succeeded: boolean; readonly results: readonly TxnObservation[] }
  | { readonly status: 'failed' } // definitely did not take effect
  | { readonly status: 'unknown' }; // may or may not have taken effect; never completed

/** The state of a partition: one slot per key of the partition (null = absent). */
export type ModelState = readonly (ObservedRecord | null)[];

/** UTF-8 byte order, as the state machine orders values and keys. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function holdsOrder(order: number, op: Compare['op']): boolean {
  if (op === 'equal') return order === 0;
  if (op === 'not_equal') return order !== 0;
  if (op === 'greater') return order > 0;
  return order < 0;
}

/** etcd's compare: a value compare on an absent key is false for every op; numbers compare as integers. */
export function evaluateCompare(compare: Compare, record: ObservedRecord | null): boolean {
  if (compare.target === 'value') {
    assert(typeof compare.value === 'string', 'a value compare carries a string');
    return record !== null && holdsOrder(compareBytes(record.value, compare.value), compare.op);
  }
  assert(
    compare.target === 'version' || compare.target === 'lease_id',
    `the model has no log indexes: cannot check a ${compare.target} compare`,
  );
  assert(typeof compare.value === 'number', 'a numeric compare carries a number');
  const actual = compare.target === 'version' ? (record?.version ?? 0) : 0; // no leases yet
  return holdsOrder(Math.sign(actual - compare.value), compare.op);
}

function sameRecord(a: ObservedRecord | null, b: ObservedRecord | null): boolean {
  if (a === null || b === null) return a === b;
  return a.value === b.value && a.version === b.version;
}

/** The keys an operation reads or writes by name (a transaction's Scan prefixes are separate). */
export function keysOf(operation: KvOperation): string[] {
  if (operation.kind !== 'txn') return [operation.key];
  const keys = operation.compare.map((compare) => compare.key);
  for (const op of [...operation.success, ...operation.failure]) {
    if ('Set' in op) keys.push(op.Set.key);
    else if ('Delete' in op) keys.push(op.Delete.key);
    else if ('Get' in op) keys.push(op.Get.key);
  }
  return keys;
}

export function scanPrefixesOf(operation: KvOperation): string[] {
  if (operation.kind !== 'txn') return [];
  const prefixes: string[] = [];
  for (const op of [...operation.success, ...operation.failure])
    if ('Scan' in op) prefixes.push(op.Scan.prefix);
  return prefixes;
}

/**
 * The model of one partition: the keys its operations touch (every key of the history a Scan of
 * the partition could return included), stepped one whole operation at a time.
 */
export class PartitionModel {
  /** In UTF-8 byte order, as a Scan returns them. */
  readonly keys: readonly string[];
  private readonly slots = new Map<string, number>();

  constructor(keys: Iterable<string>) {
    this.keys = [...new Set(keys)].sort(compareBytes);
    this.keys.forEach((key, slot) => this.slots.set(key, slot));
  }

  initial(): ModelState {
    return this.keys.map(() => null);
  }

  /** A memo key: equal states give equal strings (length-prefixed, so values cannot collide). */
  encode(state: ModelState): string {
    return state
      .map((record) => (record === null ? '-' : `${record.version}:${record.value.length}:${record.value}`))
      .join('|');
  }

  /** The state after `operation` with its outcome, or null when the outcome is impossible in `state`. */
  step(state: ModelState, operation: KvOperation, outcome: KvOutcome): ModelState | null {
    if (operation.kind === 'txn') return this.stepTransaction(state, operation, outcome);
    const record = this.get(state, operation.key);
    if (operation.kind === 'write') return this.put(state, operation.key, operation.value);
    if (operation.kind === 'delete') return this.remove(state, operation.key);
    if (operation.kind === 'read') {
      assert(outcome.status === 'ok', 'only completed reads are checked');
      const sameVersion = outcome.version === undefined || (record?.version ?? 0) === outcome.version;
      return (record?.value ?? null) === outcome.value && sameVersion ? state : null;
    }
    const holds =
      operation.kind === 'cas'
        ? operation.expected === null
          ? record === null
          : record?.value === operation.expected
        : record?.value === operation.expected;
    const applied = (): ModelState =>
      operation.kind === 'cas'
        ? this.put(state, operation.key, operation.value)
        : this.remove(state, operation.key);
    if (outcome.status === 'unknown') return holds ? applied() : state;
    assert(outcome.status === 'compared', `a ${operation.kind} answers with a compare outcome`);
    if (outcome.succeeded) return holds ? applied() : null;
    return !holds && sameRecord(record, outcome.current) ? state : null;
  }

  /** All compares against the state before any op, then the chosen branch in order, as one step. */
  private stepTransaction(
    state: ModelState,
    operation: Extract<KvOperation, { kind: 'txn' }>,
    outcome: KvOutcome,
  ): ModelState | null {
    assert(operation.compare.length <= TXN_COMPARES_MAX, 'compares within bounds');
    const holds = operation.compare.every((compare) =>
      evaluateCompare(compare, this.get(state, compare.key)),
    );
    const observed = outcome.status === 'txn' ? outcome : null;
    assert(observed !== null || outcome.status === 'unknown', 'a transaction answers with a txn outcome');
    if (observed !== null && observed.succeeded !== holds) return null;
    const ops = holds ? operation.success : operation.failure;
    assert(ops.length <= TXN_OPS_MAX, 'ops within bounds');
    if (observed !== null && observed.results.length !== ops.length) return null;
    let current = state;
    for (let position = 0; position < ops.length; position += 1) {
      const op = ops[position];
      assert(op !== undefined, 'op in range');
      const seen = observed?.results[position] ?? null;
      const next = this.stepTxnOp(current, op, seen);
      if (next === null) return null;
      current = next;
    }
    return current;
  }

  /** One op of a branch; `seen` is what it answered (null: not known, the transaction is in doubt). */
  private stepTxnOp(state: ModelState, op: TxnOp, seen: TxnObservation | null): ModelState | null {
    if ('Set' in op) {
      if (seen !== null && seen.kind !== 'set') return null;
      return this.put(state, op.Set.key, op.Set.value);
    }
    if ('Delete' in op) {
      const existed = this.get(state, op.Delete.key) !== null;
      if (seen !== null && (seen.kind !== 'delete' || seen.deleted !== existed)) return null;
      return this.remove(state, op.Delete.key);
    }
    if ('Get' in op) {
      if (seen === null) return state;
      return seen.kind === 'get' && sameRecord(this.get(state, op.Get.key), seen.record) ? state : null;
    }
    if (seen === null) return state;
    if (seen.kind !== 'scan') return null;
    const expected = this.scan(state, op.Scan.prefix, op.Scan.limit);
    const matches =
      expected.length === seen.records.length &&
      expected.every(([key, record], index) => {
        const entry = seen.records[index];
        return entry !== undefined && entry[0] === key && sameRecord(record, entry[1]);
      });
    return matches ? state : null;
  }

  /** The records a Scan returns (values here are small: the page byte bound is never reached). */
  scan(state: ModelState, prefix: string, limit: number | undefined): [string, ObservedRecord][] {
    const bound = Math.min(limit ?? TXN_SCAN_LIMIT_MAX, TXN_SCAN_LIMIT_MAX);
    const records: [string, ObservedRecord][] = [];
    for (let slot = 0; slot < this.keys.length && records.length < bound; slot += 1) {
      const key = this.keys[slot];
      const record = state[slot];
      assert(key !== undefined && record !== undefined, 'slot in range');
      if (record !== null && key.startsWith(prefix)) records.push([key, record]);
    }
    return records;
  }

  private slot(key: string): number {
    const slot = this.slots.get(key);
    assert(slot !== undefined, `key ${key} belongs to the partition`);
    return slot;
  }

  private get(state: ModelState, key: string): ObservedRecord | null {
    return state[this.slot(key)] ?? null;
  }

  private put(state: ModelState, key: string, value: string): ModelState {
    const slot = this.slot(key);
    const next = [...state];
    next[slot] = { value, version: (state[slot]?.version ?? 0) + 1 };
    return next;
  }

  private remove(state: ModelState, key: string): ModelState {
    const slot = this.slot(key);
    if (state[slot] === null) return state;
    const next = [...state];
    next[slot] = null;
    return next;
  }
}
