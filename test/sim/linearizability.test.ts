import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkLinearizability,
  type HistoryOperation,
  type KvOperation,
  type KvOutcome,
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
