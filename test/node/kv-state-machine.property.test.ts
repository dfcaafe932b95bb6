import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { Compare, LeaseCommand, LogCommand, TxnOp, WriteCommand } from '../../src/api/types.ts';
import {
  encodeSnapshot,
  MemoryKvStateMachine,
  type ApplyOutcome,
  type KvChange,
  type KvRecord,
  type LeaseRecord,
  type LeaseRefusal,
  type StateMachine,
  type TxnOpOutcome,
} from '../../src/node/kv-state-machine.ts';
import { SESSION_IDLE_MS, SESSION_RESULTS_MAX, SESSIONS_MAX } from '../../src/node/sessions.ts';
import { LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { TEST_TERM } from '../support/apply.ts';

/**
 * Random command sequences over a small key space: a plain reference model (a Map, written here
 * from the contract, sharing no code with applyCommand) and both state machines must give the same
 * outcomes and the same records, also after snapshot() and restore() into another machine midway.
 */

const KEYS = ['a', 'ab', 'b', 'ba', 'c', '\uffff', '\u{10000}'] as const;
const VALUES = ['', 'x', 'y', 'xy', '\uffff', '\u{10000}'] as const;
const PREFIXES = ['', 'a', 'b', 'c', 'z', '\uffff', '\u{10000}'] as const;
const RUNS = 150;
const COMMANDS_MAX = 40;
const ALL = 1_000;

// ---------- the reference model ----------

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');

class Model {
  readonly map = new Map<string, KvRecord>();
  /** Leases by id (their keys are the records carrying their id). */
  readonly leases = new Map<number, { ttlSeconds: number; grantedIndex: number }>();

  apply(index: number, command: LogCommand, term = 0): ApplyOutcome {
    const changes: KvChange[] = [];
    const outcome = this.applyWithoutChanges(index, command, term, (change) => changes.push(change));
    return changes.length === 0 || outcome.leaseRefusal !== undefined ? outcome : { ...outcome, changes };
  }

  /** Every lease with its key count, by id; and the keys of each, in UTF-8 order. */
  leaseState(): { leases: [number, LeaseRecord][]; keys: Record<number, string[]> } {
    const keys: Record<number, string[]> = {};
    for (const id of this.leases.keys()) keys[id] = [];
    for (const [key, record] of this.entries()) if (record.leaseId !== 0) keys[record.leaseId]?.push(key);
    const leases = [...this.leases.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([id, lease]): [number, LeaseRecord] => [id, { ...lease, keyCount: keys[id]?.length ?? 0 }]);
    return { leases, keys };
  }

  private applyLease(
    index: number,
    command: LeaseCommand,
    term: number,
    remove: (key: string) => boolean,
  ): ApplyOutcome {
    const refuse = (kind: LeaseRefusal['kind'], leaseId: number): ApplyOutcome => ({
      index,
      deleted: [],
      succeeded: false,
      leaseRefusal: { kind, leaseId },
    });
    if ('LeaseGrant' in command) {
      const { lease_id: wanted, ttl_seconds: ttlSeconds } = command.LeaseGrant;
      if (this.leases.has(wanted)) return refuse('exists', wanted);
      let id = wanted;
      if (id === 0) for (id = index; this.leases.has(id); id += 1);
      this.leases.set(id, { ttlSeconds, grantedIndex: index });
      return { index, deleted: [], succeeded: true, lease: { id, ttlSeconds } };
    }
    const { lease_id: id, expired_in_term: expiredIn } = command.LeaseRevoke;
    if (expiredIn !== undefined && expiredIn !== term) return refuse('stale_expiry', id);
    if (!this.leases.has(id)) return refuse('not_found', id);
    const keys = this.entries().filter(([, record]) => record.leaseId === id);
    for (const [key] of keys) remove(key);
    this.leases.delete(id);
    return { index, deleted: [], succeeded: true, revoked: { id, keys: keys.length } };
  }

  private applyWithoutChanges(
    index: number,
    command: LogCommand,
    term: number,
    changed: (change: KvChange) => void,
  ): ApplyOutcome {
    const put = (key: string, value: string, leaseId = 0): void => {
      const old = this.map.get(key);
      const record = {
        value,
        createIndex: old ? old.createIndex : index,
        modIndex: index,
        version: old ? old.version + 1 : 1,
        leaseId,
      };
      this.map.set(key, record);
      changed({ key, record, prev: old ?? null });
    };
    const remove = (key: string): boolean => {
      const old = this.map.get(key);
      if (old !== undefined) changed({ key, record: null, prev: old });
      return this.map.delete(key);
    };
    if ('LeaseGrant' in command || 'LeaseRevoke' in command)
      return this.applyLease(index, command, term, remove);
    if ('Set' in command) {
      const { key, value, lease_id: leaseId = 0 } = command.Set;
      if (leaseId !== 0 && !this.leases.has(leaseId))
        return { index, deleted: [], succeeded: false, leaseRefusal: { kind: 'not_found', leaseId } };
      put(key, value, leaseId);
    }
    if ('SetMulti' in command) for (const [key, value] of command.SetMulti.pairs) put(key, value);
    if ('Delete' in command) return { index, deleted: [remove(command.Delete.key)], succeeded: true };
    if ('DeleteMulti' in command) {
      return { index, deleted: command.DeleteMulti.keys.map(remove), succeeded: true };
    }
    if ('CompareAndSwap' in command) {
      const { key, expected, new_value } = command.CompareAndSwap;
      const current = this.map.get(key) ?? null;
      const ok = expected === null ? current === null : current !== null && current.value === expected;
      if (!ok) return { index, deleted: [], succeeded: false, current };
      put(key, new_value);
    }
    if ('CompareAndDelete' in command) {
      const { key, expected } = command.CompareAndDelete;
      const current = this.map.get(key) ?? null;
      if (current === null || current.value !== expected)
        return { index, deleted: [], succeeded: false, current };
      remove(key);
      return { index, deleted: [true], succeeded: true };
    }
    if ('Transaction' in command) {
      const { compare, success, failure } = command.Transaction;
      const succeeded = compare.every((item) => this.holds(item));
      const before = new Map(this.map);
      const results: TxnOpOutcome[] = [];
      for (const op of succeeded ? success : failure) {
        if ('Set' in op) {
          const { key, value, lease_id: leaseId = 0 } = op.Set;
          if (leaseId !== 0 && !this.leases.has(leaseId)) {
            this.map.clear();
            for (const [name, record] of before) this.map.set(name, record);
            return { index, deleted: [], succeeded, leaseRefusal: { kind: 'not_found', leaseId } };
          }
          put(key, value, leaseId);
          results.push({ kind: 'set', key });
        } else if ('Delete' in op) {
          results.push({ kind: 'delete', key: op.Delete.key, deleted: remove(op.Delete.key) });
        } else if ('Get' in op) {
          results.push({ kind: 'get', key: op.Get.key, record: this.map.get(op.Get.key) ?? null });
        } else {
          const all = this.entries().filter(([key]) => key.startsWith(op.Scan.prefix));
          const limit = Math.min(op.Scan.limit ?? 1_000, 1_000);
          results.push({ kind: 'scan', records: all.slice(0, limit), more: all.length > limit });
        }
      }
      return { index, deleted: [], succeeded, results };
    }
    return { index, deleted: [], succeeded: true };
  }

  private holds(item: Compare): boolean {
    const record = this.map.get(item.key);
    let actual: number;
    let wanted: number;
    if (item.target === 'value') {
      if (record === undefined) return false;
      actual = Buffer.compare(bytes(record.value), bytes(item.value as string));
      wanted = 0;
    } else {
      const fields = {
        version: 'version',
        create_index: 'createIndex',
        mod_index: 'modIndex',
        lease_id: 'leaseId',
      };
      actual = record === undefined ? 0 : (record[fields[item.target] as keyof KvRecord] as number);
      wanted = item.value as number;
    }
    if (item.op === 'equal') return actual === wanted;
    if (item.op === 'not_equal') return actual !== wanted;
    if (item.op === 'greater') return actual > wanted;
    return actual < wanted;
  }

  entries(): [string, KvRecord][] {
    return [...this.map.entries()].sort((x, y) => Buffer.compare(bytes(x[0]), bytes(y[0])));
  }
}

// ---------- generators ----------

const key = fc.constantFrom(...KEYS);
const value = fc.constantFrom(...VALUES);

const compare: fc.Arbitrary<Compare> = fc.oneof(
  fc.record({
    key,
    target: fc.constant('value' as const),
    op: fc.constantFrom('equal', 'not_equal', 'greater', 'less' as const),
    value,
  }),
  fc.record({
    key,
    target: fc.constantFrom('version', 'create_index', 'mod_index', 'lease_id' as const),
    op: fc.constantFrom('equal', 'not_equal', 'greater', 'less' as const),
    value: fc.integer({ min: 0, max: 12 }),
  }),
);

/** Lease ids the commands name: a few, so that they often exist and often do not. */
const leaseId = fc.integer({ min: 1, max: 5 });
const setBody = fc.record({ key, value, lease_id: leaseId }, { requiredKeys: ['key', 'value'] });

const txnOp: fc.Arbitrary<TxnOp> = fc.oneof(
  fc.record({ Set: setBody }),
  fc.record({ Delete: fc.record({ key }) }),
  fc.record({ Get: fc.record({ key }) }),
  fc.record({
    Scan: fc.record(
      { prefix: fc.constantFrom(...PREFIXES), limit: fc.integer({ min: 1, max: 4 }) },
      {
        requiredKeys: ['prefix'],
      },
    ),
  }),
);

/** A branch as validation lets it through: no key written twice. */
const branch = fc.array(txnOp, { maxLength: 6 }).map((ops) => {
  const written = new Set<string>();
  return ops.filter((op) => {
    if ('Get' in op || 'Scan' in op) return true;
    const target = 'Set' in op ? op.Set.key : op.Delete.key;
    if (written.has(target)) return false;
    written.add(target);
    return true;
  });
});

const leaseCommand: fc.Arbitrary<LeaseCommand> = fc.oneof(
  fc.record({
    LeaseGrant: fc.record({
      lease_id: fc.oneof(fc.constant(0), leaseId),
      ttl_seconds: fc.integer({ min: 1, max: 3 }),
    }),
  }),
  fc.record({
    LeaseRevoke: fc.record(
      { lease_id: leaseId, expired_in_term: fc.constantFrom(1, 2) },
      { requiredKeys: ['lease_id'] },
    ),
  }),
);

const command: fc.Arbitrary<LogCommand> = fc.oneof(
  leaseCommand,
  fc.record({ Set: setBody }),
  fc.record({
    SetMulti: fc.record({ pairs: fc.array(fc.tuple(key, value), { minLength: 1, maxLength: 4 }) }),
  }),
  fc.record({ Delete: fc.record({ key }) }),
  fc.record({ DeleteMulti: fc.record({ keys: fc.array(key, { minLength: 1, maxLength: 4 }) }) }),
  fc.record({
    CompareAndSwap: fc.record({ key, expected: fc.option(value, { nil: null }), new_value: value }),
  }),
  fc.record({ CompareAndDelete: fc.record({ key, expected: value }) }),
  fc.record({
    Transaction: fc.record({
      compare: fc.array(compare, { maxLength: 3 }),
      success: branch,
      failure: branch,
    }),
  }),
);

// ---------- the machines ----------

const directories: string[] = [];
const storages: LmdbStorage[] = [];
afterAll(async () => {
  for (const storage of storages) await storage.close();
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

/** One LMDB machine per role for the whole run, emptied before each case (restore of an empty snapshot). */
function lmdbMachine(): LmdbKvStateMachine {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-sm-prop-'));
  directories.push(directory);
  const storage = LmdbStorage.open(directory);
  storages.push(storage);
  return new LmdbKvStateMachine(storage);
}

const NO_MEMBERS = { voters: [1], votersOutgoing: [], learners: [] };
const EMPTY = encodeSnapshot(0, []);

/** Records, leases and each lease's keys (the set of records carrying its id) equal the model's. */
function expectSameState(model: Model, machines: readonly StateMachine[]): void {
  const expected = model.entries();
  const { leases, keys } = model.leaseState();
  for (const machine of machines) {
    expect(machine.scan('', null, ALL)).toEqual({ records: expected, more: false });
    for (const name of KEYS) expect(machine.get(name)).toEqual(model.map.get(name));
    expect(machine.leases(0, ALL)).toEqual(leases);
    expect(machine.leaseCount).toBe(leases.length);
    for (const [id] of leases) expect(machine.leaseKeys(id, null, ALL)).toEqual(keys[id]);
  }
}

describe('state machines against a reference model', () => {
  const lmdb = lmdbMachine();
  const lmdbRestored = lmdbMachine();

  it('give the same outcomes and records for random commands, across a snapshot and restore', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(command, fc.constantFrom(1, 2)), { maxLength: COMMANDS_MAX }),
        fc.nat({ max: COMMANDS_MAX }),
        (commands, restoreAt) => {
          const model = new Model();
          lmdb.restore(EMPTY, 0, NO_MEMBERS);
          lmdbRestored.restore(EMPTY, 0, NO_MEMBERS);
          let machines: StateMachine[] = [new MemoryKvStateMachine(), lmdb];
          commands.forEach(([item, term], offset) => {
            const index = offset + 1;
            if (offset === restoreAt) machines = restoreEach(machines, offset);
            const expected = model.apply(index, item, term);
            for (const machine of machines)
              expect(machine.apply(index, item, null, 0, term)).toEqual(expected);
            expectSameState(model, machines);
          });
          const [first, second] = machines;
          expect(first?.snapshot()).toEqual(second?.snapshot());
        },
      ),
      { numRuns: RUNS },
    );

    /** Snapshot each machine and restore it into the other kind (memory ← LMDB's bytes, LMDB ← memory's). */
    function restoreEach(machines: StateMachine[], index: number): StateMachine[] {
      const [memory, disk] = machines.map((machine) => machine.snapshot());
      if (memory === undefined || disk === undefined) throw new Error('two machines');
      expect(memory).toEqual(disk);
      const freshMemory = new MemoryKvStateMachine();
      freshMemory.restore(disk, index, NO_MEMBERS);
      lmdbRestored.restore(memory, index, NO_MEMBERS);
      return [freshMemory, lmdbRestored];
    }
  });
});

