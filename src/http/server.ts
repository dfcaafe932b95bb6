import { Server as TlsServer } from 'node:tls';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type {
  BackupService,
  ClusterController,
  KeyValueStore,
  LeaseService,
  ElectionService,
  LockService,
  WatchService,
} from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { assert } from '../base/assert.ts';
import { evaluateHealth, type HealthReport } from '../api/health.ts';
import type { ClusterNode, JoinTicketAnswer, NodeMetrics, RaftMetrics, StateAnswer } from '../api/types.ts';
import {
  ADDRESS_CHARS_MAX,
  PEER_ID_CHARS_MAX,
  CLUSTER_NODES_MAX,
  CONTINUATION_TOKEN_CHARS_MAX,
  isRaftAddress,
  JOIN_TTL_SECONDS_DEFAULT,
  JOIN_TTL_SECONDS_MAX,
  JOIN_TTL_SECONDS_MIN,
  KEY_BYTES_MAX,
  SCAN_LIMIT_MAX,
} from '../api/limits.ts';
import { answerClientError, REQUEST_BODY_BYTES_MAX, sendError, type HttpLog } from './errors.ts';
import { fastifyLogging } from './request-log.ts';
import { checkHost, checkQuery, installJsonParser, parseQueryStrict } from './boundary.ts';
import { ConnectionGuard, DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from './connections.ts';
import { installAuth, type TokenTable } from './auth.ts';
import { addBackupRoute } from './backup-route.ts';
import { addLeaseRoutes } from './lease-routes.ts';
import { addElectionRoutes } from './election-routes.ts';
import { addLockRoutes } from './lock-routes.ts';
import { memberHttpUrls, type SelfHttp } from './member-urls.ts';
import { processMetrics, startEventLoopSampler } from './event-loop.ts';
import { PrometheusMetrics } from './prometheus.ts';
import { addWatchRoute } from './watch-route.ts';

export interface NodeIdentity {
  readonly nodeId: number;
  /** The transport's endpoint id (libp2p PeerId); empty until the network layer exists. */
  readonly endpointId: string;
  readonly startedAtMs: number;
  readonly nowMs: () => number;
}

/** What the HTTP layer may ask of the network layer (absent for an engine without one). */
export interface NetworkInfo {
  /** The node's own transport addresses (multiaddrs). */
  addresses(): readonly string[];
  /** Add a peer by hand: its Raft node id and a multiaddr or host:port. */
  addPeer(nodeId: number, address: string): void;
  /** Where a node can be reached, as discovery or configuration knows it (this node included). */
  resolve?(nodeId: number): string | undefined;
  /**
   * The peer id that answers for node `nodeId` at `raftAddr` (itself, a discovered announcement, or
   * a dial that proved the cookie), or undefined when none can be told in time.
   */
  identify?(nodeId: number, raftAddr: string): Promise<string | undefined>;
  /** Peers found by discovery, for GET /peers. */
  peers?(): readonly DiscoveredPeerView[];
  /** A ticket for joining this cluster, for GET /cluster-ticket. */
  clusterTicket?(): string;
  /** A join ticket for node `nodeId` minted by this node, for POST /join-ticket (AspenError when refused). */
  joinTicket?(nodeId: number, ttlSeconds: number): JoinTicketAnswer;
}

export interface DiscoveredPeerView {
  readonly node_id: number;
  readonly peer_id: string;
  readonly addrs: readonly string[];
  readonly http_addr: string | null;
  readonly last_seen_ms_ago: number;
}

/** A member as given to /init or /add-learner: addr defaults to node-<id>, raft_addr to what discovery found. */
interface PartialNode {
  readonly id: number;
  readonly addr?: string;
  readonly raft_addr?: string;
  readonly peer_id?: string;
}

/**
 * /init and /add-learner by id wait at most this long for discovery (gossip, mDNS) to find the node:
 * a node started a second before the call is usually found within it. Well below the add-learner
 * timeout (ADD_LEARNER_TIMEOUT_MS_DEFAULT, 40 s), so the call still has time to run.
 */
export const DISCOVERY_WAIT_MS_DEFAULT = 5_000;
/** How often a waiting call asks discovery again. */
export const DISCOVERY_POLL_MS = 100;

/** Where discovery finds node `id`, asking every DISCOVERY_POLL_MS for up to `waitMs`; undefined: not found. */
async function discoveredAddress(
  id: number,
  network: NetworkInfo | undefined,
  waitMs: number,
): Promise<string | undefined> {
  if (network?.resolve === undefined) return undefined;
  const pollsMax = Math.ceil(waitMs / DISCOVERY_POLL_MS);
  for (let poll = 0; poll < pollsMax; poll += 1) {
    const found = network.resolve(id);
    if (found !== undefined) return found;
    await new Promise((done) => setTimeout(done, DISCOVERY_POLL_MS));
  }
  return network.resolve(id);
}

/**
 * A member with its raft_addr (given, or found by discovery) and, when the network can tell, the
 * peer id that answers for it: recorded in the configuration, it binds the node id to that identity.
 * Run on the node the call was sent to, before a follower forwards it: only the node that minted a
 * join ticket knows the peer that proved it (NetworkInfo.identify), and the leader may be another.
 */
async function completeNode(
  node: PartialNode,
  network: NetworkInfo | undefined,
  discoveryWaitMs: number,
): Promise<ClusterNode> {
  const raftAddr = node.raft_addr ?? (await discoveredAddress(node.id, network, discoveryWaitMs));
  if (raftAddr === undefined)
    throw new AspenError(
      'INVALID_INPUT',
      `node ${node.id}: no raft_addr given and discovery has not found that node within ${discoveryWaitMs} ms ` +
        '(is it running with the same cookie? GET /peers lists what discovery found)',
    );
  const complete = { id: node.id, addr: node.addr ?? `node-${node.id}`, raft_addr: raftAddr };
  const peerId = node.peer_id ?? (await network?.identify?.(node.id, raftAddr));
  return peerId === undefined ? complete : { ...complete, peer_id: peerId };
}

export interface HttpServerOptions {
  readonly controller: ClusterController;
  readonly store: KeyValueStore;
  readonly identity: NodeIdentity;
  readonly network?: NetworkInfo;
  readonly httpAddress?: string;
  /** Fastify's logger: the node's pino logger (request lines at debug), or none. */
  readonly logger?: boolean | FastifyBaseLogger;
  /** Host names served besides IP literals and localhost (DNS rebinding protection). */
  readonly allowedHostNames?: readonly string[];
  /** One line per unexpected failure (a 500): what failed, for the operator. */
  readonly log?: HttpLog;
  readonly connectionLimits?: ConnectionLimits;
  /** The node's health (GET /health); without it, health is read from the metrics alone. */
  readonly health?: () => HealthReport;
  /** The lease calls (POST /lease/grant, /lease/keepalive, /lease/revoke, GET /lease/info, /leases). */
  readonly leases?: LeaseService;
  /** The lock calls (POST /lock, /unlock); without them the routes do not exist. */
  readonly locks?: LockService;
  /** The election calls (POST /election/campaign, /proclaim, /resign, GET /election/leader, /observe). */
  readonly elections?: ElectionService;
  /** The node's watch source (GET /watch); without it the route does not exist. */
  readonly watch?: WatchService;
  /** Milliseconds between a watch stream's heartbeats (default WATCH_HEARTBEAT_MS; tests shorten it). */
  readonly watchHeartbeatMs?: number;
  /** Bearer tokens and roles on every route (--auth-tokens); without it the API is open (loopback only, or --insecure). */
  readonly auth?: HttpAuth;
  /** Serve HTTPS with this certificate and key (--http-tls-cert, --http-tls-key); plain HTTP without. */
  readonly tls?: HttpTls;
  /** GET /backup's source; without it the route does not exist. */
  readonly backup?: BackupService;
  /** How long /init and /add-learner by id wait for discovery (default DISCOVERY_WAIT_MS_DEFAULT). */
  readonly discoveryWaitMs?: number;
}

/** A server certificate (chain) and its private key, PEM, as checked by the caller. */
export interface HttpTls {
  readonly cert: string;
  readonly key: string;
}

/** The tokens a node checks callers against, and whether health and Prometheus stay open. */
export interface HttpAuth {
  /** The current table (the node swaps it on SIGHUP). */
  readonly tokens: () => TokenTable;
  readonly openHealth: boolean;
  /** Failed authentications per address and window before 429 (default AUTH_FAILURES_PER_WINDOW_MAX). */
  readonly failuresPerWindowMax?: number;
}

/** A node id in a body: a positive safe integer (a larger JSON number would silently round). */
const nodeIdSchema = { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } as const;

const clusterNode = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: {
    id: nodeIdSchema,
    addr: { type: 'string', maxLength: ADDRESS_CHARS_MAX },
    raft_addr: { type: 'string', maxLength: ADDRESS_CHARS_MAX },
    peer_id: { type: 'string', maxLength: PEER_ID_CHARS_MAX },
  },
} as const;

