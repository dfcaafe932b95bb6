import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { Compare, CompareOp, CompareTarget, TxnOp, WriteCommand } from '../../src/api/types.ts';
import { AssertionError } from '../../src/base/assert.ts';
import { SCAN_PAGE_BYTES_MAX, TXN_COMPARES_MAX, TXN_OPS_MAX } from '../../src/base/limits.ts';
import {
  compareHolds,
  compareUtf8,
  decodeSnapshot,
  encodeSnapshot,
  MemoryKvStateMachine,
  type ApplyOutcome,
  type KvRecord,
  type StateMachine,
} from '../../src/node/kv-state-machine.ts';
import { LmdbMachines } from './state-machines.ts';
import { applyPlain } from '../support/apply.ts';

const lmdb = new LmdbMachines('aspen-sm-');
const lmdbMachine = (): StateMachine => lmdb.machine();
const machines = lmdb.kinds();

/** Applies commands at the next indexes; returns the last outcome. */
function run(machine: StateMachine, ...commands: WriteCommand[]): ApplyOutcome {
  let outcome: ApplyOutcome | undefined;
  for (const command of commands) outcome = applyPlain(machine, machine.appliedIndex + 1, command);
  if (outcome === undefined) throw new Error('no command');
  return outcome;
}

const set = (key: string, value: string): WriteCommand => ({ Set: { key, value } });
const txn = (compare: Compare[], success: TxnOp[], failure: TxnOp[] = []): WriteCommand => ({
  Transaction: { compare, success, failure },
});
const record = (value: string, createIndex: number, modIndex: number, version: number): KvRecord => ({
  value,
  createIndex,
  modIndex,
  version,
  leaseId: 0,
});

