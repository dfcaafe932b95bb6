import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { FastifyInstance } from 'fastify';
import { buildHttpServer, replaceTlsCertificate, type HttpTls } from '../http/server.ts';
import type { LogStore, Snapshot, SnapshotFileSource } from '../node/interfaces.ts';
import { NodeBackupSource } from '../node/backup-source.ts';
import { RaftControlClient } from '../node/control-client.ts';
import { RaftLeaseClient } from '../node/lease-client.ts';
import { MemoryKvStateMachine, type StateMachine } from '../node/kv-state-machine.ts';
import { systemClock } from '../node/local-runtime.ts';
import { NodeElectionService } from '../node/election-service.ts';
import { NodeLockService } from '../node/lock-service.ts';
import { RaftNode } from '../node/raft-node.ts';
import type { WatchHub } from '../node/watch-hub.ts';
import { startWatchHub, WATCH_REBUILD_SNAPSHOT_BYTES_MAX } from '../node/watch-history.ts';
import { Libp2pTransport } from '../network/libp2p-transport.ts';
import { AssertionError } from '../base/assert.ts';
import { leaseTtlSecondsMin } from '../base/limits.ts';
import { defaultRaftConfig, type RaftConfig } from '../raft/config.ts';
import { SeededPrng } from '../raft/prng.ts';
import type { PersistedState } from '../raft/types.ts';
import { WalLogStore, LmdbStorage } from '../storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../storage/lmdb-state-machine.ts';
import { MemoryLogStore } from '../storage/memory-log-store.ts';
import type { NodeConfig } from './config.ts';
import { mdnsServiceTag, startDiscovery, type Discovery } from './discovery/index.ts';
import { firstLine, StorageError } from './errors.ts';
import { AuthTokens } from './auth-tokens.ts';
import { httpTlsOf } from './http-tls.ts';
import { ForwardingStore } from './forwarding.ts';
import { HealthMonitor } from './health.ts';
import { JoinCredentials } from './join-credentials.ts';
import { joinService, mintJoinTicket, withJoinedCookie } from './join.ts';
import { componentLog, pinoLoggerOf, type Log } from './logger.ts';
import { PeerWatch } from './peer-watch.ts';
import { describeRaftEvent } from '../node/raft-events.ts';
import { Lifecycle, type LifecycleHooks, type Started, type StopMode } from './lifecycle.ts';
import { endpointError, listenError, probePort } from './ports.ts';

// Kept importable from here: the start order, its errors and the port messages.

/** Heartbeats are two ticks: the core counts time in ticks, the node knows how long one is. */
export const HEARTBEAT_TICKS = 2;
/** On stop, HTTP requests in flight get this long to finish before their connections are closed. */
export const HTTP_STOP_GRACE_MS = 2_000;
/** On shutdown a leader waits this long for a successor to take over. */
export const SHUTDOWN_TRANSFER_WAIT_MS = 1_000;

export interface StoreParts {
  readonly logStore: LogStore;
  readonly stateMachine: StateMachine;
}

export interface StartOptions extends LifecycleHooks {
  /** Test hook: wraps the log store and state machine (to inject storage failures). */
  readonly wrapStores?: (stores: StoreParts) => StoreParts;
  /** The tokens of --auth-tokens, read by the owner (which reloads them on SIGHUP); else read here. */
  readonly tokens?: AuthTokens;
  /** The certificate and key of --http-tls-cert/--http-tls-key, read by the owner; else read here. */
  readonly httpTls?: HttpTls;
}