const nodeIdList = (countMin: number) =>
  ({ type: 'array', minItems: countMin, maxItems: CLUSTER_NODES_MAX, items: nodeIdSchema }) as const;

const keyBody = {
  type: 'object',
  required: ['key'],
  additionalProperties: false,
  // The key's byte bound is checked by the store (KEY_TOO_LARGE, as for writes), before any forwarding.
  properties: { key: { type: 'string', minLength: 1 } },
} as const;

/** The query or body of an endpoint that takes none. */
const NO_PARAMETERS = { type: 'object', additionalProperties: false, properties: {} } as const;

function refuseBody(request: FastifyRequest, _reply: FastifyReply, done: (error?: AspenError) => void): void {
  const body: unknown = request.body;
  const empty =
    body === undefined ||
    body === null ||
    (typeof body === 'object' && !Array.isArray(body) && Object.keys(body).length === 0);
  done(
    empty ? undefined : new AspenError('INVALID_INPUT', `${request.url.split('?')[0] ?? ''} takes no body`),
  );
}

/** A POST whose body is optional: none (or null) is validated as {}. */
function emptyBodyAsObject(request: FastifyRequest, _reply: FastifyReply, done: () => void): void {
  if (request.body === undefined || request.body === null) request.body = {};
  done();
}

/**
 * The seed's control-plane API over the ClusterController and KeyValueStore contracts only, so any
 * engine can stand behind it. Every body is validated by a JSON schema and bounded in size.
 */
