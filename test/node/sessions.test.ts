import { describe, expect, it } from 'vitest';
import { AspenError } from '../../src/api/errors.ts';
import type { LogCommand } from '../../src/api/types.ts';
import { AssertionError } from '../../src/base/assert.ts';
import { Packr } from 'msgpackr';
import {
  decodeSnapshotState,
  MemoryKvStateMachine,
  type ApplyOutcome,
  type StateMachine,
} from '../../src/node/kv-state-machine.ts';
import {
  isValidSession,
  SESSION_EXPIRE_PER_APPLY_MAX,
  SESSION_IDLE_MS,
  SESSION_RESULT_BYTES_MAX,
  SESSION_RESULTS_MAX,
  SESSIONS_MAX,
  SessionTable,
} from '../../src/node/sessions.ts';
import { leaseGrantResult, leaseRevokeResult, writeResult } from '../../src/node/write-results.ts';
import { applyPlain, TEST_TERM } from '../support/apply.ts';
import { LmdbMachines } from './state-machines.ts';

const lmdb = new LmdbMachines('aspen-sessions-');
const MEMBERS = { voters: [1], votersOutgoing: [], learners: [] };
const hex = (data: Uint8Array): string => Buffer.from(data).toString('hex');

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

const SET: LogCommand = { Set: { key: 'k', value: 'v' } };
const CAS: LogCommand = { CompareAndSwap: { key: 'k', expected: 'other', new_value: 'w' } };
const TXN: LogCommand = {
  Transaction: { compare: [], success: [{ Set: { key: 'k', value: 't' } }], failure: [] },
};
const GRANT: LogCommand = { LeaseGrant: { lease_id: 0, ttl_seconds: 10 } };
const REVOKE: LogCommand = { LeaseRevoke: { lease_id: 2 } };

/** Apply at the next index with session (c, sequence). */
function next(machine: StateMachine, command: LogCommand, sequence: number): ApplyOutcome {
  return machine.apply(machine.appliedIndex + 1, command, at('c', sequence), 0, TEST_TERM);
}

const reused = (index: number, sequence: number, kind: string): ApplyOutcome =>
  ({
    index,
    deleted: [],
    succeeded: false,
    sessionReused: { clientId: 'c', sequence, kind },
  }) as ApplyOutcome;

describe.each(lmdb.kinds())('a sequence reused for another kind of command (%s)', (_name, make) => {
  it('applies nothing and names the first kind; a retry of the same kind still gets the first outcome', () => {
    const machine = make();
    const first = next(machine, SET, 1);
    expect(next(machine, GRANT, 1)).toEqual(reused(2, 1, 'Set'));
    expect(machine.leaseCount).toBe(0);
    expect(next(machine, CAS, 1)).toEqual(reused(3, 1, 'Set')); // not "the CAS succeeded"
    expect(next(machine, TXN, 1)).toEqual(reused(4, 1, 'Set'));
    expect(next(machine, { Delete: { key: 'k' } }, 1)).toEqual(reused(5, 1, 'Set'));
    expect(machine.get('k')).toMatchObject({ value: 'v', version: 1 });
    const stored = { ...first };
    delete stored.changes;
    expect(next(machine, SET, 1)).toEqual({ ...stored, duplicate: true });
    const granted = next(machine, GRANT, 2);
    expect(granted.lease?.id).toBe(7);
    expect(next(machine, { LeaseRevoke: { lease_id: 7 } }, 2)).toEqual(reused(8, 2, 'LeaseGrant'));
    expect(machine.lease(7)).toBeDefined();
    expect(next(machine, SET, 2)).toEqual(reused(9, 2, 'LeaseGrant'));
  });

  it('keeps the kinds in snapshots, with the same bytes on both machines', () => {
    const machine = make();
    const memory = new MemoryKvStateMachine();
    for (const [command, sequence] of [
      [SET, 1],
      [GRANT, 2],
      [REVOKE, 3],
      [TXN, 4],
      [GRANT, 3],
    ] as const) {
      expect(next(machine, command, sequence)).toEqual(next(memory, command, sequence));
    }
    expect(hex(machine.snapshot())).toBe(hex(memory.snapshot()));
    const restored = new MemoryKvStateMachine();
    restored.restore(machine.snapshot(), machine.appliedIndex, MEMBERS);
    expect(next(restored, SET, 3)).toEqual(reused(6, 3, 'LeaseRevoke'));
    expect(next(restored, REVOKE, 2)).toEqual(reused(7, 2, 'LeaseGrant'));
  });
});

