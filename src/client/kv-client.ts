import type {
  ClusterNode, ClusterState, DeleteResult, RaftMetrics, ReadResult, ScanRequest, ScanResult, SnapshotResult, WriteCommand, WriteResult,
} from '../api/types.ts';
import { KvError } from './errors.ts';
import { HttpPool } from './http-transport.ts';

export const ENDPOINTS_MAX = 64;
export const CALL_TIMEOUT_MS_DEFAULT = 10_000;
/** add-learner waits for the learner to catch up (the server allows 30 s). */
export const ADD_LEARNER_TIMEOUT_MS_DEFAULT = 40_000;
export const RETRY_ATTEMPTS_MAX_DEFAULT = 8;
export const RETRY_TOTAL_MS_MAX_DEFAULT = 20_000;
export const BACKOFF_MS_MIN_DEFAULT = 20;
export const BACKOFF_MS_MAX_DEFAULT = 1_000;
/** Pages scanAll reads at most (each up to the scan limit). */
export const SCAN_PAGES_MAX = 1_000;

export interface RetryPolicy {
  readonly attemptsMax: number;
  readonly totalMsMax: number;
  readonly backoffMsMin: number;
  readonly backoffMsMax: number;
}

export interface KvClientOptions {
  /** Base URLs of the nodes' HTTP APIs, e.g. http://127.0.0.1:8001. */
  readonly endpoints: readonly string[];
  readonly timeoutMs?: number;
  readonly retry?: Partial<RetryPolicy>;
}

export interface CallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface NodeInfo {
  readonly node_id: number;
  readonly endpoint_id: string;
  readonly addrs: readonly string[];
  readonly http_addr: string | null;
}

export interface HealthResult {
  readonly status: 'healthy' | 'degraded';
  readonly checks: { readonly initialized: boolean; readonly leader: boolean; readonly raft_state: string };
  readonly node_id: number;
  readonly uptime_seconds: number;
}

/** A member given by id alone lets discovery supply its address (see docs/api.md). */
export type MemberSpec = Pick<ClusterNode, 'id'> & Partial<Pick<ClusterNode, 'addr' | 'raft_addr'>>;

/** Whether an operation may run twice without harm: reads yes; writes and membership changes no. */
type Idempotence = 'idempotent' | 'once';

interface Call {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: unknown;
  readonly idempotence: Idempotence;
  /** Must reach the leader (membership calls are not forwarded by followers). */
  readonly leaderOnly: boolean;
}

/** Failures worth another attempt: a leader change, overload, an endpoint down or slow. */
const TRANSIENT_CODES = new Set(['NOT_LEADER', 'NO_LEADER', 'OVERLOADED', 'SHUTTING_DOWN', 'CONNECTION', 'TIMEOUT', 'NO_QUORUM']);

/**
 * A typed client of the HTTP API: keep-alive pool, leader discovery and caching, bounded retries
 * with full-jitter backoff. A write is retried only when it certainly did not apply (a NOT_LEADER,
 * NO_LEADER, OVERLOADED or SHUTTING_DOWN answer, or a connection refused before sending); after a
 * timeout it fails with `definite: false`, since it may still apply.
 */
export class KvClient {
  private readonly endpoints: readonly string[];
  private readonly pool = new HttpPool();
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly endpointOfNode = new Map<number, string>();
  private leaderEndpoint: string | null = null;
  /** A leader named by a NOT_LEADER answer whose endpoint is still to be found. */
  private pendingLeaderId: number | null = null;
  private next = 0;

  constructor(options: KvClientOptions) {
    if (options.endpoints.length === 0 || options.endpoints.length > ENDPOINTS_MAX) throw new RangeError(`1..${ENDPOINTS_MAX} endpoints`);
    this.endpoints = options.endpoints.map((endpoint) => new URL(endpoint).origin);
    this.timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS_DEFAULT;
    this.retry = {
      attemptsMax: options.retry?.attemptsMax ?? RETRY_ATTEMPTS_MAX_DEFAULT,
      totalMsMax: options.retry?.totalMsMax ?? RETRY_TOTAL_MS_MAX_DEFAULT,
      backoffMsMin: options.retry?.backoffMsMin ?? BACKOFF_MS_MIN_DEFAULT,
      backoffMsMax: options.retry?.backoffMsMax ?? BACKOFF_MS_MAX_DEFAULT,
    };
    if (this.retry.attemptsMax < 1 || this.retry.backoffMsMin > this.retry.backoffMsMax) throw new RangeError('bad retry policy');
  }

  // ------------------------------------------------------------------ key-value

  write(command: WriteCommand, options?: CallOptions): Promise<WriteResult> {
    return this.call<WriteResult>({ method: 'POST', path: '/write', body: { command }, idempotence: 'once', leaderOnly: false }, options);
  }

  put(key: string, value: string, options?: CallOptions): Promise<WriteResult> {
    return this.write({ Set: { key, value } }, options);
  }