describe.each(machines)('applyCommand on the %s state machine', (_name, make) => {
  it('CompareAndSwap with expected null creates an absent key and fails on a present one', () => {
    const machine = make();
    run(machine, set('other', 'x'));
    const created = run(machine, { CompareAndSwap: { key: 'k', expected: null, new_value: 'v1' } });
    expect(created).toEqual({
      index: 2,
      deleted: [],
      succeeded: true,
      changes: [{ key: 'k', record: record('v1', 2, 2, 1), prev: null }],
    });
    expect(machine.get('k')).toEqual(record('v1', 2, 2, 1));
    const refused = run(machine, { CompareAndSwap: { key: 'k', expected: null, new_value: 'v2' } });
    expect(refused).toEqual({ index: 3, deleted: [], succeeded: false, current: record('v1', 2, 2, 1) });
    expect(machine.get('k')).toEqual(record('v1', 2, 2, 1));
    expect(machine.appliedIndex).toBe(3);
  });

  it('CompareAndSwap with a value swaps only on exactly that value', () => {
    const machine = make();
    run(machine, set('k', 'old'));
    const wrong = run(machine, { CompareAndSwap: { key: 'k', expected: 'ol', new_value: 'new' } });
    expect(wrong).toEqual({ index: 2, deleted: [], succeeded: false, current: record('old', 1, 1, 1) });
    const right = run(machine, { CompareAndSwap: { key: 'k', expected: 'old', new_value: 'new' } });
    expect(right).toEqual({
      index: 3,
      deleted: [],
      succeeded: true,
      changes: [{ key: 'k', record: record('new', 1, 3, 2), prev: record('old', 1, 1, 1) }],
    });
    expect(machine.get('k')).toEqual(record('new', 1, 3, 2));
    const absent = run(machine, { CompareAndSwap: { key: 'nope', expected: 'old', new_value: 'x' } });
    expect(absent).toEqual({ index: 4, deleted: [], succeeded: false, current: null });
    expect(machine.get('nope')).toBeUndefined();
  });

  it('CompareAndDelete deletes only on exactly that value; a re-created key starts at version 1', () => {
    const machine = make();
    run(machine, set('k', 'v'), set('k', 'w'));
    const wrong = run(machine, { CompareAndDelete: { key: 'k', expected: 'v' } });
    expect(wrong).toEqual({ index: 3, deleted: [], succeeded: false, current: record('w', 1, 2, 2) });
    expect(machine.get('k')).toEqual(record('w', 1, 2, 2));
    const right = run(machine, { CompareAndDelete: { key: 'k', expected: 'w' } });
    expect(right).toEqual({
      index: 4,
      deleted: [true],
      succeeded: true,
      changes: [{ key: 'k', record: null, prev: record('w', 1, 2, 2) }],
    });
    expect(machine.get('k')).toBeUndefined();
    const absent = run(machine, { CompareAndDelete: { key: 'k', expected: 'w' } });
    expect(absent).toEqual({ index: 5, deleted: [], succeeded: false, current: null });
    run(machine, set('k', 'again'));
    expect(machine.get('k')).toEqual(record('again', 6, 6, 1));
  });

  it('a Transaction runs success when every compare holds, failure otherwise, at one revision', () => {
    const machine = make();
    run(machine, set('a', '1'));
    const ops: TxnOp[] = [{ Set: { key: 'b', value: '2' } }, { Set: { key: 'c', value: '3' } }];
    const other: TxnOp[] = [{ Delete: { key: 'a' } }];
    const holds: Compare = { key: 'a', target: 'value', op: 'equal', value: '1' };
    const fails: Compare = { key: 'a', target: 'version', op: 'greater', value: 1 };
    const failed = run(machine, txn([holds, fails], ops, other));
    expect(failed).toEqual({
      index: 2,
      deleted: [],
      succeeded: false,
      results: [{ kind: 'delete', key: 'a', deleted: true }],
      changes: [{ key: 'a', record: null, prev: record('1', 1, 1, 1) }],
    });
    expect(machine.get('b')).toBeUndefined();
    run(machine, set('a', '1'));
    const succeeded = run(machine, txn([holds], ops, other));
    expect(succeeded).toEqual({
      index: 4,
      deleted: [],
      succeeded: true,
      results: [
        { kind: 'set', key: 'b' },
        { kind: 'set', key: 'c' },
      ],
      changes: [
        { key: 'b', record: record('2', 4, 4, 1), prev: null },
        { key: 'c', record: record('3', 4, 4, 1), prev: null },
      ],
    });
    expect(machine.get('b')).toEqual(record('2', 4, 4, 1));
    expect(machine.get('c')).toEqual(record('3', 4, 4, 1));
    expect(machine.get('a')).toEqual(record('1', 3, 3, 1));
    expect(run(machine, txn([], [])).succeeded).toBe(true); // no compares: success (empty)
  });

  it('compares see the state before any op; each op sees the earlier ops of its branch', () => {
    const machine = make();
    run(machine, set('p/a', 'x'), set('p/b', 'y'));
    const outcome = run(
      machine,
      txn(
        [
          { key: 'p/a', target: 'value', op: 'equal', value: 'x' },
          { key: 'p/c', target: 'version', op: 'equal', value: 0 },
        ],
        [
          { Set: { key: 'p/a', value: 'x2' } },
          { Delete: { key: 'p/b' } },
          { Set: { key: 'p/c', value: 'z' } },
          { Get: { key: 'p/a' } },
          { Get: { key: 'p/b' } },
          { Scan: { prefix: 'p/' } },
          { Delete: { key: 'p/none' } },
        ],
      ),
    );
    expect(outcome.succeeded).toBe(true);
    expect(outcome.results).toEqual([
      { kind: 'set', key: 'p/a' },
      { kind: 'delete', key: 'p/b', deleted: true },
      { kind: 'set', key: 'p/c' },
      { kind: 'get', key: 'p/a', record: record('x2', 1, 3, 2) },
      { kind: 'get', key: 'p/b', record: null },
      {
        kind: 'scan',
        records: [
          ['p/a', record('x2', 1, 3, 2)],
          ['p/c', record('z', 3, 3, 1)],
        ],
        more: false,
      },
      { kind: 'delete', key: 'p/none', deleted: false },
    ]);
  });

  it('a Scan in a transaction stops at its limit, at 1000 by default, and at the page byte bound', () => {
    const machine = make();
    const pairs: [string, string][] = [];
    for (let i = 0; i < 1_001; i += 1) pairs.push([`s/${String(i).padStart(4, '0')}`, 'v']);
    run(machine, { SetMulti: { pairs } }, set('t', 'outside'));
    const scans: TxnOp[] = [
      { Scan: { prefix: 's/000' } },
      { Scan: { prefix: 's/000', limit: 10 } },
      { Scan: { prefix: 's/', limit: 2 } },
      { Scan: { prefix: 's/' } },
      { Scan: { prefix: 's/', limit: 5_000 } },
      { Scan: { prefix: 'nothing' } },
    ];
    const results = run(machine, txn([], scans)).results ?? [];
    const summary = results.map((result) =>
      result.kind === 'scan' ? [result.records.length, result.more, result.records[0]?.[0]] : null,
    );
    expect(summary).toEqual([
      [10, false, 's/0000'],
      [10, false, 's/0000'],
      [2, true, 's/0000'],
      [1_000, true, 's/0000'],
      [1_000, true, 's/0000'],
      [0, false, undefined],
    ]);
    const big = 'x'.repeat(SCAN_PAGE_BYTES_MAX / 4);
    run(machine, { SetMulti: { pairs: ['1', '2', '3', '4'].map((n): [string, string] => [`b/${n}`, big]) } });
    const [page] = run(machine, txn([], [{ Scan: { prefix: 'b/' } }])).results ?? [];
    expect(page?.kind === 'scan' && [page.records.length, page.more]).toEqual([3, true]);
  });

  it('a branch whose Get and Scan results pass TXN_RESULT_BYTES_MAX writes nothing and is marked', () => {
    const machine = make();
    const mib = 'm'.repeat(1024 * 1024);
    run(machine, {
      SetMulti: { pairs: ['1', '2', '3', '4', '5', '6', '7'].map((n): [string, string] => [`g/${n}`, mib]) },
    });
    const before = machine.snapshot();
    const gets: TxnOp[] = ['3', '4', '5', '6', '7'].map((n) => ({ Get: { key: `g/${n}` } }));
    const outcome = run(
      machine,
      txn(
        [],
        [
          { Set: { key: 'new', value: 'v' } },
          { Delete: { key: 'g/1' } },
          { Set: { key: 'g/2', value: 'w' } },
          ...gets,
        ],
      ),
    );
    expect(outcome).toMatchObject({ succeeded: true, resultsTooLarge: true });
    expect(outcome.results).toBeUndefined();
    expect([machine.get('new'), machine.get('g/1')?.version, machine.get('g/2')?.value.length]).toEqual([
      undefined,
      1,
      mib.length,
    ]);
    // Only the applied index moved: the same records, byte for byte.
    const after = new MemoryKvStateMachine();
    after.restore(machine.snapshot(), machine.appliedIndex, {
      voters: [1],
      votersOutgoing: [],
      learners: [],
    });
    const earlier = new MemoryKvStateMachine();
    earlier.restore(before, machine.appliedIndex - 1, { voters: [1], votersOutgoing: [], learners: [] });
    expect([...after.scan('', null, 100).records]).toEqual([...earlier.scan('', null, 100).records]);
    // Within the bound the same branch applies: three Gets of 1 MiB.
    const fits = run(machine, txn([], [{ Set: { key: 'new', value: 'v' } }, ...gets.slice(0, 3)]));
    expect([fits.resultsTooLarge, fits.results?.length, machine.get('new')?.value]).toEqual([
      undefined,
      4,
      'v',
    ]);
  });

  it('refuses (asserts) what validation must have refused, before writing anything', () => {
    const twice = txn(
      [],
      [{ Set: { key: 'n', value: '1' } }],
      [{ Delete: { key: 'k' } }, { Set: { key: 'k', value: '2' } }],
    );
    const refusals: WriteCommand[] = [
      twice,
      txn([], [{ Set: { key: 'n', value: '1' } }, { Delete: { key: 'n' } }]),
      txn(
        [],
        Array.from({ length: TXN_OPS_MAX + 1 }, (_, i): TxnOp => ({ Get: { key: `g${i}` } })),
      ),
      txn(
        Array.from({ length: TXN_COMPARES_MAX + 1 }, (): Compare => ({
          key: 'k',
          target: 'version',
          op: 'equal',
          value: 1,
        })),
        [],
      ),
      txn([], [{ Set: { key: 'n', value: '1' } }, { Scan: { prefix: '', limit: 0 } }]),
      txn([], [{ Set: { key: 'n', value: '1' } }, { Scan: { prefix: '\ud800' } }]),
      txn([{ key: 'k', target: 'value', op: 'equal', value: 1 }], [{ Set: { key: 'n', value: '1' } }]),
      txn([{ key: 'k', target: 'version', op: 'equal', value: '1' }], [{ Set: { key: 'n', value: '1' } }]),
      txn([{ key: 'k', target: 'version', op: 'less', value: -1 }], [{ Set: { key: 'n', value: '1' } }]),
      txn(
        [
          { key: 'k', target: 'version', op: 'equal', value: 9 },
          { key: 'k', target: 'value', op: 'equal', value: 9 },
        ],
        [],
        [{ Set: { key: 'n', value: '1' } }],
      ),
    ];
    for (const command of refusals) {
      const machine = make();
      run(machine, set('k', 'v'));
      let thrown: unknown = null;
      try {
        applyPlain(machine, 2, command);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(AssertionError);
      expect((thrown as Error).message).toMatch(
        /written twice|ops in|compares in|scan limit|scan prefix|compare carries/,
      );
      expect(machine.get('n')).toBeUndefined();
      expect(machine.get('k')).toEqual(record('v', 1, 1, 1));
    }
  });
});

describe('compareHolds', () => {
  const present = record('b', 3, 5, 2);
  const check = (
    target: CompareTarget,
    op: CompareOp,
    value: string | number,
    on: KvRecord | undefined = present,
  ): boolean => compareHolds(on, { key: 'k', target, op, value });
  const checkAbsent = (target: CompareTarget, op: CompareOp, value: string | number): boolean =>
    compareHolds(undefined, { key: 'k', target, op, value });

  it.each([
    ['version', 2],
    ['create_index', 3],
    ['mod_index', 5],
    ['lease_id', 0],
  ] as const)('compares the %s target as an integer', (target, actual) => {
    expect(check(target, 'equal', actual)).toBe(true);
    expect(check(target, 'equal', actual + 1)).toBe(false);
    expect(check(target, 'not_equal', actual + 1)).toBe(true);
    expect(check(target, 'not_equal', actual)).toBe(false);
    if (actual > 0) expect(check(target, 'greater', actual - 1)).toBe(true);
    expect(check(target, 'greater', actual)).toBe(false);
    expect(check(target, 'less', actual + 1)).toBe(true);
    expect(check(target, 'less', actual)).toBe(false);
    expect(check(target, 'less', 10)).toBe(true); // integer order, not the order of their digits
  });

  it('compares values in UTF-8 byte order', () => {
    expect(check('value', 'equal', 'b')).toBe(true);
    expect(check('value', 'not_equal', 'b')).toBe(false);
    expect(check('value', 'not_equal', 'c')).toBe(true);
    expect(check('value', 'greater', 'a')).toBe(true);
    expect(check('value', 'greater', 'b')).toBe(false);
    expect(check('value', 'less', 'ba')).toBe(true);
    expect(check('value', 'less', 'a')).toBe(false);
    // U+FFFF is EF BF BF in UTF-8, U+10000 is F0 90 80 80 (in UTF-16 the order is the other way).
    expect(check('value', 'less', '\u{10000}', record('\uffff', 1, 1, 1))).toBe(true);
    expect(check('value', 'greater', '\uffff', record('\u{10000}', 1, 1, 1))).toBe(true);
  });

  it('an absent key: every value compare is false, numeric targets are 0', () => {
    for (const op of ['equal', 'not_equal', 'greater', 'less'] as const) {
      expect(checkAbsent('value', op, 'b')).toBe(false);
      expect(checkAbsent('value', op, '')).toBe(false);
    }
    for (const target of ['version', 'create_index', 'mod_index', 'lease_id'] as const) {
      expect(checkAbsent(target, 'equal', 0)).toBe(true);
      expect(checkAbsent(target, 'not_equal', 0)).toBe(false);
      expect(checkAbsent(target, 'less', 1)).toBe(true);
      expect(checkAbsent(target, 'greater', 0)).toBe(false);
    }
  });
});

describe('compareUtf8', () => {
  it('orders strings as their UTF-8 bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
        const bytes = Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
        expect(Math.sign(compareUtf8(a, b))).toBe(bytes);
      }),
      { numRuns: 2_000 },
    );
    expect(compareUtf8('\uffff', '\u{10000}')).toBeLessThan(0);
    expect(compareUtf8('ab', 'a')).toBeGreaterThan(0);
  });
});

