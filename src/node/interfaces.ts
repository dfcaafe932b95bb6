import type { CurrentRecord } from '../api/errors.ts';
import type { ClientSession, ClusterNode, WriteCommand } from '../api/types.ts';
import type { PeerEvent } from './address-book.ts';
import type { ApplyOutcome } from './kv-state-machine.ts';
import type { RaftEvent } from './raft-events.ts';
import type { Entry, HardState, Message, NodeId, Ready, SnapshotMeta } from '../raft/types.ts';

/** One piece of a snapshot streamed from the leader (data bounded by the chunk size). */
export interface SnapshotChunk {
  readonly type: 'snapshot_chunk';
  readonly from: number;
  readonly to: number;
  readonly term: number;
  readonly snapshot: SnapshotMeta;
  readonly offsetBytes: number;
  readonly totalBytes: number;
  readonly data: Uint8Array;
  /** 'bytes': snapshot bytes (encodeSnapshot); 'file': a piece of an LMDB snapshot file. */
  readonly format: 'bytes' | 'file';
  /** CRC-32 of `data` (null: unchecked, from a node before snapshot files). */
  readonly crc: number | null;
}

/** A client request a follower forwards to the leader over the cluster transport. */
export interface ClientRequest {
  readonly type: 'client_request';
  readonly from: number;
  readonly to: number;
  readonly term: number;
  readonly requestId: number;
  readonly operation:
    | { readonly kind: 'write'; readonly command: WriteCommand; readonly session: ClientSession | null }
    | { readonly kind: 'read'; readonly key: string }
    | { readonly kind: 'delete'; readonly key: string; readonly session: ClientSession | null }
    | {
        readonly kind: 'scan';
        readonly prefix: string;
        readonly limit: number | null;
        readonly continuationToken: string | null;
      }
    /** The lease calls (the leader answers; a grant's lease id 0: chosen by the cluster). */
    | {
        readonly kind: 'lease_grant';
        readonly leaseId: number;
        readonly ttlSeconds: number;
        readonly session: ClientSession | null;
      }
    | { readonly kind: 'lease_revoke'; readonly leaseId: number; readonly session: ClientSession | null }
    | { readonly kind: 'lease_keepalive'; readonly leaseId: number }
    | {
        readonly kind: 'lease_info';
        readonly leaseId: number;
        readonly keys: boolean;
        /** With keys: list those after this key (null: from the first). */
        readonly after: string | null;
      }
    | { readonly kind: 'lease_list' }
    /**
     * The membership calls and a snapshot on the leader (docs/api.md "Cluster"). The follower that
     * received an add-learner completed its learner (raft_addr, peer_id) before forwarding it.
     */
    | { readonly kind: 'add_learner'; readonly learner: ClusterNode }
    | {
        readonly kind: 'change_membership';
        readonly members: readonly NodeId[];
        /** null: the learners not named in `members` stay. */
        readonly learners: readonly NodeId[] | null;
      }
    | { readonly kind: 'remove_learner'; readonly learnerId: NodeId }
    | { readonly kind: 'trigger_snapshot' }
    /** Decoded from a frame whose operation failed validation: answered with this error, never run. */
    | {
        readonly kind: 'invalid';
        readonly code: 'INVALID_INPUT' | 'KEY_TOO_LARGE' | 'VALUE_TOO_LARGE' | 'BATCH_TOO_LARGE';
        readonly message: string;
      };
}

/** The leader's answer: a JSON-shaped result, or an error with its code. */
export interface ClientResponse {
  readonly type: 'client_response';
  readonly from: number;
  readonly to: number;
  readonly term: number;
  readonly requestId: number;
  readonly result: unknown;
  readonly error: {
    readonly code: string;
    readonly message: string;
    readonly leaderId: number | null;
    readonly definite: boolean;
    /** COMPARE_FAILED only: the record the compare found (null: absent). */
    readonly current?: CurrentRecord | null;
  } | null;
}

/** What travels between nodes: core messages, snapshot chunks, forwarded client requests. */
export type WireMessage = Message | SnapshotChunk | ClientRequest | ClientResponse;

/** Unreliable, unordered datagram-style delivery of Raft messages (the simulator or libp2p). */
export interface Transport {
  send(message: WireMessage): void;
  /** Frames waiting to leave for `to` (snapshot files are sent only as fast as they drain); absent: none. */
  backlog?(to: NodeId): number;
}

/**
 * A node's endpoint in the cluster network: the simulated one and libp2p implement it and share one
 * compliance suite (test/network/transport-compliance.ts). Messages go only to peers in the address
 * map (or, for libp2p, back to a node that reached us); anything else is dropped and counted.
 */
