import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { FastifyInstance } from 'fastify';
import { buildHttpServer } from '../http/server.ts';
import type { LogStore, Snapshot } from '../node/interfaces.ts';
import { RaftControlClient } from '../node/control-client.ts';
import { MemoryKvStateMachine, type StateMachine } from '../node/kv-state-machine.ts';
import { systemClock } from '../node/local-runtime.ts';
import { RaftNode } from '../node/raft-node.ts';
import { Libp2pTransport } from '../network/libp2p-transport.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { defaultRaftConfig, type RaftConfig } from '../raft/config.ts';
import { SeededPrng } from '../raft/prng.ts';
import type { PersistedState } from '../raft/types.ts';
import { firstLine, StorageError } from '../storage/errors.ts';
import { LmdbKvStateMachine, LmdbLogStore, LmdbStorage } from '../storage/lmdb-store.ts';
import { MemoryLogStore } from '../storage/memory-log-store.ts';
import type { NodeConfig } from './config.ts';
import { mdnsServiceTag, startDiscovery, type Discovery } from './discovery/index.ts';
import { ForwardingStore } from './forwarding.ts';

/** Heartbeats are two ticks: the core counts time in ticks, the node knows how long one is. */
export const HEARTBEAT_TICKS = 2;
/** On stop, HTTP requests in flight get this long to finish before their connections are closed. */
export const HTTP_STOP_GRACE_MS = 2_000;
/** On shutdown a leader waits this long for a successor to take over. */
export const SHUTDOWN_TRANSFER_WAIT_MS = 1_000;
/** After a storage failure, the longest wait for HTTP, discovery and the endpoint to stop before the failure is reported. */
export const FATAL_STOP_WAIT_MS = 5_000;

/**
 * The components of a node in the seed's start order: metadata store (the data dir, locked), endpoint
 * (libp2p with its gossip service), cluster services (discovery), Raft core and RaftNode, RPC
 * (forwarding over the endpoint), HTTP. They stop in reverse.
 */
export const START_STEPS = ['storage', 'endpoint', 'discovery', 'raft', 'rpc', 'http'] as const;
export type StartStep = (typeof START_STEPS)[number];

/** A start refused for an operating reason (a port in use, an address not on this machine): one line. */
export class StartError extends Error {
  override readonly name = 'StartError';
}

export interface StoreParts {
  readonly logStore: LogStore;
  readonly stateMachine: StateMachine;
}

export interface StartOptions {
  /**
   * Storage failed while running: the node stopped itself (Raft, HTTP, RPC, discovery, endpoint; the
   * store let go without marking its state machine clean, so the next start rebuilds it). The owner
   * says so in one line and ends the process. Without it the failure is logged.
   */
  readonly onFatal?: (error: StorageError) => void;
  /** Test hook: called before each start step; a throw there fails that step. */
  readonly beforeStep?: (step: StartStep) => void;
  /** Test hook: wraps the log store and state machine (to inject storage failures). */
  readonly wrapStores?: (stores: StoreParts) => StoreParts;
  /** Test hook: told each component that stopped, in the order they stop. */
  readonly onStopped?: (step: StartStep) => void;
}

export interface RunningNode {
  readonly node: RaftNode;
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  readonly httpUrl: string;
  /** Shut down in reverse start order (a leader first hands over); rejects with the StorageError if storage failed. */
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

type StopMode = 'graceful' | 'unwind' | 'fatal';

interface Component {
  readonly step: StartStep;
  stop(mode: StopMode): Promise<void>;
}

interface Started<T> {
  readonly value: T;
  stop(mode: StopMode): Promise<void>;
}

/**
 * What has started, and the one way to stop it: in reverse, each component once, exactly those that
 * started. A storage failure reported by Raft (fail()) stops the node the same way, leaving the
 * store unclean on purpose.
 */
class Lifecycle {
  private readonly started: Component[] = [];
  private readonly log: (line: string) => void;
  private readonly options: StartOptions;
  private readonly nodeId: number;
  private starting = true;
  private stopping: Promise<void> | null = null;
  /** The storage failure that stopped (or is stopping) the node. */
  failure: StorageError | null = null;

