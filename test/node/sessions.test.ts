import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/base/assert.ts';
import { Packr } from 'msgpackr';
import { decodeSnapshotState, MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import {
  isValidSession,
  SESSION_EXPIRE_PER_APPLY_MAX,
  SESSION_IDLE_MS,
  SESSION_RESULT_BYTES_MAX,
  SESSION_RESULTS_MAX,
  SESSIONS_MAX,
  SessionTable,
} from '../../src/node/sessions.ts';
import { applyPlain, TEST_TERM } from '../support/apply.ts';

const at = (clientId: string, sequence: number) => ({ clientId, sequence });

/** Apply `sequence` of `clientId` at `index` (checking first, as the state machine does); returns the check. */
function step(table: SessionTable<string>, index: number, clientId: string, sequence: number, timeMs = 0) {
  table.advance(index, timeMs);
  const check = table.check(at(clientId, sequence));
  if (check.kind === 'apply') table.record(at(clientId, sequence), `out-${clientId}-${sequence}`);
  return check;
}

describe('SessionTable', () => {
  it('answers a retried sequence from the table and applies new ones', () => {
    const table = new SessionTable<string>();
    expect(step(table, 1, 'a', 1)).toEqual({ kind: 'apply' });
    expect(step(table, 2, 'a', 2)).toEqual({ kind: 'apply' });
    expect(step(table, 3, 'a', 1)).toEqual({ kind: 'duplicate', outcome: 'out-a-1' });
    expect(step(table, 4, 'a', 2)).toEqual({ kind: 'duplicate', outcome: 'out-a-2' });
    expect(table.get('a')?.highest).toBe(2);
  });

  it('expires a sequence whose outcome was discarded, and an unknown client not starting at 1', () => {
    const table = new SessionTable<string>();
    for (let sequence = 1; sequence <= SESSION_RESULTS_MAX + 1; sequence += 1)
      step(table, sequence, 'a', sequence);
    expect(step(table, 100, 'a', 1)).toEqual({ kind: 'expired' });
    expect(step(table, 101, 'a', 2)).toEqual({ kind: 'duplicate', outcome: 'out-a-2' });
    expect(step(table, 102, 'b', 5)).toEqual({ kind: 'expired' });
    expect(table.get('a')?.results).toHaveLength(SESSION_RESULTS_MAX);
  });

  it('evicts the least recently used client past SESSIONS_MAX', () => {
    const table = new SessionTable<string>();
    let index = 0;
    for (let client = 0; client < SESSIONS_MAX; client += 1) step(table, ++index, `c${client}`, 1);
    step(table, ++index, 'c0', 1); // a retry is a use: c1 is now the least recently used
    step(table, ++index, 'new', 1);
    expect(table.size).toBe(SESSIONS_MAX);
    expect(table.get('c1')).toBeUndefined();
    expect(table.get('c0')).toBeDefined();
    expect(step(table, ++index, 'c1', 1)).toEqual({ kind: 'apply' }); // forgotten: starts over at 1
  });

  it('drops idle clients by log time, a bounded number per apply, never by going back in time', () => {
    const table = new SessionTable<string>();
    const clients = SESSION_EXPIRE_PER_APPLY_MAX + 2;
    for (let client = 0; client < clients; client += 1) step(table, client + 1, `c${client}`, 1, 1_000);
    step(table, 100, 'late', 1, 1_000 + SESSION_IDLE_MS); // not idle longer than the bound yet
    expect(table.size).toBe(clients + 1);
    table.advance(101, 1_001 + SESSION_IDLE_MS);
    expect(table.size).toBe(clients + 1 - SESSION_EXPIRE_PER_APPLY_MAX);
    table.advance(102, 5); // an older proposal time does not move log time back
    expect(table.timeMs).toBe(1_001 + SESSION_IDLE_MS);
    expect(table.size).toBe(1);
    expect(step(table, 103, 'c0', 2)).toEqual({ kind: 'expired' });
  });

  it('is deterministic: a reload in any order keeps the LRU order', () => {
    const a = new SessionTable<string>();
    for (let index = 1; index <= 20; index += 1) step(a, index, `c${(index * 7) % 5}`, Math.ceil(index / 5));
    const b = new SessionTable<string>();
    b.load(20, a.timeMs, [...a.entries()].reverse());
    expect(b.entries()).toEqual(a.entries());
    for (let client = 0; client < SESSIONS_MAX; client += 1) {
      step(a, 21 + client, `n${client}`, 1);
      step(b, 21 + client, `n${client}`, 1);
    }
    expect(b.entries()).toEqual(a.entries());
  });

  it('validates sessions', () => {
    expect(isValidSession(at('A-z_09', 1))).toBe(true);
    expect(isValidSession(at('', 1))).toBe(false);
    expect(isValidSession(at('a'.repeat(65), 1))).toBe(false);
    expect(isValidSession(at('a b', 1))).toBe(false);
    expect(isValidSession(at('a', 0))).toBe(false);
    expect(() => new SessionTable<string>().check(at('a', 1.5))).toThrow(AssertionError);
  });
});

describe('MemoryKvStateMachine with sessions', () => {
  it('applies a retry once, answers SESSION_EXPIRED-style outcomes, and keeps the table in snapshots', () => {
    const machine = new MemoryKvStateMachine();
    const first = machine.apply(1, { Set: { key: 'k', value: 'v1' } }, at('c', 1), 10, TEST_TERM);
    expect(first.changes).toHaveLength(1);
    const stored = { ...first };
    delete stored.changes; // a retry changes nothing
    expect(machine.apply(2, { Set: { key: 'k', value: 'v1' } }, at('c', 1), 20, TEST_TERM)).toEqual({
      ...stored,
      duplicate: true,
    });
    expect(machine.get('k')?.version).toBe(1);
    const restored = new MemoryKvStateMachine();
    restored.restore(machine.snapshot(), 2, { voters: [1], votersOutgoing: [], learners: [] });
    expect(restored.apply(3, { Set: { key: 'k', value: 'v1' } }, at('c', 1), 30, TEST_TERM)).toEqual({
      ...stored,
      duplicate: true,
    });
    expect(restored.apply(4, { Set: { key: 'k', value: 'x' } }, at('d', 3), 30, TEST_TERM)).toEqual({
      index: 4,
      deleted: [],
      succeeded: false,
      sessionExpired: true,
    });
    expect(restored.get('k')?.value).toBe('v1');
    expect(restored.snapshot()).not.toEqual(machine.snapshot());
  });

  it('keeps an outcome without results too large for the table: its retry is expired', () => {
    const machine = new MemoryKvStateMachine();
    const big = 'x'.repeat(SESSION_RESULT_BYTES_MAX + 1);
    applyPlain(machine, 1, { Set: { key: 'big', value: big } });
    const txn = { Transaction: { compare: [], success: [{ Get: { key: 'big' } }], failure: [] } };
    const first = machine.apply(2, txn, at('c', 1), 0, TEST_TERM);
    expect(first.results).toHaveLength(1);
    expect(machine.apply(3, txn, at('c', 1), 0, TEST_TERM)).toMatchObject({ index: 3, sessionExpired: true });
    // A failed compare keeps the record it found: past the bound too, its retry is expired.
    const cas = { CompareAndSwap: { key: 'big', expected: 'other', new_value: 'v' } };
    expect(machine.apply(4, cas, at('c', 2), 0, TEST_TERM)).toMatchObject({
      succeeded: false,
      current: { value: big },
    });
    expect(machine.apply(5, cas, at('c', 2), 0, TEST_TERM)).toMatchObject({ index: 5, sessionExpired: true });
    const small = { CompareAndSwap: { key: 'small', expected: 'other', new_value: 'v' } };
    const smallFirst = machine.apply(6, small, at('c', 3), 0, TEST_TERM);
    expect(machine.apply(7, small, at('c', 3), 0, TEST_TERM)).toEqual({ ...smallFirst, duplicate: true });
    expect(machine.get('big')?.version).toBe(1);
  });
});

describe('snapshots from before sessions', () => {
  it('read as an empty session table', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const record = { value: 'v', createIndex: 1, modIndex: 1, version: 1, leaseId: 0 };
    const old = packr.pack({ appliedIndex: 3, records: [['k', record]] });
    expect(decodeSnapshotState(old, 3)).toEqual({
      records: [['k', record]],
      sessions: { timeMs: 0, clients: [] },
      leases: [],
    });
    const machine = new MemoryKvStateMachine();
    machine.restore(old, 3, { voters: [1], votersOutgoing: [], learners: [] });
    expect(machine.apply(4, { Delete: { key: 'k' } }, at('c', 2), 5, TEST_TERM)).toMatchObject({
      sessionExpired: true,
    });
    expect(machine.apply(5, { Delete: { key: 'k' } }, at('c', 1), 5, TEST_TERM)).toEqual({
      index: 5,
      deleted: [true],
      succeeded: true,
      changes: [{ key: 'k', record: null, prev: record }],
    });
  });
});
