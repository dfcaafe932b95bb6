import type { NodeId } from '../base/ids.ts';

/** Wire formats of the control-plane API, in the seed's JSON shapes (docs/api.md). */
export interface ClusterNode {
  readonly id: NodeId;
  readonly addr: string;
  readonly raft_addr: string;
  /**
   * The member's libp2p peer id, recorded in the replicated configuration once known: messages,
   * dials and announcements pairing this node id with another peer id are refused.
   */
  readonly peer_id?: string;
}

/** POST /join-ticket's answer: a join ticket minted by the node that answered. */
export interface JoinTicketAnswer {
  readonly ticket: string;
  readonly node_id: NodeId;
  /** Unix time in milliseconds. */
  readonly expires_at: number;
}

export interface ClusterState {
  readonly nodes: readonly ClusterNode[];
  readonly members: readonly NodeId[];
  readonly learners: readonly ClusterNode[];
  readonly leader: NodeId | null;
}

/**
 * GET /state: the membership, and where each member's HTTP API listens as the node asked knows it
 * (`{"1":"http://127.0.0.1:8001"}`; src/http/member-urls.ts). Optional: an older node has none.
 */
export interface StateAnswer extends ClusterState {
  readonly http_urls?: Readonly<Record<string, string>>;
}

/** What a compare in a Transaction looks at (etcd v3's Compare targets). */
export type CompareTarget = 'value' | 'version' | 'create_index' | 'mod_index' | 'lease_id';
export type CompareOp = 'equal' | 'not_equal' | 'greater' | 'less';

/**
 * One compare of a Transaction: `value` is a string for the `value` target and a non-negative
 * integer for the others. An absent key has version, create_index, mod_index and lease_id 0, and
 * every value compare on it is false.
 */
export interface Compare {
  readonly key: string;
  readonly target: CompareTarget;
  readonly op: CompareOp;
  readonly value: string | number;
}

/**
 * The operations of a Transaction branch. A Set with `lease_id` attaches the key to that lease
 * (0 or absent: to none).
 */
export type TxnOp =
  | { readonly Set: { readonly key: string; readonly value: string; readonly lease_id?: number } }
  | { readonly Delete: { readonly key: string } }
  | { readonly Get: { readonly key: string } }
  | { readonly Scan: { readonly prefix: string; readonly limit?: number } };

/**
 * The commands of `/write`. A Set with `lease_id` (a lease that exists) attaches the key to it; a Set
 * without one (or with 0), a SetMulti or a CompareAndSwap leaves the key on no lease (as etcd's put
 * does).
 */
export type WriteCommand =
  | { readonly Set: { readonly key: string; readonly value: string; readonly lease_id?: number } }
  | { readonly SetMulti: { readonly pairs: readonly (readonly [string, string])[] } }
  | { readonly Delete: { readonly key: string } }
  | { readonly DeleteMulti: { readonly keys: readonly string[] } }
  /** `expected` null: the key must not exist. */
  | {
      readonly CompareAndSwap: {
        readonly key: string;
        readonly expected: string | null;
        readonly new_value: string;
      };
    }
  | { readonly CompareAndDelete: { readonly key: string; readonly expected: string } }
  | {
      readonly Transaction: {
        readonly compare: readonly Compare[];
        readonly success: readonly TxnOp[];
        readonly failure: readonly TxnOp[];
      };
    };

/**
 * Lease commands: log entries made by the lease endpoints, never accepted by `/write`. A grant with
 * `lease_id` 0 lets the state machine choose the id (the entry's index, or the next free id after it).
 * A revoke with `expired_in_term` is an expiry proposed by the leader of that term; it is ignored at
 * apply unless its entry was appended in that same term (a revoke from a deposed leader never counts).
 */
export type LeaseCommand =
  | { readonly LeaseGrant: { readonly lease_id: number; readonly ttl_seconds: number } }
  | { readonly LeaseRevoke: { readonly lease_id: number; readonly expired_in_term?: number } };

/** What a command entry of the log carries: a client's write or a lease command. */
export type LogCommand = WriteCommand | LeaseCommand;