export function buildHttpServer(options: HttpServerOptions): FastifyInstance {
  const metrics = new PrometheusMetrics();
  startEventLoopSampler();
  const log = options.log ?? (() => undefined);
  const idleTimeoutMs = (options.connectionLimits ?? DEFAULT_CONNECTION_LIMITS).idleTimeoutMs;
  const tls = options.tls;
  // https: null is a plain HTTP server (Fastify's own rule). Node's https.Server serves the http.Server
  // API the routes and ConnectionGuard use, so the instance keeps the plain type.
  const app: FastifyInstance = Fastify({
    https: tls === undefined ? null : { cert: tls.cert, key: tls.key, handshakeTimeout: idleTimeoutMs },
    ...fastifyLogging(options.logger),
    bodyLimit: REQUEST_BODY_BYTES_MAX,
    // Exact schemas: no type coercion ("5" stays a string, ["a"] stays an array), no silent removal
    // of unknown properties (additionalProperties: false refuses them), no defaults filled in.
    ajv: {
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false },
    },
    routerOptions: { querystringParser: parseQueryStrict },
    // Node re-arms an answered keep-alive socket with this; the guard closes sockets idle for as long.
    keepAliveTimeout: idleTimeoutMs,
    // Fastify's and Node's own refusals answer in the API's error shape too.
    frameworkErrors: (error, _request, reply) => {
      void sendError(reply, error, metrics, log);
    },
    clientErrorHandler: answerClientError,
  });
  installBoundary(app, options, metrics);
  if (options.auth !== undefined)
    installAuth(app, {
      ...options.auth,
      onFailure: (reason) => {
        metrics.authFailures.inc({ reason });
      },
    });
  addMembershipRoutes(app, options);
  addKeyValueRoutes(app, options.store);
  if (options.leases !== undefined) addLeaseRoutes(app, options.leases);
  if (options.locks !== undefined) addLockRoutes(app, options.locks);
  if (options.elections !== undefined)
    addElectionRoutes(
      app,
      options.elections,
      options.watchHeartbeatMs === undefined ? {} : { heartbeatMs: options.watchHeartbeatMs },
    );
  addNodeRoutes(app, options, metrics);
  if (options.backup !== undefined) addBackupRoute(app, options.backup, options.identity.nowMs);
  if (options.watch !== undefined)
    addWatchRoute(
      app,
      options.watch,
      options.watchHeartbeatMs === undefined ? {} : { heartbeatMs: options.watchHeartbeatMs },
    );
  return app;
}

