import type {
  AddLearnerRequest,
  CampaignRequest,
  CampaignResult,
  ChangeMembershipRequest,
  ClusterState,
  DeleteRequest,
  DeleteResult,
  InitRequest,
  LeaderRequest,
  LeaderResult,
  LeaseGrantRequest,
  LeaseGrantResult,
  LeaseInfoRequest,
  LeaseInfoResult,
  LeaseKeepAliveRequest,
  LeaseKeepAliveResult,
  LeaseListResult,
  LeaseRevokeRequest,
  LeaseRevokeResult,
  LockRequest,
  LockResult,
  ProclaimRequest,
  RaftMetrics,
  ReadRequest,
  ReadResult,
  RemoveLearnerRequest,
  ResignRequest,
  ResignResult,
  ScanRequest,
  ScanResult,
  SnapshotRequest,
  SnapshotResult,
  UnlockRequest,
  UnlockResult,
  WatchEvent,
  WatchRequest,
  WriteRequest,
  WriteResult,
} from './types.ts';

/**
 * What the HTTP layer sees of cluster management; any engine (the RaftNode, a single-node stub)
 * can slot in behind it.
 */
export interface ClusterController {
  init(request: InitRequest): Promise<ClusterState>;
  /** Add a learner and wait until it has caught up with the leader (bounded wait). */
  addLearner(request: AddLearnerRequest): Promise<ClusterState>;
  /**
   * Make `members` the voters (joint consensus) and, when given, `learners` the learners (learners not
   * named in either are removed); without `learners`, learners not named stay learners. A learner is
   * promoted only once it has caught up (else LEARNER_NOT_CAUGHT_UP).
   */
  changeMembership(request: ChangeMembershipRequest): Promise<ClusterState>;
  /** Take a learner out of the cluster (one configuration entry). */
  removeLearner(request: RemoveLearnerRequest): Promise<ClusterState>;
  /**
   * Take a snapshot on the leader (`node` "leader", the default: NOT_LEADER elsewhere, which a
   * forwarding node turns into a call to the leader) or on this node (`node` "local").
   */
  triggerSnapshot(request?: SnapshotRequest): Promise<SnapshotResult>;
  currentState(): Promise<ClusterState>;
  getMetrics(): Promise<RaftMetrics>;
}

/** Linearizable key-value operations. Failures reject with an AspenError. */
export interface KeyValueStore {
  write(request: WriteRequest): Promise<WriteResult>;
  read(request: ReadRequest): Promise<ReadResult>;
  /** Delete one key; `deleted` tells whether it existed. */
  delete(request: DeleteRequest): Promise<DeleteResult>;
  /** Keys with a prefix in key order, linearizable, at most `limit` per page. */
  scan(request: ScanRequest): Promise<ScanResult>;
}

/**
 * Leases (docs/api.md "Leases"). Grant and revoke go through the log; keepalive, info and list are
 * answered by the leader from its deadlines (a follower forwards them, like reads). Failures reject
 * with an AspenError (LEASE_NOT_FOUND, LEASE_EXISTS, TOO_MANY_LEASES, NOT_LEADER, ...).
 */
export interface LeaseService {
  grant(request: LeaseGrantRequest): Promise<LeaseGrantResult>;
  keepAlive(request: LeaseKeepAliveRequest): Promise<LeaseKeepAliveResult>;
  revoke(request: LeaseRevokeRequest): Promise<LeaseRevokeResult>;
  info(request: LeaseInfoRequest): Promise<LeaseInfoResult>;
  list(): Promise<LeaseListResult>;
}

/**
 * Where a watcher's stream goes (the HTTP layer writes Server-Sent Events). The source calls it in
 * revision order, each revision's events in one call, never again after `canceled`.
 */
export interface WatchSink {
  /** The matching changes of one revision, all together, in the order the entry made them. */
  events(revision: number, events: readonly WatchEvent[]): void;
  /** Every change up to `revision` that matches has been passed to `events` (none is pending). */
  progress(revision: number): void;
  /** The stream ends: `revision` is the last one whose changes were all passed on. */
  canceled(reason: string, revision: number): void;
  /** False while the consumer is not taking more (the source holds back and waits for `resume`). */
  ready(): boolean;
}

