import type { FastifyInstance } from 'fastify';
import type { ElectionService, ElectionSink } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import type {
  CampaignRequest,
  LeaderRequest,
  LeaderResult,
  ProclaimRequest,
  ResignRequest,
} from '../api/types.ts';
import { abandonOnClose } from './lock-routes.ts';
import { type SseSink, SseStreams } from './watch-route.ts';

/**
 * Exact JSON shapes of the election routes (docs/api.md "Elections"): no other field, integers only.
 * The name, key and value rules and the ranges are the service's checks, answered as INVALID_INPUT.
 */
const campaignBody = {
  type: 'object',
  required: ['name', 'lease_id', 'value'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    lease_id: { type: 'integer', minimum: 1 },
    value: { type: 'string' },
    timeout_ms: { type: 'integer', minimum: 1 },
  },
} as const;

const proclaimBody = {
  type: 'object',
  required: ['key', 'value'],
  additionalProperties: false,
  properties: { key: { type: 'string' }, value: { type: 'string' } },
} as const;

const resignBody = {
  type: 'object',
  required: ['key'],
  additionalProperties: false,
  properties: { key: { type: 'string' } },
} as const;

const nameQuery = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { name: { type: 'string' } },
} as const;

/**
 * The SSE form of an observation: `event: leader` (data: the LeaderResult) or `event: no_leader`
 * (data: {"name"}), each with `id:` the revision it holds at; progress and canceled as on /watch.
 */
function electionSink(name: string, sse: SseSink): ElectionSink {
  return {
    leader: (revision: number, leader: LeaderResult | null) => {
      if (leader === null) sse.send('no_leader', { name }, revision);
      else sse.send('leader', leader, revision);
    },
    progress: (revision) => {
      sse.progress(revision);
    },
    canceled: (reason, revision) => {
      sse.canceled(reason, revision);
    },
    ready: () => sse.ready(),
  };
}

export interface ElectionRoutesOptions {
  /** Tests inject a short one; default WATCH_HEARTBEAT_MS. */
  readonly heartbeatMs?: number;
}

/**
 * POST /election/campaign waits until the lease's key leads; if the client goes away first, the wait
 * is aborted and the key it created removed. POST /election/proclaim, /election/resign, GET
 * /election/leader, and GET /election/observe (an SSE stream of leader changes).
 */
export function addElectionRoutes(
  app: FastifyInstance,
  elections: ElectionService,
  options: ElectionRoutesOptions = {},
): void {
  const streams = new SseStreams(app, options.heartbeatMs);
  app.post('/election/campaign', { schema: { body: campaignBody } }, (request, reply) => {
    const caller = abandonOnClose(
      reply,
      () => new AspenError('CAMPAIGN_TIMEOUT', 'the client went away while campaigning'),
    );
    return elections.campaign(request.body as CampaignRequest, caller.signal).finally(caller.release);
  });
  app.post('/election/proclaim', { schema: { body: proclaimBody } }, (request) =>
    elections.proclaim(request.body as ProclaimRequest),
  );
  app.post('/election/resign', { schema: { body: resignBody } }, (request) =>
    elections.resign(request.body as ResignRequest),
  );
  app.get('/election/leader', { schema: { querystring: nameQuery } }, (request) =>
    elections.leader(request.query as LeaderRequest),
  );
  app.get('/election/observe', { schema: { querystring: nameQuery } }, async (request, reply) => {
    const query = request.query as LeaderRequest;
    await streams.stream(reply, (sse) => elections.observe(query, electionSink(query.name, sse)));
  });
}