/**
 * Serve new TLS connections with another certificate and key (SIGHUP); connections already open keep
 * theirs. Only for a server built with `tls`.
 */
export function replaceTlsCertificate(app: FastifyInstance, tls: HttpTls): void {
  const server: unknown = app.server;
  assert(server instanceof TlsServer, 'a certificate is replaced only on a server built with TLS');
  server.setSecureContext({ cert: tls.cert, key: tls.key });
}

/**
 * What every request passes before a route sees it: the body parser, Host and query checks,
 * connection accounting, exact parameters per route, and the one error mapping.
 */
function installBoundary(app: FastifyInstance, options: HttpServerOptions, metrics: PrometheusMetrics): void {
  const log = options.log ?? (() => undefined);
  const allowedHostNames = (options.allowedHostNames ?? []).map((name) => name.toLowerCase());
  installJsonParser(app, REQUEST_BODY_BYTES_MAX);
  const connections = new ConnectionGuard(app.server, options.connectionLimits);
  app.setErrorHandler((error, _request, reply) => sendError(reply, error, metrics, log));
  app.addHook('onRequest', (request, reply, done) => {
    const socket = request.raw.socket;
    connections.requestStarted(socket);
    reply.raw.once('close', () => {
      connections.requestEnded(socket);
    }); // answered, or the client left
    done(checkHost(request.headers.host, allowedHostNames) ?? undefined);
  });
  app.addHook('preValidation', (request, _reply, done) => {
    done(checkQuery(request.query) ?? undefined);
  });
  app.addHook('onResponse', (request, reply, done) => {
    const seconds = reply.elapsedTime / 1000;
    if (request.routeOptions.url === '/write') metrics.writeLatency.observe(seconds);
    else if (request.routeOptions.url === '/read') metrics.readLatency.observe(seconds);
    done();
  });
  app.setNotFoundHandler((request) => {
    throw new AspenError('NOT_FOUND', `no route ${request.method} ${request.url.slice(0, 200)}`);
  });
  // Exact per endpoint: a route that takes no query string refuses one, a POST without a body schema
  // accepts none or {} only.
  app.addHook('onRoute', (route) => {
    const schema = route.schema ?? {};
    route.schema = schema.querystring === undefined ? { ...schema, querystring: NO_PARAMETERS } : schema;
    const methods = [route.method].flat();
    if (methods.includes('POST') && schema.body === undefined) route.preValidation = [refuseBody];
  });
}

