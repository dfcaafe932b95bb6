import { assert } from '../base/assert.ts';
import {
  keysOf,
  PartitionModel,
  scanPrefixesOf,
  type KvOperation,
  type KvOutcome,
  type ModelState,
} from './kv-model.ts';

export type { KvOperation, KvOutcome, ObservedRecord, TxnObservation } from './kv-model.ts';

/**
 * A linearizability checker for a key-value store (Wing & Gong's search with Lowe's memoization, as
 * in Porcupine), run per partition: operations on disjoint sets of keys are independent
 * (P-compositionality), so the history is split into the smallest groups of keys no operation
 * crosses. A single-key operation (read, write, delete, CAS, CAD) stays in its key's partition; a
 * transaction joins the partitions of every key it compares, writes or gets, and of every key of
 * the history its Scans could return, and is then one atomic step of the partition's model.
 */
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
      /** The keys of the partition, joined by commas. */
      readonly key: string;
      readonly operations: readonly HistoryOperation[];
      readonly message: string;
    }
  /** Not decided: the search ran out of steps, or a partition is past the size the checker takes. */
  | { readonly status: 'budget_exhausted'; readonly key: string; readonly searchSteps: number }
  | { readonly status: 'too_large'; readonly key: string; readonly message: string };

export interface LinearizabilityOptions {
  readonly searchStepsMax: number;
}

export const SEARCH_STEPS_MAX_DEFAULT = 1_000_000;
/** Operations of one partition the checker takes; a longer one is reported as too large. */
export const OPERATIONS_PER_PARTITION_MAX = 100_000;
/** Keys of one partition the checker takes (each step copies the partition's state). */
export const KEYS_PER_PARTITION_MAX = 256;
/** Operations shown in a violation's message. */
export const OPERATIONS_SHOWN_MAX = 40;

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