// ---------- sessions: retries are answered from the table ----------

const CLIENTS = ['c1', 'c2', 'c3'] as const;
/**
 * A step: a fresh command for a client, or a retry of one of its recent sequences (by distance
 * back); a retry that `reuses` the sequence sends the step's own command instead of the first one.
 */
const sessionStep = fc.record({
  command,
  client: fc.constantFrom(...CLIENTS),
  retryBack: fc.option(fc.nat({ max: SESSION_RESULTS_MAX - 1 }), { freq: 3 }),
  reuses: fc.boolean(),
  elapsedMs: fc.nat({ max: 1_000 }),
});

/** The variant name of a command (written here from the contract). */
const variant = (item: LogCommand): string => Object.keys(item)[0] ?? '';

describe('state machines with client sessions', () => {
  const lmdb = lmdbMachine();
  const lmdbRestored = lmdbMachine();

  it('apply a sequence once: a retry changes no record and answers the first outcome (or refuses another kind)', () => {
    fc.assert(
      fc.property(
        fc.array(sessionStep, { maxLength: COMMANDS_MAX }),
        fc.nat({ max: COMMANDS_MAX }),
        (steps, restoreAt) => {
          const model = new Model();
          lmdb.restore(EMPTY, 0, NO_MEMBERS);
          lmdbRestored.restore(EMPTY, 0, NO_MEMBERS);
          let machines: StateMachine[] = [new MemoryKvStateMachine(), lmdb];
          const sent = new Map<string, { command: LogCommand; outcome: ApplyOutcome }[]>();
          let nowMs = 0;
          steps.forEach((step, offset) => {
            const index = offset + 1;
            nowMs += step.elapsedMs;
            if (offset === restoreAt) machines = restoreBetween(machines, offset, lmdbRestored);
            const history = sent.get(step.client) ?? [];
            const retried =
              step.retryBack === null ? undefined : history[history.length - 1 - step.retryBack];
            if (retried !== undefined) {
              const sequence = history.indexOf(retried) + 1;
              const before = model.entries();
              const stored = { ...retried.outcome };
              delete stored.changes; // a retry changes nothing
              const sentNow = step.reuses ? step.command : retried.command;
              // The same kind of call is answered as the first time; another kind is refused.
              const kind = variant(retried.command);
              const answer =
                variant(sentNow) === kind
                  ? { ...stored, duplicate: true }
                  : {
                      index,
                      deleted: [],
                      succeeded: false,
                      sessionReused: { clientId: step.client, sequence, kind },
                    };
              for (const machine of machines) {
                const session = { clientId: step.client, sequence };
                expect(machine.apply(index, sentNow, session, nowMs, TEST_TERM)).toEqual(answer);
              }
              expect(model.entries()).toEqual(before);
            } else {
              const expected = model.apply(index, step.command, TEST_TERM);
              const session = { clientId: step.client, sequence: history.length + 1 };
              for (const machine of machines)
                expect(machine.apply(index, step.command, session, nowMs, TEST_TERM)).toEqual(expected);
              history.push({ command: step.command, outcome: expected });
              sent.set(step.client, history);
            }
            expectSameState(model, machines);
          });
          const [first, second] = machines;
          expect(first?.snapshot()).toEqual(second?.snapshot());
        },
      ),
      { numRuns: RUNS },
    );
  });
});