/**
 * Exactly-once writes: a mutating request may name its client and a sequence (both or neither); a
 * retry of an applied sequence is not applied again and answers as the first time (docs/api.md).
 */
export interface SessionFields {
  /** 1–64 characters of [A-Za-z0-9_-]. */
  readonly client_id?: string;
  /** A positive safe integer, increasing per client. */
  readonly sequence?: number;
}

/** A validated client session, as it travels to the log. */
export interface ClientSession {
  readonly clientId: string;
  readonly sequence: number;
}

export interface WriteRequest extends SessionFields {
  readonly command: WriteCommand;
}

/** A key and its revisions, as reads, scans inside transactions and COMPARE_FAILED show it. */
export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly create_index: number;
  readonly mod_index: number;
  readonly version: number;
  readonly lease_id: number;
}

/** One result per op of the Transaction branch that ran, in op order. */
export type TxnOpResult =
  | { readonly Set: { readonly key: string } }
  | { readonly Delete: { readonly key: string; readonly deleted: boolean } }
  | { readonly Get: KeyValue | null }
  | { readonly Scan: { readonly entries: readonly KeyValue[]; readonly is_truncated: boolean } };

export interface WriteResult {
  readonly command: WriteCommand;
  readonly log_index: number;
  /** The revision of the change: its log index (one entry is one revision for all its changes). */
  readonly revision: number;
  /** Transactions only: whether every compare held (then `success` ran, else `failure`). */
  readonly succeeded?: boolean;
  /** Transactions only. */
  readonly results?: readonly TxnOpResult[];
}

export interface ReadRequest {
  readonly key: string;
}

/** The key's record, and the applied index the read was served at (`revision`). */
export interface ReadResult extends KeyValue {
  readonly revision: number;
}

export interface DeleteRequest extends SessionFields {
  readonly key: string;
}

