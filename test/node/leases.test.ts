import { describe, expect, it } from 'vitest';
import type { LogCommand, TxnOp } from '../../src/api/types.ts';
import { AssertionError } from '../../src/base/assert.ts';
import {
  KEY_BYTES_MAX,
  LEASE_INFO_KEYS_BYTES_MAX,
  LEASE_INFO_KEYS_MAX,
  LEASE_KEYS_MAX,
  LEASE_TTL_SECONDS_MAX,
  LEASES_MAX,
  TXN_OPS_MAX,
} from '../../src/base/limits.ts';
import { FRAME_BYTES_MAX } from '../../src/network/frame.ts';
import {
  decodeSnapshotState,
  MemoryKvStateMachine,
  type ApplyOutcome,
  type KvRecord,
  type StateMachine,
} from '../../src/node/kv-state-machine.ts';
import { leaseKeysPage } from '../../src/node/lease-keeper.ts';
import { keyValue, leaseRefusalError } from '../../src/node/write-results.ts';
import { LmdbMachines } from './state-machines.ts';

const lmdb = new LmdbMachines('aspen-leases-');
const machines = lmdb.kinds();

const MEMBERS = { voters: [1], votersOutgoing: [], learners: [] };
const hex = (data: Uint8Array): string => Buffer.from(data).toString('hex');

/** Apply at the next index, in term `term`. */
function run(machine: StateMachine, command: LogCommand, term = 1): ApplyOutcome {
  return machine.apply(machine.appliedIndex + 1, command, null, 0, term);
}

const grant = (id: number, ttl = 10): LogCommand => ({ LeaseGrant: { lease_id: id, ttl_seconds: ttl } });
const revoke = (id: number, expiredInTerm?: number): LogCommand => ({
  LeaseRevoke:
    expiredInTerm === undefined ? { lease_id: id } : { lease_id: id, expired_in_term: expiredInTerm },
});
const set = (key: string, value: string, lease?: number): LogCommand => ({
  Set: lease === undefined ? { key, value } : { key, value, lease_id: lease },
});
const txn = (success: TxnOp[]): LogCommand => ({ Transaction: { compare: [], success, failure: [] } });

/** Every lease's keys, from the index, and the key count it records. */
function leaseIndex(machine: StateMachine): Record<number, { keys: string[]; count: number }> {
  const index: Record<number, { keys: string[]; count: number }> = {};
  for (const [id, lease] of machine.leases(0, LEASES_MAX))
    index[id] = { keys: machine.leaseKeys(id, null, LEASE_KEYS_MAX), count: lease.keyCount };
  return index;
}