function restoreBetween(
  machines: StateMachine[],
  index: number,
  lmdbRestored: LmdbKvStateMachine,
): StateMachine[] {
  const [memory, disk] = machines.map((machine) => machine.snapshot());
  if (memory === undefined || disk === undefined) throw new Error('two machines');
  expect(memory).toEqual(disk);
  const freshMemory = new MemoryKvStateMachine();
  freshMemory.restore(disk, index, NO_MEMBERS);
  lmdbRestored.restore(memory, index, NO_MEMBERS);
  return [freshMemory, lmdbRestored];
}

describe('state machines with a full session table', () => {
  it('evict and expire the same clients and stay byte-identical, also across a reopen of LMDB', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'aspen-sm-sessions-'));
    directories.push(directory);
    let storage = LmdbStorage.open(directory);
    const memory = new MemoryKvStateMachine();
    let lmdb = new LmdbKvStateMachine(storage);
    let index = 0;
    const both = (clientId: string, sequence: number, atMs: number): ApplyOutcome => {
      index += 1;
      const command: WriteCommand = { Set: { key: `k${index % 5}`, value: clientId } };
      const expected = memory.apply(index, command, { clientId, sequence }, atMs, TEST_TERM);
      expect(lmdb.apply(index, command, { clientId, sequence }, atMs, TEST_TERM)).toEqual(expected);
      return expected;
    };
    lmdb.batch(() => {
      for (let client = 0; client < SESSIONS_MAX + 10; client += 1) both(`c${client}`, 1, client);
    });
    // c0..c9 were evicted (least recently used): forgotten, a later sequence cannot be answered.
    expect(both('c0', 2, 0)).toMatchObject({ sessionExpired: true });
    expect(both('c20', 1, 0)).toMatchObject({ duplicate: true });
    expect(both('c21', 2, 0)).toMatchObject({ succeeded: true });
    expect(memory.snapshot()).toEqual(lmdb.snapshot());
    await storage.close();
    storage = LmdbStorage.open(directory);
    lmdb = new LmdbKvStateMachine(storage);
    const idle = SESSION_IDLE_MS + SESSIONS_MAX + 100;
    for (let round = 0; round < 3; round += 1) both('late', round + 1, idle);
    expect(both('c30', 1, idle)).toMatchObject({ duplicate: true }); // not yet swept: expiry is lazy and bounded
    expect(memory.snapshot()).toEqual(lmdb.snapshot());
    await storage.close();
  });
});

