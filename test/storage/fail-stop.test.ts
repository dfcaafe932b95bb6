import { describe, expect, it } from 'vitest';
import type { Clock, LogStore, PersistBatch } from '../../src/node/interfaces.ts';
import { MemoryKvStateMachine, type StateMachine } from '../../src/node/kv-state-machine.ts';
import { RaftNode, type Outcome, type WriteApplied } from '../../src/node/raft-node.ts';
import { AssertionError } from '../../src/base/assert.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { StorageError } from '../../src/storage/errors.ts';
import { ManualClock } from '../support/manual-clock.ts';
import { MemoryLogState } from '../../src/storage/memory-log-store.ts';

const TICK_MS = 5;

/** Space on the "disk" runs out when `failing` is set: the next persist reports ENOSPC. */
class FailingLogStore implements LogStore {
  readonly state = new MemoryLogState();
  failing = false;
  /** First entry index of the first batch that failed. */
  failedFrom: number | null = null;
  private readonly clock: Clock;

  constructor(clock: Clock) {
    this.clock = clock;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    if (this.failing) {
      this.failedFrom ??= batch.entries[0]?.index ?? 0;
      this.clock.setTimer(0, () => {
        done(Object.assign(new Error('no space left on device, write'), { code: 'ENOSPC' }));
      });
      return;
    }
    this.state.apply(batch);
    this.clock.setTimer(0, () => {
      done(null);
    });
  }
}

/** The memory state machine, with a batch that throws `failure` once it is set. */
function failingMachine(): { machine: StateMachine; fail: (error: Error) => void } {
  const inner = new MemoryKvStateMachine();
  let failure: Error | null = null;
  const machine = new Proxy(inner, {
    get(target, property, receiver) {
      if (property === 'batch') {
        return (run: () => void): void => {
          if (failure !== null) throw failure;
          target.batch(run);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return {
    machine,
    fail: (error) => {
      failure = error;
    },
  };
}

interface Harness {
  readonly node: RaftNode;
  readonly clock: ManualClock;
  readonly store: FailingLogStore;
  readonly fatal: StorageError[];
  readonly failMachine: (error: Error) => void;
}

/** A single-voter leader with everything committed, on a manual clock. */
function leader(withHook = true): Harness {
  const clock = new ManualClock();
  const store = new FailingLogStore(clock);
  const { machine, fail } = failingMachine();
  const fatal: StorageError[] = [];
  const node = new RaftNode({
    config: { ...defaultRaftConfig(1), electionTicksMin: 3, electionTicksMax: 4 },
    prng: new SeededPrng(1),
    persisted: store.state.load().persisted,
    logStore: store,
    stateMachine: machine,
    transport: { send: () => undefined },
    clock,
    tickMs: TICK_MS,
    ...(withHook
      ? {
          onFatal: (error: StorageError) => {
            fatal.push(error);
          },
        }
      : {}),
  });
  node.start();
  node.init({ voters: [1], votersOutgoing: [], learners: [] }, () => undefined);
  for (
    let step = 0;
    step < 100 &&
    !(node.status().role === 'leader' && node.stateMachine.appliedIndex === node.status().lastIndex);
    step += 1
  )
    clock.advance(TICK_MS);
  expect(node.status().role).toBe('leader');
  return { node, clock, store, fatal, failMachine: fail };
}

function write(node: RaftNode, key: string, outcomes: Outcome<WriteApplied>[]): void {
  node.write({ Set: { key, value: 'v' } }, (outcome) => {
    outcomes.push(outcome);
  });
}

describe('a storage failure fail-stops the node', () => {
  it('a failed persist (ENOSPC) stops the node once: the writes in it fail as indeterminate, nothing after it succeeds', () => {
    const { node, clock, store, fatal } = leader();
    const outcomes: Outcome<WriteApplied>[] = [];
    for (let index = 0; index < 5; index += 1) write(node, `before-${index}`, outcomes);
    clock.advance(TICK_MS);
    expect(outcomes.map((outcome) => outcome.ok)).toEqual([true, true, true, true, true]);
    store.failing = true;
    for (let index = 0; index < 5; index += 1) write(node, `during-${index}`, outcomes);
    clock.advance(TICK_MS);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toBeInstanceOf(StorageError);
    expect(fatal[0]?.message).toMatch(/^storage failed: no space left on device/);
    const after = outcomes.slice(5);
    expect(after).toHaveLength(5);
    for (const outcome of after)
      expect(outcome).toMatchObject({ ok: false, error: { code: 'SHUTTING_DOWN', definite: false } });
    expect(store.failedFrom).not.toBeNull();
    for (const outcome of outcomes)
      if (outcome.ok) expect(outcome.value.index).toBeLessThan(store.failedFrom ?? 0);
    // Stopped for good: new requests are refused, time passing does nothing, the hook is not called again.
    write(node, 'later', outcomes);
    expect(outcomes.at(-1)).toMatchObject({ ok: false, error: { code: 'SHUTTING_DOWN' } });
    clock.advance(100 * TICK_MS);
    expect(fatal).toHaveLength(1);
    expect(node.stateMachine.get('during-0')).toBeUndefined();
  });

  it('a state machine that cannot write (StorageError in apply) stops the node without answering the batch', () => {
    const { node, clock, fatal, failMachine } = leader();
    const outcomes: Outcome<WriteApplied>[] = [];
    write(node, 'ok', outcomes);
    clock.advance(TICK_MS);
    expect(outcomes).toMatchObject([{ ok: true }]);
    failMachine(
      new StorageError(
        'storage failed: no space left on device (ENOSPC) in /data while applying to the state machine',
      ),
    );
    for (let index = 0; index < 3; index += 1) write(node, `lost-${index}`, outcomes);
    clock.advance(TICK_MS);
    expect(fatal.map((error) => error.message)).toEqual([
      'storage failed: no space left on device (ENOSPC) in /data while applying to the state machine',
    ]);
    expect(outcomes.slice(1).map((outcome) => outcome.ok)).toEqual([false, false, false]);
    expect(outcomes.slice(1)).toMatchObject([{ error: { code: 'SHUTTING_DOWN', definite: false } }, {}, {}]);
  });

  it('a broken invariant inside apply is not a storage failure: it is thrown, loudly', () => {
    const { node, clock, fatal, failMachine } = leader();
    failMachine(new AssertionError('apply out of order'));
    write(node, 'k', []);
    expect(() => {
      clock.advance(TICK_MS);
    }).toThrow(AssertionError);
    expect(fatal).toEqual([]);
  });

  it('without a fatal hook the storage failure is thrown (nobody would stop the process otherwise)', () => {
    const { node, clock, store } = leader(false);
    store.failing = true;
    write(node, 'k', []);
    expect(() => {
      clock.advance(TICK_MS);
    }).toThrow(StorageError);
  });
});
