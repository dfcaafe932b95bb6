import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type { ClusterController, KeyValueStore } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { ADDRESS_CHARS_MAX, isRaftAddress, KEY_BYTES_MAX, SCAN_LIMIT_MAX } from '../api/limits.ts';
import { PrometheusMetrics } from './prometheus.ts';

/** Request body bound (DESIGN.md section 9); a larger body gets 413 BODY_TOO_LARGE. */
export const REQUEST_BODY_BYTES_MAX = 2 * 1024 * 1024;

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
  /** Peers found by discovery, for GET /peers. */
  peers?(): readonly DiscoveredPeerView[];
  /** A ticket for joining this cluster, for GET /cluster-ticket. */
  clusterTicket?(): string;
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
}

function completeNode(node: PartialNode, network: NetworkInfo | undefined): { id: number; addr: string; raft_addr: string } {
  const raftAddr = node.raft_addr ?? network?.resolve?.(node.id);
  if (raftAddr === undefined) throw new AspenError('INVALID_INPUT', `node ${node.id}: no raft_addr given and discovery has not found that node`);
  return { id: node.id, addr: node.addr ?? `node-${node.id}`, raft_addr: raftAddr };
}

export interface HttpServerOptions {
  readonly controller: ClusterController;
  readonly store: KeyValueStore;
  readonly identity: NodeIdentity;
  readonly network?: NetworkInfo;
  readonly httpAddress?: string;
  readonly logger?: boolean;
}

const clusterNode = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: {
    id: { type: 'integer', minimum: 1 },
    addr: { type: 'string', maxLength: ADDRESS_CHARS_MAX },
    raft_addr: { type: 'string', maxLength: ADDRESS_CHARS_MAX },
  },
} as const;

const keyBody = {
  type: 'object',
  required: ['key'],
  additionalProperties: false,
  // The key's byte bound is checked by the store (KEY_TOO_LARGE, as for writes), before any forwarding.
  properties: { key: { type: 'string', minLength: 1 } },
} as const;

/** The one place where failures become HTTP: AspenError by code, schema failures as INVALID_INPUT. */
function sendError(reply: FastifyReply, error: unknown, metrics: PrometheusMetrics): FastifyReply {
  let status: number;
  let body: { error: { code: string; message: string } };
  const fastifyError = error as Partial<FastifyError>;
  if (error instanceof AspenError) {
    status = error.httpStatus;
    body = error.toJSON();
  } else if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    status = 413;
    body = new AspenError('BODY_TOO_LARGE', `request body exceeds ${REQUEST_BODY_BYTES_MAX} bytes`).toJSON();
  } else if (fastifyError.validation !== undefined || fastifyError.statusCode === 400) {
    status = 400;
    body = new AspenError('INVALID_INPUT', fastifyError.message ?? 'invalid request').toJSON();
  } else if (fastifyError.statusCode === 415) {
    status = 415;
    body = { error: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send application/json' } };
  } else {
    status = 500;
    body = { error: { code: 'INTERNAL', message: 'internal error' } };
  }
  metrics.errors.inc({ code: body.error.code });
  return reply.code(status).send(body);
}

/**
 * The seed's control-plane API over the ClusterController and KeyValueStore contracts only, so any
 * engine can stand behind it. Every body is validated by a JSON schema and bounded in size.
 */
