import type {
  AddLearnerRequest,
  ChangeMembershipRequest,
  ClusterState,
  DeleteRequest,
  DeleteResult,
  InitRequest,
  RaftMetrics,
  ReadRequest,
  ReadResult,
  RemoveLearnerRequest,
  ScanRequest,
  ScanResult,
  SnapshotResult,
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
  triggerSnapshot(): Promise<SnapshotResult>;
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