function addMembershipRoutes(app: FastifyInstance, options: HttpServerOptions): void {
  const { controller } = options;
  const discoveryWaitMs = options.discoveryWaitMs ?? DISCOVERY_WAIT_MS_DEFAULT;
  app.post(
    '/init',
    {
      schema: {
        body: {
          type: 'object',
          required: ['initial_members'],
          additionalProperties: false,
          properties: {
            initial_members: { type: 'array', minItems: 1, maxItems: CLUSTER_NODES_MAX, items: clusterNode },
          },
        },
      },
    },
    async (request) => {
      const members = (request.body as { initial_members: PartialNode[] }).initial_members;
      return controller.init({
        initial_members: await Promise.all(
          members.map((member) => completeNode(member, options.network, discoveryWaitMs)),
        ),
      });
    },
  );
  app.post(
    '/add-learner',
    {
      schema: {
        body: {
          type: 'object',
          required: ['learner'],
          additionalProperties: false,
          properties: { learner: clusterNode },
        },
      },
    },
    async (request) =>
      controller.addLearner({
        learner: await completeNode(
          (request.body as { learner: PartialNode }).learner,
          options.network,
          discoveryWaitMs,
        ),
      }),
  );
  addChangeRoutes(app, controller);
}

/** Membership changes of an initialized cluster, snapshots, and who leads. */
function addChangeRoutes(app: FastifyInstance, controller: ClusterController): void {
  app.post(
    '/change-membership',
    {
      schema: {
        body: {
          type: 'object',
          required: ['members'],
          additionalProperties: false,
          properties: { members: nodeIdList(1), learners: nodeIdList(0) },
        },
      },
    },
    (request) =>
      controller.changeMembership(request.body as Parameters<ClusterController['changeMembership']>[0]),
  );
  app.post(
    '/remove-learner',
    {
      schema: {
        body: {
          type: 'object',
          required: ['learner_id'],
          additionalProperties: false,
          properties: { learner_id: nodeIdSchema },
        },
      },
    },
    (request) => controller.removeLearner(request.body as Parameters<ClusterController['removeLearner']>[0]),
  );
  app.post(
    '/trigger-snapshot',
    {
      // No body, {} or {"node":"leader"|"local"}.
      preValidation: emptyBodyAsObject,
      schema: { body: exact({ node: { enum: ['leader', 'local'] } }, ['node']) },
    },
    (request) =>
      controller.triggerSnapshot(request.body as Parameters<ClusterController['triggerSnapshot']>[0]),
  );
  app.get('/leader', async () => ({ leader: (await controller.currentState()).leader }));
}

/** An object with exactly the `required` fields (plus the optional ones), of the given schemas. */
function exact<P extends Record<string, object>>(properties: P, optional: readonly (keyof P)[] = []) {
  return {
    type: 'object',
    required: Object.keys(properties).filter((name) => !optional.includes(name)),
    additionalProperties: false,
    properties,
  } as const;
}

/** One of the named variants, `{"Kind": {...}}`, and nothing else. */
function variant(properties: Record<string, object>) {
  return {
    type: 'object',
    minProperties: 1,
    maxProperties: 1,
    additionalProperties: false,
    properties,
  } as const;
}

/**
 * Types and exact shapes of the /write commands. Byte sizes, counts (compares, ops, pairs) and the
 * rules between fields are left to validateWriteCommand, which answers them with their own codes
 * (KEY_TOO_LARGE, VALUE_TOO_LARGE, BATCH_TOO_LARGE) and messages.
 */
