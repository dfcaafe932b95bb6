import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildHttpServer, type HttpServerOptions } from '../../src/http/server.ts';
import { NodeBackupSource } from '../../src/node/backup-source.ts';
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

/**
 * Listen on a loopback port, register the node's and the server's shutdown in `stops`, and
 * initialize the single node: its URL.
 */
export async function listenInitialized(
  app: FastifyInstance,
  parts: Pick<ReturnType<typeof realNodeParts>, 'node' | 'control'>,
  stops: (() => unknown)[],
): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  stops.push(
    () => {
      parts.node.stop();
    },
    () => {
      const closing = app.close();
      app.server.closeAllConnections();
      return closing;
    },
  );
  await parts.control.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

/**
 * A real single-node Aspen HTTP API on a loopback port (with GET /watch, GET /backup, the locks and
 * the elections, and `extra` server options), initialized: its URL.
 */
export async function realNode(
  cleanups: (() => unknown)[],
  extra: Partial<HttpServerOptions> = {},
): Promise<string> {
  const parts = realNodeParts();
  const { node, watch, control, leases } = parts;
  const app = buildHttpServer({
    controller: control,
    store: control,
    leases,
    locks: new NodeLockService({ store: control, watch, clock: systemClock }),
    elections: new NodeElectionService({ store: control, watch, clock: systemClock }),
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    watch,
    backup: new NodeBackupSource({ node, store: control }),
    ...extra,
  });
  return listenInitialized(app, parts, cleanups);
}
