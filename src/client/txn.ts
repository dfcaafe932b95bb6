import type {
  CompareOp,
  CompareTarget,
  KeyValue,
  TxnOp,
  TxnOpResult,
  Compare as WireCompare,
  WriteCommand,
  WriteResult,
} from '../api/types.ts';
import { TXN_COMPARES_MAX, TXN_OPS_MAX, TXN_SCAN_LIMIT_MAX } from '../base/limits.ts';
import { KvError } from './errors.ts';
import type { CallOptions } from './options.ts';

/** The body of a Transaction write command: `{compare, success, failure}` (docs/api.md). */
export type Transaction = Extract<WriteCommand, { readonly Transaction: unknown }>['Transaction'];

/** What a committed transaction answers: whether every compare held, its revision, one result per op run. */
export interface TxnResult {
  readonly succeeded: boolean;
  /** The transaction's log index: one revision for all its changes (also when `failure` ran). */
  readonly revision: number;
  /** One per op of the branch that ran, in op order. */
  readonly results: readonly TxnOpResult[];
}

/** What cas and casDelete answer: a failed compare is an outcome, not an error. */
export type CasResult =
  | { readonly succeeded: true; readonly revision: number }
  /** Nothing was written; `current` is the record the compare met (null: the key is absent). */
  | { readonly succeeded: false; readonly current: KeyValue | null };

/** One compare of a transaction (the wire shape); build it with the `Compare` helpers. */
export type Compare = WireCompare;

const compareOf = (key: string, target: CompareTarget, op: CompareOp, value: string | number): Compare => ({
  key,
  target,
  op,
  value,
});

/**
 * Compares for `kv.txn().if(…)`: `Compare.value('k', 'equal', 'v')`, `Compare.version('k', 'greater', 3)`.
 * A value compare on an absent key is false for every op; the numeric targets of an absent key are 0.
 */
export const Compare = {
  value: (key: string, op: CompareOp, value: string): Compare => compareOf(key, 'value', op, value),
  version: (key: string, op: CompareOp, version: number): Compare => compareOf(key, 'version', op, version),
  createIndex: (key: string, op: CompareOp, index: number): Compare =>
    compareOf(key, 'create_index', op, index),
  modIndex: (key: string, op: CompareOp, index: number): Compare => compareOf(key, 'mod_index', op, index),
  leaseId: (key: string, op: CompareOp, leaseId: number): Compare => compareOf(key, 'lease_id', op, leaseId),
  /** The key does not exist (its version is 0). */
  absent: (key: string): Compare => compareOf(key, 'version', 'equal', 0),
  /** The key exists (its version is above 0). */
  exists: (key: string): Compare => compareOf(key, 'version', 'greater', 0),
} as const;

/** Ops for `then(…)` and `else(…)`: `Op.set('k', 'v')`, `Op.delete('k')`, `Op.get('k')`, `Op.scan('app/', 10)`. */
export const Op = {
  /** With `leaseId` the key is attached to that lease (0: to none). */
  set: (key: string, value: string, leaseId?: number): TxnOp => ({
    Set: leaseId === undefined ? { key, value } : { key, value, lease_id: leaseId },
  }),
  delete: (key: string): TxnOp => ({ Delete: { key } }),
  get: (key: string): TxnOp => ({ Get: { key } }),
  /** At most min(limit, 1000) entries (the server also stops at its page byte bound, with is_truncated). */
  scan: (prefix: string, limit?: number): TxnOp => ({
    Scan: limit === undefined ? { prefix } : { prefix, limit },
  }),
} as const;

function isKey(key: string): boolean {
  return key.length > 0;
}

function compareProblem(compare: Compare, at: number): string | null {
  const where = `compare ${at + 1}`;
  if (!isKey(compare.key)) return `${where}: key must not be empty`;
  if (compare.target === 'value')
    return typeof compare.value === 'string' ? null : `${where}: a value compare takes a string`;
  const count = compare.value;
  return typeof count === 'number' && Number.isSafeInteger(count) && count >= 0
    ? null
    : `${where}: a ${compare.target} compare takes a non-negative integer`;
}

/** A problem with one op of a branch, or null. */
function opProblem(op: TxnOp, where: string): string | null {
  if ('Set' in op) {
    if (!isKey(op.Set.key)) return `${where}: Set takes a non-empty key`;
    const leaseId = op.Set.lease_id;
    const leaseOk = leaseId === undefined || (Number.isSafeInteger(leaseId) && leaseId >= 0);
    return leaseOk ? null : `${where}: a Set lease_id is 0 (no lease) or a positive integer`;
  }
  if ('Delete' in op) return isKey(op.Delete.key) ? null : `${where}: Delete takes a non-empty key`;
  if ('Get' in op) return isKey(op.Get.key) ? null : `${where}: Get takes a non-empty key`;
  const { limit } = op.Scan;
  const limitOk =
    limit === undefined || (Number.isSafeInteger(limit) && limit >= 1 && limit <= TXN_SCAN_LIMIT_MAX);
  return limitOk ? null : `${where}: a Scan limit is an integer in [1, ${TXN_SCAN_LIMIT_MAX}]`;
}

/** A refusal made before sending: the code the server would answer, definite (nothing was sent). */
function refused(code: 'INVALID_INPUT' | 'BATCH_TOO_LARGE', message: string): KvError {
  return new KvError(code, message, { definite: true });
}