function assertWellFormed(operation: HistoryOperation): void {
  assert(Number.isFinite(operation.invokeTimeMs), 'invoke time is finite');
  assert(operation.invokeTimeMs <= operation.completeTimeMs, 'an operation completes after it is invoked');
  const unknown = operation.outcome.status === 'unknown';
  assert(
    unknown === (operation.completeTimeMs === Number.POSITIVE_INFINITY),
    'only unknown operations never complete',
  );
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
    if (operation.outcome.status !== 'unknown') {
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

type PartitionResult = {
  status: 'ok' | 'violation' | 'budget_exhausted';
  steps: number;
  longestPrefix: number;
};

/** Memo of (set of linearized operations, model state) pairs already explored. */
class SearchCache {
  private readonly seen = new Map<string, Set<bigint>>();

  /** Returns false when the pair was already present. */
  add(linearized: bigint, stateKey: string): boolean {
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

function checkPartition(
  model: PartitionModel,
  operations: readonly HistoryOperation[],
  searchStepsMax: number,
  inDoubtLast: boolean,
): PartitionResult {
  assert(operations.length <= OPERATIONS_PER_PARTITION_MAX, 'partition size checked by the caller');
  const { head, returnsCount } = buildList(operations);
  const cache = new SearchCache();
  const stack: { call: ListNode; state: ModelState }[] = [];
  let state = model.initial();
  let linearized = 0n;
  let returnsLeft = returnsCount;
  let longestPrefix = 0;
  let node = head.next;
  // inDoubtLast: at each point the answered candidates are tried first, then the in-doubt ones
  // (which never returned), so a guess that an in-doubt write took effect is made only when
  // nothing else fits. Otherwise every candidate is tried in list order (Wing & Gong's order).
  let inDoubtPass = false;
  for (let steps = 1; steps <= searchStepsMax; steps += 1) {
    if (returnsLeft === 0) return { status: 'ok', steps, longestPrefix };
    assert(node !== null, 'a return is always left in the list while returnsLeft > 0');
    if (node.isCall) {
      if (inDoubtLast && inDoubtPass !== (node.match === null)) {
        node = node.next;
        continue;
      }
      const operation = operations[node.operationIndex];
      assert(operation !== undefined, 'operation in range');
      const next = model.step(state, operation.operation, operation.outcome);
      const withOperation = linearized | (1n << BigInt(node.operationIndex));
      // An operation that never returned and changes nothing here may as well not be linearized
      // here (it owes no return): skipping it prunes the search without losing a linearization.
      const useless = next === state && node.match === null;
      if (next !== null && !useless && cache.add(withOperation, model.encode(next))) {
        stack.push({ call: node, state });
        longestPrefix = Math.max(longestPrefix, stack.length);
        state = next;
        linearized = withOperation;
        if (node.match !== null) returnsLeft -= 1;
        lift(node);
        node = head.next;
        inDoubtPass = false;
      } else {
        node = node.next;
      }
      continue;
    }
    if (inDoubtLast && !inDoubtPass) {
      inDoubtPass = true;
      node = head.next;
      continue;
    }
    // A return whose operation is not linearized yet, every candidate tried: undo the last choice.
    const top = stack.pop();
    if (top === undefined) return { status: 'violation', steps, longestPrefix };
    unlift(top.call);
    state = top.state;
    linearized &= ~(1n << BigInt(top.call.operationIndex));
    if (top.call.match !== null) returnsLeft += 1;
    node = top.call.next;
    inDoubtPass = inDoubtLast && top.call.match === null;
  }
  return { status: 'budget_exhausted', steps: searchStepsMax, longestPrefix };
}

function describeKind(operation: KvOperation): string {
  switch (operation.kind) {
    case 'write':
      return `write(${operation.key}=${operation.value})`;
    case 'delete':
      return `delete(${operation.key})`;
    case 'read':
      return `read(${operation.key})`;
    case 'cas':
      return `cas(${operation.key}: ${operation.expected ?? 'absent'} -> ${operation.value})`;
    case 'cad':
      return `cad(${operation.key}: ${operation.expected})`;
    case 'txn':
      return `txn(${JSON.stringify(operation.compare)} then ${JSON.stringify(operation.success)} else ${JSON.stringify(operation.failure)})`;
  }
}

function describeOperation(operation: HistoryOperation): string {
  const outcome = operation.outcome;
  let result: string;
  if (outcome.status === 'ok')
    result = operation.operation.kind === 'read' ? ` -> ${outcome.value ?? 'absent'}` : ' ok';
  else if (outcome.status === 'compared')
    result = outcome.succeeded ? ' succeeded' : ` failed, found ${JSON.stringify(outcome.current)}`;
  else if (outcome.status === 'txn')
    result = ` ${outcome.succeeded ? 'then' : 'else'} -> ${JSON.stringify(outcome.results)}`;
  else result = ` ${outcome.status}`;
  return `client ${operation.clientId} ${describeKind(operation.operation)}${result} [${operation.invokeTimeMs}, ${operation.completeTimeMs}]`;
}

/** Union-find over keys, without recursion: a find walks at most as many links as there are keys. */
class KeyGroups {
  private readonly parent = new Map<string, string>();

  add(key: string): void {
    if (!this.parent.has(key)) this.parent.set(key, key);
  }

  find(key: string): string {
    let root = key;
    for (let hops = 0; hops <= this.parent.size; hops += 1) {
      const up = this.parent.get(root);
      assert(up !== undefined, `key ${key} was added`);
      if (up === root) {
        this.parent.set(key, root);
        return root;
      }
      root = up;
    }
    throw new Error(`union-find cycle at ${key}`);
  }

  union(a: string, b: string): void {
    const rootA = this.find(a);
    const rootB = this.find(b);
    if (rootA !== rootB) this.parent.set(rootA < rootB ? rootB : rootA, rootA < rootB ? rootA : rootB);
  }

  keys(): IterableIterator<string> {
    return this.parent.keys();
  }
}

/** A transaction that names no key (a Scan alone) still needs a partition: this key is never written. */
const KEYLESS_ANCHOR = '\u0000keyless';

interface Partition {
  readonly keys: string[];
  readonly operations: HistoryOperation[];
}

/** Named keys, else (a transaction of Scans alone) the keys its Scans can return, else the anchor. */
function anchorKeys(operations: readonly HistoryOperation[]): string[][] {
  const named = operations.map((operation) => keysOf(operation.operation));
  const allNamed = new Set(named.flat());
  return named.map((keys, index) => {
    if (keys.length > 0) return keys;
    const operation = operations[index];
    assert(operation !== undefined, 'operation in range');
    const prefixes = scanPrefixesOf(operation.operation);
    const matched = [...allNamed].filter((key) => prefixes.some((prefix) => key.startsWith(prefix)));
    return matched.length > 0 ? matched.slice(0, 1) : [KEYLESS_ANCHOR];
  });
}

/** The smallest groups of keys no relevant operation crosses, each with its operations in history order. */
export function partitionHistory(operations: readonly HistoryOperation[]): Partition[] {
  const groups = new KeyGroups();
  const keysOfOperation = anchorKeys(operations);
  for (const keys of keysOfOperation) for (const key of keys) groups.add(key);
  const allKeys = [...groups.keys()];
  operations.forEach((operation, index) => {
    const [first, ...rest] = keysOfOperation[index] ?? [];
    assert(first !== undefined, 'every operation has a key');
    for (const key of rest) groups.union(first, key);
    for (const prefix of scanPrefixesOf(operation.operation))
      for (const key of allKeys) if (key.startsWith(prefix)) groups.union(first, key);
  });
  const partitions = new Map<string, Partition>();
  for (const key of allKeys) {
    const root = groups.find(key);
    const partition = partitions.get(root) ?? { keys: [], operations: [] };
    partition.keys.push(key);
    partitions.set(root, partition);
  }
  operations.forEach((operation, index) => {
    const first = keysOfOperation[index]?.[0];
    assert(first !== undefined, 'every operation has a key');
    partitions.get(groups.find(first))?.operations.push(operation);
  });
  return [...partitions.values()];
}

export function checkLinearizability(
  history: readonly HistoryOperation[],
  options: LinearizabilityOptions = { searchStepsMax: SEARCH_STEPS_MAX_DEFAULT },
): LinearizabilityResult {
  assert(
    Number.isSafeInteger(options.searchStepsMax) && options.searchStepsMax > 0,
    'searchStepsMax is a positive integer',
  );
  for (const operation of history) assertWellFormed(operation);
  const partitions = partitionHistory(history.filter(relevant));
  let searchSteps = 0;
  for (const { keys, operations } of partitions) {
    const key = keys.join(',');
    if (operations.length > OPERATIONS_PER_PARTITION_MAX || keys.length > KEYS_PER_PARTITION_MAX) {
      const message = `${operations.length} operations over ${keys.length} keys (at most ${OPERATIONS_PER_PARTITION_MAX} and ${KEYS_PER_PARTITION_MAX})`;
      return { status: 'too_large', key, message };
    }
    const model = new PartitionModel(keys);
    // Two complete search orders, each with the whole budget: many in-doubt writes whose effect only
    // a later version shows defeat the first, and the second is slow where guessing early pays.
    let result = checkPartition(model, operations, options.searchStepsMax, false);
    searchSteps += result.steps;
    if (result.status === 'budget_exhausted') {
      result = checkPartition(model, operations, options.searchStepsMax, true);
      searchSteps += result.steps;
    }
    if (result.status === 'budget_exhausted')
      return { status: 'budget_exhausted', key, searchSteps: result.steps };
    if (result.status === 'violation') {
      const sorted = [...operations].sort((a, b) => a.invokeTimeMs - b.invokeTimeMs);
      // Linearized operations roughly follow invocation order: show those around where the longest
      // linearizable prefix ends, which is where the culprit usually is.
      const first = Math.max(0, result.longestPrefix - OPERATIONS_SHOWN_MAX / 2);
      const shown = sorted
        .slice(first, first + OPERATIONS_SHOWN_MAX)
        .map(describeOperation)
        .join('; ');
      const message = `no linearization of ${operations.length} operations (longest linearizable prefix ${result.longestPrefix}; operations ${first + 1}.. by invocation): ${shown}`;
      return { status: 'violation', key, operations: sorted, message };
    }
  }
  return { status: 'ok', keysChecked: partitions.reduce((sum, p) => sum + p.keys.length, 0), searchSteps };
}
