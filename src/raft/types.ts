/**
 * Wire and state types of the pure Raft core. Terms, indexes and node ids are safe integers;
 * node id 0 means "none" (no vote, no known leader).
 */
import { NODE_NONE, type NodeId } from '../base/ids.ts';

export { NODE_NONE, type NodeId };

/**
 * A cluster configuration. `voters` is C_new (or the only configuration); while a joint change is in
 * flight `votersOutgoing` holds C_old and both majorities are required. Learners replicate but never
 * vote and are never counted.
 */
export interface MembershipConfig {
  readonly voters: readonly NodeId[];
  readonly votersOutgoing: readonly NodeId[];
  readonly learners: readonly NodeId[];
  /** Where members can be reached, replicated with the configuration (opaque to the core). */
  readonly nodes?: readonly NodeAddress[];
}

/** A member's addresses: `addr` is its name (the seed's "node-1"), `raftAddr` its transport address. */
export interface NodeAddress {
  readonly id: NodeId;
  readonly addr: string;
  readonly raftAddr: string;
  /** Its transport identity (a libp2p peer id), when known: opaque to the core, bound by the network. */
  readonly peerId?: string;
}

export type Entry =
  | { readonly kind: 'blank'; readonly term: number; readonly index: number }
  | { readonly kind: 'command'; readonly term: number; readonly index: number; readonly data: Uint8Array }
  | {
      readonly kind: 'config';
      readonly term: number;
      readonly index: number;
      readonly config: MembershipConfig;
    };

/** What a snapshot covers: the log prefix up to (index, term) and the configuration in effect there. */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly config: MembershipConfig;
}

export interface HardState {
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
}

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
}

export interface VoteRequest extends MessageBase {
  readonly type: 'pre_vote' | 'vote';
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /** A campaign started by TimeoutNow (leadership transfer): voters ignore their leader lease. */
  readonly transfer: boolean;
}

export interface VoteResponse extends MessageBase {
  readonly type: 'pre_vote_response' | 'vote_response';
  readonly granted: boolean;
}

export interface AppendRequest extends MessageBase {
  readonly type: 'append';
  readonly prevLogIndex: number;
  readonly prevLogTerm: number;
  readonly entries: readonly Entry[];
  readonly commitIndex: number;
}

/**
 * On success `index` is the follower's new match index. On rejection `index` is the rejected
 * prevLogIndex and (hintIndex, hintTerm) point the leader at the follower's last possible match.
 */
export interface AppendResponse extends MessageBase {
  readonly type: 'append_response';
  readonly success: boolean;
  readonly index: number;
  readonly hintIndex: number;
  readonly hintTerm: number;
}

/** Heartbeats carry a read round: a quorum of acks for round r confirms all reads queued before r. */
export interface Heartbeat extends MessageBase {
  readonly type: 'heartbeat';
  readonly commitIndex: number;
  readonly readRound: number;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: 'heartbeat_response';
  readonly readRound: number;
}

/**
 * The leader's snapshot, for a follower whose next entry was compacted away. The core carries only
 * the metadata; the node layer streams the data in bounded chunks and steps this message into the
 * follower's core once all of it has arrived.
 */
export interface InstallSnapshot extends MessageBase {
  readonly type: 'snapshot';
  readonly snapshot: SnapshotMeta;
}

/** Leadership transfer: the leader tells a caught-up voter to campaign at once. */
export interface TimeoutNow extends MessageBase {
  readonly type: 'timeout_now';
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | InstallSnapshot
  | TimeoutNow;
export type MessageType = Message['type'];

/**
 * Messages a node steps into itself, never sent (etcd's MsgHup, MsgBeat, MsgCheckQuorum): `tick()`
 * produces them, and a test can step them to script an election, a heartbeat or a quorum check.
 */
export type LocalMessage =
  { readonly type: 'hup' } | { readonly type: 'beat' } | { readonly type: 'check_quorum' };

export const ROLES = ['follower', 'pre_candidate', 'candidate', 'leader'] as const;
export type Role = (typeof ROLES)[number];

export interface ReadState {
  readonly requestId: number;
  /** Serve the read once the state machine has applied at least this index. */
  readonly index: number;
}

export interface ReadFailure {
  readonly requestId: number;
  readonly reason: 'not_leader';
  readonly leaderId: NodeId;
}

export interface SoftState {
  readonly role: Role;
  readonly leaderId: NodeId;
  readonly term: number;
}

/**
 * What the driver must do with one batch (the Ready contract, after etcd-io/raft's MustSync and
 * msgsAfterAppend; `runReady` in ready-loop.ts is its one executor). In this order: send `messages`
 * and, when `applyBeforePersist`, apply `committedEntries`; when `mustSync`, persist `snapshot`,
 * `hardState` and `entries` in one synced write (the log store drops any stored suffix from
 * `entries[0].index` first, and every entry the snapshot covers) and install the snapshot into the
 * state machine; then send `messagesAfterPersist`, apply `committedEntries` unless already applied,
 * answer `readStates` / `readFailures`, and call `advance(ready)`.
 */
export interface Ready {
  readonly softState: SoftState;
  /** The commit index now (it moves with or without a write: see `hardState`). */
  readonly commitIndex: number;
  /** A snapshot received from the leader that replaces our log prefix and state machine. */
  readonly snapshot: SnapshotMeta | null;
  /**
   * The batch must be synced before `messagesAfterPersist` leave: it has entries, a snapshot, or a
   * new term or vote. A batch that only moves the commit index is not synced and writes nothing.
   */
  readonly mustSync: boolean;
  /** The hard state to write with the batch; null when the disk already holds it (never set without mustSync). */
  readonly hardState: HardState | null;
  readonly entries: readonly Entry[];
  /** Messages that may leave before the batch is durable: a leader's appends while it syncs (thesis 10.2.1). */
  readonly messages: readonly Message[];
  /** Messages that are promises about the disk (votes, acks, a new term or vote): they leave only after the sync. */
  readonly messagesAfterPersist: readonly Message[];
  /**
   * `committedEntries` (already durable here and on a quorum) may be applied, and their clients
   * answered, before the batch is synced: a leader whose term and vote did not move and that
   * installs no snapshot, as etcd's server does.
   */
  readonly applyBeforePersist: boolean;
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly readFailures: readonly ReadFailure[];
}

/** What a node has on disk when it starts. */
export interface PersistedState {
  readonly hardState: HardState;
  /** The newest durable snapshot; `entries` continue right after it. */
  readonly snapshot?: SnapshotMeta | null;
  readonly entries: readonly Entry[];
}

export const EMPTY_HARD_STATE: HardState = { term: 0, vote: NODE_NONE, commit: 0 };
