import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Compare, TxnOp } from '../../src/api/types.ts';
import {
  checkLinearizability,
  partitionHistory,
  type HistoryOperation,
  type KvOperation,
  type KvOutcome,
  type ObservedRecord,
  type TxnObservation,
} from '../../src/sim/linearizability.ts';

function op(
  clientId: number,
  operation: KvOperation,
  invokeTimeMs: number,
  completeTimeMs: number,
  outcome: KvOutcome,
): HistoryOperation {
  return { clientId, operation, invokeTimeMs, completeTimeMs, outcome };
}
const write = (value: string, key = 'k'): KvOperation => ({ kind: 'write', key, value });
const read = (key = 'k'): KvOperation => ({ kind: 'read', key });
const del = (key = 'k'): KvOperation => ({ kind: 'delete', key });
const ok = (value: string | null = null): KvOutcome => ({ status: 'ok', value });
const unknown: KvOutcome = { status: 'unknown' };
const failed: KvOutcome = { status: 'failed' };
const INF = Number.POSITIVE_INFINITY;

describe('linearizability checker rejects non-linearizable histories', () => {
  it('a stale read after a completed write', () => {
    const history = [
      op(1, write('a'), 0, 10, ok()),
      op(1, write('b'), 20, 30, ok()),
      op(2, read(), 40, 50, ok('a')),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
  });

  it('a read of a value never written', () => {
    expect(
      checkLinearizability([op(1, write('a'), 0, 10, ok()), op(2, read(), 20, 30, ok('z'))]).status,
    ).toBe('violation');
  });

  it('non-monotonic reads: a later read sees an older value', () => {
    const history = [
      op(1, write('a'), 0, 10, ok()),
      op(1, write('b'), 11, 100, ok()),
      op(2, read(), 20, 30, ok('b')),
      op(3, read(), 40, 50, ok('a')),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
  });

  it('a read of a failed write', () => {
    expect(
      checkLinearizability([op(1, write('a'), 0, 10, failed), op(2, read(), 20, 30, ok('a'))]).status,
    ).toBe('violation');
  });

  it('a read of absent after a write and no delete', () => {
    expect(
      checkLinearizability([op(1, write('a'), 0, 10, ok()), op(2, read(), 20, 30, ok(null))]).status,
    ).toBe('violation');
  });

  it('a read of a deleted value after the delete completed', () => {
    const history = [
      op(1, write('a'), 0, 10, ok()),
      op(1, del(), 20, 30, ok()),
      op(2, read(), 40, 50, ok('a')),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
  });

  it('an unknown write observed, then un-observed', () => {
    const history = [
      op(1, write('a'), 0, 10, ok()),
      op(2, write('b'), 5, INF, unknown),
      op(3, read(), 20, 30, ok('b')),
      op(3, read(), 40, 50, ok('a')),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
  });
});

describe('linearizability checker accepts linearizable histories', () => {
  it('a concurrent read may see the old or the new value', () => {
    for (const seen of ['a', 'b']) {
      const history = [
        op(1, write('a'), 0, 10, ok()),
        op(1, write('b'), 20, 40, ok()),
        op(2, read(), 25, 35, ok(seen)),
      ];
      expect(checkLinearizability(history).status).toBe('ok');
    }
  });

  it('an unknown write may or may not take effect', () => {
    for (const seen of ['a', 'b']) {
      const history = [
        op(1, write('a'), 0, 10, ok()),
        op(2, write('b'), 5, INF, unknown),
        op(3, read(), 20, 30, ok(seen)),
      ];
      expect(checkLinearizability(history).status).toBe('ok');
    }
  });

  it('equal completion and invocation times count as concurrent', () => {
    const history = [op(1, write('a'), 0, 10, ok()), op(2, read(), 10, 20, ok(null))];
    expect(checkLinearizability(history).status).toBe('ok');
  });

  it('keys are independent', () => {
    const history = [
      op(1, write('a', 'x'), 0, 10, ok()),
      op(2, read('y'), 20, 30, ok(null)),
      op(2, read('x'), 40, 50, ok('a')),
    ];
    const result = checkLinearizability(history);
    expect(result.status).toBe('ok');
    if (result.status === 'ok') expect(result.keysChecked).toBe(2);
  });
});

/** Histories produced by a real register: each operation takes effect at a random instant inside its interval. */
const arbitraryHistory = fc
  .array(
    fc.record({
      clientId: fc.integer({ min: 1, max: 5 }),
      key: fc.constantFrom('a', 'b'),
      kind: fc.constantFrom('write', 'read', 'read', 'delete'),
      invoke: fc.integer({ min: 0, max: 1_000 }),
      length: fc.integer({ min: 0, max: 100 }),
      effectFraction: fc.double({ min: 0, max: 1, noNaN: true }),
      unknown: fc.boolean(),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((specs) => {
    const events = specs.map((spec, index) => ({
      ...spec,
      index,
      effectTime: spec.invoke + spec.effectFraction * spec.length,
    }));
    const byEffect = [...events].sort((a, b) => a.effectTime - b.effectTime || a.index - b.index);
    const registers = new Map<string, string | null>();
    const history: HistoryOperation[] = [];
    for (const event of byEffect) {
      const current = registers.get(event.key) ?? null;
      let operation: KvOperation;
      let seen: string | null = null;
      if (event.kind === 'write') {
        operation = write(`v${event.index}`, event.key);
        registers.set(event.key, `v${event.index}`);
      } else if (event.kind === 'delete') {
        operation = del(event.key);
        registers.set(event.key, null);
      } else {
        operation = read(event.key);
        seen = current;
      }
      const isUnknown = event.unknown && event.kind !== 'read';
      history.push(
        op(
          event.clientId,
          operation,
          event.invoke,
          isUnknown ? INF : event.invoke + event.length,
          isUnknown ? unknown : ok(seen),
        ),
      );
    }
    return history;
  });

describe('linearizability checker properties', () => {
  it('accepts every history a sequential register produces', () => {
    fc.assert(
      fc.property(arbitraryHistory, (history) => checkLinearizability(history).status === 'ok'),
      { numRuns: 300 },
    );
  });

  it('rejects a history in which one read returns a value never written', () => {
    fc.assert(
      fc.property(arbitraryHistory, fc.nat(), (history, pick) => {
        const reads = history
          .map((entry, index) => ({ entry, index }))
          .filter(({ entry }) => entry.operation.kind === 'read');
        fc.pre(reads.length > 0);
        const target = reads[pick % reads.length];
        if (target === undefined) return true;
        const corrupted = [...history];
        corrupted[target.index] = { ...target.entry, outcome: ok('never-written') };
        return checkLinearizability(corrupted).status === 'violation';
      }),
      { numRuns: 300 },
    );
  });

  it('reports an exhausted budget instead of guessing', () => {
    const history: HistoryOperation[] = [];
    for (let index = 0; index < 30; index += 1) history.push(op(index, write(`v${index}`), 0, 1_000, ok()));
    history.push(op(99, read(), 2_000, 2_001, ok('nope')));
    expect(checkLinearizability(history, { searchStepsMax: 50 }).status).toBe('budget_exhausted');
  });

  it('checks a 2,000-operation history over 20 keys', () => {
    const history: HistoryOperation[] = [];
    const values = new Map<string, string>();
    for (let index = 0; index < 2_000; index += 1) {
      const key = `k${index % 20}`;
      const start = index * 10;
      if (index % 3 === 0) {
        values.set(key, `v${index}`);
        history.push(op(index % 5, write(`v${index}`, key), start, start + 25, ok()));
      } else {
        history.push(op(index % 5, read(key), start, start + 5, ok(values.get(key) ?? null)));
      }
    }
    expect(checkLinearizability(history).status).toBe('ok');
  });
});

const cas = (expected: string | null, value: string, key = 'c'): KvOperation => ({
  kind: 'cas',
  key,
  expected,
  value,
});
const cad = (expected: string, key = 'c'): KvOperation => ({ kind: 'cad', key, expected });
const swapped: KvOutcome = { status: 'compared', succeeded: true };
const found = (current: ObservedRecord | null): KvOutcome => ({
  status: 'compared',
  succeeded: false,
  current,
});
const rec = (value: string, version: number): ObservedRecord => ({ value, version });
const get = (key: string): TxnOp => ({ Get: { key } });
const set = (key: string, value: string): TxnOp => ({ Set: { key, value } });
const valueIs = (key: string, value: string): Compare => ({ key, target: 'value', op: 'equal', value });

/** Move 5 from a to b, guarded by both balances; both branches return the two records. */
function transfer(a: string, b: string): KvOperation {
  return {
    kind: 'txn',
    compare: [valueIs('a', a), valueIs('b', b)],
    success: [set('a', String(Number(a) - 5)), set('b', String(Number(b) + 5)), get('a'), get('b')],
    failure: [get('a'), get('b')],
  };
}
const audit: KvOperation = { kind: 'txn', compare: [], success: [{ Scan: { prefix: '' } }], failure: [] };
const txnOk = (succeeded: boolean, results: TxnObservation[]): KvOutcome => ({
  status: 'txn',
  succeeded,
  results,
});
const gotten = (record: ObservedRecord | null): TxnObservation => ({ kind: 'get', record });
const scanned = (...records: [string, ObservedRecord][]): TxnObservation => ({ kind: 'scan', records });
/** a=10 and b=10, each at version 1. */
const opening = [op(9, write('10', 'a'), 0, 1, ok()), op(9, write('10', 'b'), 2, 3, ok())];

describe('linearizability checker: CAS and CAD', () => {
  it('rejects two increments from the same value that both succeed', () => {
    const history = [
      op(1, cas(null, '1'), 0, 10, swapped),
      op(1, cas('1', '2'), 20, 40, swapped),
      op(2, cas('1', '2'), 25, 45, swapped),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
  });

  it('accepts concurrent increments where the loser sees the winner', () => {
    const history = [
      op(1, cas(null, '1'), 0, 10, swapped),
      op(1, cas('1', '2'), 20, 40, swapped),
      op(2, cas('1', '2'), 25, 45, found(rec('2', 2))),
      op(2, cas('2', '3'), 50, 60, swapped),
      op(3, read('c'), 70, 80, { status: 'ok', value: '3', version: 3 }),
    ];
    expect(checkLinearizability(history).status).toBe('ok');
  });

  it('rejects a failed CAS whose current record does not match any state', () => {
    const stale = [op(1, cas(null, '1'), 0, 10, swapped), op(2, cas('0', '2'), 20, 30, found(rec('1', 2)))];
    expect(checkLinearizability(stale).status).toBe('violation');
    const failedWhenHolding = [
      op(1, cas(null, '1'), 0, 10, swapped),
      op(2, cas('1', '2'), 20, 30, found(null)),
    ];
    expect(checkLinearizability(failedWhenHolding).status).toBe('violation');
  });

  it('an expected-null create succeeds once', () => {
    const twice = [op(1, cas(null, 'x'), 0, 10, swapped), op(2, cas(null, 'y'), 5, 15, swapped)];
    expect(checkLinearizability(twice).status).toBe('violation');
    const afterDelete = [
      ...twice.slice(0, 1),
      op(3, cad('x'), 20, 30, swapped),
      op(2, cas(null, 'y'), 40, 50, swapped),
    ];
    expect(checkLinearizability(afterDelete).status).toBe('ok');
  });

  it('an in-doubt CAS may or may not have taken effect, but only if its compare held', () => {
    for (const seen of ['1', '5']) {
      const history = [
        op(1, cas(null, '1'), 0, 10, swapped),
        op(2, cas('1', '5'), 20, INF, unknown),
        op(3, read('c'), 30, 40, ok(seen)),
      ];
      expect(checkLinearizability(history).status).toBe('ok');
    }
    const comparedFalse = [
      op(1, cas(null, '1'), 0, 10, swapped),
      op(2, cas('7', '5'), 20, INF, unknown),
      op(3, read('c'), 30, 40, ok('5')),
    ];
    expect(checkLinearizability(comparedFalse).status).toBe('violation');
  });

  it('a CAD that succeeded on an absent key is a violation', () => {
    expect(checkLinearizability([op(1, cad('x'), 0, 10, swapped)]).status).toBe('violation');
  });
});

describe('linearizability checker: multi-key transactions', () => {
  it('accepts a transfer observed whole', () => {
    const history = [
      ...opening,
      op(
        1,
        transfer('10', '10'),
        10,
        20,
        txnOk(true, [{ kind: 'set' }, { kind: 'set' }, gotten(rec('5', 2)), gotten(rec('15', 2))]),
      ),
      op(2, audit, 30, 40, txnOk(true, [scanned(['a', rec('5', 2)], ['b', rec('15', 2)])])),
    ];
    const result = checkLinearizability(history);
    expect(result.status).toBe('ok');
    if (result.status === 'ok') expect(result.keysChecked).toBe(2);
  });

  it('rejects a transfer whose two writes are observed half-applied', () => {
    const halfInAudit = [
      ...opening,
      op(
        1,
        transfer('10', '10'),
        10,
        50,
        txnOk(true, [{ kind: 'set' }, { kind: 'set' }, gotten(rec('5', 2)), gotten(rec('15', 2))]),
      ),
      op(2, audit, 20, 40, txnOk(true, [scanned(['a', rec('5', 2)], ['b', rec('10', 1)])])),
    ];
    expect(checkLinearizability(halfInAudit).status).toBe('violation');
    const halfInReads = [
      ...opening,
      op(1, transfer('10', '10'), 10, INF, unknown),
      op(2, read('a'), 20, 30, ok('5')),
      op(2, read('b'), 40, 50, ok('10')),
    ];
    expect(checkLinearizability(halfInReads).status).toBe('violation');
  });

  it('an in-doubt transfer is all or nothing', () => {
    for (const [a, b] of [
      ['5', '15'],
      ['10', '10'],
    ] as const) {
      const history = [
        ...opening,
        op(1, transfer('10', '10'), 10, INF, unknown),
        op(2, read('a'), 20, 30, ok(a)),
        op(2, read('b'), 40, 50, ok(b)),
      ];
      expect(checkLinearizability(history).status).toBe('ok');
    }
  });

  it('rejects a transaction that took the wrong branch', () => {
    const history = [
      ...opening,
      op(
        1,
        transfer('10', '9'),
        10,
        20,
        txnOk(true, [{ kind: 'set' }, { kind: 'set' }, gotten(rec('5', 2)), gotten(rec('4', 2))]),
      ),
    ];
    expect(checkLinearizability(history).status).toBe('violation');
    const rightBranch = [
      ...opening,
      op(1, transfer('10', '9'), 10, 20, txnOk(false, [gotten(rec('10', 1)), gotten(rec('10', 1))])),
    ];
    expect(checkLinearizability(rightBranch).status).toBe('ok');
  });

  it('version compares and reads of versions are checked', () => {
    const versionGuard = (version: number): KvOperation => ({
      kind: 'txn',
      compare: [{ key: 'a', target: 'version', op: 'equal', value: version }],
      success: [set('a', 'x')],
      failure: [],
    });
    const good = [...opening, op(1, versionGuard(1), 10, 20, txnOk(true, [{ kind: 'set' }]))];
    expect(checkLinearizability(good).status).toBe('ok');
    const wrong = [...opening, op(1, versionGuard(0), 10, 20, txnOk(true, [{ kind: 'set' }]))];
    expect(checkLinearizability(wrong).status).toBe('violation');
    const staleVersion = [...opening, op(2, read('a'), 10, 20, { status: 'ok', value: '10', version: 2 })];
    expect(checkLinearizability(staleVersion).status).toBe('violation');
  });

  it('a transaction merges the partitions of its keys and of the keys its scans can return', () => {
    const scanP: KvOperation = {
      kind: 'txn',
      compare: [],
      success: [{ Scan: { prefix: 'p/' } }],
      failure: [],
    };
    const history = [
      op(1, write('1', 'p/x'), 0, 10, ok()),
      op(1, write('2', 'p/y'), 0, 10, ok()),
      op(1, write('3', 'q'), 0, 10, ok()),
      op(
        2,
        { kind: 'txn', compare: [], success: [{ Scan: { prefix: 'p/' } }], failure: [] },
        20,
        30,
        txnOk(true, [scanned(['p/x', rec('1', 1)], ['p/y', rec('2', 1)])]),
      ),
    ];
    const partitions = partitionHistory(history);
    expect(partitions.map((partition) => partition.keys.sort().join())).toEqual(['p/x,p/y', 'q']);
    expect(checkLinearizability(history).status).toBe('ok');
    const missing = [
      ...history.slice(0, 3),
      op(2, scanP, 20, 30, txnOk(true, [scanned(['p/x', rec('1', 1)])])),
    ];
    expect(checkLinearizability(missing).status).toBe('violation');
  });
});

describe('linearizability checker search order', () => {
  it('a second search order decides what the first cannot: in-doubt writes guessed last', () => {
    const history: HistoryOperation[] = [];
    for (let index = 0; index < 12; index += 1)
      history.push(op(index + 10, write(`u${index}`), 0, INF, unknown));
    for (let index = 0; index < 200; index += 1)
      history.push(op(1, write(`v${index}`), 10 + index * 10, 15 + index * 10, ok()));
    // The final version shows that none of the twelve in-doubt writes took effect.
    history.push(op(2, read(), 3_000, 3_010, { status: 'ok', value: 'v199', version: 200 }));
    expect(checkLinearizability(history, { searchStepsMax: 20_000 }).status).toBe('ok');
  });
});