/** An open watcher. */
export interface WatchSubscription {
  /**
   * The first revision it passes on: the request's start_revision, or (without one) the applied index
   * at open + 1, so every change applied after the open is seen.
   */
  readonly startRevision: number;
  /** The sink is ready again: pass on what is pending. */
  resume(): void;
  /** The consumer went away: drop the watcher (no `canceled` is sent). */
  close(): void;
}

/**
 * Watch (docs/api.md "Watch"): served by any node from the changes it applied, in order, with no
 * gap and no duplicate. `open` validates the request and throws an AspenError (INVALID_INPUT,
 * KEY_TOO_LARGE, COMPACTED with compactRevision, TOO_MANY_WATCHERS) before anything is sent.
 */
export interface WatchService {
  open(request: WatchRequest, sink: WatchSink): WatchSubscription;
}

/**
 * Locks (docs/api.md "Locks", etcd's recipe on leases and create revisions). `lock` answers once the
 * lease's key under the name is the owner, checked at a linearizable point; it rejects with
 * LEASE_NOT_FOUND (the lease is gone), LOCK_TIMEOUT (its key removed again), TOO_MANY_WAITERS, or
 * the usual errors. `signal` aborts a wait (the client went away): the key is removed.
 */
export interface LockService {
  lock(request: LockRequest, signal?: AbortSignal): Promise<LockResult>;
  unlock(request: UnlockRequest): Promise<UnlockResult>;
}

/**
 * Where an election's observation goes (GET /election/observe writes Server-Sent Events): first the
 * leader at the start, then one call per change of the leader or of its value, in revision order.
 */
export interface ElectionSink {
  /** The leader as of `revision` (null: none). */
  leader(revision: number, leader: LeaderResult | null): void;
  /** Nothing changed up to `revision`. */
  progress(revision: number): void;
  /** The observation ends (the watch under it was canceled, or it saw too many candidates). */
  canceled(reason: string, revision: number): void;
  /** False while the consumer is not taking more. */
  ready(): boolean;
}

/**
 * Elections (docs/api.md "Elections"): the queue of locks, with the candidate's value in its key.
 * `campaign` answers once the key is the leader (CAMPAIGN_TIMEOUT: its key removed again;
 * LEASE_NOT_FOUND; TOO_MANY_WAITERS); `proclaim` changes the leader's value (NOT_ELECTED: the key is a
 * candidate, not the leader; NOT_FOUND: no such key); `resign` deletes the key (NOT_FOUND); `leader`
 * reads the leader (NOT_FOUND: none); `observe` validates, reads the leader at a linearizable point
 * and opens a watch on this node, rejecting (INVALID_INPUT, COMPACTED, TOO_MANY_WATCHERS, ...) before
 * anything is passed to the sink.
 */
export interface ElectionService {
  campaign(request: CampaignRequest, signal?: AbortSignal): Promise<CampaignResult>;
  proclaim(request: ProclaimRequest): Promise<CampaignResult>;
  resign(request: ResignRequest): Promise<ResignResult>;
  leader(request: LeaderRequest): Promise<LeaderResult>;
  observe(request: LeaderRequest, sink: ElectionSink): Promise<WatchSubscription>;
}

/** The state machine as one snapshot: what a backup holds (docs/api.md "Backup"). */
export interface BackupSnapshot {
  /** The applied index it was read at (the revision it holds). */
  readonly index: number;
  readonly term: number;
  /** The node that read it. */
  readonly nodeId: number;
  /** The snapshot's bytes, as nodes send them to each other. */
  readonly data: Uint8Array;
}

/**
 * GET /backup: a linearizable barrier first (through the leader), then the state machine read in one
 * consistent view at an applied index at or after it, without stopping writes.
 */
export interface BackupService {
  backup(): Promise<BackupSnapshot>;
}