export interface DeleteResult {
  readonly key: string;
  readonly deleted: boolean;
  /** The log index of the delete (a revision is used even when the key did not exist). */
  readonly revision: number;
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
  /** The applied index the page was read at (each page of a multi-page scan has its own). */
  readonly revision: number;
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

/** Which node /trigger-snapshot snapshots: the leader (a follower forwards the call) or the node asked. */
export type SnapshotTarget = 'leader' | 'local';

export interface SnapshotRequest {
  /** Default "leader". */
  readonly node?: SnapshotTarget;
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

/** Figures of the node's process, beside its Raft metrics in GET /metrics. */
export interface ProcessMetrics {
  /** The longest event-loop stall since the process started, in ms (to within the 10 ms sampling). */
  readonly event_loop_delay_max_ms: number;
  /** The longest stall in the last one to two minutes, in ms. */
  readonly event_loop_delay_recent_max_ms: number;
  /** V8 heap in use, in bytes. */
  readonly heap_used_bytes: number;
}

/** GET /metrics: the Raft metrics and the process's own figures. */
export type NodeMetrics = RaftMetrics & ProcessMetrics;

/** POST /lease/grant. `lease_id` absent or 0: the cluster chooses one. */
export interface LeaseGrantRequest extends SessionFields {
  readonly ttl_seconds: number;
  readonly lease_id?: number;
}

export interface LeaseGrantResult {
  readonly lease_id: number;
  readonly ttl_seconds: number;
  readonly log_index: number;
}

/** POST /lease/keepalive: served by the leader, not through the log. */
export interface LeaseKeepAliveRequest {
  readonly lease_id: number;
}

export interface LeaseKeepAliveResult {
  readonly lease_id: number;
  readonly ttl_seconds: number;
}

/** POST /lease/revoke: deletes the lease and its keys in one entry (one revision). */
export interface LeaseRevokeRequest extends SessionFields {
  readonly lease_id: number;
}

export interface LeaseRevokeResult {
  readonly lease_id: number;
  readonly revoked: true;
  readonly log_index: number;
}

/** GET /lease/info?lease_id=7&keys=true[&after=<key>] */
export interface LeaseInfoRequest {
  readonly lease_id: number;
  readonly keys?: boolean;
  /** With keys=true: list the keys after this one (the last key of the previous page). */
  readonly after?: string;
}

export interface LeaseInfoResult {
  readonly lease_id: number;
  readonly ttl_seconds: number;
  /** Whole seconds until the leader expires it (rounded up; the leader's clock). */
  readonly remaining_seconds: number;
  /**
   * With keys=true: the lease's keys in key order, after `after` when given; at most
   * LEASE_INFO_KEYS_MAX keys and LEASE_INFO_KEYS_BYTES_MAX bytes of them.
   */
  readonly keys?: readonly string[];
  /** With keys=true: more keys follow; ask again with `after` = the last key listed. */
  readonly keys_truncated?: boolean;
}

export interface LeaseSummary {
  readonly lease_id: number;
  readonly ttl_seconds: number;
  readonly remaining_seconds: number;
}

/** GET /leases: every lease, by id. */
export interface LeaseListResult {
  readonly leases: readonly LeaseSummary[];
}

/** GET /watch: one key or one prefix (exactly one of them). */
export interface WatchRequest {
  readonly key?: string;
  readonly prefix?: string;
  /** The first revision to send; absent: the next revision this node applies. */
  readonly start_revision?: number;
  readonly prev_kv?: boolean;
  /** Milliseconds between progress events while nothing is sent; 0: none. */
  readonly progress_interval_ms?: number;
}

/**
 * The header of a 200 GET /watch answer: the first revision the stream passes on (start_revision, or
 * the node's applied index at open + 1), so a client knows where it stands before any event.
 */
export const WATCH_START_HEADER = 'x-aspen-watch-start';

/** One change a watcher sees (`data:` of an SSE `put` or `delete` event). */
export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  /** The new value; "" for a delete. */
  readonly value: string;
  /** The key's revisions after the change; all 0 for a delete. */
  readonly create_index: number;
  readonly mod_index: number;
  readonly version: number;
  readonly lease_id: number;
  /** The revision of the change: the log index of its entry. */
  readonly revision: number;
  /** With prev_kv=true: the record before the change (null: the key did not exist). */
  readonly prev?: KeyValue | null;
}

/** POST /lock: wait (up to `timeout_ms`) until the lease's key under `name` is the owner. */
export interface LockRequest {
  readonly name: string;
  readonly lease_id: number;
  readonly timeout_ms?: number;
}

/**
 * The lock is owned: `key` (`<name>/<lease id as 16 hex digits>`) has the lowest create revision
 * under `name/`, and `fencing_token` is that create revision (strictly increasing across owners).
 */
export interface LockResult {
  readonly name: string;
  readonly key: string;
  readonly fencing_token: number;
}

/** POST /unlock: delete the lock key (the next waiter becomes the owner). */
export interface UnlockRequest {
  readonly key: string;
}

export interface UnlockResult {
  readonly released: true;
}

/**
 * POST /election/campaign: wait (up to `timeout_ms`) until the lease's key under `name` (holding
 * `value`) is the leader: the lowest create revision under `name/`.
 */
export interface CampaignRequest {
  readonly name: string;
  readonly lease_id: number;
  readonly value: string;
  readonly timeout_ms?: number;
}

/** Elected: `revision` is the key's create revision (the term's fencing token). Proclaim answers the same. */
export interface CampaignResult {
  readonly name: string;
  readonly key: string;
  readonly revision: number;
  readonly value: string;
}

/** POST /election/proclaim: the leader's new value (refused unless `key` is the leader). */
export interface ProclaimRequest {
  readonly key: string;
  readonly value: string;
}

/** POST /election/resign: delete the campaign key (the next candidate becomes the leader). */
export interface ResignRequest {
  readonly key: string;
}

export interface ResignResult {
  readonly resigned: true;
}

/** GET /election/leader?name= */
export interface LeaderRequest {
  readonly name: string;
}

/** The leader of an election: its key, value, create revision and lease. */
export interface LeaderResult {
  readonly name: string;
  readonly key: string;
  readonly value: string;
  readonly revision: number;
  readonly lease_id: number;
}
