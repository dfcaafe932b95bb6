import type { AddressInfo } from 'node:net';
import { KvClient } from '../../src/client/index.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { RaftLeaseClient } from '../../src/node/lease-client.ts';
import { NodeElectionService } from '../../src/node/election-service.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { NodeLockService } from '../../src/node/lock-service.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { WatchHub } from '../../src/node/watch-hub.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';

/** A started single node (not yet initialized) on memory stores, with its watch hub, control and lease clients. */
export function realNodeParts() {
  const logStore = new MemoryLogStore();
  const stateMachine = new MemoryKvStateMachine();
  const watch = new WatchHub({ clock: systemClock, appliedIndex: stateMachine.appliedIndex });
  const node = new RaftNode({
    config: { ...defaultRaftConfig(1), electionTicksMin: 3, electionTicksMax: 4 },
    prng: new SeededPrng(1),
    persisted: logStore.load().persisted,
    logStore,
    stateMachine,
    applyListener: watch,
    transport: { send: () => undefined },
    clock: systemClock,
    tickMs: 5,
  });
  node.start();
  const control = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
  return { node, watch, control, leases: new RaftLeaseClient(node) };
}

/** A real single-node Aspen HTTP API on a loopback port (with GET /watch, the locks and the elections), initialized. */
export async function realNode(cleanups: (() => Promise<void> | void)[]): Promise<string> {
  const { node, watch, control, leases } = realNodeParts();
  const app = buildHttpServer({
    controller: control,
    store: control,
    leases,
    locks: new NodeLockService({ store: control, watch, clock: systemClock }),
    elections: new NodeElectionService({ store: control, watch, clock: systemClock }),
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    watch,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(
    () => app.close(),
    () => {
      node.stop();
    },
  );
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  await new KvClient({ endpoints: [url] }).init([{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }]);
  return url;
}
