import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { buildHttpServer } from '../http/server.ts';
import type { LogStore, Snapshot } from '../node/interfaces.ts';
import { RaftControlClient } from '../node/control-client.ts';
import { MemoryKvStateMachine, type StateMachine } from '../node/kv-state-machine.ts';
import { systemClock } from '../node/local-runtime.ts';
import { RaftNode } from '../node/raft-node.ts';
import { Libp2pTransport } from '../network/libp2p-transport.ts';
import { defaultRaftConfig, type RaftConfig } from '../raft/config.ts';
import { SeededPrng } from '../raft/prng.ts';
import type { PersistedState } from '../raft/types.ts';
import { LmdbKvStateMachine, LmdbLogStore, LmdbStorage } from '../storage/lmdb-store.ts';
import { MemoryLogStore } from '../storage/memory-log-store.ts';
import type { NodeConfig } from './config.ts';
import { mdnsServiceTag, startDiscovery, type Discovery } from './discovery/index.ts';
import { ForwardingStore } from './forwarding.ts';

/** Heartbeats are two ticks: the core counts time in ticks, the node knows how long one is. */
export const HEARTBEAT_TICKS = 2;
/** On shutdown a leader waits this long for a successor to take over. */
export const SHUTDOWN_TRANSFER_WAIT_MS = 1_000;

export interface RunningNode {
  readonly node: RaftNode;
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  readonly httpUrl: string;
  stop(): Promise<void>;
}

export function raftConfigFor(config: NodeConfig): { raft: RaftConfig; tickMs: number } {
  const tickMs = Math.max(1, Math.floor(config.heartbeatIntervalMs / HEARTBEAT_TICKS));
  return {
    tickMs,
    raft: {
      ...defaultRaftConfig(config.nodeId),
      heartbeatTicks: HEARTBEAT_TICKS,
      electionTicksMin: Math.ceil(config.electionTimeoutMinMs / tickMs),
      electionTicksMax: Math.ceil(config.electionTimeoutMaxMs / tickMs),
    },
  };
}

/** The node's libp2p identity: kept in <data-dir>/node.key with durable storage, fresh otherwise. */
async function loadIdentity(config: NodeConfig): Promise<PrivateKey> {
  if (config.storage === 'memory') return generateKeyPair('Ed25519');
  const path = `${config.dataDir}/node.key`;
  if (existsSync(path)) return privateKeyFromProtobuf(readFileSync(path));
  mkdirSync(config.dataDir, { recursive: true });
  const key = await generateKeyPair('Ed25519');
  writeFileSync(path, privateKeyToProtobuf(key), { mode: 0o600 });
  return key;
}

interface Stores {
  readonly logStore: LogStore;
  readonly stateMachine: StateMachine;
  readonly persisted: PersistedState;
  readonly snapshot: Snapshot | null;
  close(): Promise<void>;
}

function openStores(config: NodeConfig, log: (line: string) => void): Stores {
  if (config.storage === 'memory') {
    const logStore = new MemoryLogStore();
    return { logStore, stateMachine: new MemoryKvStateMachine(), ...logStore.load(), close: () => Promise.resolve() };
  }
  const storage = LmdbStorage.open(config.dataDir);
  if (storage.stateRebuilt) log(`storage: the last stop was not clean; rebuilding the state machine from the snapshot and the log in ${config.dataDir}`);
  const logStore = new LmdbLogStore(storage);
  return { logStore, stateMachine: new LmdbKvStateMachine(storage), ...logStore.load(), close: () => storage.close() };
}

/**
 * Start a node in the seed's order — storage, endpoint, Raft, RPC, HTTP — and return a handle
 * whose stop() shuts down in reverse (a leader first hands over to a caught-up voter).
 */