  delete(key: string, options?: CallOptions): Promise<DeleteResult> {
    return this.call<DeleteResult>({ method: 'POST', path: '/delete', body: { key }, idempotence: 'once', leaderOnly: false }, options);
  }

  /** Linearizable read; rejects with KEY_NOT_FOUND for a missing key. */
  read(key: string, options?: CallOptions): Promise<ReadResult> {
    return this.call<ReadResult>({ method: 'POST', path: '/read', body: { key }, idempotence: 'idempotent', leaderOnly: false }, options);
  }

  /** Linearizable read; null for a missing key. */
  async get(key: string, options?: CallOptions): Promise<ReadResult | null> {
    try {
      return await this.read(key, options);
    } catch (error) {
      if (error instanceof KvError && error.code === 'KEY_NOT_FOUND') return null;
      throw error;
    }
  }

  scan(request: ScanRequest = {}, options?: CallOptions): Promise<ScanResult> {
    return this.call<ScanResult>({ method: 'POST', path: '/scan', body: request, idempotence: 'idempotent', leaderOnly: false }, options);
  }

  /** Every entry under a prefix, page by page (at most SCAN_PAGES_MAX pages). */
  async scanAll(prefix: string, options?: CallOptions): Promise<{ key: string; value: string }[]> {
    const entries: { key: string; value: string }[] = [];
    let token: string | null = null;
    for (let page = 0; page < SCAN_PAGES_MAX; page += 1) {
      const result: ScanResult = await this.scan({ prefix, continuation_token: token }, options);
      entries.push(...result.entries);
      token = result.continuation_token;
      if (token === null) return entries;
    }
    throw new KvError('INVALID_INPUT', `more than ${SCAN_PAGES_MAX} pages under "${prefix}"`, { definite: true });
  }

  // ------------------------------------------------------------------ cluster

  init(members: readonly MemberSpec[], options?: CallOptions): Promise<ClusterState> {
    return this.call<ClusterState>({ method: 'POST', path: '/init', body: { initial_members: members }, idempotence: 'once', leaderOnly: false }, options);
  }

  addLearner(learner: MemberSpec, options?: CallOptions): Promise<ClusterState> {
    const call: Call = { method: 'POST', path: '/add-learner', body: { learner }, idempotence: 'once', leaderOnly: true };
    return this.call<ClusterState>(call, { timeoutMs: ADD_LEARNER_TIMEOUT_MS_DEFAULT, ...options });
  }

  changeMembership(members: readonly number[], options?: CallOptions): Promise<ClusterState> {
    return this.call<ClusterState>({ method: 'POST', path: '/change-membership', body: { members }, idempotence: 'once', leaderOnly: true }, options);
  }

  triggerSnapshot(options?: CallOptions): Promise<SnapshotResult> {
    return this.call<SnapshotResult>({ method: 'POST', path: '/trigger-snapshot', idempotence: 'once', leaderOnly: true }, options);
  }

  addPeer(nodeId: number, addr: string, options?: CallOptions): Promise<{ node_id: number; addr: string }> {
    return this.call({ method: 'POST', path: '/add-peer', body: { node_id: nodeId, addr }, idempotence: 'idempotent', leaderOnly: false }, options);
  }

  state(options?: CallOptions): Promise<ClusterState> {
    return this.call<ClusterState>({ method: 'GET', path: '/state', idempotence: 'idempotent', leaderOnly: false }, options);
  }

  async leader(options?: CallOptions): Promise<number | null> {
    return (await this.call<{ leader: number | null }>({ method: 'GET', path: '/leader', idempotence: 'idempotent', leaderOnly: false }, options)).leader;
  }

  clusterTicket(options?: CallOptions): Promise<{ ticket: string }> {
    return this.call({ method: 'GET', path: '/cluster-ticket', idempotence: 'idempotent', leaderOnly: false }, options);
  }

  /** Per-node calls: these ask one endpoint and never retry elsewhere. */
  metrics(endpoint: string, options?: CallOptions): Promise<RaftMetrics> {
    return this.once<RaftMetrics>(endpoint, 'GET', '/metrics', undefined, options);
  }

  health(endpoint: string, options?: CallOptions): Promise<HealthResult> {
    return this.once<HealthResult>(endpoint, 'GET', '/health', undefined, options, true);
  }

  nodeInfo(endpoint: string, options?: CallOptions): Promise<NodeInfo> {
    return this.once<NodeInfo>(endpoint, 'GET', '/node-info', undefined, options);
  }

  get endpointList(): readonly string[] {
    return this.endpoints;
  }

  /** The endpoint believed to be the leader's (null until learned). */
  get cachedLeader(): string | null {
    return this.leaderEndpoint;
  }

  close(): void {
    this.pool.close();
  }

  // ------------------------------------------------------------------ machinery