// ---------- a lease's keys: the same order in both machines ----------

/**
 * Code points where lmdb's default key encoding departs from UTF-8 (U+0000–U+0004 are escaped in
 * strings under 64 UTF-16 units, written raw in longer ones; U+001B/U+001C border the escape byte),
 * the edges of UTF-16 order against UTF-8 order (U+FFFF, astral), and any code point.
 */
const awkwardUnit = fc.oneof(
  fc.constantFrom('\u0000', '\u0001', '\u0004', '\u0005', '\u001b', '\u001c', 'a', '\uffff', '\u{10000}'),
  fc.constantFrom('\u{10ffff}', '\ud7ff', '\ue000'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
);
/** Short keys and keys past 64 UTF-16 units (lmdb encodes those differently); at most 1 KiB of UTF-8. */
const awkwardKey = fc.oneof(
  fc.string({ unit: awkwardUnit, minLength: 1, maxLength: 6 }),
  fc.string({ unit: awkwardUnit, minLength: 60, maxLength: 80 }),
);
const utf8Order = (a: string, b: string): number => Buffer.compare(bytes(a), bytes(b));

describe("a lease's keys in both machines", () => {
  const lmdb = lmdbMachine();

  it('list (in pages after any key) and revoke in UTF-8 byte order, for any Unicode keys', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(awkwardKey, { minLength: 1, maxLength: 12 }),
        awkwardKey,
        fc.integer({ min: 1, max: 5 }),
        (keys, after, limit) => {
          lmdb.restore(EMPTY, 0, NO_MEMBERS);
          const machines: StateMachine[] = [new MemoryKvStateMachine(), lmdb];
          const commands: LogCommand[] = [
            { LeaseGrant: { lease_id: 1, ttl_seconds: 10 } },
            ...keys.map((key): LogCommand => ({ Set: { key, value: 'v', lease_id: 1 } })),
          ];
          const sorted = [...keys].sort(utf8Order);
          for (const machine of machines) {
            commands.forEach((item, offset) => machine.apply(offset + 1, item, null, 0, TEST_TERM));
            expect(machine.leaseKeys(1, null, ALL)).toEqual(sorted);
            for (const from of [after, ...keys]) {
              const page = sorted.filter((key) => utf8Order(key, from) > 0).slice(0, limit);
              expect(machine.leaseKeys(1, from, limit)).toEqual(page);
            }
          }
          const revoked = machines.map((machine) =>
            machine.apply(commands.length + 1, { LeaseRevoke: { lease_id: 1 } }, null, 0, TEST_TERM),
          );
          for (const outcome of revoked) expect(outcome.changes?.map((change) => change.key)).toEqual(sorted);
          expect(revoked[0]).toEqual(revoked[1]);
          for (const machine of machines) expect(machine.scan('', null, ALL).records).toEqual([]);
        },
      ),
      { numRuns: RUNS },
    );
  });
});