export async function startNode(config: NodeConfig, log: (line: string) => void): Promise<RunningNode> {
  const stores = openStores(config, log);
  let node: RaftNode | null = null;
  let forwarding: ForwardingStore | null = null;
  const transport = await Libp2pTransport.create({
    nodeId: config.nodeId,
    listen: [`/ip4/${config.host}/udp/${config.port}/quic-v1`, `/ip4/${config.host}/tcp/${config.port}`],
    privateKey: await loadIdentity(config),
    cookie: config.cookie,
    gossip: config.gossip,
    mdnsServiceTag: config.mdns ? mdnsServiceTag(config.cookie) : null,
    onMessage: (message) => {
      if (message.type === 'client_request') forwarding?.handleRequest(message);
      else if (message.type === 'client_response') forwarding?.handleResponse(message);
      else node?.deliver(message);
    },
    log,
  });
  transport.onPeerEvent((event) => { log(`peers: node ${event.id} ${event.kind} at ${event.address}`); });
  const httpAddress = `${config.httpHost}:${config.httpPort}`;
  const discovery = startDiscovery(config, transport, config.httpPort === 0 ? null : httpAddress, log);
  const { raft, tickMs } = raftConfigFor(config);
  const raftNode = new RaftNode({
    config: raft,
    prng: new SeededPrng(randomInt(2 ** 31)), // election jitter only; the simulator injects its own
    persisted: stores.persisted,
    snapshot: stores.snapshot,
    logStore: stores.logStore,
    stateMachine: stores.stateMachine,
    transport,
    clock: systemClock,
    tickMs,
    observer: {
      snapshotInstalled: (_id, snapshot) => {
        log(`raft: installed snapshot at index ${snapshot.meta.index} term ${snapshot.meta.term} (${snapshot.data.byteLength} bytes)`);
      },
    },
    // Members' addresses are replicated in the configuration: every node can reach every other.
    onMembership: (membership) => { discovery.directory.onMembership(membership.nodes ?? []); },
  });
  node = raftNode;
  raftNode.start();
  const client = new RaftControlClient(raftNode);
  forwarding = new ForwardingStore({ local: client, transport, nodeId: config.nodeId, clock: systemClock, knownLeader: () => raftNode.knownLeader(), log });
  const app = buildHttpServer({
    controller: client,
    store: forwarding,
    identity: { nodeId: config.nodeId, endpointId: transport.peerId, startedAtMs: Date.now(), nowMs: () => Date.now() },
    network: {
      addresses: () => transport.listenAddresses,
      addPeer: (nodeId, address) => { discovery.directory.configure(nodeId, address); },
      resolve: (nodeId) => discovery.resolve(nodeId),
      peers: () => discovery.directory.peers().map((peer) => ({
        node_id: peer.nodeId, peer_id: peer.peerId, addrs: peer.addrs, http_addr: peer.httpAddr, last_seen_ms_ago: Date.now() - peer.lastSeenMs,
      })),
      clusterTicket: () => discovery.ticket(),
    },
    httpAddress,
    log,
  });
  try {
    await app.listen({ host: config.httpHost, port: config.httpPort });
  } catch (error) {
    discovery.stop();
    raftNode.stop();
    await transport.stop();
    await stores.close();
    throw error;
  }
  const address = app.server.address();
  const httpUrl = typeof address === 'object' && address !== null ? `http://${config.httpHost}:${address.port}` : `http://${config.httpHost}:${config.httpPort}`;
  return {
    node: raftNode,
    transport,
    discovery,
    httpUrl,
    stop: async () => {
      await app.close();
      await handOverLeadership(raftNode);
      discovery.stop();
      raftNode.stop();
      await transport.stop();
      await stores.close();
    },
  };
}

/** A leader that is shutting down asks its most caught-up voter to take over, and waits a little. */
async function handOverLeadership(node: RaftNode): Promise<void> {
  const status = node.status();
  if (status.role !== 'leader' || status.membership === null) return;
  const voters = status.membership.voters.filter((id) => id !== status.id);
  const best = status.peers.filter((peer) => voters.includes(peer.id)).sort((a, b) => b.matchIndex - a.matchIndex)[0];
  if (best === undefined) return;
  node.transferLeadership(best.id, () => undefined);
  const deadline = Date.now() + SHUTDOWN_TRANSFER_WAIT_MS;
  while (node.status().role === 'leader' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
}