describe.each(machines)('leases in the %s state machine', (_name, make) => {
  it('grants the requested id, or the smallest free id from the entry index; refuses an id in use', () => {
    const machine = make();
    expect(run(machine, grant(0, 5))).toEqual({
      index: 1,
      deleted: [],
      succeeded: true,
      lease: { id: 1, ttlSeconds: 5 },
    });
    expect(run(machine, grant(3)).lease).toEqual({ id: 3, ttlSeconds: 10 });
    expect(run(machine, grant(0)).lease?.id).toBe(4); // index 3 is in use: the next free id
    expect(run(machine, grant(3, 20))).toEqual({
      index: 4,
      deleted: [],
      succeeded: false,
      leaseRefusal: { kind: 'exists', leaseId: 3 },
    });
    expect(machine.lease(3)).toEqual({ ttlSeconds: 10, grantedIndex: 2, keyCount: 0 });
    expect(machine.leaseCount).toBe(3);
    expect(machine.leases(0, 10).map(([id]) => id)).toEqual([1, 3, 4]);
    expect(machine.leases(1, 1).map(([id]) => id)).toEqual([3]);
    expect(machine.lease(2)).toBeUndefined();
    expect(() => run(machine, grant(0, 0))).toThrow(AssertionError);
    expect(() => run(machine, grant(0, LEASE_TTL_SECONDS_MAX + 1))).toThrow(AssertionError);
  });

  it('refuses a Set on an unknown lease: nothing written, no changes', () => {
    const machine = make();
    run(machine, set('k', 'v'));
    expect(run(machine, set('k', 'w', 7))).toEqual({
      index: 2,
      deleted: [],
      succeeded: false,
      leaseRefusal: { kind: 'not_found', leaseId: 7 },
    });
    expect(machine.get('k')).toMatchObject({ value: 'v', version: 1, leaseId: 0 });
    expect(run(machine, set('new', 'w', 7)).changes).toBeUndefined();
    expect(machine.get('new')).toBeUndefined();
  });

  it('attaches on Set with lease_id; an overwrite without it, SetMulti, CAS and delete detach', () => {
    const machine = make();
    run(machine, grant(0)); // 1
    run(machine, grant(0)); // 2
    for (const key of ['a', 'b', 'c', 'd', 'e']) run(machine, set(key, 'v', 1));
    expect(leaseIndex(machine)[1]).toEqual({ keys: ['a', 'b', 'c', 'd', 'e'], count: 5 });
    expect(run(machine, set('a', 'w', 1)).changes).toEqual([
      {
        key: 'a',
        record: { value: 'w', createIndex: 3, modIndex: 8, version: 2, leaseId: 1 },
        prev: { value: 'v', createIndex: 3, modIndex: 3, version: 1, leaseId: 1 },
      },
    ]);
    run(machine, set('b', 'w', 2)); // moved to another lease
    run(machine, set('c', 'w')); // on no lease
    run(machine, { SetMulti: { pairs: [['d', 'w']] } });
    run(machine, { CompareAndSwap: { key: 'e', expected: 'v', new_value: 'w' } });
    expect(leaseIndex(machine)).toEqual({ 1: { keys: ['a'], count: 1 }, 2: { keys: ['b'], count: 1 } });
    expect(run(machine, { Delete: { key: 'a' } }).changes).toEqual([
      { key: 'a', record: null, prev: expect.objectContaining({ leaseId: 1 }) as KvRecord },
    ]);
    expect(run(machine, { DeleteMulti: { keys: ['b', 'b', 'zz'] } }).changes).toHaveLength(1); // absent: no change
    expect(leaseIndex(machine)).toEqual({ 1: { keys: [], count: 0 }, 2: { keys: [], count: 0 } });
  });

  it('revokes a lease with all its keys in one revision, each a change in key order', () => {
    const machine = make();
    run(machine, grant(9));
    run(machine, set('z', '1', 9));
    run(machine, set('m', '2', 9));
    run(machine, set('free', '3'));
    const outcome = run(machine, revoke(9));
    expect(outcome).toMatchObject({ index: 5, succeeded: true, revoked: { id: 9, keys: 2 } });
    expect(outcome.changes?.map((change) => [change.key, change.record, change.prev?.value])).toEqual([
      ['m', null, '2'],
      ['z', null, '1'],
    ]);
    expect(machine.lease(9)).toBeUndefined();
    expect(machine.leaseCount).toBe(0);
    expect(machine.leaseKeys(9, null, 10)).toEqual([]);
    expect(machine.get('free')?.value).toBe('3');
    expect(run(machine, revoke(9))).toMatchObject({
      succeeded: false,
      leaseRefusal: { kind: 'not_found', leaseId: 9 },
    });
    expect(run(machine, set('z', 'again', 9)).leaseRefusal?.kind).toBe('not_found');
  });

  it('ignores an expiry revoke proposed in another term than its entry', () => {
    const machine = make();
    run(machine, grant(4), 2);
    run(machine, set('k', 'v', 4), 2);
    const before = machine.snapshot();
    expect(run(machine, revoke(4, 2), 3)).toEqual({
      index: 3,
      deleted: [],
      succeeded: false,
      leaseRefusal: { kind: 'stale_expiry', leaseId: 4 },
    });
    expect(machine.lease(4)?.keyCount).toBe(1);
    expect(decodeSnapshotState(machine.snapshot(), 3)).toEqual(decodeSnapshotState(before, 2));
    expect(run(machine, revoke(4, 3), 3)).toMatchObject({ revoked: { id: 4, keys: 1 } });
    expect(machine.get('k')).toBeUndefined();
  });

  it('undoes a transaction branch refused for a lease, lease attachments included', () => {
    const machine = make();
    run(machine, grant(1));
    run(machine, grant(2));
    run(machine, set('a', 'v', 1));
    run(machine, set('b', 'v', 2));
    const before = machine.snapshot();
    const outcome = run(
      machine,
      txn([
        { Set: { key: 'a', value: 'w', lease_id: 2 } }, // moves a from 1 to 2
        { Delete: { key: 'b' } }, // detaches b from 2
        { Set: { key: 'c', value: 'w', lease_id: 1 } },
        { Set: { key: 'd', value: 'w', lease_id: 3 } }, // unknown: the whole branch is undone
        { Get: { key: 'a' } },
      ]),
    );
    expect(outcome).toEqual({
      index: 5,
      deleted: [],
      succeeded: true,
      leaseRefusal: { kind: 'not_found', leaseId: 3 },
    });
    expect(leaseIndex(machine)).toEqual({ 1: { keys: ['a'], count: 1 }, 2: { keys: ['b'], count: 1 } });
    expect(decodeSnapshotState(machine.snapshot(), 5)).toEqual(decodeSnapshotState(before, 4));
    const applied = run(machine, txn([{ Set: { key: 'a', value: 'w', lease_id: 2 } }]));
    expect(applied.changes).toHaveLength(1);
    expect(leaseIndex(machine)).toEqual({ 1: { keys: [], count: 0 }, 2: { keys: ['a', 'b'], count: 2 } });
  });

  it('keeps leases in snapshots: restore rebuilds the key index; equal states give equal bytes', () => {
    const machine = make();
    run(machine, grant(5, 30));
    run(machine, grant(2, 60));
    run(machine, set('x', '1', 5));
    run(machine, set('y', '2', 2));
    run(machine, set('w', '3', 5));
    const data = machine.snapshot();
    expect(decodeSnapshotState(data, 5).leases).toEqual([
      [2, { ttlSeconds: 60, grantedIndex: 2, keyCount: 1 }],
      [5, { ttlSeconds: 30, grantedIndex: 1, keyCount: 2 }],
    ]);
    for (const other of [new MemoryKvStateMachine(), lmdb.machine()]) {
      other.restore(data, 5, MEMBERS);
      expect(hex(other.snapshot())).toBe(hex(data));
      expect(leaseIndex(other)).toEqual(leaseIndex(machine));
      expect(other.leaseCount).toBe(2);
      expect(run(other, revoke(5)).changes?.map((change) => change.key)).toEqual(['w', 'x']);
      expect(leaseIndex(other)).toEqual({ 2: { keys: ['y'], count: 1 } });
    }
  });
});

