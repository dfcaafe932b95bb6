import type { FastifyInstance } from 'fastify';
import type { LeaseService } from '../api/contracts.ts';
import { checkedLeaseId } from '../api/lease-validation.ts';
import { KEY_BYTES_MAX } from '../base/limits.ts';
import type { LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest } from '../api/types.ts';

/**
 * Exact JSON shapes of the lease routes (docs/api.md "Leases"): integers only, no other field. The
 * ranges (the TTL's minimum depends on the cluster's election timeout) and the session rules are
 * the service's checks, answered as INVALID_INPUT like every other bad input.
 */
const leaseId = { type: 'integer', minimum: 1 } as const;
const session = { client_id: {}, sequence: {} } as const;

const grantBody = {
  type: 'object',
  required: ['ttl_seconds'],
  additionalProperties: false,
  properties: { ttl_seconds: { type: 'integer' }, lease_id: { type: 'integer', minimum: 0 }, ...session },
} as const;

const leaseIdBody = {
  type: 'object',
  required: ['lease_id'],
  additionalProperties: false,
  properties: { lease_id: leaseId },
} as const;

const revokeBody = {
  ...leaseIdBody,
  properties: { ...leaseIdBody.properties, ...session },
} as const;

/**
 * `?lease_id=7&keys=true&after=k`: a decimal id without sign or leading zero, keys true or false,
 * after a key (at most KEY_BYTES_MAX UTF-16 units here; the service checks its bytes).
 */
const infoQuery = {
  type: 'object',
  required: ['lease_id'],
  additionalProperties: false,
  properties: {
    lease_id: { type: 'string', pattern: '^[1-9][0-9]{0,15}$' },
    keys: { enum: ['true', 'false'] },
    after: { type: 'string', maxLength: KEY_BYTES_MAX },
  },
} as const;

export function addLeaseRoutes(app: FastifyInstance, leases: LeaseService): void {
  app.post('/lease/grant', { schema: { body: grantBody } }, (request) =>
    leases.grant(request.body as LeaseGrantRequest),
  );
  app.post('/lease/keepalive', { schema: { body: leaseIdBody } }, (request) =>
    leases.keepAlive(request.body as LeaseKeepAliveRequest),
  );
  app.post('/lease/revoke', { schema: { body: revokeBody } }, (request) =>
    leases.revoke(request.body as LeaseRevokeRequest),
  );
  app.get('/lease/info', { schema: { querystring: infoQuery } }, (request) => {
    const query = request.query as { lease_id: string; keys?: 'true' | 'false'; after?: string };
    // The pattern allows 16 digits: past 2^53 - 1 the id is refused, never rounded.
    const id = checkedLeaseId(Number(query.lease_id));
    const after = query.after === undefined ? {} : { after: query.after };
    return leases.info({ lease_id: id, keys: query.keys === 'true', ...after });
  });
  app.get('/leases', () => leases.list());
}
