import { LEASE_TTL_SECONDS_MAX } from '../base/limits.ts';
import { AspenError } from './errors.ts';
import { checkedSession, checkLeaseId, requestFields, validateKey } from './limits.ts';
import type { ClientSession } from './types.ts';

/**
 * Checks of the lease calls' untrusted input (docs/api.md "Leases"), shared by the node's control
 * client, the follower that forwards, and the wire codec: each answers INVALID_INPUT with the rule.
 */

/** A lease id naming an existing lease: a positive safe integer. Throws INVALID_INPUT. */
export function checkedLeaseId(value: unknown, what = 'lease_id'): number {
  const problem = checkLeaseId(value, what);
  if (problem !== null) throw problem;
  return value as number;
}

export interface CheckedLeaseGrant {
  /** 0: the cluster chooses. */
  readonly leaseId: number;
  readonly ttlSeconds: number;
  readonly session: ClientSession | null;
}

/**
 * A grant: `ttl_seconds` an integer in [ttlSecondsMin, LEASE_TTL_SECONDS_MAX] (the minimum is
 * leaseTtlSecondsMin of the cluster's election timeout), `lease_id` absent, 0 or a positive
 * integer, and the optional session fields. Throws INVALID_INPUT.
 */
export function checkedLeaseGrant(request: unknown, ttlSecondsMin: number): CheckedLeaseGrant {
  const body = requestFields(request);
  const ttl = body.ttl_seconds;
  if (
    typeof ttl !== 'number' ||
    !Number.isSafeInteger(ttl) ||
    ttl < ttlSecondsMin ||
    ttl > LEASE_TTL_SECONDS_MAX
  ) {
    throw new AspenError(
      'INVALID_INPUT',
      `ttl_seconds must be an integer in [${ttlSecondsMin}, ${LEASE_TTL_SECONDS_MAX}] ` +
        `(the minimum is 1.5 election timeouts of this cluster, the maximum one day)`,
    );
  }
  // 0 or absent: the cluster chooses the id.
  const leaseId = body.lease_id === undefined || body.lease_id === 0 ? 0 : checkedLeaseId(body.lease_id);
  return { leaseId, ttlSeconds: ttl, session: checkedSession(body) };
}

/** A revoke: `lease_id` and the optional session fields. Throws INVALID_INPUT. */
export function checkedLeaseRevoke(request: unknown): {
  readonly leaseId: number;
  readonly session: ClientSession | null;
} {
  const body = requestFields(request);
  return { leaseId: checkedLeaseId(body.lease_id), session: checkedSession(body) };
}

export interface CheckedLeaseInfo {
  readonly leaseId: number;
  readonly keys: boolean;
  /** List the keys after this one (null: from the first); only with keys. */
  readonly after: string | null;
}

/**
 * An info request: `lease_id`, `keys` a boolean when present, and `after` (only with keys=true) a
 * valid key when present. Throws INVALID_INPUT (KEY_TOO_LARGE for a longer `after`).
 */
export function checkedLeaseInfo(request: unknown): CheckedLeaseInfo {
  const body = requestFields(request);
  const keys = body.keys ?? false;
  if (typeof keys !== 'boolean') throw new AspenError('INVALID_INPUT', 'keys must be true or false');
  const leaseId = checkedLeaseId(body.lease_id);
  if (body.after === undefined) return { leaseId, keys, after: null };
  if (!keys) throw new AspenError('INVALID_INPUT', 'after pages the keys: it needs keys=true');
  const problem = validateKey(body.after, 'after');
  if (problem !== null) throw problem;
  return { leaseId, keys, after: body.after as string };
}