describe('lease bounds (memory machine)', () => {
  it('refuses a key past LEASE_KEYS_MAX; a key already on the lease may be written again', () => {
    const machine = new MemoryKvStateMachine();
    run(machine, grant(1));
    run(machine, grant(2));
    for (let start = 0; start < LEASE_KEYS_MAX; start += TXN_OPS_MAX) {
      const count = Math.min(TXN_OPS_MAX, LEASE_KEYS_MAX - start);
      const ops = Array.from({ length: count }, (_, i) => ({
        Set: { key: `k${start + i}`, value: 'v', lease_id: 1 },
      }));
      expect(run(machine, txn(ops)).succeeded).toBe(true);
    }
    expect(machine.lease(1)?.keyCount).toBe(LEASE_KEYS_MAX);
    expect(run(machine, set('one-more', 'v', 1))).toMatchObject({
      succeeded: false,
      leaseRefusal: { kind: 'too_many_keys', leaseId: 1 },
    });
    expect(machine.get('one-more')).toBeUndefined();
    expect(run(machine, set('k0', 'again', 1)).succeeded).toBe(true);
    // Undone in reverse: k1 goes back to the full lease 1 only after k-new left it again.
    const outcome = run(
      machine,
      txn([
        { Set: { key: 'k1', value: 'moved', lease_id: 2 } },
        { Set: { key: 'k-new', value: 'v', lease_id: 1 } },
        { Set: { key: 'k-bad', value: 'v', lease_id: 3 } },
      ]),
    );
    expect(outcome.leaseRefusal?.kind).toBe('not_found');
    expect(machine.lease(1)?.keyCount).toBe(LEASE_KEYS_MAX);
    expect(machine.get('k1')?.leaseId).toBe(1);
    expect(machine.get('k-new')).toBeUndefined();
    expect(machine.leaseKeys(2, null, 10)).toEqual([]);
  });

  it('refuses a grant past LEASES_MAX, named or chosen', () => {
    const machine = new MemoryKvStateMachine();
    for (let lease = 0; lease < LEASES_MAX; lease += 1) run(machine, grant(0));
    expect(machine.leaseCount).toBe(LEASES_MAX);
    expect(run(machine, grant(0))).toMatchObject({ leaseRefusal: { kind: 'too_many_leases', leaseId: 0 } });
    expect(run(machine, grant(LEASES_MAX * 10))).toMatchObject({
      leaseRefusal: { kind: 'too_many_leases', leaseId: LEASES_MAX * 10 },
    });
    expect(run(machine, grant(1))).toMatchObject({ leaseRefusal: { kind: 'exists', leaseId: 1 } });
    run(machine, revoke(1));
    expect(run(machine, grant(0)).lease?.id).toBe(LEASES_MAX + 5); // its own index: free
  });
});

describe('leases with client sessions', () => {
  it('answer a retried grant or revoke with the first outcome, without changes', () => {
    const machine = new MemoryKvStateMachine();
    const session = (sequence: number) => ({ clientId: 'c', sequence });
    const granted = machine.apply(1, grant(0), session(1), 0, 1);
    expect(machine.apply(2, grant(0), session(1), 0, 1)).toEqual({ ...granted, duplicate: true });
    machine.apply(3, set('k', 'v', 1), session(2), 0, 1);
    const revoked = machine.apply(4, revoke(1), session(3), 0, 1);
    expect(revoked.changes).toHaveLength(1);
    const retry = machine.apply(5, revoke(1), session(3), 0, 1);
    expect(retry).toEqual({
      index: 4,
      deleted: [],
      succeeded: true,
      revoked: { id: 1, keys: 1 },
      duplicate: true,
    });
    const restored = new MemoryKvStateMachine();
    restored.restore(machine.snapshot(), 5, MEMBERS);
    expect(restored.apply(6, revoke(1), session(3), 0, 1)).toEqual({ ...retry });
  });
});