  constructor(nodeId: number, log: (line: string) => void, options: StartOptions) {
    this.nodeId = nodeId;
    this.log = log;
    this.options = options;
  }

  /** Run one start step; a storage failure reported meanwhile fails the start before the next step. */
  async step<T>(step: StartStep, start: () => Promise<Started<T>> | Started<T>): Promise<T> {
    assert(this.starting && this.started.length < START_STEPS.length, `start step ${step} out of order`);
    if (this.failure !== null) throw this.failure;
    this.options.beforeStep?.(step);
    const started = await start();
    this.started.push({ step, stop: (mode) => started.stop(mode) });
    return started.value;
  }

  /** The start completed: from now on a storage failure stops the node at once. */
  running(): void {
    if (this.failure !== null) throw this.failure;
    this.starting = false;
  }

  /** Raft's fatal hook: storage failed. */
  fail(error: StorageError): void {
    if (this.failure !== null) return;
    this.failure = error;
    if (this.starting || this.stopping !== null) return; // the start unwinds, or the stop under way finishes
    const report =
      this.options.onFatal ??
      ((failure: StorageError) => {
        this.log(`node ${this.nodeId} stopped: ${failure.message}`);
      });
    this.stopping = withinMs(this.stopAll('fatal'), FATAL_STOP_WAIT_MS, this.log).then(() => {
      report(error);
    });
  }

  /** Stop what started (graceful after a start, unwind after a failed one). */
  async stop(mode: 'graceful' | 'unwind'): Promise<void> {
    this.stopping ??= this.stopAll(this.failure === null ? mode : 'fatal');
    await this.stopping;
    if (this.failure !== null) throw this.failure;
  }