export function buildHttpServer(options: HttpServerOptions): FastifyInstance {
  const { controller, store, identity } = options;
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: REQUEST_BODY_BYTES_MAX });
  const metrics = new PrometheusMetrics();
  app.setErrorHandler((error, _request, reply) => sendError(reply, error, metrics));
  app.addHook('onResponse', (request, reply, done) => {
    const seconds = reply.elapsedTime / 1000;
    if (request.routeOptions.url === '/write') metrics.writeLatency.observe(seconds);
    else if (request.routeOptions.url === '/read') metrics.readLatency.observe(seconds);
    done();
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } }));

  app.post('/init', {
    schema: { body: { type: 'object', required: ['initial_members'], additionalProperties: false, properties: { initial_members: { type: 'array', minItems: 1, maxItems: 64, items: clusterNode } } } },
  }, (request) => {
    const members = (request.body as { initial_members: PartialNode[] }).initial_members;
    return controller.init({ initial_members: members.map((member) => completeNode(member, options.network)) });
  });

  app.post('/add-learner', {
    schema: { body: { type: 'object', required: ['learner'], additionalProperties: false, properties: { learner: clusterNode } } },
  }, (request) => controller.addLearner({ learner: completeNode((request.body as { learner: PartialNode }).learner, options.network) }));

  app.post('/change-membership', {
    schema: { body: { type: 'object', required: ['members'], additionalProperties: false, properties: { members: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'integer', minimum: 1 } } } } },
  }, (request) => controller.changeMembership(request.body as Parameters<ClusterController['changeMembership']>[0]));

  // The command's shape and size limits are checked by validateWriteCommand (typed error codes).
  app.post('/write', {
    schema: { body: { type: 'object', required: ['command'], additionalProperties: false, properties: { command: { type: 'object' } } } },
  }, (request) => store.write(request.body as Parameters<KeyValueStore['write']>[0]));

  app.get('/read', { schema: { querystring: keyBody } }, (request) => store.read(request.query as { key: string }));
  app.post('/read', { schema: { body: keyBody } }, (request) => store.read(request.body as { key: string }));
  app.post('/delete', { schema: { body: keyBody } }, (request) => store.delete(request.body as { key: string }));
  app.post('/scan', {
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        properties: {
          prefix: { type: 'string', maxLength: KEY_BYTES_MAX },
          limit: { type: 'integer', minimum: 1, maximum: SCAN_LIMIT_MAX },
          continuation_token: { type: ['string', 'null'], maxLength: 4 * KEY_BYTES_MAX },
        },
      },
    },
  }, (request) => store.scan(request.body as Parameters<KeyValueStore['scan']>[0]));

  app.get('/state', () => controller.currentState());
  app.get('/metrics', () => controller.getMetrics());
  app.get('/metrics/prometheus', async (_request, reply) => {
    const text = await metrics.render(await controller.getMetrics());
    return reply.type(metrics.registry.contentType).send(text);
  });
  app.get('/node-info', () => ({
    node_id: identity.nodeId,
    endpoint_id: identity.endpointId,
    addrs: options.network?.addresses() ?? [],
    http_addr: options.httpAddress ?? null,
  }));
  app.post('/add-peer', {
    schema: { body: { type: 'object', required: ['node_id', 'addr'], additionalProperties: false, properties: { node_id: { type: 'integer', minimum: 1 }, addr: { type: 'string', minLength: 1, maxLength: ADDRESS_CHARS_MAX } } } },
  }, (request) => {
    const { node_id: nodeId, addr } = request.body as { node_id: number; addr: string };
    if (options.network === undefined) throw new AspenError('INVALID_INPUT', 'this node has no network layer');
    if (nodeId === identity.nodeId) throw new AspenError('INVALID_INPUT', 'a node is not its own peer');
    if (!isRaftAddress(addr)) throw new AspenError('INVALID_INPUT', `addr must be a multiaddr or ip:port, got "${addr}"`);
    try {
      options.network.addPeer(nodeId, addr);
    } catch (error) {
      throw new AspenError('INVALID_INPUT', `cannot use ${addr}: ${error instanceof Error ? error.message : String(error)}`);
    }
    return { node_id: nodeId, addr };
  });
  app.get('/peers', () => ({ peers: options.network?.peers?.() ?? [] }));
  app.get('/cluster-ticket', () => {
    const ticket = options.network?.clusterTicket?.();
    if (ticket === undefined) throw new AspenError('INVALID_INPUT', 'this node has no network layer to make a ticket from');
    return { ticket };
  });
  app.get('/leader', async () => ({ leader: (await controller.currentState()).leader }));
  app.post('/trigger-snapshot', () => controller.triggerSnapshot());

  app.get('/health', async (_request, reply) => {
    const metrics = await controller.getMetrics();
    const initialized = metrics.membership_config !== null;
    const hasLeader = metrics.current_leader !== null;
    const status = hasLeader ? 'healthy' : 'degraded';
    return reply.code(200).send({
      status,
      checks: { initialized, leader: hasLeader, raft_state: metrics.state },
      node_id: identity.nodeId,
      raft_node_id: metrics.node_id,
      endpoint_id: identity.endpointId,
      uptime_seconds: Math.floor((identity.nowMs() - identity.startedAtMs) / 1000),
    });
  });
  return app;
}