const text = { type: 'string' } as const;
/** A Set's optional lease: its rules (0: none, else a positive integer) are checkSet's (INVALID_INPUT). */
const leaseId = { lease_id: {} } as const;
const txnOp = variant({
  Set: exact({ key: text, value: text, ...leaseId }, ['lease_id']),
  Delete: exact({ key: text }),
  Get: exact({ key: text }),
  Scan: exact({ prefix: text, limit: { type: 'integer' } }, ['limit']),
});
const compare = exact({
  key: text,
  target: { enum: ['value', 'version', 'create_index', 'mod_index', 'lease_id'] },
  op: { enum: ['equal', 'not_equal', 'greater', 'less'] },
  value: { anyOf: [{ type: 'string' }, { type: 'integer' }] },
});
const writeCommand = variant({
  Set: exact({ key: text, value: text, ...leaseId }, ['lease_id']),
  SetMulti: exact({ pairs: { type: 'array', items: { type: 'array', items: text } } }),
  Delete: exact({ key: text }),
  DeleteMulti: exact({ keys: { type: 'array', items: text } }),
  CompareAndSwap: exact({ key: text, expected: { type: ['string', 'null'] }, new_value: text }),
  CompareAndDelete: exact({ key: text, expected: text }),
  Transaction: exact({
    compare: { type: 'array', items: compare },
    success: { type: 'array', items: txnOp },
    failure: { type: 'array', items: txnOp },
  }),
});

/** The optional session fields of /write and /delete; their rules are validateSession's (INVALID_INPUT). */
const session = { client_id: {}, sequence: {} } as const;
const SESSION = ['client_id', 'sequence'] as const;

function addKeyValueRoutes(app: FastifyInstance, store: KeyValueStore): void {
  app.post('/write', { schema: { body: exact({ command: writeCommand, ...session }, SESSION) } }, (request) =>
    store.write(request.body as Parameters<KeyValueStore['write']>[0]),
  );
  app.get('/read', { schema: { querystring: keyBody } }, (request) =>
    store.read(request.query as { key: string }),
  );
  app.post('/read', { schema: { body: keyBody } }, (request) => store.read(request.body as { key: string }));
  app.post(
    '/delete',
    { schema: { body: exact({ key: keyBody.properties.key, ...session }, SESSION) } },
    (request) => store.delete(request.body as Parameters<KeyValueStore['delete']>[0]),
  );
  app.post(
    '/scan',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            prefix: { type: 'string', maxLength: KEY_BYTES_MAX },
            limit: { type: 'integer', minimum: 1, maximum: SCAN_LIMIT_MAX },
            continuation_token: { type: ['string', 'null'], maxLength: CONTINUATION_TOKEN_CHARS_MAX },
          },
        },
      },
    },
    (request) => store.scan(request.body as Parameters<KeyValueStore['scan']>[0]),
  );
}

/** Metrics, health, identity, membership (with each member's HTTP URL) and the network layer's routes (peers, tickets). */
function addNodeRoutes(app: FastifyInstance, options: HttpServerOptions, metrics: PrometheusMetrics): void {
  const { controller, identity } = options;
  const nodeMetrics = async (): Promise<NodeMetrics> => ({
    ...(await controller.getMetrics()),
    ...processMetrics(),
  });
  app.get('/metrics', nodeMetrics);
  app.get('/state', (request) => stateWithUrls(options, request.server.server.address()));
  app.get('/metrics/prometheus', async (_request, reply) => {
    const text = await metrics.render(await nodeMetrics());
    return reply.type(metrics.registry.contentType).send(text);
  });
  app.get('/node-info', () => ({
    node_id: identity.nodeId,
    endpoint_id: identity.endpointId,
    addrs: options.network?.addresses() ?? [],
    http_addr: options.httpAddress ?? null,
  }));
  app.post(
    '/add-peer',
    {
      schema: {
        body: {
          type: 'object',
          required: ['node_id', 'addr'],
          additionalProperties: false,
          properties: {
            node_id: nodeIdSchema,
            addr: { type: 'string', minLength: 1, maxLength: ADDRESS_CHARS_MAX },
          },
        },
      },
    },
    (request) => addPeer(options, request.body as { node_id: number; addr: string }),
  );
  app.get('/peers', () => ({ peers: options.network?.peers?.() ?? [] }));
  addTicketRoutes(app, options.network);
  app.get('/health', async (_request, reply) => {
    const raft = await controller.getMetrics();
    const report = options.health?.() ?? healthFromMetrics(raft);
    return reply.code(report.status === 'unhealthy' ? 503 : 200).send({
      status: report.status,
      checks: { ...report.checks, raft_state: raft.state },
      leaderless_ms: report.leaderless_ms,
      log_lag_entries: report.log_lag_entries,
      node_id: identity.nodeId,
      raft_node_id: raft.node_id,
      endpoint_id: identity.endpointId,
      uptime_seconds: Math.floor((identity.nowMs() - identity.startedAtMs) / 1000),
    });
  });
}