  /** Every started component gets its stop, in reverse, even after one failed; the first failure is thrown at the end. */
  private async stopAll(mode: StopMode): Promise<void> {
    const failures: unknown[] = [];
    for (let index = this.started.length - 1; index >= 0; index -= 1) {
      const component = this.started[index];
      assert(component !== undefined, 'started components are dense');
      try {
        await component.stop(this.failure === null ? mode : 'fatal');
        this.options.onStopped?.(component.step);
      } catch (error) {
        if (error instanceof AssertionError) throw error;
        this.log(`stop ${component.step}: ${firstLine(error)}`);
        failures.push(error);
      }
    }
    this.started.length = 0;
    if (failures.length > 0) throw failures[0];
  }
}

/** Wait for `work` at most `limitMs`; a failure or an overrun is logged, never thrown (the caller reports the cause). */
async function withinMs(work: Promise<void>, limitMs: number, log: (line: string) => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log(`stopping took longer than ${limitMs} ms; reporting anyway`);
      resolve();
    }, limitMs);
  });
  try {
    await Promise.race([
      work.catch((error: unknown) => {
        if (error instanceof AssertionError) throw error;
      }),
      overrun,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Start a node in the seed's order and return a handle whose stop() shuts down in reverse (a leader
 * first hands over to a caught-up voter). If a step fails, exactly the steps before it are stopped,
 * in reverse (the store closed cleanly, its lock released), and the error is thrown: StorageError or
 * StartError for operating errors (one line), anything else is a bug.
 */
export async function startNode(
  config: NodeConfig,
  log: (line: string) => void,
  options: StartOptions = {},
): Promise<RunningNode> {
  const lifecycle = new Lifecycle(config.nodeId, log, options);
  try {
    return await startSteps(config, log, options, lifecycle);
  } catch (error) {
    if (error instanceof AssertionError) throw error;
    try {
      await lifecycle.stop('unwind');
    } catch (stopError) {
      if (stopError instanceof AssertionError) throw stopError;
      if (stopError !== error) log(`after a failed start: ${firstLine(stopError)}`);
    }
    throw error;
  }
}

/** Messages from the endpoint go to Raft and to forwarding once they have started. */
interface Routes {
  node: RaftNode | null;
  forwarding: ForwardingStore | null;
}

async function startSteps(
  config: NodeConfig,
  log: (line: string) => void,
  options: StartOptions,
  lifecycle: Lifecycle,
): Promise<RunningNode> {
  const routes: Routes = { node: null, forwarding: null };
  const stores = await lifecycle.step('storage', () => startStorage(config, log, options));
  const transport = await lifecycle.step('endpoint', () => startEndpoint(config, log, routes));
  const httpAddress = `${config.httpHost}:${config.httpPort}`;
  const discovery = await lifecycle.step('discovery', () => {
    const started = startDiscovery(config, transport, config.httpPort === 0 ? null : httpAddress, log);
    return {
      value: started,
      stop: () => {
        started.stop();
        return Promise.resolve();
      },
    };
  });
  const node = await lifecycle.step('raft', () =>
    startRaft(config, log, { stores, transport, discovery, routes, lifecycle }),
  );
  const forwarding = await lifecycle.step('rpc', () => {
    const client = new RaftControlClient(node);
    routes.forwarding = new ForwardingStore({
      local: client,
      transport,
      nodeId: config.nodeId,
      clock: systemClock,
      knownLeader: () => node.knownLeader(),
      log,
    });
    const store = routes.forwarding;
    const stop = (): Promise<void> => {
      routes.forwarding = null;
      store.stop();
      return Promise.resolve();
    };
    return { value: { client, store }, stop };
  });
  const app = await lifecycle.step('http', () =>
    startHttp(config, log, { transport, discovery, forwarding, httpAddress }),
  );
  lifecycle.running();
  const address = app.server.address();
  const httpUrl =
    typeof address === 'object' && address !== null
      ? `http://${config.httpHost}:${address.port}`
      : `http://${httpAddress}`;
  return { node, transport, discovery, httpUrl, stop: () => lifecycle.stop('graceful') };
}

interface Stores extends StoreParts {
  readonly persisted: PersistedState;
  readonly snapshot: Snapshot | null;
}

/** The data dir, locked to this process (LmdbStorage.open), or memory. */
async function startStorage(
  config: NodeConfig,
  log: (line: string) => void,
  options: StartOptions,
): Promise<Started<Stores>> {
  const wrap = options.wrapStores ?? ((parts: StoreParts) => parts);
  if (config.storage === 'memory') {
    const logStore = new MemoryLogStore();
    return {
      value: { ...wrap({ logStore, stateMachine: new MemoryKvStateMachine() }), ...logStore.load() },
      stop: () => Promise.resolve(),
    };
  }
  const storage = LmdbStorage.open(config.dataDir);
  if (storage.stateRebuilt)
    log(
      `storage: the last stop was not clean; rebuilding the state machine from the snapshot and the log in ${config.dataDir}`,
    );
  // After a storage failure every component is stopped in 'fatal' mode: the store is left unclean.
  const stop = (mode: StopMode): Promise<void> => (mode === 'fatal' ? storage.abandon() : storage.close());
  try {
    const logStore = new LmdbLogStore(storage);
    return {
      value: { ...wrap({ logStore, stateMachine: new LmdbKvStateMachine(storage) }), ...logStore.load() },
      stop,
    };
  } catch (error) {
    await storage.close().catch((closeError: unknown) => {
      log(`storage: ${firstLine(closeError)}`);
    });
    throw error;
  }
}

/** The node's libp2p identity: kept in <data-dir>/node.key with durable storage, fresh otherwise. */
async function loadIdentity(config: NodeConfig): Promise<PrivateKey> {
  if (config.storage === 'memory') return generateKeyPair('Ed25519');
  const path = `${config.dataDir}/node.key`;
  try {
    if (existsSync(path)) return privateKeyFromProtobuf(readFileSync(path));
    mkdirSync(config.dataDir, { recursive: true });
    const key = await generateKeyPair('Ed25519');
    writeFileSync(path, privateKeyToProtobuf(key), { mode: 0o600 });
    return key;
  } catch (error) {
    throw new StorageError(`cannot load the node identity ${path}: ${firstLine(error)}`, { cause: error });
  }
}

/** The Raft endpoint: QUIC on the UDP port and TCP on the TCP port of one number. */
async function startEndpoint(
  config: NodeConfig,
  log: (line: string) => void,
  routes: Routes,
): Promise<Started<Libp2pTransport>> {
  await probePort(config.host, config.port, 'raft', 'TCP');
  await probePort(config.host, config.port, 'raft', 'UDP');
  const privateKey = await loadIdentity(config);
  let transport: Libp2pTransport;
  try {
    transport = await Libp2pTransport.create({
      nodeId: config.nodeId,
      listen: [`/ip4/${config.host}/udp/${config.port}/quic-v1`, `/ip4/${config.host}/tcp/${config.port}`],
      privateKey,
      cookie: config.cookie,
      gossip: config.gossip,
      mdnsServiceTag: config.mdns ? mdnsServiceTag(config.cookie) : null,
      onMessage: (message) => {
        if (message.type === 'client_request') routes.forwarding?.handleRequest(message);
        else if (message.type === 'client_response') routes.forwarding?.handleResponse(message);
        else routes.node?.deliver(message);
      },
      log,
    });
  } catch (error) {
    throw endpointError(error, config);
  }
  transport.onPeerEvent((event) => {
    log(`peers: node ${event.id} ${event.kind} at ${event.address}`);
  });
  return { value: transport, stop: () => transport.stop() };
}

interface RaftParts {
  readonly stores: Stores;
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  readonly routes: Routes;
  readonly lifecycle: Lifecycle;
}

function startRaft(config: NodeConfig, log: (line: string) => void, parts: RaftParts): Started<RaftNode> {
  const { raft, tickMs } = raftConfigFor(config);
  const { stores, discovery, lifecycle } = parts;
  const node = new RaftNode({
    config: raft,
    prng: new SeededPrng(randomInt(2 ** 31)), // election jitter only; the simulator injects its own
    persisted: stores.persisted,
    snapshot: stores.snapshot,
    logStore: stores.logStore,
    stateMachine: stores.stateMachine,
    transport: parts.transport,
    clock: systemClock,
    tickMs,
    observer: {
      snapshotInstalled: (_id, snapshot) => {
        log(
          `raft: installed snapshot at index ${snapshot.meta.index} term ${snapshot.meta.term} (${snapshot.data.byteLength} bytes)`,
        );
      },
    },
    // Members' addresses are replicated in the configuration: every node can reach every other.
    onMembership: (membership) => {
      discovery.directory.onMembership(membership.nodes ?? []);
    },
    onFatal: (error) => {
      lifecycle.fail(error);
    },
  });
  parts.routes.node = node;
  node.start();
  const stop = async (mode: StopMode): Promise<void> => {
    if (mode === 'graceful') await handOverLeadership(node);
    node.stop();
  };
  return { value: node, stop };
}

interface HttpParts {
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  readonly forwarding: { readonly client: RaftControlClient; readonly store: ForwardingStore };
  readonly httpAddress: string;
}

async function startHttp(
  config: NodeConfig,
  log: (line: string) => void,
  parts: HttpParts,
): Promise<Started<FastifyInstance>> {
  const { transport, discovery } = parts;
  const app = buildHttpServer({
    controller: parts.forwarding.client,
    store: parts.forwarding.store,
    identity: {
      nodeId: config.nodeId,
      endpointId: transport.peerId,
      startedAtMs: Date.now(),
      nowMs: () => Date.now(),
    },
    network: {
      addresses: () => transport.listenAddresses,
      addPeer: (nodeId, address) => {
        discovery.directory.configure(nodeId, address);
      },
      resolve: (nodeId) => discovery.resolve(nodeId),
      peers: () =>
        discovery.directory.peers().map((peer) => ({
          node_id: peer.nodeId,
          peer_id: peer.peerId,
          addrs: peer.addrs,
          http_addr: peer.httpAddr,
          last_seen_ms_ago: Date.now() - peer.lastSeenMs,
        })),
      clusterTicket: () => discovery.ticket(),
    },
    httpAddress: parts.httpAddress,
    allowedHostNames: config.httpAllowedHosts,
    log,
  });
  try {
    await app.listen({ host: config.httpHost, port: config.httpPort });
  } catch (error) {
    await app.close().catch((closeError: unknown) => {
      log(`http: ${firstLine(closeError)}`);
    });
    throw listenError(error, config.httpHost, config.httpPort, 'http', 'TCP');
  }
  return { value: app, stop: () => closeHttp(app) };
}

/**
 * Stop listening and let requests in flight finish for up to HTTP_STOP_GRACE_MS, then close their
 * connections: a request waiting on the cluster (an add-learner waits up to 30 s) never holds a stop.
 */
async function closeHttp(app: FastifyInstance): Promise<void> {
  const closing = app.close();
  const timer = setTimeout(() => {
    app.server.closeAllConnections();
  }, HTTP_STOP_GRACE_MS);
  try {
    await closing;
  } finally {
    clearTimeout(timer);
  }
}

/** A leader that is shutting down asks its most caught-up voter to take over, and waits a little. */
async function handOverLeadership(node: RaftNode): Promise<void> {
  const status = node.status();
  if (status.role !== 'leader' || status.membership === null) return;
  const voters = status.membership.voters.filter((id) => id !== status.id);
  const best = status.peers
    .filter((peer) => voters.includes(peer.id))
    .sort((a, b) => b.matchIndex - a.matchIndex)[0];
  if (best === undefined) return;
  node.transferLeadership(best.id, () => undefined);
  const deadline = Date.now() + SHUTDOWN_TRANSFER_WAIT_MS;
  while (node.status().role === 'leader' && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 10));
}

// ---------------------------------------------------------------- ports

type Role = 'raft' | 'http';
type Protocol = 'TCP' | 'UDP';

/** One line for a listen that failed: "port 26001 is already in use (raft, TCP)". */
export function listenError(
  error: unknown,
  host: string,
  port: number,
  role: Role,
  protocol: Protocol,
): StartError {
  const code = error instanceof Error && 'code' in error ? error.code : undefined;
  const where = `cannot listen on ${host}:${port} (${role}, ${protocol})`;
  switch (code) {
    case 'EADDRINUSE':
      return new StartError(`port ${port} is already in use (${role}, ${protocol})`, { cause: error });
    case 'EADDRNOTAVAIL':
      return new StartError(`${where}: ${host} is not an address of this machine (EADDRNOTAVAIL)`, {
        cause: error,
      });
    case 'EACCES':
      return new StartError(`${where}: permission denied (EACCES)`, { cause: error });
    default:
      return new StartError(`${where}: ${firstLine(error)}`, { cause: error });
  }
}

/** Bind `port` on `host` and let go, so that a port in use is named before libp2p buries it in a stack trace. */
async function probePort(host: string, port: number, role: Role, protocol: Protocol): Promise<void> {
  if (port === 0) return;
  const error = await (protocol === 'TCP' ? tryTcp(host, port) : tryUdp(host, port));
  if (error !== null) throw listenError(error, host, port, role, protocol);
}

function tryTcp(host: string, port: number): Promise<Error | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (error) => {
      resolve(error);
    });
    server.listen({ host, port, exclusive: true }, () => {
      server.close(() => {
        resolve(null);
      });
    });
  });
}

function tryUdp(host: string, port: number): Promise<Error | null> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    socket.once('error', (error) => {
      socket.removeAllListeners();
      resolve(error);
    });
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.close(() => {
        resolve(null);
      });
    });
  });
}

/** libp2p reports failed listens as one multi-line message with stack traces: keep the first cause, on one line. */
export function endpointError(error: unknown, config: NodeConfig): StartError {
  const text = error instanceof Error ? error.message : String(error);
  const inUse = /\/(tcp|udp)\/(\d+)[^\n:]*: [^\n]*(EADDRINUSE|Address already in use)/.exec(text);
  if (inUse !== null)
    return new StartError(
      `port ${inUse[2] ?? config.port} is already in use (raft, ${inUse[1] === 'udp' ? 'UDP' : 'TCP'})`,
      { cause: error },
    );
  const failed = /^\s*(\/\S+): (.+)$/m.exec(text);
  const reason = failed === null ? firstLine(error) : `${failed[1] ?? ''}: ${failed[2] ?? ''}`;
  return new StartError(`cannot start the raft endpoint on ${config.host}:${config.port}: ${reason}`, {
    cause: error,
  });
}
