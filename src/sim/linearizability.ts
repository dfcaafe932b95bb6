import { assert } from '../base/assert.ts';

/**
 * A linearizability checker for a key-value register (Wing & Gong's search with Lowe's
 * memoization, as in Porcupine), run per key: single-key operations on different keys are
 * independent (P-compositionality), which keeps each search small.
 */
export type KvOperation =
  | { readonly kind: 'write'; readonly key: string; readonly value: string }
  | { readonly kind: 'delete'; readonly key: string }
  | { readonly kind: 'read'; readonly key: string };

export type KvOutcome =
  | { readonly status: 'ok'; readonly value: string | null } // read: value seen (null = absent); write/delete: null
  | { readonly status: 'failed' } // definitely did not take effect
  | { readonly status: 'unknown' }; // may or may not have taken effect; never completed

export interface HistoryOperation {
  readonly clientId: number;
  readonly operation: KvOperation;
  readonly invokeTimeMs: number;
  /** Infinity when the outcome is 'unknown'. */
  readonly completeTimeMs: number;
  readonly outcome: KvOutcome;
}

export type LinearizabilityResult =
  | { readonly status: 'ok'; readonly keysChecked: number; readonly searchSteps: number }
  | {
      readonly status: 'violation';
      readonly key: string;
      readonly operations: readonly HistoryOperation[];
      readonly message: string;
    }
  | { readonly status: 'budget_exhausted'; readonly key: string; readonly searchSteps: number };

export interface LinearizabilityOptions {
  readonly searchStepsMax: number;
}

export const SEARCH_STEPS_MAX_DEFAULT = 1_000_000;
/** Operations of one key the checker accepts; longer histories are a workload bug. */
export const OPERATIONS_PER_KEY_MAX = 100_000;

/** One call or return event in the doubly linked list the search lifts operations out of. */
interface ListNode {
  readonly operationIndex: number;
  readonly isCall: boolean;
  readonly time: number;
  /** For a call: its return node, or null for an operation that never returned. */
  match: ListNode | null;
  previous: ListNode | null;
  next: ListNode | null;
}

type RegisterState = string | null;

function assertWellFormed(operation: HistoryOperation): void {
  assert(Number.isFinite(operation.invokeTimeMs), 'invoke time is finite');
  assert(operation.invokeTimeMs <= operation.completeTimeMs, 'an operation completes after it is invoked');
  const unknown = operation.outcome.status === 'unknown';
  assert(
    unknown === (operation.completeTimeMs === Number.POSITIVE_INFINITY),
    'only unknown operations never complete',
  );
}

/** The register model: does `operation` with `outcome` apply to `state`, and to what? */
function stepModel(state: RegisterState, operation: HistoryOperation): { ok: boolean; state: RegisterState } {
  const kvOperation = operation.operation;
  if (kvOperation.kind === 'write') return { ok: true, state: kvOperation.value };
  if (kvOperation.kind === 'delete') return { ok: true, state: null };
  assert(operation.outcome.status === 'ok', 'only completed reads are checked');
  return { ok: operation.outcome.value === state, state };
}

/** Operations that constrain the history: failed ones never happened, unknown reads observed nothing. */
function relevant(operation: HistoryOperation): boolean {
  if (operation.outcome.status === 'failed') return false;
  return !(operation.outcome.status === 'unknown' && operation.operation.kind === 'read');
}

function buildList(operations: readonly HistoryOperation[]): { head: ListNode; returnsCount: number } {
  const nodes: ListNode[] = [];
  let returnsCount = 0;
  for (let index = 0; index < operations.length; index += 1) {
    const operation = operations[index];
    assert(operation !== undefined, 'operation in range');
    const call: ListNode = {
      operationIndex: index,
      isCall: true,
      time: operation.invokeTimeMs,
      match: null,
      previous: null,
      next: null,
    };
    nodes.push(call);
    if (operation.outcome.status === 'ok') {
      const ret: ListNode = {
        operationIndex: index,
        isCall: false,
        time: operation.completeTimeMs,
        match: null,
        previous: null,
        next: null,
      };
      call.match = ret;
      nodes.push(ret);
      returnsCount += 1;
    }
  }
  // Calls sort before returns at equal times: strict real-time order means equal times overlap.
  nodes.sort(
    (a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall) || a.operationIndex - b.operationIndex,
  );
  const head: ListNode = {
    operationIndex: -1,
    isCall: false,
    time: Number.NEGATIVE_INFINITY,
    match: null,
    previous: null,
    next: null,
  };
  let tail = head;
  for (const node of nodes) {
    tail.next = node;
    node.previous = tail;
    tail = node;
  }
  return { head, returnsCount };
}

function lift(call: ListNode): void {
  const unlink = (node: ListNode): void => {
    assert(node.previous !== null, 'a listed node has a predecessor');
    node.previous.next = node.next;
    if (node.next !== null) node.next.previous = node.previous;
  };
  unlink(call);
  if (call.match !== null) unlink(call.match);
}