describe('LMDB leases across a reopen', () => {
  it('keeps leases, key index and count', async () => {
    const directory = lmdb.directory();
    const memory = new MemoryKvStateMachine();
    let disk = lmdb.machine(directory);
    const both = (command: LogCommand): void => {
      expect(run(disk, command)).toEqual(run(memory, command));
    };
    both(grant(0));
    both(grant(8));
    both(set('a', '1', 8));
    both(set('b', '2', 1));
    await lmdb.closeLast();
    disk = lmdb.machine(directory);
    expect(disk.leaseCount).toBe(2);
    expect(leaseIndex(disk)).toEqual(leaseIndex(memory));
    both(revoke(8));
    both(grant(0));
    expect(hex(disk.snapshot())).toBe(hex(memory.snapshot()));
  });
});

describe('lease refusals as API errors', () => {
  it('map each refusal to its code, definite', () => {
    const codes = (['not_found', 'exists', 'too_many_leases', 'too_many_keys', 'stale_expiry'] as const).map(
      (kind) => {
        const error = leaseRefusalError({ kind, leaseId: 7 });
        return [kind, error.code, error.definite];
      },
    );
    expect(codes).toEqual([
      ['not_found', 'LEASE_NOT_FOUND', true],
      ['exists', 'LEASE_EXISTS', true],
      ['too_many_leases', 'TOO_MANY_LEASES', true],
      ['too_many_keys', 'TOO_MANY_LEASE_KEYS', true],
      ['stale_expiry', 'NOT_LEADER', true],
    ]);
    expect(leaseRefusalError({ kind: 'not_found', leaseId: 7 }).message).toBe(
      'lease 7 not found (expired or revoked?)',
    );
  });

  it('show a record lease id in KeyValue', () => {
    const record = { value: 'v', createIndex: 1, modIndex: 2, version: 2, leaseId: 9 };
    expect(keyValue('k', record).lease_id).toBe(9);
  });
});

describe('leaseKeysPage: one lease info answer', () => {
  const long = (tag: string): string => tag.padEnd(KEY_BYTES_MAX, 'x');

  it('holds every candidate that fits, and says whether any was left out', () => {
    expect(leaseKeysPage([], 3, KEY_BYTES_MAX)).toEqual({ keys: [], truncated: false });
    expect(leaseKeysPage(['a', 'b'], 2, KEY_BYTES_MAX)).toEqual({ keys: ['a', 'b'], truncated: false });
    expect(leaseKeysPage(['a', 'b', 'c'], 2, KEY_BYTES_MAX)).toEqual({ keys: ['a', 'b'], truncated: true });
  });

  it('stops before the key that would pass the byte bound, counting UTF-8 bytes; one key always fits', () => {
    const keys = [long('a'), long('b'), long('c')];
    expect(leaseKeysPage(keys, 10, 2 * KEY_BYTES_MAX)).toEqual({ keys: keys.slice(0, 2), truncated: true });
    expect(leaseKeysPage(keys, 10, 3 * KEY_BYTES_MAX - 1)).toEqual({
      keys: keys.slice(0, 2),
      truncated: true,
    });
    expect(leaseKeysPage([long('a')], 1, KEY_BYTES_MAX)).toEqual({ keys: [long('a')], truncated: false });
    const wide = '\u{10000}'.repeat(KEY_BYTES_MAX / 4); // 1 KiB in 512 UTF-16 units
    expect(leaseKeysPage([wide, wide], 10, KEY_BYTES_MAX + 1)).toEqual({ keys: [wide], truncated: true });
  });

  it('with the real bounds an answer stays far below the cluster frame', () => {
    const page = leaseKeysPage(
      Array.from({ length: LEASE_KEYS_MAX }, (_, n) => long(String(n).padStart(5, '0'))),
      LEASE_INFO_KEYS_MAX,
      LEASE_INFO_KEYS_BYTES_MAX,
    );
    expect(page.truncated).toBe(true);
    expect(page.keys).toHaveLength(LEASE_INFO_KEYS_BYTES_MAX / KEY_BYTES_MAX);
    // Every character JSON-escaped (6 bytes) still fits one 5 MiB frame.
    expect(page.keys.length * KEY_BYTES_MAX * 6).toBeLessThan(FRAME_BYTES_MAX);
    expect(() => leaseKeysPage(['a'], 0, KEY_BYTES_MAX)).toThrow(AssertionError);
  });
});