/** The membership, with the HTTP URL of every member this node knows (member-urls.ts). */
async function stateWithUrls(
  options: HttpServerOptions,
  listening: ReturnType<FastifyInstance['server']['address']>,
): Promise<StateAnswer> {
  const state = await options.controller.currentState();
  const self: SelfHttp = {
    nodeId: options.identity.nodeId,
    address: options.httpAddress,
    port: typeof listening === 'object' && listening !== null ? listening.port : null,
    secure: options.tls !== undefined,
  };
  const peers = options.network?.peers?.() ?? [];
  const announced = new Map(peers.map((peer) => [peer.node_id, peer.http_addr]));
  return { ...state, http_urls: memberHttpUrls(state, self, announced) };
}

/**
 * Tickets, answered by the node asked (never forwarded): a cookie ticket, or a join ticket whose
 * single-use credential only this node can check.
 */
function addTicketRoutes(app: FastifyInstance, network: NetworkInfo | undefined): void {
  const noNetwork = (): AspenError =>
    new AspenError('INVALID_INPUT', 'this node has no network layer to make a ticket from');
  app.get('/cluster-ticket', () => {
    const ticket = network?.clusterTicket?.();
    if (ticket === undefined) throw noNetwork();
    return { ticket };
  });
  const ttlSeconds = { type: 'integer', minimum: JOIN_TTL_SECONDS_MIN, maximum: JOIN_TTL_SECONDS_MAX };
  app.post(
    '/join-ticket',
    { schema: { body: exact({ node_id: nodeIdSchema, ttl_seconds: ttlSeconds }, ['ttl_seconds']) } },
    (request) => {
      const body = request.body as { node_id: number; ttl_seconds?: number };
      if (network?.joinTicket === undefined) throw noNetwork();
      return network.joinTicket(body.node_id, body.ttl_seconds ?? JOIN_TTL_SECONDS_DEFAULT);
    },
  );
}

/**
 * Health of an engine without a health source (tests, a single-node stub): from its metrics alone,
 * it cannot tell for how long no leader was known, so it is never called unhealthy.
 */
function healthFromMetrics(raft: RaftMetrics): HealthReport {
  return evaluateHealth({
    initialized: raft.membership_config !== null,
    storageFailed: false,
    isLeader: raft.state === 'Leader',
    leaderKnown: raft.current_leader !== null,
    leaderlessMs: null,
    leaderContactMsAgo: null,
    lagEntries: null,
    electionTimeoutMaxMs: Number.POSITIVE_INFINITY,
  });
}

function addPeer(
  options: HttpServerOptions,
  body: { node_id: number; addr: string },
): { node_id: number; addr: string } {
  const { node_id: nodeId, addr } = body;
  if (options.network === undefined) throw new AspenError('INVALID_INPUT', 'this node has no network layer');
  if (nodeId === options.identity.nodeId) throw new AspenError('INVALID_INPUT', 'a node is not its own peer');
  if (!isRaftAddress(addr))
    throw new AspenError('INVALID_INPUT', `addr must be a multiaddr or ip:port, got "${addr}"`);
  try {
    options.network.addPeer(nodeId, addr);
  } catch (error) {
    throw new AspenError(
      'INVALID_INPUT',
      `cannot use ${addr}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  return { node_id: nodeId, addr };
}