  /** One request to one endpoint; an error answer (or, unless `anyStatus`, a non-2xx) rejects. */
  private async once<T>(endpoint: string, method: 'GET' | 'POST', path: string, body: unknown, options: CallOptions | undefined, anyStatus = false): Promise<T> {
    const timeout = AbortSignal.timeout(options?.timeoutMs ?? this.timeoutMs);
    const signal = options?.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    const answer = await this.pool.request(endpoint, method, path, body, signal);
    if (answer.status >= 200 && answer.status < 300) return answer.body as T;
    if (anyStatus && (answer.body as { error?: unknown } | null)?.error === undefined) return answer.body as T;
    throw KvError.fromAnswer(answer.status, answer.body, endpoint);
  }

  /** Run a call with leader routing and bounded, jittered retries. */
  private async call<T>(call: Call, options?: CallOptions): Promise<T> {
    const startedMs = Date.now();
    let lastError: KvError | null = null;
    for (let attempt = 1; attempt <= this.retry.attemptsMax; attempt += 1) {
      if (options?.signal?.aborted === true) throw new KvError('ABORTED', 'aborted by the caller', { definite: lastError?.definite ?? true });
      const endpoint = await this.pickEndpoint(call, lastError, options);
      try {
        const result = await this.once<T>(endpoint, call.method, call.path, call.body, options);
        if (call.leaderOnly) this.leaderEndpoint = endpoint;
        return result;
      } catch (error) {
        if (!(error instanceof KvError)) throw error;
        lastError = error;
        if (!this.shouldRetry(call, error) || Date.now() - startedMs >= this.retry.totalMsMax) throw error;
        this.forget(endpoint, error);
        const immediate = error.code === 'NOT_LEADER' && error.leaderId !== null && attempt === 1;
        if (!immediate) await this.backoff(attempt, startedMs, options?.signal);
      }
    }
    throw lastError ?? new KvError('TIMEOUT', 'no attempt was made', { definite: true });
  }

  private shouldRetry(call: Call, error: KvError): boolean {
    if (!TRANSIENT_CODES.has(error.code)) return false;
    if (call.idempotence === 'idempotent') return true;
    return error.definite; // a write that may have applied is never sent again
  }

  /** Drop what an error proved wrong: a leader that is not (or no longer) one, an endpoint that is down. */
  private forget(endpoint: string, error: KvError): void {
    if (error.code === 'NOT_LEADER' && error.leaderId !== null) {
      this.leaderEndpoint = this.endpointOfNode.get(error.leaderId) ?? null;
      if (this.leaderEndpoint === null) this.pendingLeaderId = error.leaderId;
      return;
    }
    if (this.leaderEndpoint === endpoint) this.leaderEndpoint = null;
    this.next += 1; // the next attempt goes elsewhere
  }

  /** The leader's endpoint when known or learnable; otherwise the endpoints in turn. */
  private async pickEndpoint(call: Call, lastError: KvError | null, options: CallOptions | undefined): Promise<string> {
    if (this.pendingLeaderId !== null) {
      const id = this.pendingLeaderId;
      this.pendingLeaderId = null;
      this.leaderEndpoint = await this.endpointOf(id, options);
    }
    if (this.leaderEndpoint !== null) return this.leaderEndpoint;
    if (call.leaderOnly && lastError === null) {
      const leader = await this.leader(options).catch(() => null);
      if (leader !== null) this.leaderEndpoint = await this.endpointOf(leader, options);
      if (this.leaderEndpoint !== null) return this.leaderEndpoint;
    }
    const endpoint = this.endpoints[this.next % this.endpoints.length];
    if (endpoint === undefined) throw new Error('no endpoints');
    return endpoint;
  }

  /** Map a node id to one of our endpoints by asking each endpoint who it is (cached). */
  private async endpointOf(nodeId: number, options: CallOptions | undefined): Promise<string | null> {
    const known = this.endpointOfNode.get(nodeId);
    if (known !== undefined) return known;
    await Promise.all(this.endpoints.map(async (endpoint) => {
      try {
        const info = await this.nodeInfo(endpoint, { timeoutMs: Math.min(this.timeoutMs, 2_000), ...(options?.signal === undefined ? {} : { signal: options.signal }) });
        this.endpointOfNode.set(info.node_id, endpoint);
      } catch {
        // that endpoint is down; another attempt will ask again
      }
    }));
    return this.endpointOfNode.get(nodeId) ?? null;
  }

  private async backoff(attempt: number, startedMs: number, signal: AbortSignal | undefined): Promise<void> {
    const ceilingMs = Math.min(this.retry.backoffMsMax, this.retry.backoffMsMin * 2 ** (attempt - 1));
    const remainingMs = Math.max(0, this.retry.totalMsMax - (Date.now() - startedMs));
    const delayMs = Math.min(remainingMs, Math.floor(Math.random() * ceilingMs)); // full jitter
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delayMs);
      signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}
