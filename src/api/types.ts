import type { NodeId } from '../base/ids.ts';

/** Wire formats of the control-plane API, in the seed's JSON shapes (docs/api.md). */
export interface ClusterNode {
  readonly id: NodeId;
  readonly addr: string;
  readonly raft_addr: string;
}

export interface ClusterState {
  readonly nodes: readonly ClusterNode[];
  readonly members: readonly NodeId[];
  readonly learners: readonly ClusterNode[];
  readonly leader: NodeId | null;
}

export type WriteCommand =
  | { readonly Set: { readonly key: string; readonly value: string } }
  | { readonly SetMulti: { readonly pairs: readonly (readonly [string, string])[] } }
  | { readonly Delete: { readonly key: string } }
  | { readonly DeleteMulti: { readonly keys: readonly string[] } };

export interface WriteRequest {
  readonly command: WriteCommand;
}

export interface WriteResult {
  readonly command: WriteCommand;
  readonly log_index: number;
}

export interface ReadRequest {
  readonly key: string;
}

export interface ReadResult {
  readonly key: string;
  readonly value: string;
  readonly create_index: number;
  readonly mod_index: number;
  readonly version: number;
}

export interface DeleteRequest {
  readonly key: string;
}

export interface DeleteResult {
  readonly key: string;
  readonly deleted: boolean;
}

export interface ScanRequest {
  readonly prefix?: string;
  readonly limit?: number;
  readonly continuation_token?: string | null;
}

export interface ScanResult {
  readonly entries: readonly { readonly key: string; readonly value: string }[];
  readonly count: number;
  readonly is_truncated: boolean;
  readonly continuation_token: string | null;
}

export interface InitRequest {
  readonly initial_members: readonly ClusterNode[];
}

export interface AddLearnerRequest {
  readonly learner: ClusterNode;
}

export interface ChangeMembershipRequest {
  readonly members: readonly NodeId[];
  /** The learners wanted afterwards; absent: today's learners that are not named in `members`. */
  readonly learners?: readonly NodeId[];
}

export interface RemoveLearnerRequest {
  readonly learner_id: NodeId;
}

export interface SnapshotResult {
  readonly snapshot: { readonly index: number; readonly term: number };
}

export interface ReplicationStatus {
  readonly node_id: NodeId;
  readonly matched_index: number;
}

export interface RaftMetrics {
  readonly node_id: NodeId;
  readonly state: 'Follower' | 'Candidate' | 'Leader' | 'Learner';
  readonly current_leader: NodeId | null;
  readonly current_term: number;
  readonly vote: NodeId | null;
  readonly last_log_index: number;
  readonly commit_index: number;
  readonly last_applied: number;
  readonly snapshot: { readonly index: number; readonly term: number } | null;
  readonly membership_config: {
    readonly voters: readonly NodeId[];
    readonly voters_outgoing: readonly NodeId[];
    readonly learners: readonly NodeId[];
  } | null;
  readonly replication: readonly ReplicationStatus[] | null;
  readonly millis_since_quorum_ack: number | null;
}
