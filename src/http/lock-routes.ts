import type { FastifyInstance, FastifyReply } from 'fastify';
import type { LockService } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import type { LockRequest, UnlockRequest } from '../api/types.ts';

/**
 * Exact JSON shapes of the lock routes (docs/api.md "Locks"): no other field, integers only. The
 * name and key rules and the ranges are the service's checks, answered as INVALID_INPUT.
 */
const lockBody = {
  type: 'object',
  required: ['name', 'lease_id'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    lease_id: { type: 'integer', minimum: 1 },
    timeout_ms: { type: 'integer', minimum: 1 },
  },
} as const;

const unlockBody = {
  type: 'object',
  required: ['key'],
  additionalProperties: false,
  properties: { key: { type: 'string' } },
} as const;

/**
 * A signal aborted with `reason()` if the client goes away (the response closes unanswered) while a
 * call waits; `release` stops listening once the call settled.
 */
export function abandonOnClose(
  reply: FastifyReply,
  reason: () => AspenError,
): { readonly signal: AbortSignal; readonly release: () => void } {
  const abandoned = new AbortController();
  const onClose = (): void => {
    if (!reply.raw.writableFinished) abandoned.abort(reason());
  };
  reply.raw.once('close', onClose);
  return {
    signal: abandoned.signal,
    release: () => {
      reply.raw.off('close', onClose);
    },
  };
}

/**
 * POST /lock waits until the lease's key is the owner; if the client goes away first (the response
 * closes unanswered), the wait is aborted and the key it created removed. POST /unlock deletes a
 * lock key.
 */
export function addLockRoutes(app: FastifyInstance, locks: LockService): void {
  app.post('/lock', { schema: { body: lockBody } }, (request, reply) => {
    const caller = abandonOnClose(
      reply,
      () => new AspenError('LOCK_TIMEOUT', 'the client went away while waiting for the lock'),
    );
    return locks.lock(request.body as LockRequest, caller.signal).finally(caller.release);
  });
  app.post('/unlock', { schema: { body: unlockBody } }, (request) =>
    locks.unlock(request.body as UnlockRequest),
  );
}
