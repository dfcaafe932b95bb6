import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { WalLogStore, type LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';

/**
 * A started single-node RaftNode on `storage` (fast elections, a snapshot every 25 entries unless
 * told). Free of vitest: the crash test's child process (crash-child.ts) starts its node here too.
 */
export function startLmdbNode(
  storage: LmdbStorage,
  logStore = new WalLogStore(storage),
  options: {
    readonly seed?: number;
    readonly snapshotThresholdEntries?: number;
    /** Snapshots as bytes in LMDB (the path of received snapshots) instead of files. */
    readonly snapshotBytes?: boolean;
    /** RaftNodeOptions.quotaBytes (absent: no quota). */
    readonly quotaBytes?: number;
  } = {},
): RaftNode {
  const { persisted, snapshot } = logStore.load();
  const stateMachine = new LmdbKvStateMachine(storage);
  const node = new RaftNode({
    config: { ...defaultRaftConfig(1), electionTicksMin: 3, electionTicksMax: 4 },
    prng: new SeededPrng(options.seed ?? 1),
    persisted,
    snapshot,
    logStore,
    stateMachine,
    transport: { send: () => undefined },
    clock: systemClock,
    tickMs: 5,
    snapshotThresholdEntries: options.snapshotThresholdEntries ?? 25,
    ...(options.quotaBytes === undefined ? {} : { quotaBytes: options.quotaBytes }),
    ...(options.snapshotBytes === true
      ? {}
      : {
          snapshotFiles: storage.snapshotFileSource(() => {
            stateMachine.reload();
          }),
        }),
  });
  node.start();
  return node;
}

/** Until `node` leads (bounded: 400 polls of 5 ms). */
export async function untilLeader(node: RaftNode): Promise<void> {
  for (let attempt = 0; attempt < 400 && node.status().role !== 'leader'; attempt += 1)
    await new Promise((resolve) => setTimeout(resolve, 5));
  const role = node.status().role;
  if (role !== 'leader') throw new Error(`the node is ${role} after 2 s, not leader`);
}
