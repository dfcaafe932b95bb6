import type {
  ClusterState,
  LeaderResult,
  DeleteResult,
  RaftMetrics,
  ReadResult,
  ScanRequest,
  ScanResult,
  SnapshotResult,
  StateAnswer,
  WriteCommand,
  WriteResult,
} from '../api/types.ts';
import type { VerifiedBackup } from '../api/backup-format.ts';
import {
  backupBytes,
  saveBackup,
  type BackupOptions,
  type BackupTarget,
  type SavedBackup,
} from './backup.ts';
import { KvError } from './errors.ts';
import {
  ElectionApi,
  observeLeaders,
  type CampaignOptions,
  type LeaderChange,
  type Leadership,
  type ObserveOptions,
} from './election.ts';
import { checkCa, HttpPool } from './http-transport.ts';
import { LeaseApi } from './lease.ts';
import { LockApi, type Lock, type LockOptions } from './lock.ts';
import {
  ADD_LEARNER_TIMEOUT_MS_DEFAULT,
  BACKOFF_MS_MAX_DEFAULT,
  BACKOFF_MS_MIN_DEFAULT,
  CALL_TIMEOUT_MS_DEFAULT,
  DISCOVERY_INTERVAL_MS_MIN,
  DISCOVERY_TIMEOUT_MS_MAX,
  ENDPOINTS_MAX,
  RETRY_ATTEMPTS_MAX_DEFAULT,
  RETRY_TOTAL_MS_MAX_DEFAULT,
  SCAN_PAGES_MAX,
  type CallOptions,
  type DiscoveredPeer,
  type HealthResult,
  type JoinTicketOptions,
  type JoinTicketResult,
  type KvClientOptions,
  type MemberSpec,
  type MembershipOptions,
  type NodeInfo,
  type RetryPolicy,
} from './options.ts';
import {
  ANY,
  assert,
  backoff,
  checkPolicy,
  isAborted,
  isErrorBody,
  LEADER,
  moreTelling,
  PREFER_LEADER,
  shouldRetry,
  type Call,
  type Route,
} from './retry.ts';
import { judge, SessionLanes, withSession } from './session.ts';
import { watchUpdates, type WatchOptions, type WatchTarget, type WatchUpdate } from './watch.ts';
import {
  casOutcome,
  TxnBuilder,
  txnResultOf,
  type CasResult,
  type Transaction,
  type TxnResult,
} from './txn.ts';

/**
 * A typed client of the HTTP API (docs/api.md): keep-alive pool, leader discovery and caching,
 * bounded retries with full-jitter backoff. Writes carry an exactly-once session (session.ts), so
 * one in doubt is resent within the retry budget; with `sessions: false` it fails `definite: false`.
 */
export class KvClient {
  private readonly endpoints: readonly string[];
  private readonly pool: HttpPool;
  /** What every call and stream sends besides its own headers (the bearer token). */
  private readonly headers: Readonly<Record<string, string>>;
  /** The CA certificates (PEM) trusted for https:// endpoints, or undefined for Node's default roots. */
  private readonly ca: string | undefined;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly endpointOfNode = new Map<number, string>();
  private leaderEndpoint: string | null = null;
  /** A leader named by a NOT_LEADER answer whose endpoint is still to be found. */
  private pendingLeaderId: number | null = null;
  private discoveredAtMs = -Infinity;
  private next = 0;
  private readonly lanes: SessionLanes | null;
  /** Leases: `kv.lease.grant(10)`, `kv.lease.keepAliveForever(id)`, … (lease.ts, docs/cli.md). */
  readonly lease: LeaseApi = new LeaseApi((call, options, mutating) => this.call(call, options, mutating));
  private readonly locks: LockApi;
  private readonly elections: ElectionApi;

