import { describe, expect, it } from 'vitest';
import type { KvOperation, KvOutcome } from '../../src/sim/kv-model.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import {
  checkLinearizability,
  KEYS_PER_PARTITION_MAX,
  type HistoryOperation,
} from '../../src/sim/linearizability.ts';
import {
  commandOf,
  learn,
  OperationSource,
  outcomeOf,
  type Knowledge,
  type OperationMix,
} from '../../src/sim/workload-ops.ts';
import { applyPlain } from '../support/apply.ts';

const MIX: OperationMix = {
  keyCount: 3,
  readFraction: 0.2,
  deleteFraction: 0.05,
  casFraction: 0.3,
  txnFraction: 0.3,
  counterCount: 2,
  accountCount: 3,
};

/** Clients taking turns against one state machine: every operation's interval is its own instant. */
function sequentialHistory(seed: number, count: number, corrupt = false): HistoryOperation[] {
  const source = new OperationSource(new SeededPrng(seed), MIX);
  const machine = new MemoryKvStateMachine();
  const knowledge: Knowledge[] = [1, 2, 3].map((): Knowledge => new Map());
  const history: HistoryOperation[] = [];
  for (let index = 0; index < count; index += 1) {
    const clientId = (index % knowledge.length) + 1;
    const known: Knowledge = knowledge[clientId - 1] ?? new Map<string, null>();
    const operation = source.next(known);
    let outcome: KvOutcome;
    if (operation.kind === 'read') {
      const record = machine.get(operation.key);
      outcome = record === undefined ? { status: 'ok', value: null } : { status: 'ok', value: record.value };
    } else {
      outcome = outcomeOf(operation, applyPlain(machine, machine.appliedIndex + 1, commandOf(operation)));
      // A state machine that reports the other branch than the one it ran.
      if (corrupt && outcome.status === 'compared' && outcome.succeeded)
        outcome = { status: 'compared', succeeded: false, current: null };
    }
    learn(known, operation, outcome);
    history.push({ clientId, operation, invokeTimeMs: index * 10, completeTimeMs: index * 10 + 5, outcome });
  }
  return history;
}

function kinds(history: readonly HistoryOperation[]): Set<KvOperation['kind']> {
  return new Set(history.map((entry) => entry.operation.kind));
}

describe('workload operations', () => {
  it('draws every kind, and the state machine accepts each command', () => {
    const history = sequentialHistory(7, 600);
    expect(kinds(history)).toEqual(new Set(['read', 'write', 'delete', 'cas', 'cad', 'txn']));
    const succeeded = history.filter(
      (entry) =>
        (entry.outcome.status === 'compared' || entry.outcome.status === 'txn') && entry.outcome.succeeded,
    );
    expect(succeeded.length).toBeGreaterThan(50);
  });

  it('a history of one state machine taken in turns is linearizable', () => {
    for (let seed = 1; seed <= 20; seed += 1)
      expect(checkLinearizability(sequentialHistory(seed, 300)).status).toBe('ok');
  });

  it('a CAS reported as failed while it wrote is caught', () => {
    expect(checkLinearizability(sequentialHistory(3, 300, true)).status).toBe('violation');
  });

  it('is deterministic per seed', () => {
    expect(JSON.stringify(sequentialHistory(5, 200))).toBe(JSON.stringify(sequentialHistory(5, 200)));
  });

  it('learns the record a failed compare found', () => {
    const known: Knowledge = new Map();
    learn(
      known,
      { kind: 'cas', key: 'c1', expected: null, value: '1' },
      {
        status: 'compared',
        succeeded: false,
        current: { value: '4', version: 4 },
      },
    );
    expect(known.get('c1')).toEqual({ value: '4', version: 4 });
  });
});

describe('linearizability checker bounds', () => {
  it('reports a partition with too many keys instead of searching it', () => {
    const history: HistoryOperation[] = [];
    for (let index = 0; index <= KEYS_PER_PARTITION_MAX; index += 1)
      history.push({
        clientId: 1,
        operation: { kind: 'write', key: `p/${index}`, value: 'x' },
        invokeTimeMs: index,
        completeTimeMs: index,
        outcome: { status: 'ok', value: null },
      });
    const scan: KvOperation = {
      kind: 'txn',
      compare: [],
      success: [{ Scan: { prefix: 'p/' } }],
      failure: [],
    };
    history.push({
      clientId: 2,
      operation: scan,
      invokeTimeMs: 0,
      completeTimeMs: Number.POSITIVE_INFINITY,
      outcome: { status: 'unknown' },
    });
    expect(checkLinearizability(history).status).toBe('too_large');
  });
});
