import type { MembershipConfig, NodeAddress, NodeId, Role } from './types.ts';

/** A membership change: the voters and learners wanted, new members' addresses, and the promotion bar. */
export interface MembershipProposal {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
  readonly nodes?: readonly NodeAddress[];
  /** A learner promoted to voter must have acknowledged this index (default and cap: the commit index now). */
  readonly catchUpIndex?: number;
}

export interface ProposeAccepted {
  readonly index: number;
  readonly term: number;
}

export interface PeerStatus {
  readonly id: NodeId;
  readonly matchIndex: number;
  readonly nextIndex: number;
  readonly state: 'probe' | 'replicate' | 'snapshot';
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly vote: NodeId;
  readonly leaderId: NodeId;
  readonly firstIndex: number;
  readonly snapshot: { readonly index: number; readonly term: number } | null;
  readonly lastIndex: number;
  readonly lastTerm: number;
  readonly stableIndex: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly membership: MembershipConfig | null;
  readonly peers: readonly PeerStatus[];
  readonly messagesDropped: number;
  /** Leader only: ticks since a quorum of voters last acknowledged it (null on followers). */
  readonly ticksSinceQuorumAck: number | null;
}

/** Who leads, as one node sees it: cheap to read after every turn (RaftCore.leadership). */
export interface Leadership {
  readonly role: Role;
  readonly term: number;
  readonly leaderId: NodeId;
  /** Leader only: the voter leadership is being handed to (NODE_NONE when none). */
  readonly transferTarget: NodeId;
}