  constructor(options: KvClientOptions) {
    if (options.endpoints.length === 0 || options.endpoints.length > ENDPOINTS_MAX)
      throw new RangeError(`give 1..${ENDPOINTS_MAX} endpoints`);
    this.endpoints = [...new Set(options.endpoints.map(origin))];
    this.timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS_DEFAULT;
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${this.timeoutMs}`);
    this.retry = checkPolicy({
      attemptsMax: options.retry?.attemptsMax ?? RETRY_ATTEMPTS_MAX_DEFAULT,
      totalMsMax: options.retry?.totalMsMax ?? RETRY_TOTAL_MS_MAX_DEFAULT,
      backoffMsMin: options.retry?.backoffMsMin ?? BACKOFF_MS_MIN_DEFAULT,
      backoffMsMax: options.retry?.backoffMsMax ?? BACKOFF_MS_MAX_DEFAULT,
    });
    this.lanes = options.sessions === false ? null : new SessionLanes();
    this.headers = authHeaders(options.token);
    this.ca = checkCa(options.ca);
    this.pool = new HttpPool(this.headers, this.ca);
    this.locks = new LockApi(
      (call, opts, mutating) => this.call(call, opts, mutating),
      this.lease,
      this.retry,
    );
    this.elections = new ElectionApi((call, opts, mutating) => this.call(call, opts, mutating), this.locks);
  }

  // ------------------------------------------------------------------ key-value

  /** `revision` (= `log_index`) is the write's revision. */
  write(command: WriteCommand, options?: CallOptions): Promise<WriteResult> {
    return this.call(
      { method: 'POST', path: '/write', body: { command }, idempotent: false, route: PREFER_LEADER },
      options,
      true,
    );
  }

  /** With `leaseId` the key is attached to that lease (deleted with it); without, it is on no lease. */
  put(
    key: string,
    value: string,
    options?: CallOptions & { readonly leaseId?: number },
  ): Promise<WriteResult> {
    const leaseId = options?.leaseId;
    return this.write(
      { Set: leaseId === undefined ? { key, value } : { key, value, lease_id: leaseId } },
      options,
    );
  }

  /**
   * Compare-and-swap: write `value` iff the key holds exactly `expected` (null: iff it is absent). A
   * failed compare resolves `{ succeeded: false, current }` (nothing written); every other failure
   * rejects with a KvError (one in doubt was already resent under its session, if sessions are on).
   */
  cas(key: string, expected: string | null, value: string, options?: CallOptions): Promise<CasResult> {
    return casOutcome(key, this.write({ CompareAndSwap: { key, expected, new_value: value } }, options));
  }

  /** Delete the key iff it holds exactly `expected`; outcomes as for cas. */
  casDelete(key: string, expected: string, options?: CallOptions): Promise<CasResult> {
    return casOutcome(key, this.write({ CompareAndDelete: { key, expected } }, options));
  }

  /** `kv.txn().if(Compare.value('k', 'equal', 'v')).then(Op.set('k', 'w')).else(Op.get('k')).commit()`. */
  txn(): TxnBuilder {
    return new TxnBuilder((txn, options) => this.transaction(txn, options));
  }

  /**
   * Send a Transaction body as it is (the server validates it; the builder checks obvious mistakes
   * first). `succeeded: false` (the `failure` branch ran) is an answer, not an error.
   */
  async transaction(txn: Transaction, options?: CallOptions): Promise<TxnResult> {
    return txnResultOf(await this.write({ Transaction: txn }, options));
  }

  /** Delete one key; `deleted` tells whether it existed. */
  delete(key: string, options?: CallOptions): Promise<DeleteResult> {
    return this.call(
      { method: 'POST', path: '/delete', body: { key }, idempotent: false, route: PREFER_LEADER },
      options,
      true,
    );
  }

  /** Linearizable read; rejects with KEY_NOT_FOUND for a missing key. */
  read(key: string, options?: CallOptions): Promise<ReadResult> {
    return this.call(
      { method: 'POST', path: '/read', body: { key }, idempotent: true, route: PREFER_LEADER },
      options,
    );
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

  /** One page; pass `continuation_token` back for the next. */
  scan(request: ScanRequest = {}, options?: CallOptions): Promise<ScanResult> {
    return this.call(
      { method: 'POST', path: '/scan', body: request, idempotent: true, route: PREFER_LEADER },
      options,
    );
  }

  /** Every entry under a prefix, following continuation tokens (at most SCAN_PAGES_MAX pages). */
  async scanAll(
    prefix: string,
    options?: CallOptions & { readonly pageLimit?: number },
  ): Promise<{ key: string; value: string }[]> {
    const entries: { key: string; value: string }[] = [];
    let token: string | null = null;
    for (let page = 0; page < SCAN_PAGES_MAX; page += 1) {
      const request: ScanRequest = {
        prefix,
        continuation_token: token,
        ...(options?.pageLimit === undefined ? {} : { limit: options.pageLimit }),
      };
      const result: ScanResult = await this.scan(request, options);
      entries.push(...result.entries);
      token = result.continuation_token;
      if (token === null) return entries;
    }
    throw new KvError('INVALID_INPUT', `more than ${SCAN_PAGES_MAX} pages under "${prefix}"`, {
      definite: true,
    });
  }

  /**
   * Watch a key (or, with `prefix: true`, every key under a prefix): an async iterable of updates,
   * one per revision with matching changes (a progress update has no events), that reconnects and
   * resumes by itself, also on another endpoint when a node goes down (watch.ts). Without
   * `startRevision` it promises every change applied after its first stream connected (iteration
   * starts it; the node names that revision in its x-aspen-watch-start header; with an older node
   * that sends none, from the first update). It ends when
   * `signal` aborts or the loop breaks; COMPACTED (start revision older than the node's history, with
   * `compactRevision`), bad input, and an outage longer than the retry policy reject it.
   */
  watch(keyOrPrefix: string, options: WatchOptions = {}): AsyncIterable<WatchUpdate> {
    return watchUpdates(this.streamTarget(), keyOrPrefix, options);
  }

  // ------------------------------------------------------------------ locks

  /**
   * Take the lock `name` (docs/api.md "Locks") on a new lease of `ttlSeconds`, kept alive in the
   * background: waits up to `timeoutMs` (LOCK_TIMEOUT), then answers the key, its fencing token, a
   * `lost` signal (the lease is gone: stop working on the protected state) and `release()`. On any
   * failure to take it the lease is revoked. See lock.ts.
   */
  lock(name: string, options: LockOptions): Promise<Lock> {
    return this.locks.lock(name, options);
  }

  // ------------------------------------------------------------------ elections

  /**
   * Campaign in the election `name` with `value` (docs/api.md "Elections") on a new lease of
   * `ttlSeconds`, kept alive in the background: waits up to `timeoutMs` (CAMPAIGN_TIMEOUT) to be the
   * leader, then answers the leadership: its key, term (`revision`, the fencing token), `lost`,
   * `proclaim(value)` and `resign()`. On any failure to win the lease is revoked. See election.ts.
   */
  campaign(name: string, value: string, options: CampaignOptions): Promise<Leadership> {
    return this.elections.campaign(name, value, options);
  }

  /** The leader of the election `name` now (linearizable), or null. (`leader()` is the Raft leader.) */
  electionLeader(name: string): Promise<LeaderResult | null> {
    return this.elections.leader(name);
  }

  /**
   * The leader of the election `name` (null: none), then one step per change of it or of its value:
   * an async iterable that reconnects by itself, to the next endpoint after a failure, each new stream
   * starting from the leader at that moment. Ends when `signal` aborts or the loop breaks.
   */
  observe(name: string, options: ObserveOptions = {}): AsyncIterable<LeaderChange> {
    return observeLeaders(this.streamTarget(), name, options);
  }

  // ------------------------------------------------------------------ cluster

  init(members: readonly MemberSpec[], options?: CallOptions): Promise<ClusterState> {
    return this.call(
      { method: 'POST', path: '/init', body: { initial_members: members }, idempotent: false, route: ANY },
      options,
    );
  }

  /** Answers once the learner has caught up (default timeout ADD_LEARNER_TIMEOUT_MS_DEFAULT). */
  addLearner(learner: MemberSpec, options?: CallOptions): Promise<ClusterState> {
    const call: Call = {
      method: 'POST',
      path: '/add-learner',
      body: { learner },
      idempotent: false,
      route: LEADER,
    };
    return this.call(call, { timeoutMs: ADD_LEARNER_TIMEOUT_MS_DEFAULT, ...options });
  }

  /**
   * Make `members` the voters. With `learners`, exactly those stay learners (others are removed);
   * without, learners not named stay learners. Fails with LEARNER_NOT_CAUGHT_UP when a learner to
   * promote has not caught up.
   */
  changeMembership(members: readonly number[], options?: MembershipOptions): Promise<ClusterState> {
    const body = options?.learners === undefined ? { members } : { members, learners: options.learners };
    return this.call(
      { method: 'POST', path: '/change-membership', body, idempotent: false, route: LEADER },
      options,
    );
  }

  /** Take a learner out of the cluster (a learner added by mistake, or one that will never catch up). */
  removeLearner(learnerId: number, options?: CallOptions): Promise<ClusterState> {
    return this.call(
      {
        method: 'POST',
        path: '/remove-learner',
        body: { learner_id: learnerId },
        idempotent: false,
        route: LEADER,
      },
      options,
    );
  }

  triggerSnapshot(options?: CallOptions): Promise<SnapshotResult> {
    return this.call(
      { method: 'POST', path: '/trigger-snapshot', idempotent: false, route: LEADER },
      options,
    );
  }

  /**
   * GET /backup (admin; docs/api.md "Backup"), whole in memory and verified: every write
   * acknowledged before the call is in it. For a file, use saveBackup.
   */
  backup(options?: BackupOptions): Promise<{ backup: VerifiedBackup; bytes: Uint8Array; endpoint: string }> {
    return backupBytes(this.backupTarget(), options);
  }

  /**
   * GET /backup streamed into `path` (via `path`.tmp, verified on disk, synced, renamed), the
   * leader asked first: what the file holds, its size and SHA-256. `aspen backup save FILE`.
   */
  saveBackup(path: string, options?: BackupOptions): Promise<SavedBackup> {
    return saveBackup(this.backupTarget(), path, options);
  }

  /** The membership and, from a node that tells, each member's HTTP URL (`http_urls`). */
  state(options?: CallOptions): Promise<StateAnswer> {
    return this.call({ method: 'GET', path: '/state', idempotent: true, route: ANY }, options);
  }

  /** The leader's node id as some node knows it (null during an election). */
  async leader(options?: CallOptions): Promise<number | null> {
    return (
      await this.call<{ leader: number | null }>(
        { method: 'GET', path: '/leader', idempotent: true, route: ANY },
        options,
      )
    ).leader;
  }

  /** A ticket for `aspen-node --ticket` (GET /cluster-ticket). */
  clusterTicket(options?: CallOptions): Promise<{ ticket: string }> {
    return this.call({ method: 'GET', path: '/cluster-ticket', idempotent: true, route: ANY }, options);
  }

  /**
   * A join ticket for node `nodeId` (POST /join-ticket): a single-use credential instead of the
   * cookie, which only the node that answered can check (so the ticket names that node's addresses).
   * Minting twice is harmless (an unused credential expires), so a lost answer is asked again.
   */
  joinTicket(nodeId: number, options?: JoinTicketOptions): Promise<JoinTicketResult> {
    const body =
      options?.ttlSeconds === undefined
        ? { node_id: nodeId }
        : { node_id: nodeId, ttl_seconds: options.ttlSeconds };
    return this.call({ method: 'POST', path: '/join-ticket', body, idempotent: true, route: ANY }, options);
  }

  // ------------------------------------------------------------------ one node each (retried on that node only)

  metrics(endpoint: string, options?: CallOptions): Promise<RaftMetrics> {
    return this.call(
      { method: 'GET', path: '/metrics', idempotent: true, route: this.node(endpoint) },
      options,
    );
  }

  /** GET /metrics/prometheus: the exposition text. */
  prometheusMetrics(endpoint: string, options?: CallOptions): Promise<string> {
    return this.call(
      {
        method: 'GET',
        path: '/metrics/prometheus',
        idempotent: true,
        route: this.node(endpoint),
        text: true,
      },
      options,
    );
  }

  /** One node's health; an unhealthy node (503) answers its report too, it is not an error. */
  health(endpoint: string, options?: CallOptions): Promise<HealthResult> {
    return this.call(
      { method: 'GET', path: '/health', idempotent: true, route: this.node(endpoint), answerStatus: 503 },
      options,
    );
  }

  nodeInfo(endpoint: string, options?: CallOptions): Promise<NodeInfo> {
    return this.call(
      { method: 'GET', path: '/node-info', idempotent: true, route: this.node(endpoint) },
      options,
    );
  }

  peers(endpoint: string, options?: CallOptions): Promise<{ peers: DiscoveredPeer[] }> {
    return this.call(
      { method: 'GET', path: '/peers', idempotent: true, route: this.node(endpoint) },
      options,
    );
  }

  /** Tell one node where another node's transport listens (POST /add-peer). */
  addPeer(
    endpoint: string,
    nodeId: number,
    addr: string,
    options?: CallOptions,
  ): Promise<{ node_id: number; addr: string }> {
    return this.call(
      {
        method: 'POST',
        path: '/add-peer',
        body: { node_id: nodeId, addr },
        idempotent: true,
        route: this.node(endpoint),
      },
      options,
    );
  }

  get endpointList(): readonly string[] {
    return this.endpoints;
  }

  /** The endpoint believed to be the leader's (null until learned). */
  get cachedLeader(): string | null {
    return this.leaderEndpoint;
  }

  /** Close the pooled connections; calls after this open new ones. */
  close(): void {
    this.pool.close();
  }

  // ------------------------------------------------------------------ machinery

  private node(endpoint: string): Route {
    return { to: 'node', endpoint: origin(endpoint) };
  }

  private backupTarget(): BackupTarget {
    return { ...this.streamTarget(), preferred: this.leaderEndpoint };
  }

  /** Where watch and observe streams go, and what they carry. */
  private streamTarget(): WatchTarget {
    return {
      endpoints: this.endpoints,
      retry: this.retry,
      timeoutMs: this.timeoutMs,
      headers: this.headers,
      ...(this.ca === undefined ? {} : { ca: this.ca }),
    };
  }

  /**
   * Run a call with leader routing and retries bounded by attempts and by time: no attempt starts
   * after retry.totalMsMax, and none runs past max(totalMsMax, timeoutMs) from the start.
   */
  private call<T>(call: Call, options?: CallOptions, mutating = false): Promise<T> {
    if (!mutating || this.lanes === null) return this.send(call, options);
    return withSession(this.lanes, call, options?.signal, (sessioned) => this.send<T>(sessioned, options));
  }

  private async send<T>(call: Call, options?: CallOptions): Promise<T> {
    const retry =
      options?.retry === undefined ? this.retry : checkPolicy({ ...this.retry, ...options.retry });
    const attemptMs = options?.timeoutMs ?? this.timeoutMs;
    const startedMs = Date.now();
    const deadlineMs = startedMs + Math.max(retry.totalMsMax, attemptMs);
    /** No attempt starts at or after this instant. */
    const retryEndMs = Math.min(deadlineMs, startedMs + retry.totalMsMax);
    const caller = options?.signal;
    let lastError: KvError | null = null;
    /** The most telling failure so far (retry.ts, TELLING_ORDER): what the caller is told at the end. */
    let telling: KvError | null = null;
    /** Under a session: whether an earlier attempt may have reached the state machine. */
    let inDoubt = false;
    for (let attempt = 1; attempt <= retry.attemptsMax; attempt += 1) {
      if (isAborted(caller))
        throw new KvError('ABORTED', 'aborted by the caller', { definite: lastError?.definite ?? true });
      // AbortSignal.timeout takes whole milliseconds (a budget may be fractional: performance.now()).
      const timeout = AbortSignal.timeout(
        Math.max(1, Math.ceil(Math.min(attemptMs, deadlineMs - Date.now()))),
      );
      const signal = caller === undefined ? timeout : AbortSignal.any([caller, timeout]);
      const endpoint = await this.pickEndpoint(call.route, signal);
      try {
        const result = await this.attempt<T>(endpoint, call, signal);
        if (call.route.to === 'leader') this.leaderEndpoint = endpoint;
        return result;
      } catch (error) {
        if (!(error instanceof KvError)) throw error;
        const judged = judge(error, inDoubt);
        if (isAborted(caller) && error.status === null) {
          throw new KvError('ABORTED', `aborted by the caller: ${error.message}`, {
            definite: judged.definite,
            endpoint,
          });
        }
        lastError = judged;
        // The last judgement is what the whole call proves: under a session it counts every
        // earlier attempt in doubt; without one, only attempts that were definite were retried.
        telling = moreTelling(telling, judged).withDefinite(judged.definite);
        if (call.sessioned === true) inDoubt ||= !error.definite;
        if (!shouldRetry(call, error) || attempt === retry.attemptsMax || Date.now() >= retryEndMs)
          throw telling;
        this.forget(endpoint, error);
        const immediate = error.code === 'NOT_LEADER' && error.leaderId !== null && attempt === 1;
        if (!immediate) await backoff(retry, attempt, retryEndMs, caller);
        if (Date.now() >= retryEndMs) throw telling;
      }
    }
    assert(false, 'the retry loop returns or throws');
  }

  /** One request to one endpoint; an error answer rejects with its KvError. */
  private async attempt<T>(endpoint: string, call: Call, signal: AbortSignal): Promise<T> {
    const answer = await this.pool.request(endpoint, call.method, call.path, call.body, signal);
    const answered =
      (answer.status >= 200 && answer.status < 300) ||
      (answer.status === call.answerStatus && !isErrorBody(answer.body));
    if (!answered) throw KvError.fromAnswer(answer.status, answer.body, endpoint);
    const shapeOk =
      call.text === true
        ? typeof answer.body === 'string'
        : typeof answer.body === 'object' && answer.body !== null;
    if (!shapeOk)
      throw new KvError('BAD_RESPONSE', `${call.path}: unexpected answer from ${endpoint}`, {
        status: answer.status,
        endpoint,
        definite: false,
      });
    return answer.body as T;
  }

  /** Drop what an error proved wrong: a leader that is not (or no longer) one, an endpoint that is down. */
  private forget(endpoint: string, error: KvError): void {
    if (error.code === 'NOT_LEADER' && error.leaderId !== null) {
      this.leaderEndpoint = this.endpointOfNode.get(error.leaderId) ?? null;
      if (this.leaderEndpoint === null || this.leaderEndpoint === endpoint) {
        this.leaderEndpoint = null;
        this.pendingLeaderId = error.leaderId;
      }
      return;
    }
    if (this.leaderEndpoint === endpoint) this.leaderEndpoint = null;
    const index = this.endpoints.indexOf(endpoint);
    this.next = (index < 0 ? this.next : index) + 1; // the next attempt goes elsewhere
  }

  /** The leader's endpoint when known or learnable (unless any node will do); otherwise the endpoints in turn. */
  private async pickEndpoint(route: Route, signal: AbortSignal): Promise<string> {
    if (route.to === 'node') return route.endpoint;
    if (this.pendingLeaderId !== null) {
      const id = this.pendingLeaderId;
      this.pendingLeaderId = null;
      this.leaderEndpoint = await this.endpointOf(id, signal);
    }
    if (route.to !== 'any') {
      if (this.leaderEndpoint === null) await this.discoverLeader(signal);
      if (this.leaderEndpoint !== null) return this.leaderEndpoint;
    }
    const endpoint = this.endpoints[this.next % this.endpoints.length];
    assert(endpoint !== undefined, 'there is at least one endpoint');
    return endpoint;
  }

  /** Ask every endpoint who it is and whom it follows (at most once per DISCOVERY_INTERVAL_MS_MIN). */
  private async discoverLeader(signal: AbortSignal): Promise<void> {
    if (Date.now() - this.discoveredAtMs < DISCOVERY_INTERVAL_MS_MIN) return;
    this.discoveredAtMs = Date.now();
    const leaders = await Promise.all(
      this.endpoints.map(async (endpoint) => {
        const [, leader] = await Promise.all([
          this.learnNodeId(endpoint, signal),
          this.probe<{ leader: unknown }>(endpoint, '/leader', signal),
        ]);
        return typeof leader?.leader === 'number' ? leader.leader : null;
      }),
    );
    const leaderId = leaders.find((id) => id !== null) ?? null;
    if (leaderId !== null) this.leaderEndpoint = this.endpointOfNode.get(leaderId) ?? null;
  }

  /** Map a node id to one of our endpoints by asking each endpoint its /node-info (cached). */
  private async endpointOf(nodeId: number, signal: AbortSignal): Promise<string | null> {
    const known = this.endpointOfNode.get(nodeId);
    if (known !== undefined) return known;
    await Promise.all(this.endpoints.map((endpoint) => this.learnNodeId(endpoint, signal)));
    return this.endpointOfNode.get(nodeId) ?? null;
  }

  private async learnNodeId(endpoint: string, signal: AbortSignal): Promise<void> {
    const info = await this.probe<{ node_id: unknown }>(endpoint, '/node-info', signal);
    if (typeof info?.node_id === 'number') this.endpointOfNode.set(info.node_id, endpoint);
  }

  /** One short discovery GET; null when the endpoint does not answer it (discovery is best effort). */
  private async probe<T>(endpoint: string, path: string, signal: AbortSignal): Promise<Partial<T> | null> {
    const bounded = AbortSignal.any([signal, AbortSignal.timeout(DISCOVERY_TIMEOUT_MS_MAX)]);
    try {
      return await this.attempt<Partial<T>>(
        endpoint,
        { method: 'GET', path, idempotent: true, route: this.node(endpoint) },
        bounded,
      );
    } catch {
      return null;
    }
  }
}

/** An endpoint's origin (scheme, host, port); only http:// and https:// are endpoints. */
function origin(endpoint: string): string {
  const url = new URL(endpoint);
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new RangeError(`an endpoint is an http:// or https:// URL, got "${endpoint}"`);
  return url.origin;
}

/** Largest bearer token a client sends (a node refuses longer ones unread). */
export const TOKEN_CHARS_MAX = 256;

/** The Authorization header of a bearer token (none without one); a token with spaces or control characters is refused here. */
function authHeaders(token: string | undefined): Readonly<Record<string, string>> {
  if (token === undefined) return {};
  if (!/^[\x21-\x7e]+$/.test(token) || token.length > TOKEN_CHARS_MAX)
    throw new RangeError(`a token is 1..${TOKEN_CHARS_MAX} printable ASCII characters without spaces`);
  return { authorization: `Bearer ${token}` };
}