export interface ClusterTransport extends Transport {
  readonly nodeId: NodeId;
  /** Add a peer or change its address; an unusable address throws RangeError. */
  addPeer(id: NodeId, address: string): void;
  removePeer(id: NodeId): void;
  /** The address map as it is now. */
  peerAddresses(): ReadonlyMap<NodeId, string>;
  /** Address map changes (added, changed, removed); returns an unsubscribe function. */
  onPeerEvent(listener: (event: PeerEvent) => void): () => void;
  /** Messages dropped on send: unknown peer, full queue, failed dial, stopped transport. */
  readonly messagesDropped: number;
  /** Stop sending and receiving; later sends are dropped. */
  stop(): Promise<void>;
}

/**
 * A snapshot: what the state machine held after applying `meta.index`. `data` is its bytes
 * (encodeSnapshot); null when the machine keeps it as a file (SnapshotFileSource), encoded only
 * when a follower needs it.
 */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array | null;
}

/** A snapshot with its bytes (received from a leader, read for a backup, or kept in memory). */
export interface SnapshotWithData extends Snapshot {
  readonly data: Uint8Array;
}

/**
 * A durable state machine that keeps its own snapshots as files (LMDB, src/storage/snapshot-files.ts):
 * a snapshot is a synced copy made off the event loop, so taking one costs the node no pause and no
 * memory; the copy is encoded as bytes (off the event loop too) only for a follower that needs it.
 */
export interface SnapshotFileSource {
  /** Copy the machine as it is now into a synced snapshot file; resolves with the applied index it holds. */
  take(): Promise<number>;
  /** The size of the snapshot file at `index`. */
  size(index: number): number;
  /** Up to `length` bytes of the snapshot file at `index` from `offset` (one bounded read). */
  read(index: number, offset: number, length: number): Uint8Array;
  /** Start receiving snapshot `index` of `totalBytes` from a leader (any earlier one is dropped). */
  beginReceive(index: number, totalBytes: number): void;
  /** Write a piece of the snapshot being received (positional: pieces may come in any order). */
  writeReceived(offset: number, data: Uint8Array): void;
  /** The whole snapshot arrived: sync it and name it as snapshot file `index`. */
  finishReceive(index: number): Promise<void>;
  /**
   * Make the state machine a copy of snapshot file `index` (already marked in the log): copied and
   * synced beside the live state, then switched over; a crash leaves the old state or the new.
   */
  install(index: number): Promise<void>;
}

export interface PersistBatch {
  /**
   * A snapshot to keep (taken locally or received); the store drops every entry it covers. Without
   * data it is a snapshot file the machine already synced: the store records only its mark.
   */
  readonly snapshot: Snapshot | null;
  readonly hardState: HardState | null;
  /** Entries to append; every stored entry at or after `entries[0].index` is dropped first. */
  readonly entries: readonly Entry[];
}

/**
 * Durable Raft log and hard state. `persist` calls `done` once the whole batch is synced (one synced
 * write per batch: group commit), or with an error, which stops the node.
 */
export interface LogStore {
  persist(batch: PersistBatch, done: (error: Error | null) => void): void;
}

/**
 * Time as the node sees it: wall-clock timers in production, virtual time in the simulator.
 * `setTimer(0, …)` runs the callback after the current one (the next turn).
 */
export interface Clock {
  nowMs(): number;
  /** Run `callback` after `delayMs`; the returned function cancels it. */
  setTimer(delayMs: number, callback: () => void): () => void;
}

/** Hooks for the simulator's checkers; production passes none. */
export interface RaftNodeObserver {
  /** Called with every Ready once, just before its first message leaves or its first entry is applied (before or after its sync, as the core's contract says). */
  ready?(nodeId: number, ready: Ready): void;
  persisted?(nodeId: number, batch: PersistBatch): void;
  /** The state machine was replaced by a snapshot (received, or loaded at start). */
  snapshotInstalled?(nodeId: number, snapshot: Snapshot): void;
  applied?(nodeId: number, entry: Entry): void;
  readServed?(nodeId: number, readIndex: number, appliedIndex: number): void;
  /** What Raft did: a leader elected, a step-down and why, a new configuration, a snapshot (raft-events.ts). */
  raftEvent?(nodeId: number, event: RaftEvent): void;
}

/**
 * Told of every entry the state machine applies, in index order, after its batch is stored (the
 * watch history and the lessor listen). `outcome` is null for a blank or configuration entry (a
 * revision with no change). `restored`: the state machine was replaced by a snapshot at `index`
 * (what lies between the last applied entry and it was never seen one by one).
 */
export interface ApplyListener {
  applied(index: number, outcome: ApplyOutcome | null): void;
  restored(index: number): void;
}