function branchProblem(ops: readonly TxnOp[], branch: 'then' | 'else'): KvError | null {
  if (ops.length > TXN_OPS_MAX)
    return refused('BATCH_TOO_LARGE', `${branch}: ${ops.length} ops; the limit is ${TXN_OPS_MAX}`);
  const written = new Set<string>();
  for (const [at, op] of ops.entries()) {
    const where = `${branch} op ${at + 1}`;
    const problem = opProblem(op, where);
    if (problem !== null) return refused('INVALID_INPUT', problem);
    const key = 'Set' in op ? op.Set.key : 'Delete' in op ? op.Delete.key : null;
    if (key === null) continue;
    if (written.has(key))
      return refused('INVALID_INPUT', `${where}: key "${key.slice(0, 64)}" is written twice in one branch`);
    written.add(key);
  }
  return null;
}

/**
 * The obvious mistakes a transaction can be refused for without a round trip, as the error the server
 * would answer (BATCH_TOO_LARGE past the compare and op bounds, else INVALID_INPUT: a key written twice
 * in a branch, an empty key, a bad number); null when none. The server checks everything again and is
 * the authority (sizes, Unicode, …).
 */
export function transactionProblem(txn: Transaction): KvError | null {
  if (txn.compare.length > TXN_COMPARES_MAX)
    return refused('BATCH_TOO_LARGE', `${txn.compare.length} compares; the limit is ${TXN_COMPARES_MAX}`);
  for (const [at, compare] of txn.compare.entries()) {
    const problem = compareProblem(compare, at);
    if (problem !== null) return refused('INVALID_INPUT', problem);
  }
  return branchProblem(txn.success, 'then') ?? branchProblem(txn.failure, 'else');
}

/** Where a builder stands: each of if, then, else at most once and in that order, then one commit. */
const Stage = { Open: 0, If: 1, Then: 2, Else: 3, Committed: 4 } as const;
type Stage = (typeof Stage)[keyof typeof Stage];

const STAGE_NAMES = ['txn()', 'if()', 'then()', 'else()', 'commit()'] as const;

/**
 * `kv.txn().if(…compares).then(…ops).else(…ops).commit()`: each part optional, at most once, in that
 * order; commit sends it once. The builder is not a promise: `await` it and it rejects with a
 * TypeError (call commit()).
 */
export class TxnBuilder {
  private compares: readonly Compare[] = [];
  private success: readonly TxnOp[] = [];
  private failure: readonly TxnOp[] = [];
  private stage: Stage = Stage.Open;
  private readonly send: (txn: Transaction, options?: CallOptions) => Promise<TxnResult>;

  constructor(send: (txn: Transaction, options?: CallOptions) => Promise<TxnResult>) {
    this.send = send;
  }

  /** All must hold for `then` to run, else `else` runs. */
  if(...compares: Compare[]): this {
    this.advance(Stage.If);
    this.compares = compares;
    return this;
  }

  then(...ops: TxnOp[]): this {
    // `await builder` calls then(resolve, reject): refuse it loudly rather than add two functions as ops.
    if ((ops as unknown[]).some((op) => typeof op === 'function'))
      throw new TypeError('a transaction builder is not a promise: call .commit() and await that');
    this.advance(Stage.Then);
    this.success = ops;
    return this;
  }

  else(...ops: TxnOp[]): this {
    this.advance(Stage.Else);
    this.failure = ops;
    return this;
  }

  /** The Transaction body as built so far (what commit sends). */
  build(): Transaction {
    return { compare: [...this.compares], success: [...this.success], failure: [...this.failure] };
  }

  /**
   * Send it (once; never sent again when its outcome is unknown: a `definite: false` KvError). Rejects
   * with the error transactionProblem finds (definite, `status` null, nothing sent), if any.
   */
  async commit(options?: CallOptions): Promise<TxnResult> {
    this.advance(Stage.Committed);
    const txn = this.build();
    const problem = transactionProblem(txn);
    if (problem !== null) throw problem;
    return this.send(txn, options);
  }

  private advance(to: Stage): void {
    if (this.stage >= to)
      throw new TypeError(
        `${STAGE_NAMES[to]} after ${STAGE_NAMES[this.stage]}: call if(), then(), else() at most once each, in that order, then commit() once`,
      );
    this.stage = to;
  }
}

/** A transaction's answer, checked: a 200 without `succeeded`, `results` or `revision` is a BAD_RESPONSE. */
export function txnResultOf(result: WriteResult): TxnResult {
  const { succeeded, results, revision } = result;
  if (typeof succeeded !== 'boolean' || !Array.isArray(results) || typeof revision !== 'number')
    throw new KvError('BAD_RESPONSE', 'a Transaction answer lacks succeeded, results or revision', {
      status: 200,
      definite: false,
    });
  return { succeeded, revision, results };
}

/** The outcome of a CompareAndSwap or CompareAndDelete write: COMPARE_FAILED becomes `succeeded: false`. */
export async function casOutcome(key: string, write: Promise<WriteResult>): Promise<CasResult> {
  let result: WriteResult;
  try {
    result = await write;
  } catch (error) {
    if (!(error instanceof KvError) || error.code !== 'COMPARE_FAILED') throw error;
    if (error.current === undefined)
      throw new KvError('BAD_RESPONSE', `COMPARE_FAILED without a well-formed current: ${error.message}`, {
        status: error.status,
        endpoint: error.endpoint,
        definite: true,
      });
    return { succeeded: false, current: error.current === null ? null : { key, ...error.current } };
  }
  if (typeof result.revision !== 'number')
    throw new KvError('BAD_RESPONSE', 'a write answer lacks its revision', { status: 200, definite: false });
  return { succeeded: true, revision: result.revision };
}
