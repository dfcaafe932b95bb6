/**
 * GET /health, decided in one pure function (docs/operations.md, "Health"):
 * - unhealthy (503): storage failed, or an initialized node has known no leader for longer than the
 *   maximum election timeout (an election that should have ended has not: no quorum can be reached
 *   from here);
 * - degraded (200): not initialized yet; or a follower or learner that has not heard from its leader
 *   for longer than the maximum election timeout, or whose applied index is more than
 *   HEALTH_LAG_ENTRIES_MAX behind the leader's commit index (Consul autopilot's MaxTrailingLogs);
 * - healthy (200) otherwise.
 */

/** A follower whose applied index trails the leader's commit index by more entries than this is degraded. */
export const HEALTH_LAG_ENTRIES_MAX = 250;

export const HEALTH_STATUSES = ['healthy', 'degraded', 'unhealthy'] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

/** What the node knows when asked; all times in milliseconds. */
export interface HealthObservation {
  /** The node has a cluster configuration (it was initialized, or joined one). */
  readonly initialized: boolean;
  readonly storageFailed: boolean;
  readonly isLeader: boolean;
  /** A leader is known now (this node, or the one it follows). */
  readonly leaderKnown: boolean;
  /** How long no leader has been known: 0 while one is; null when the engine does not track it. */
  readonly leaderlessMs: number | null;
  /** How long ago the known leader last sent an append or heartbeat (null: the leader itself, or none known). */
  readonly leaderContactMsAgo: number | null;
  /** The leader's commit index minus this node's applied index (null: unknown, or the leader itself). */
  readonly lagEntries: number | null;
  /** The longest election timeout: past it without a leader, the node is unhealthy. */
  readonly electionTimeoutMaxMs: number;
}

/** Each check, true when it passed (`leader`: a leader is known now; for how long not, see leaderless_ms). */
export interface HealthChecks {
  readonly initialized: boolean;
  readonly storage: boolean;
  readonly leader: boolean;
  readonly leader_contact: boolean;
  readonly log_lag: boolean;
}

export interface HealthReport {
  readonly status: HealthStatus;
  readonly checks: HealthChecks;
  readonly leaderless_ms: number | null;
  readonly log_lag_entries: number | null;
}

export function evaluateHealth(observation: HealthObservation): HealthReport {
  const { electionTimeoutMaxMs, leaderlessMs } = observation;
  if (!(electionTimeoutMaxMs > 0)) throw new RangeError('the election timeout is positive');
  if (leaderlessMs !== null && !(leaderlessMs >= 0))
    throw new RangeError('leaderless time is never negative');
  if (observation.leaderKnown && leaderlessMs !== null && leaderlessMs !== 0)
    throw new RangeError('a known leader means no leaderless time');
  const checks: HealthChecks = {
    initialized: observation.initialized,
    storage: !observation.storageFailed,
    leader: observation.leaderKnown,
    leader_contact:
      observation.isLeader ||
      observation.leaderContactMsAgo === null ||
      observation.leaderContactMsAgo <= electionTimeoutMaxMs,
    log_lag: observation.lagEntries === null || observation.lagEntries <= HEALTH_LAG_ENTRIES_MAX,
  };
  let status: HealthStatus = 'healthy';
  const leaderlessTooLong =
    observation.initialized && leaderlessMs !== null && leaderlessMs > electionTimeoutMaxMs;
  if (!checks.storage || leaderlessTooLong) status = 'unhealthy';
  else if (Object.values(checks).includes(false)) status = 'degraded';
  return { status, checks, leaderless_ms: leaderlessMs, log_lag_entries: observation.lagEntries };
}
