import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { defaultRaftConfig, type RaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';

/**
 * Node 1, started on an in-memory state machine and `logStore` (a fresh one: not yet initialized,
 * init it as a cluster of one) with the system clock and no peers, and `quotaBytes` if given
 * (RaftNodeOptions.quotaBytes). The caller stops it.
 */
export function startMemoryNode(
  config: Partial<RaftConfig> = {},
  logStore = new MemoryLogStore(),
  quotaBytes?: number,
): RaftNode {
  const { persisted, snapshot } = logStore.load();
  const node = new RaftNode({
    config: { ...defaultRaftConfig(1), ...config },
    prng: new SeededPrng(1),
    persisted,
    snapshot,
    logStore,
    stateMachine: new MemoryKvStateMachine(),
    transport: { send: () => undefined },
    clock: systemClock,
    tickMs: 5,
    ...(quotaBytes === undefined ? {} : { quotaBytes }),
  });
  node.start();
  return node;
}