function unlift(call: ListNode): void {
  const relink = (node: ListNode): void => {
    assert(node.previous !== null, 'a lifted node remembers its predecessor');
    node.previous.next = node;
    if (node.next !== null) node.next.previous = node;
  };
  if (call.match !== null) relink(call.match);
  relink(call);
}

type KeyResult = { status: 'ok' | 'violation' | 'budget_exhausted'; steps: number; longestPrefix: number };

/** Memo of (set of linearized operations, register state) pairs already explored. */
class SearchCache {
  private readonly seen = new Map<string, Set<bigint>>();

  /** Returns false when the pair was already present. */
  add(linearized: bigint, state: RegisterState): boolean {
    const stateKey = state === null ? '\u0000' : `=${state}`;
    let sets = this.seen.get(stateKey);
    if (sets === undefined) {
      sets = new Set();
      this.seen.set(stateKey, sets);
    }
    if (sets.has(linearized)) return false;
    sets.add(linearized);
    return true;
  }
}

function checkKey(operations: readonly HistoryOperation[], searchStepsMax: number): KeyResult {
  assert(operations.length <= OPERATIONS_PER_KEY_MAX, `too many operations on one key: ${operations.length}`);
  const { head, returnsCount } = buildList(operations);
  const cache = new SearchCache();
  const stack: { call: ListNode; state: RegisterState }[] = [];
  let state: RegisterState = null;
  let linearized = 0n;
  let returnsLeft = returnsCount;
  let longestPrefix = 0;
  let node = head.next;
  for (let steps = 1; steps <= searchStepsMax; steps += 1) {
    if (returnsLeft === 0) return { status: 'ok', steps, longestPrefix };
    assert(node !== null, 'a return is always left in the list while returnsLeft > 0');
    if (node.isCall) {
      const operation = operations[node.operationIndex];
      assert(operation !== undefined, 'operation in range');
      const next = stepModel(state, operation);
      const withOperation = linearized | (1n << BigInt(node.operationIndex));
      if (next.ok && cache.add(withOperation, next.state)) {
        stack.push({ call: node, state });
        longestPrefix = Math.max(longestPrefix, stack.length);
        state = next.state;
        linearized = withOperation;
        if (node.match !== null) returnsLeft -= 1;
        lift(node);
        node = head.next;
      } else {
        node = node.next;
      }
      continue;
    }
    // A return whose operation is not linearized yet: undo the most recent choice.
    const top = stack.pop();
    if (top === undefined) return { status: 'violation', steps, longestPrefix };
    unlift(top.call);
    state = top.state;
    linearized &= ~(1n << BigInt(top.call.operationIndex));
    if (top.call.match !== null) returnsLeft += 1;
    node = top.call.next;
  }
  return { status: 'budget_exhausted', steps: searchStepsMax, longestPrefix };
}

function describeOperation(operation: HistoryOperation): string {
  const kv = operation.operation;
  const what = kv.kind === 'write' ? `write(${kv.value})` : kv.kind === 'delete' ? 'delete' : 'read';
  const outcome = operation.outcome;
  const result =
    outcome.status === 'ok'
      ? kv.kind === 'read'
        ? ` -> ${outcome.value ?? 'absent'}`
        : ' ok'
      : ` ${outcome.status}`;
  return `client ${operation.clientId} ${what}${result} [${operation.invokeTimeMs}, ${operation.completeTimeMs}]`;
}

export function checkLinearizability(
  history: readonly HistoryOperation[],
  options: LinearizabilityOptions = { searchStepsMax: SEARCH_STEPS_MAX_DEFAULT },
): LinearizabilityResult {
  assert(
    Number.isSafeInteger(options.searchStepsMax) && options.searchStepsMax > 0,
    'searchStepsMax is a positive integer',
  );
  const byKey = new Map<string, HistoryOperation[]>();
  for (const operation of history) {
    assertWellFormed(operation);
    if (!relevant(operation)) continue;
    const list = byKey.get(operation.operation.key);
    if (list === undefined) byKey.set(operation.operation.key, [operation]);
    else list.push(operation);
  }
  let searchSteps = 0;
  for (const [key, operations] of byKey) {
    const result = checkKey(operations, options.searchStepsMax);
    searchSteps += result.steps;
    if (result.status === 'budget_exhausted')
      return { status: 'budget_exhausted', key, searchSteps: result.steps };
    if (result.status === 'violation') {
      const sorted = [...operations].sort((a, b) => a.invokeTimeMs - b.invokeTimeMs);
      const shown = sorted.slice(0, 40).map(describeOperation).join('; ');
      const message = `no linearization of ${operations.length} operations (longest linearizable prefix ${result.longestPrefix}): ${shown}`;
      return { status: 'violation', key, operations: sorted, message };
    }
  }
  return { status: 'ok', keysChecked: byKey.size, searchSteps };
}