export interface RunningNode {
  readonly node: RaftNode;
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  /** http://host:port, or https://host:port when the HTTP API serves TLS. */
  readonly httpUrl: string;
  /** How long each start step took ("storage 812 ms, endpoint 95 ms, …"). */
  readonly startTimes: string;
  /**
   * Serve new HTTPS connections with another certificate and key (SIGHUP); open ones keep theirs.
   * Only for a node started with --http-tls-cert.
   */
  replaceHttpTls(tls: HttpTls): void;
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

/**
 * Start a node in the seed's order and return a handle whose stop() shuts down in reverse (a leader
 * first hands over to a caught-up voter). If a step fails, exactly the steps before it are stopped,
 * in reverse (the store closed cleanly, its lock released), and the error is thrown: StorageError or
 * StartError for operating errors (one line), anything else is a bug.
 */
export async function startNode(
  config: NodeConfig,
  log: Log,
  options: StartOptions = {},
): Promise<RunningNode> {
  const lifecycle = new Lifecycle(config.nodeId, componentLog(log, 'node'), options);
  try {
    return await startSteps(config, log, options, lifecycle);
  } catch (error) {
    if (error instanceof AssertionError) throw error;
    try {
      await lifecycle.stop('unwind');
    } catch (stopError) {
      if (stopError instanceof AssertionError) throw stopError;
      if (stopError !== error) log(`after a failed start: ${firstLine(stopError)}`, 'error');
    }
    throw error;
  }
}

/** Messages from the endpoint go to Raft and to forwarding once they have started. */
interface Routes {
  node: RaftNode | null;
  health: HealthMonitor | null;
  forwarding: ForwardingStore | null;
}

async function startSteps(
  given: NodeConfig,
  log: Log,
  options: StartOptions,
  lifecycle: Lifecycle,
): Promise<RunningNode> {
  const routes: Routes = { node: null, health: null, forwarding: null };
  // Before anything starts: a bad token file stops the start with its ConfigError.
  const tokens =
    options.tokens ?? (given.authTokensFile === null ? null : new AuthTokens(given.authTokensFile));
  const httpTls = options.httpTls ?? httpTlsOf(given);
  const stores = await lifecycle.step('storage', () =>
    startStorage(given, componentLog(log, 'storage'), options),
  );
  const privateKey = await loadIdentity(given);
  // A join ticket's node gets the cookie here (stored earlier, or handed over by the cluster now).
  const config = await withJoinedCookie(given, privateKey, componentLog(log, 'join'));
  const credentials = new JoinCredentials();
  const transport = await lifecycle.step('endpoint', () =>
    startEndpoint(config, componentLog(log, 'transport'), routes, { privateKey, credentials }),
  );
  const httpAddress = `${config.httpHost}:${config.httpPort}`;
  const discovery = await lifecycle.step('discovery', () => {
    const httpAddr = config.httpPort === 0 ? null : httpAddress;
    const started = startDiscovery(config, transport, httpAddr, componentLog(log, 'discovery'));
    return {
      value: started,
      stop: () => {
        started.stop();
        return Promise.resolve();
      },
    };
  });
  const { node, health, watch } = await lifecycle.step('raft', () =>
    startRaft(config, componentLog(log, 'raft'), { stores, transport, discovery, routes, lifecycle }),
  );
  const forwarding = await lifecycle.step('rpc', () => {
    const client = new RaftControlClient(node);
    const leases = new RaftLeaseClient(node, { electionTimeoutMaxMs: config.electionTimeoutMaxMs });
    routes.forwarding = new ForwardingStore({
      local: client,
      leases,
      controller: client,
      leaseTtlSecondsMin: leaseTtlSecondsMin(config.electionTimeoutMaxMs),
      transport,
      nodeId: config.nodeId,
      clock: systemClock,
      knownLeader: () => node.knownLeader(),
      log: componentLog(log, 'forwarding'),
    });
    const store = routes.forwarding;
    const stop = (): Promise<void> => {
      routes.forwarding = null;
      store.stop();
      return Promise.resolve();
    };
    return { value: { store }, stop };
  });
  const app = await lifecycle.step('http', () =>
    startHttp(config, componentLog(log, 'http'), {
      node,
      transport,
      discovery,
      forwarding,
      health,
      watch,
      httpAddress,
      tokens,
      credentials,
      httpTls,
    }),
  );
  lifecycle.running();
  const address = app.server.address();
  const scheme = httpTls === null ? 'http' : 'https';
  const httpUrl =
    typeof address === 'object' && address !== null
      ? `${scheme}://${config.httpHost}:${address.port}`
      : `${scheme}://${httpAddress}`;
  return {
    node,
    transport,
    discovery,
    httpUrl,
    startTimes: lifecycle.stepTimes,
    replaceHttpTls: (tls) => {
      replaceTlsCertificate(app, tls);
    },
    stop: () => lifecycle.stop('graceful'),
  };
}

interface Stores extends StoreParts {
  readonly persisted: PersistedState;
  readonly snapshot: Snapshot | null;
  /** LMDB: the machine's snapshots are files (none with --storage memory). */
  readonly snapshotFiles: SnapshotFileSource | null;
  /** A snapshot file as bytes, read now if it is at most `fileBytesMax` (to rebuild the watch history). */
  readonly snapshotFileBytes: (index: number, fileBytesMax: number) => Uint8Array | null;
}

/** The data dir, locked to this process (LmdbStorage.open), or memory. */
async function startStorage(config: NodeConfig, log: Log, options: StartOptions): Promise<Started<Stores>> {
  const wrap = options.wrapStores ?? ((parts: StoreParts) => parts);
  if (config.storage === 'memory') {
    const logStore = new MemoryLogStore();
    return {
      value: {
        ...wrap({ logStore, stateMachine: new MemoryKvStateMachine() }),
        ...logStore.load(),
        snapshotFiles: null,
        snapshotFileBytes: () => null,
      },
      stop: () => Promise.resolve(),
    };
  }
  const storage = LmdbStorage.open(config.dataDir);
  if (storage.stateRebuilt)
    log(
      `storage: the last stop was not clean; rebuilding the state machine from the snapshot and the log in ${config.dataDir}`,
      'warn',
    );
  // After a storage failure every component is stopped in 'fatal' mode: the store is left unclean.
  const stop = (mode: StopMode): Promise<void> => (mode === 'fatal' ? storage.abandon() : storage.close());
  try {
    const logStore = new WalLogStore(storage);
    const loaded = logStore.load(); // first: it may replace the state by the snapshot file
    const machine = new LmdbKvStateMachine(storage);
    return {
      value: {
        ...wrap({ logStore, stateMachine: machine }),
        ...loaded,
        snapshotFiles: storage.snapshotFileSource(() => {
          machine.reload();
        }),
        snapshotFileBytes: (index, fileBytesMax) => storage.snapshotFiles.encodeNow(index, fileBytesMax),
      },
      stop,
    };
  } catch (error) {
    await storage.close().catch((closeError: unknown) => {
      log(`storage: ${firstLine(closeError)}`, 'error');
    });
    throw error;
  }
}

/** The node's libp2p identity: kept in <data-dir>/node.key with durable storage, fresh otherwise. */
export async function loadIdentity(config: NodeConfig): Promise<PrivateKey> {
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

/**
 * The Raft endpoint: QUIC on the UDP port and TCP on the TCP port of one number, serving joins of
 * the join tickets this node mints.
 */
async function startEndpoint(
  config: NodeConfig,
  log: Log,
  routes: Routes,
  identity: { readonly privateKey: PrivateKey; readonly credentials: JoinCredentials },
): Promise<Started<Libp2pTransport>> {
  await probePort(config.host, config.port, 'raft', 'TCP');
  await probePort(config.host, config.port, 'raft', 'UDP');
  const { privateKey, credentials } = identity;
  let transport: Libp2pTransport;
  try {
    transport = await Libp2pTransport.create({
      nodeId: config.nodeId,
      listen: [`/ip4/${config.host}/udp/${config.port}/quic-v1`, `/ip4/${config.host}/tcp/${config.port}`],
      privateKey,
      cookie: config.cookie,
      joinService: joinService(credentials, config.cookie),
      ...(config.previousCookie === null ? {} : { previousCookie: config.previousCookie }),
      gossip: config.gossip,
      mdnsServiceTag: config.mdns ? mdnsServiceTag(config.cookie) : null,
      onMessage: (message) => {
        if (message.type === 'client_request') routes.forwarding?.handleRequest(message);
        else if (message.type === 'client_response') routes.forwarding?.handleResponse(message);
        else {
          routes.health?.observe(message);
          routes.node?.deliver(message);
        }
      },
      log,
    });
  } catch (error) {
    throw endpointError(error, config);
  }
  transport.onPeerEvent((event) => {
    log(`peers: node ${event.id} ${event.kind} at ${event.address}`, 'debug');
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

/** RaftNode, and the health monitor that watches it (started and stopped with it). */
function startRaft(
  config: NodeConfig,
  log: Log,
  parts: RaftParts,
): Started<{ node: RaftNode; health: HealthMonitor; watch: WatchHub }> {
  const { raft, tickMs } = raftConfigFor(config);
  const { stores, discovery, lifecycle } = parts;
  const watch = startWatch(log, stores);
  const node = new RaftNode({
    config: raft,
    prng: new SeededPrng(randomInt(2 ** 31)), // election jitter only; the simulator injects its own
    persisted: stores.persisted,
    snapshot: stores.snapshot,
    ...(stores.snapshotFiles === null ? {} : { snapshotFiles: stores.snapshotFiles }),
    logStore: stores.logStore,
    stateMachine: stores.stateMachine,
    transport: parts.transport,
    clock: systemClock,
    tickMs,
    quotaBytes: config.quotaBackendBytes,
    applyListener: watch,
    observer: {
      raftEvent: (_id, event) => {
        const { line, level, fields } = describeRaftEvent(event);
        log(line, level, fields);
      },
    },
    // Members' addresses are replicated in the configuration: every node can reach every other.
    // Members' peer ids are replicated too: their node ids are bound to those identities.
    onMembership: (membership) => {
      discovery.directory.onMembership(membership.nodes ?? []);
      parts.transport.bindMembers(discovery.directory.memberBindings);
    },
    onFatal: (error) => {
      lifecycle.fail(error);
    },
  });
  const health = new HealthMonitor({
    subject: node,
    nowMs: () => Date.now(),
    electionTimeoutMaxMs: config.electionTimeoutMaxMs,
    storageFailed: () => lifecycle.failure !== null,
    log,
    peers: new PeerWatch({
      selfId: config.nodeId,
      unreachableAfterMs: config.electionTimeoutMaxMs,
      log,
      peerIdOf: (id) => discovery.directory.memberBindings.get(id),
    }),
  });
  parts.routes.node = node;
  parts.routes.health = health;
  node.start();
  health.start();
  const stop = async (mode: StopMode): Promise<void> => {
    if (mode === 'graceful') await handOverLeadership(node);
    parts.routes.health = null;
    health.stop();
    node.stop();
  };
  return { value: { node, health, watch }, stop };
}

/**
 * The watch hub: it listens from the applied index on, with the history since the snapshot rebuilt
 * from the log (a snapshot the node starts from is passed on to it as a restore).
 */
function startWatch(log: Log, stores: Stores): WatchHub {
  let snapshot = stores.snapshot;
  if (snapshot !== null && snapshot.data === null && stores.stateMachine.appliedIndex > snapshot.meta.index) {
    // The history since the snapshot is rebuilt from it: a small file is read as bytes for that.
    const data = stores.snapshotFileBytes(snapshot.meta.index, WATCH_REBUILD_SNAPSHOT_BYTES_MAX);
    if (data !== null) snapshot = { meta: snapshot.meta, data };
  }
  const started = startWatchHub({
    clock: systemClock,
    appliedIndex: stores.stateMachine.appliedIndex,
    snapshot,
    entries: stores.persisted.entries,
  });
  if (started.skipped !== null) log(started.skipped);
  else if (started.rebuiltFrom !== null)
    log(`watch: history rebuilt from the log from revision ${started.rebuiltFrom}`, 'debug');
  return started.hub;
}

interface HttpParts {
  readonly node: RaftNode;
  readonly transport: Libp2pTransport;
  readonly discovery: Discovery;
  readonly forwarding: { readonly store: ForwardingStore };
  readonly health: HealthMonitor;
  readonly watch: WatchHub;
  readonly httpAddress: string;
  readonly tokens: AuthTokens | null;
  readonly credentials: JoinCredentials;
  readonly httpTls: HttpTls | null;
}

async function startHttp(config: NodeConfig, log: Log, parts: HttpParts): Promise<Started<FastifyInstance>> {
  const { transport, discovery, tokens } = parts;
  const app = buildHttpServer({
    // Membership calls and snapshots are forwarded to the leader like writes; /init is not.
    controller: parts.forwarding.store,
    store: parts.forwarding.store,
    leases: parts.forwarding.store,
    locks: new NodeLockService({ store: parts.forwarding.store, watch: parts.watch, clock: systemClock }),
    ...(tokens === null
      ? {}
      : {
          auth: {
            tokens: () => tokens.current,
            openHealth: config.openHealth,
            failuresPerWindowMax: config.authFailuresMax,
          },
        }),
    elections: new NodeElectionService({
      store: parts.forwarding.store,
      watch: parts.watch,
      clock: systemClock,
    }),
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
      // A node that joined through this node is the peer that proved its join credential.
      identify: async (nodeId, raftAddr) =>
        parts.credentials.joinedPeerId(nodeId) ?? (await discovery.identify(nodeId, raftAddr)),
      peers: () =>
        discovery.directory.peers().map((peer) => ({
          node_id: peer.nodeId,
          peer_id: peer.peerId,
          addrs: peer.addrs,
          http_addr: peer.httpAddr,
          last_seen_ms_ago: Date.now() - peer.lastSeenMs,
        })),
      clusterTicket: () => discovery.ticket(),
      joinTicket: (nodeId, ttlSeconds) =>
        mintJoinTicket(
          parts.credentials,
          { nodeId: config.nodeId, cookie: config.cookie, addresses: transport.listenAddresses },
          nodeId,
          ttlSeconds,
        ),
    },
    health: () => parts.health.report(),
    watch: parts.watch,
    backup: new NodeBackupSource({ node: parts.node, store: parts.forwarding.store }),
    httpAddress: parts.httpAddress,
    ...(parts.httpTls === null ? {} : { tls: parts.httpTls }),
    allowedHostNames: config.httpAllowedHosts,
    log,
    logger: pinoLoggerOf(log) ?? false,
  });
  try {
    await app.listen({ host: config.httpHost, port: config.httpPort });
  } catch (error) {
    await app.close().catch((closeError: unknown) => {
      log(`http: ${firstLine(closeError)}`, 'error');
    });
    throw listenError(error, config.httpHost, config.httpPort, 'http', 'TCP');
  }
  return { value: app, stop: () => closeHttp(app) };
}

/**
 * Stop listening and let requests in flight finish for up to HTTP_STOP_GRACE_MS, then close their
 * connections: a request waiting on the cluster (an add-learner waits up to 40 s) never holds a stop.
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
