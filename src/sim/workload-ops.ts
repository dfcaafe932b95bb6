import type { Compare, TxnOp, WriteCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { ApplyOutcome, KvRecord, TxnOpOutcome } from '../node/kv-state-machine.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { KvOperation, KvOutcome, ObservedRecord, TxnObservation } from './kv-model.ts';

/** The mix of the simulated clients' operations (fractions of all operations; writes get the rest). */
export interface OperationMix {
  readonly keyCount: number;
  readonly readFraction: number;
  readonly deleteFraction: number;
  /** CompareAndSwap increments of counters, CompareAndDelete resets, CAS of the plain keys. */
  readonly casFraction: number;
  /** Transfers between accounts, audits (a Scan of all accounts), multi-key conditional writes. */
  readonly txnFraction: number;
  readonly counterCount: number;
  readonly accountCount: number;
}

/** What a client last saw of a key (version null: it wrote the value, but did not see its version). */
export interface KnownRecord {
  readonly value: string;
  readonly version: number | null;
}
export type Knowledge = Map<string, KnownRecord | null>;

export const ACCOUNT_PREFIX = 'acct/';
/** Largest amount one transfer moves. */
export const TRANSFER_AMOUNT_MAX = 9;

/** Draws the next operation of a client from the seeded stream, using what the client last saw. */
export class OperationSource {
  private readonly prng: SeededPrng;
  private readonly mix: OperationMix;
  private valueSequence = 0;

  constructor(prng: SeededPrng, mix: OperationMix) {
    assert(mix.counterCount >= 1 && mix.accountCount >= 2, 'at least one counter and two accounts');
    this.prng = prng;
    this.mix = mix;
  }

  next(known: Knowledge): KvOperation {
    // Key first, then the kind: a mix without CAS and transactions draws exactly what it always did.
    const key = this.plainKey();
    const draw = this.prng.nextFloat();
    const { readFraction, deleteFraction, casFraction, txnFraction } = this.mix;
    if (draw < readFraction) return { kind: 'read', key };
    if (draw < readFraction + deleteFraction) return { kind: 'delete', key };
    if (draw < readFraction + deleteFraction + casFraction) return this.conditional(key, known);
    if (draw < readFraction + deleteFraction + casFraction + txnFraction) return this.transaction(known);
    return { kind: 'write', key, value: this.freshValue() };
  }

  private plainKey(): string {
    return `k${this.prng.nextIntInclusive(1, this.mix.keyCount)}`;
  }

  private freshValue(): string {
    this.valueSequence += 1;
    return `v${this.valueSequence}`;
  }

  /** Mostly a counter increment (read-modify-write from what the client saw; absent: create "1"). */
  private conditional(plainKey: string, known: Knowledge): KvOperation {
    const draw = this.prng.nextFloat();
    const counter = `c${this.prng.nextIntInclusive(1, this.mix.counterCount)}`;
    const seen = known.get(counter) ?? null;
    if (draw < 0.7) {
      const value = String((seen === null ? 0 : toNumber(seen.value)) + 1);
      return { kind: 'cas', key: counter, expected: seen?.value ?? null, value };
    }
    if (draw < 0.8) return { kind: 'cad', key: counter, expected: seen?.value ?? '1' };
    return {
      kind: 'cas',
      key: plainKey,
      expected: known.get(plainKey)?.value ?? null,
      value: this.freshValue(),
    };
  }

  private transaction(known: Knowledge): KvOperation {
    const draw = this.prng.nextFloat();
    if (draw < 0.6) return this.transfer(known);
    if (draw < 0.8) {
      const limit = this.prng.chance(0.3) ? this.prng.nextIntInclusive(1, this.mix.accountCount) : undefined;
      const scan: TxnOp = {
        Scan: limit === undefined ? { prefix: ACCOUNT_PREFIX } : { prefix: ACCOUNT_PREFIX, limit },
      };
      return { kind: 'txn', compare: [], success: [scan], failure: [] };
    }
    return this.conditionalPair(known);
  }

  /** Move an amount between two accounts, guarded by what the client saw of both (absent = 0). */
  private transfer(known: Knowledge): KvOperation {
    const count = this.mix.accountCount;
    const from = this.prng.nextIntInclusive(1, count);
    const to = ((from - 1 + this.prng.nextIntInclusive(1, count - 1)) % count) + 1;
    const amount = this.prng.nextIntInclusive(1, TRANSFER_AMOUNT_MAX);
    const keyFrom = `${ACCOUNT_PREFIX}${from}`;
    const keyTo = `${ACCOUNT_PREFIX}${to}`;
    const balance = (key: string): number => toNumber(known.get(key)?.value ?? '0');
    const gets: TxnOp[] = [{ Get: { key: keyFrom } }, { Get: { key: keyTo } }];
    return {
      kind: 'txn',
      compare: [this.guard(keyFrom, known), this.guard(keyTo, known)],
      success: [
        { Set: { key: keyFrom, value: String(balance(keyFrom) - amount) } },
        { Set: { key: keyTo, value: String(balance(keyTo) + amount) } },
        ...gets,
      ],
      failure: gets,
    };
  }

  /** "Unchanged since I looked": the value, or the version when the client saw it (absent: version 0). */
  private guard(key: string, known: Knowledge): Compare {
    const seen = known.get(key) ?? null;
    const useVersion = this.prng.chance(0.5);
    if (seen === null) return { key, target: 'version', op: 'equal', value: 0 };
    if (useVersion && seen.version !== null)
      return { key, target: 'version', op: 'equal', value: seen.version };
    return { key, target: 'value', op: 'equal', value: seen.value };
  }

  /** A conditional write across two plain keys with an ordered value compare and a version compare. */
  private conditionalPair(known: Knowledge): KvOperation {
    const first = this.plainKey();
    let second = this.plainKey();
    if (second === first) second = `c${this.prng.nextIntInclusive(1, this.mix.counterCount)}`;
    const ops: Compare['op'][] = ['equal', 'not_equal', 'greater', 'less'];
    const op = ops[this.prng.nextIntInclusive(0, ops.length - 1)] ?? 'equal';
    return {
      kind: 'txn',
      compare: [
        { key: first, target: 'value', op, value: known.get(first)?.value ?? 'v' },
        { key: second, target: 'version', op: 'greater', value: 0 },
      ],
      success: [
        { Set: { key: first, value: this.freshValue() } },
        { Delete: { key: second } },
        { Get: { key: first } },
      ],
      failure: [{ Get: { key: first } }, { Get: { key: second } }],
    };
  }
}

function toNumber(value: string): number {
  const parsed = Number.parseInt(value, 10);
  return Number.isSafeInteger(parsed) ? parsed : 0;
}

/** The command a write-path operation proposes. */
export function commandOf(operation: KvOperation): WriteCommand {
  switch (operation.kind) {
    case 'write':
      return { Set: { key: operation.key, value: operation.value } };
    case 'delete':
      return { Delete: { key: operation.key } };
    case 'cas':
      return {
        CompareAndSwap: { key: operation.key, expected: operation.expected, new_value: operation.value },
      };
    case 'cad':
      return { CompareAndDelete: { key: operation.key, expected: operation.expected } };
    case 'txn':
      return {
        Transaction: { compare: operation.compare, success: operation.success, failure: operation.failure },
      };
    case 'read':
      throw new Error('a read is not a command');
  }
}

function observed(record: KvRecord | null): ObservedRecord | null {
  return record === null ? null : { value: record.value, version: record.version };
}

function observation(outcome: TxnOpOutcome): TxnObservation {
  if (outcome.kind === 'set') return { kind: 'set' };
  if (outcome.kind === 'delete') return { kind: 'delete', deleted: outcome.deleted };
  if (outcome.kind === 'get') return { kind: 'get', record: observed(outcome.record) };
  return {
    kind: 'scan',
    records: outcome.records.map(([key, record]) => [key, { value: record.value, version: record.version }]),
  };
}

/** What an applied write-path operation answered, in the checker's terms. */
export function outcomeOf(operation: KvOperation, applied: ApplyOutcome): KvOutcome {
  if (operation.kind === 'cas' || operation.kind === 'cad') {
    if (applied.succeeded) return { status: 'compared', succeeded: true };
    return { status: 'compared', succeeded: false, current: observed(applied.current ?? null) };
  }
  if (operation.kind === 'txn') {
    assert(applied.results !== undefined, 'a transaction reports its results');
    return { status: 'txn', succeeded: applied.succeeded, results: applied.results.map(observation) };
  }
  return { status: 'ok', value: null };
}

function learnBranch(
  known: Knowledge,
  operation: Extract<KvOperation, { kind: 'txn' }>,
  outcome: Extract<KvOutcome, { status: 'txn' }>,
): void {
  const ops = outcome.succeeded ? operation.success : operation.failure;
  ops.forEach((op, position) => {
    const seen = outcome.results[position];
    if ('Set' in op) known.set(op.Set.key, { value: op.Set.value, version: null });
    else if ('Delete' in op) known.set(op.Delete.key, null);
    else if (seen?.kind === 'get' && 'Get' in op) known.set(op.Get.key, seen.record);
    else if (seen?.kind === 'scan') for (const [key, record] of seen.records) known.set(key, record);
  });
}

/** Update what a client saw after an operation answered (in-doubt and failed ones teach nothing). */
export function learn(known: Knowledge, operation: KvOperation, outcome: KvOutcome): void {
  if (outcome.status === 'txn') {
    assert(operation.kind === 'txn', 'a txn outcome answers a transaction');
    learnBranch(known, operation, outcome);
    return;
  }
  if (operation.kind === 'txn') return;
  const key = operation.key;
  if (outcome.status === 'ok') {
    if (operation.kind === 'write') known.set(key, { value: operation.value, version: null });
    else if (operation.kind === 'delete' || outcome.value === null) known.set(key, null);
    else known.set(key, { value: outcome.value, version: outcome.version ?? null });
  } else if (outcome.status === 'compared') {
    if (!outcome.succeeded) known.set(key, outcome.current);
    else if (operation.kind === 'cas') known.set(key, { value: operation.value, version: null });
    else known.set(key, null);
  }
}
