import type { AddressInfo } from 'node:net';
import { KvClient } from '../../src/client/index.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { WatchHub } from '../../src/node/watch-hub.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';

/** A real single-node Aspen HTTP API on a loopback port (with GET /watch), initialized. */
export async function realNode(cleanups: (() => Promise<void> | void)[]): Promise<string> {
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
  const app = buildHttpServer({
    controller: control,
    store: control,
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
