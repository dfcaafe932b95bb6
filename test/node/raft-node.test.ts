import { describe, expect, it } from 'vitest';
import type { LogStore, PersistBatch } from '../../src/node/interfaces.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode, type Outcome, type WriteApplied } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { EMPTY_HARD_STATE } from '../../src/raft/types.ts';

/** A log store whose syncs complete only when the test says so (or at once while `automatic`). */
class ManualLogStore implements LogStore {
  automatic = true;
  readonly waiting: { batch: PersistBatch; done: (error: Error | null) => void }[] = [];

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    if (this.automatic)
      setImmediate(() => {
        done(null);
      });
    else this.waiting.push({ batch, done });
  }

  release(): void {
    const next = this.waiting.shift();
    expect(next).toBeDefined();
    next?.done(null);
  }
}

async function until(check: () => boolean): Promise<void> {
  for (let attempt = 0; attempt < 500 && !check(); attempt += 1)
    await new Promise((resolve) => setTimeout(resolve, 2));
  expect(check()).toBe(true);
}

describe('RaftNode Ready cycle', () => {
  it('a leader answers committed writes while the next batch is still syncing', async () => {
    const store = new ManualLogStore();
    const node = new RaftNode({
      config: { ...defaultRaftConfig(1), electionTicksMin: 3, electionTicksMax: 4 },
      prng: new SeededPrng(1),
      persisted: { hardState: EMPTY_HARD_STATE, snapshot: null, entries: [] },
      logStore: store,
      stateMachine: new MemoryKvStateMachine(),
      transport: { send: () => undefined },
      clock: systemClock,
      tickMs: 5,
    });
    node.start();
    await new Promise((resolve) => {
      node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
    });
    await until(
      () => node.status().role === 'leader' && node.status().commitIndex === node.status().lastIndex,
    );
    store.automatic = false;
    const answers: string[] = [];
    const write = (key: string) =>
      new Promise<Outcome<WriteApplied>>((resolve) => {
        node.write({ Set: { key, value: 'v' } }, (outcome) => {
          answers.push(key);
          resolve(outcome);
        });
      });
    const first = write('a');
    await until(() => store.waiting.length === 1); // a's batch is syncing
    const second = write('b'); // waits in the mailbox, joins the next batch
    store.release(); // a is durable: committed (one voter), then applied beside b's sync
    await until(() => store.waiting.length === 1 && store.waiting[0]?.batch.entries.length === 1);
    expect(answers).toEqual(['a']); // answered while b's sync is still in flight
    expect((await first).ok).toBe(true);
    store.release();
    store.automatic = true;
    await until(() => answers.length === 2);
    expect((await second).ok).toBe(true);
    node.stop();
  });
});