describe('snapshot format', () => {
  it('reads a format-2 snapshot (records without a lease id) with lease id 0', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const old = packr.pack({
      appliedIndex: 4,
      records: [['k', { value: 'v', createIndex: 2, modIndex: 4, version: 3 }]],
    });
    expect(decodeSnapshot(old, 4)).toEqual([['k', record('v', 2, 4, 3)]]);
    expect(() => decodeSnapshot(old, 5)).toThrow(AssertionError);
    const broken = packr.pack({
      appliedIndex: 4,
      records: [['k', { value: 1, createIndex: 2, modIndex: 4, version: 3 }]],
    });
    expect(() => decodeSnapshot(broken, 4)).toThrow(AssertionError);
  });

  it('gives the same bytes whatever the field order of the records', () => {
    const reordered = { leaseId: 0, version: 3, modIndex: 4, createIndex: 2, value: 'v' };
    expect(encodeSnapshot(4, [['k', reordered]])).toEqual(encodeSnapshot(4, [['k', record('v', 2, 4, 3)]]));
  });

  it('the memory and LMDB machines give the same bytes for the same commands', () => {
    const commands: WriteCommand[] = [
      set('b', '1'),
      {
        SetMulti: {
          pairs: [
            ['a', '2'],
            ['\u{10000}', '3'],
            ['\uffff', '4'],
          ],
        },
      },
      { CompareAndSwap: { key: 'a', expected: '2', new_value: '5' } },
      { Delete: { key: 'b' } },
      txn([], [{ Set: { key: 'c', value: '6' } }]),
    ];
    const memory = new MemoryKvStateMachine();
    const lmdb = lmdbMachine();
    run(memory, ...commands);
    run(lmdb, ...commands);
    expect(memory.snapshot()).toEqual(lmdb.snapshot());
    expect(memory.scan('', null, 10)).toEqual(lmdb.scan('', null, 10));
    expect(memory.scan('', 'a', 10)).toEqual(lmdb.scan('', 'a', 10));
  });
});