describe('kinds in LMDB across a reopen', () => {
  it('still refuse a sequence reused for another kind', async () => {
    const directory = lmdb.directory();
    next(lmdb.machine(directory), GRANT, 1);
    await lmdb.closeLast();
    expect(next(lmdb.machine(directory), SET, 1)).toEqual(reused(2, 1, 'LeaseGrant'));
  });
});

describe('session tables from before kinds were kept', () => {
  /** A snapshot of `machine` as storage format 5 wrote it before this change: no kind on any outcome. */
  function withoutKinds(data: Uint8Array): Uint8Array {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const body = packr.unpack(data) as { sessions: { clients: [string, { results: [number, object][] }][] } };
    for (const [, session] of body.sessions.clients) {
      for (const [, outcome] of session.results) {
        expect(outcome).toHaveProperty('commandKind');
        delete (outcome as { commandKind?: string }).commandKind;
      }
    }
    return packr.pack(body);
  }

  it('load, and answer a retry of another kind with the first outcome, which the API refuses as 400', () => {
    const machine = new MemoryKvStateMachine();
    const set = next(machine, SET, 1);
    const grant = next(machine, GRANT, 2);
    const old = new MemoryKvStateMachine();
    old.restore(withoutKinds(machine.snapshot()), 2, MEMBERS);
    const stored = (outcome: ApplyOutcome) => {
      const copy = { ...outcome, duplicate: true };
      delete copy.changes;
      return copy;
    };
    const asGrant = next(old, GRANT, 1);
    expect(asGrant).toEqual(stored(set)); // as before: matched by sequence only
    expect(old.snapshot()).not.toEqual(machine.snapshot());
    const refused = (run: () => unknown) => {
      try {
        run();
      } catch (error) {
        return error instanceof AspenError ? [error.code, error.definite] : error;
      }
      return 'answered';
    };
    expect(refused(() => leaseGrantResult({ index: 3, outcome: asGrant }))).toEqual(['INVALID_INPUT', true]);
    const asTxn = next(old, TXN, 1);
    expect(refused(() => writeResult(TXN as never, { index: 4, outcome: asTxn }))).toEqual([
      'INVALID_INPUT',
      true,
    ]);
    const asRevoke = next(old, REVOKE, 1);
    expect(refused(() => leaseRevokeResult({ index: 5, outcome: asRevoke }))).toEqual([
      'INVALID_INPUT',
      true,
    ]);
    const asCas = next(old, CAS, 2);
    expect(asCas).toEqual(stored(grant));
    expect(
      refused(() => writeResult(CAS as never, { index: 6, outcome: { ...asCas, succeeded: false } })),
    ).toEqual(['INVALID_INPUT', true]);
    expect(old.leaseCount).toBe(1);
    expect(old.get('k')?.value).toBe('v');
  });

  it('a fresh outcome that does not fit its call is still a broken invariant', () => {
    const machine = new MemoryKvStateMachine();
    const set = next(machine, SET, 1);
    expect(() => leaseGrantResult({ index: 1, outcome: set })).toThrow(AssertionError);
    expect(() => leaseRevokeResult({ index: 1, outcome: set })).toThrow(AssertionError);
    expect(() => writeResult(TXN as never, { index: 1, outcome: set })).toThrow(AssertionError);
    const failed = { ...set, succeeded: false };
    expect(() => writeResult(SET as never, { index: 1, outcome: failed })).toThrow(AssertionError);
  });

  it('the API answers a reused sequence 400 INVALID_INPUT, naming client, sequence and first kind', () => {
    const outcome = reused(9, 4, 'Set');
    const error = (() => {
      try {
        leaseGrantResult({ index: 9, outcome });
      } catch (caught) {
        return caught;
      }
      return null;
    })();
    expect(error).toBeInstanceOf(AspenError);
    expect((error as AspenError).code).toBe('INVALID_INPUT');
    expect((error as AspenError).message).toMatch(
      /^sequence 4 of client c was already used for another request \(Set\)/,
    );
  });
});
