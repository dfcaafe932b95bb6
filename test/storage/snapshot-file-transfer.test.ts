import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AspenError } from '../../src/api/errors.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import type { KvRecord } from '../../src/node/kv-state-machine.ts';
import type { WireMessage } from '../../src/node/interfaces.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { LmdbStorage, WalLogStore } from '../../src/storage/lmdb-store.ts';
import { untilLeader } from './lmdb-nodes.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

/** Polls of 5 ms a test waits at most for one condition. */
const POLLS_MAX = 2_000;
const WRITES = 300;

interface Member {
  readonly node: RaftNode;
  readonly storage: LmdbStorage;
}

/**
 * Messages between in-process nodes, each delivered on a later turn: a snapshot chunk is lost,
 * duplicated, corrupted or held back and delivered after later ones as a seeded PRNG decides.
 */
class LossyNetwork {
  private readonly prng: SeededPrng;
  /** Every chunk arrives this late, none lost (0: the seeded faults instead). */
  private readonly chunkDelayMs: number;
  readonly nodes = new Map<number, RaftNode>();
  /** Messages sent to a node and not delivered yet (what the sender sees as its backlog). */
  readonly pending = new Map<number, number>();
  chunksSeen = 0;

  constructor(seed: number, chunkDelayMs = 0) {
    this.prng = new SeededPrng(seed);
    this.chunkDelayMs = chunkDelayMs;
  }

  send(message: WireMessage): void {
    this.pending.set(message.to, (this.pending.get(message.to) ?? 0) + 1);
    let delivered = false;
    const deliver = (): void => {
      if (!delivered) this.pending.set(message.to, (this.pending.get(message.to) ?? 1) - 1);
      delivered = true;
      this.nodes.get(message.to)?.deliver(message);
    };
    if (message.type !== 'snapshot_chunk') {
      setImmediate(deliver);
      return;
    }
    this.chunksSeen += 1;
    if (this.chunkDelayMs > 0) {
      setTimeout(deliver, this.chunkDelayMs);
      return;
    }
    const roll = this.prng.nextIntInclusive(0, 9);
    if (roll === 0) {
      this.pending.set(message.to, (this.pending.get(message.to) ?? 1) - 1);
      return; // lost
    }
    if (roll === 3) {
      // A bit flipped on the way: the CRC must refuse it (the leader sends the snapshot again).
      const data = Uint8Array.from(message.data);
      const middle = data.length >> 1; // in a page's records, not its header
      data[middle] = (data[middle] ?? 0) ^ 0x01;
      setImmediate(() => {
        this.pending.set(message.to, (this.pending.get(message.to) ?? 1) - 1);
        this.nodes.get(message.to)?.deliver({ ...message, data });
      });
      return;
    }
    if (roll === 1) setImmediate(deliver); // duplicated
    if (roll === 2)
      setTimeout(deliver, 20); // reordered behind later chunks
    else setImmediate(deliver);
  }
}

function start(id: number, network: LossyNetwork, directory: string): Member {
  const storage = LmdbStorage.open(directory);
  const logStore = new WalLogStore(storage);
  const { persisted, snapshot } = logStore.load();
  const stateMachine = new LmdbKvStateMachine(storage);
  const node = new RaftNode({
    config: { ...defaultRaftConfig(id), electionTicksMin: 10, electionTicksMax: 20 },
    prng: new SeededPrng(id),
    persisted,
    snapshot,
    logStore,
    stateMachine,
    transport: {
      send: (message) => {
        network.send(message);
      },
      backlog: (to) => network.pending.get(to) ?? 0,
    },
    clock: systemClock,
    tickMs: 5,
    snapshotThresholdEntries: 40,
    snapshotChunkBytes: 4_096, // many chunks for a small state
    snapshotFiles: storage.snapshotFileSource(() => {
      stateMachine.reload();
    }),
  });
  network.nodes.set(id, node);
  node.start();
  return { node, storage };
}

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-snapsend-'));
  directories.push(directory);
  return directory;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let poll = 0; poll < POLLS_MAX && !condition(); poll += 1)
    await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`timed out: ${what}`);
}

function records(member: Member): [string, KvRecord][] {
  return [...member.storage.kv.getRange({})].map(({ key, value }): [string, KvRecord] => [key, value]);
}

/** Node 1, leader of itself, after WRITES writes and a snapshot that compacted its log. */
async function leaderWithCompactedLog(network: LossyNetwork): Promise<Member> {
  const leader = start(1, network, dataDir());
  await new Promise((resolve) => {
    leader.node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
  });
  await untilLeader(leader.node);
  for (let index = 0; index < WRITES; index += 1) {
    const value = `v${index}-${'x'.repeat(200)}`;
    await new Promise((resolve) => {
      leader.node.write({ Set: { key: `k${index % 97}`, value } }, resolve);
    });
  }
  await until(() => (leader.node.status().snapshot?.index ?? 0) > 100, 'the leader compacts its log');
  return leader;
}

describe('snapshot files between nodes', () => {
  it('add-learner timing out while the learner receives a snapshot keeps the learner, which then catches up', async () => {
    const network = new LossyNetwork(1, 150); // a snapshot of many chunks takes far longer than the wait
    const leader = await leaderWithCompactedLog(network);
    const learner = start(2, network, dataDir());
    const control = new RaftControlClient(leader.node, { learnerCatchUpTimeoutMs: 300 });
    const refusal = await control
      .addLearner({ learner: { id: 2, addr: 'node-2', raft_addr: '127.0.0.1:26002' } })
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(refusal).toBeInstanceOf(AspenError);
    expect(refusal).toMatchObject({ code: 'TIMEOUT', definite: false });
    expect((refusal as AspenError).message).toMatch(/it stays a learner and keeps catching up/);
    expect(leader.node.status().peers.find((peer) => peer.id === 2)?.state).toBe('snapshot');
    const target = leader.node.stateMachine.appliedIndex;
    await until(() => learner.node.stateMachine.appliedIndex >= target, 'the learner catches up');
    expect(records(learner)).toEqual(records(leader));
    learner.node.stop();
    await learner.storage.close();
    leader.node.stop();
    await leader.storage.close();
  }, 60_000);

  it.each([1, 2, 3])(
    'a learner far behind gets the leader’s snapshot file through lost, duplicated, corrupted and reordered chunks (seed %i)',
    async (seed) => {
      const network = new LossyNetwork(seed);
      const leader = await leaderWithCompactedLog(network);
      const learner = start(2, network, dataDir());
      await new Promise((resolve) => {
        leader.node.changeMembership({ voters: [1], learners: [2] }, resolve);
      });
      const target = leader.node.stateMachine.appliedIndex;
      await until(() => learner.node.stateMachine.appliedIndex >= target, 'the learner catches up');
      expect(network.chunksSeen).toBeGreaterThan(3);
      expect(learner.node.status().snapshot?.index ?? 0).toBeGreaterThan(100); // installed, not replayed
      expect(learner.storage.snapshotFiles.indexes()).toEqual([learner.node.status().snapshot?.index]);
      // Installed from the second copy written while receiving: renamed, not copied again.
      expect(learner.storage.snapshotFiles.receivedCopiesInstalled).toBeGreaterThanOrEqual(1);
      expect(records(learner)).toEqual(records(leader));

      // The learner restarts as after a reboot: rebuilt from the received file and the log.
      learner.node.stop();
      await learner.storage.close();
      leader.node.stop();
      await leader.storage.close();
    },
    60_000,
  );
});
