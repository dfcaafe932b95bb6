import type { ClusterNode, JoinTicketAnswer } from '../api/types.ts';

/** Endpoints one client may be given. */
export const ENDPOINTS_MAX = 64;
/** Default bound on one attempt of a call. */
export const CALL_TIMEOUT_MS_DEFAULT = 10_000;
/** add-learner waits for the learner to catch up (the server allows 30 s). */
export const ADD_LEARNER_TIMEOUT_MS_DEFAULT = 40_000;
export const RETRY_ATTEMPTS_MAX_DEFAULT = 8;
export const RETRY_TOTAL_MS_MAX_DEFAULT = 20_000;
export const BACKOFF_MS_MIN_DEFAULT = 20;
export const BACKOFF_MS_MAX_DEFAULT = 1_000;
/** Leader discovery (GET /leader and /node-info of every endpoint) runs at most this often. */
export const DISCOVERY_INTERVAL_MS_MIN = 1_000;
/** Bound on each discovery request, so a hung endpoint cannot stall a call for long. */
export const DISCOVERY_TIMEOUT_MS_MAX = 1_000;
/** Pages scanAll reads at most (each up to the scan limit). */
export const SCAN_PAGES_MAX = 1_000;

export interface RetryPolicy {
  readonly attemptsMax: number;
  readonly totalMsMax: number;
  readonly backoffMsMin: number;
  readonly backoffMsMax: number;
}

export interface KvClientOptions {
  /** Base URLs of the nodes' HTTP APIs, e.g. http://127.0.0.1:8001 or https://10.0.0.5:8080. */
  readonly endpoints: readonly string[];
  /** Bound on each attempt (default CALL_TIMEOUT_MS_DEFAULT). */
  readonly timeoutMs?: number;
  readonly retry?: Partial<RetryPolicy>;
  /**
   * Exactly-once sessions (default true): mutating calls carry a client_id and sequence, so one
   * whose outcome is unknown is sent again within the retry budget. false: never sent again.
   */
  readonly sessions?: boolean;
  /**
   * A bearer token sent with every call and stream (`Authorization: Bearer …`), for nodes started
   * with --auth-tokens (docs/operations.md, "Securing a cluster"). Never logged.
   */
  readonly token?: string;
  /**
   * PEM certificate(s) of the CA that signed the nodes' certificates (`aspen-node --http-tls-cert`),
   * for https:// endpoints. It replaces Node's default root CAs for this client (only this CA is
   * trusted: a certificate from a public CA for the same name is refused); without it the default
   * roots (and NODE_EXTRA_CA_CERTS) apply. A certificate no trusted CA signed fails TLS_ERROR.
   */
  readonly ca?: string | Uint8Array;
}

export interface CallOptions {
  /** Bound on each attempt of this call. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Overrides of the client's retry policy for this call. */
  readonly retry?: Partial<RetryPolicy>;
}

export interface MembershipOptions extends CallOptions {
  /** The learners wanted after the change (see changeMembership). */
  readonly learners?: readonly number[];
}

export interface JoinTicketOptions extends CallOptions {
  /** How long the ticket's credential stays valid, in seconds (1..3600; the node's default 600). */
  readonly ttlSeconds?: number;
}

/** A join ticket minted by the node that answered (POST /join-ticket). */
export type JoinTicketResult = JoinTicketAnswer;

export interface NodeInfo {
  readonly node_id: number;
  readonly endpoint_id: string;
  readonly addrs: readonly string[];
  readonly http_addr: string | null;
}

/** GET /health (docs/api.md): a checks value of false is the check that failed. */
export interface HealthResult {
  readonly status: 'healthy' | 'degraded' | 'unhealthy';
  readonly checks: {
    readonly initialized: boolean;
    readonly storage: boolean;
    readonly leader: boolean;
    readonly leader_contact: boolean;
    readonly log_lag: boolean;
    readonly raft_state: string;
  };
  readonly leaderless_ms: number | null;
  readonly log_lag_entries: number | null;
  readonly node_id: number;
  readonly raft_node_id: number;
  readonly endpoint_id: string;
  readonly uptime_seconds: number;
}

export interface DiscoveredPeer {
  readonly node_id: number;
  readonly peer_id: string;
  readonly addrs: readonly string[];
  readonly http_addr: string | null;
  readonly last_seen_ms_ago: number;
}

/** A member given by id alone lets discovery supply its address (see docs/api.md). */
export type MemberSpec = Pick<ClusterNode, 'id'> & Partial<Pick<ClusterNode, 'addr' | 'raft_addr'>>;
