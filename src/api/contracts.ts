import type { ClusterState, InitRequest, RaftMetrics, ReadRequest, ReadResult, WriteRequest, WriteResult } from './types.ts';

/**
 * What the HTTP layer sees of cluster management. The membership issue adds addLearner and
 * changeMembership; any engine (the RaftNode, a single-node stub) can slot in behind it.
 */
export interface ClusterController {
  init(request: InitRequest): Promise<ClusterState>;
  currentState(): Promise<ClusterState>;
  getMetrics(): Promise<RaftMetrics>;
}

/** Linearizable key-value operations. Failures reject with an AspenError. */
export interface KeyValueStore {
  write(request: WriteRequest): Promise<WriteResult>;
  read(request: ReadRequest): Promise<ReadResult>;
}
