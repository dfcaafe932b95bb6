import { assert, assertIndex, unreachable } from './assert.ts';
import { assertRaftConfig, OUTBOX_MESSAGES_MAX, type RaftConfig } from './config.ts';
import { ok, rejected, type RaftRejection, type RaftResult } from './errors.ts';
import { RaftLog } from './log.ts';
import { assembleReady, type ReadyDraft } from './ready.ts';
import type { Prng } from './prng.ts';
import { Progress } from './progress.ts';
import { allMembers, isVoter, jointAckedIndex, jointVoteResult, validateConfig } from './quorum.ts';
import {
  NODE_NONE,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type HardState,
  type Heartbeat,
  type HeartbeatResponse,
  type InstallSnapshot,
  type LocalMessage,
  type MembershipConfig,
  type Message,
  type NodeAddress,
  type NodeId,
  type PersistedState,
  type ReadFailure,
  type ReadState,
  type Ready,
  type Role,
  type SnapshotMeta,
  type TimeoutNow,
  type VoteRequest,
  type VoteResponse,
} from './types.ts';

interface PendingRead {
  readonly requestId: number;
  readonly round: number;
  /** Commit index when the read arrived, or 0 when the leader had not yet committed in its term. */
  readonly index: number;
}

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

/**
 * The pure Raft state machine (after etcd-io/raft): no I/O, no clock, no global randomness.
 * The driver calls `tick()` on a timer and `step()` on receipt, then drains `ready()` and calls
 * `advance()`. Between `ready()` and `advance()` the driver must not call anything else.
 */
/** A snapshot not acknowledged within this many election timeouts is sent again. */
export const SNAPSHOT_RETRY_ELECTIONS = 3;

const HUP: LocalMessage = { type: 'hup' };
const BEAT: LocalMessage = { type: 'beat' };
const CHECK_QUORUM: LocalMessage = { type: 'check_quorum' };

function isFromLeader(message: Message): message is AppendRequest | Heartbeat | InstallSnapshot | TimeoutNow {
  return (
    message.type === 'append' ||
    message.type === 'heartbeat' ||
    message.type === 'snapshot' ||
    message.type === 'timeout_now'
  );
}

function sameMembers(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((id) => b.includes(id));
}

export class RaftCore {
  readonly id: NodeId;
  private readonly config: RaftConfig;
  private readonly prng: Prng;
  readonly log = new RaftLog();

  private term = 0;
  private vote: NodeId = NODE_NONE;
  private role: Role = 'follower';
  private leaderId: NodeId = NODE_NONE;
  private membership: MembershipConfig | null = null;
  /** Index and term of the config entry in effect (0/0 while uninitialized). */
  private membershipIndex = 0;
  private membershipTerm = 0;

  private readonly progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  /** Ticks since this node became leader: the clock for acknowledgement ages. */
  private leaderTicks = 0;
  private randomizedElectionTicks: number;

  private outbox: Message[] = [];
  private messagesDropped = 0;
  private appendBroadcastPending = false;

  private pendingReads: PendingRead[] = [];
  private readRound = 0;
  private readBroadcastPending = false;
  private readStates: ReadState[] = [];
  private readFailures: ReadFailure[] = [];

  /** The newest hard state handed out in a Ready: a change to it makes a Ready. */
  private handedOutHardState: HardState;
  /** The hard state on disk: its term and vote are synced; a newer commit index waits for the next sync. */
  private syncedHardState: HardState;
  private readyOutstanding = false;
  /** A snapshot from the leader the driver must install with the next Ready. */
  private snapshotToInstall: SnapshotMeta | null = null;
  /** Leadership transfer in progress: the target and the ticks it has taken so far. */
  private transferTarget: NodeId = NODE_NONE;
  private transferElapsed = 0;
  private committedConfigCache: { readonly commit: number; readonly config: MembershipConfig | null } | null =
    null;

  constructor(config: RaftConfig, prng: Prng, persisted: PersistedState) {
    assertRaftConfig(config);
    this.id = config.id;
    this.config = config;
    this.prng = prng;
    const hardState = persisted.hardState;
    assertIndex(hardState.term, 'persisted term');
    assertIndex(hardState.vote, 'persisted vote');
    this.log.restore(persisted.snapshot ?? null, persisted.entries, hardState.commit);
    // A torn write can leave entries of a term whose hard state never reached the disk. Moving to
    // that term is safe: no vote in it was ever sent (votes go out only after their sync).
    this.term = Math.max(hardState.term, this.log.lastTerm());
    this.vote = this.term === hardState.term ? hardState.vote : NODE_NONE;
    this.handedOutHardState = hardState;
    this.syncedHardState = hardState;
    this.refreshMembership();
    this.randomizedElectionTicks = this.drawElectionTicks();
  }

  // ---------------------------------------------------------------- inputs

  /**
   * Bootstrap a brand-new cluster with `config` from this node (the seed's /init). Only a node with
   * an empty log and no term can do it; it then campaigns at once.
   */
  init(config: MembershipConfig): RaftResult<null> {
    this.assertNoReadyOutstanding();
    if (this.log.lastIndex() !== 0 || this.term !== 0) return rejected({ code: 'already_initialized' });
    const problem = validateConfig(config);
    if (problem !== null) return rejected({ code: 'invalid_config', message: problem });
    if (config.votersOutgoing.length > 0)
      return rejected({ code: 'invalid_config', message: 'init takes no joint config' });
    if (!config.voters.includes(this.id)) {
      return rejected({
        code: 'invalid_config',
        message: `node ${this.id} must be one of the initial voters`,
      });
    }
    this.term = 1;
    this.log.append([{ kind: 'config', term: 1, index: 1, config }]);
    this.refreshMembership();
    this.step(HUP);
    return ok(null);
  }

  /** Advance the logical clock by one tick; timeouts step local messages (hup, beat, check_quorum). */
  tick(): void {
    this.assertNoReadyOutstanding();
    if (this.role === 'leader') {
      this.tickLeader();
      return;
    }
    this.electionElapsed += 1;
    if (this.isPromotable() && this.electionElapsed >= this.randomizedElectionTicks) {
      this.electionElapsed = 0;
      this.step(HUP);
    }
  }

  /** Append a command to the leader's log. The caller learns the outcome when (index, term) is applied. */
  propose(data: Uint8Array): RaftResult<ProposeAccepted> {
    this.assertNoReadyOutstanding();
    if (this.membership === null) return rejected({ code: 'not_initialized' });
    const refusal = this.proposalRefusal();
    if (refusal !== null) return rejected(refusal);
    const index = this.log.lastIndex() + 1;
    this.log.append([{ kind: 'command', term: this.term, index, data }]);
    this.appendBroadcastPending = true;
    return ok({ index, term: this.term });
  }

  private proposalRefusal(): RaftRejection | null {
    if (this.role !== 'leader') return { code: 'not_leader', leaderId: this.leaderId };
    // During a transfer new entries would only delay the target from catching up (etcd drops them too).
    if (this.transferTarget !== NODE_NONE) return { code: 'not_leader', leaderId: NODE_NONE };
    if (this.log.lastIndex() - this.log.committed >= this.config.uncommittedEntriesMax) {
      return { code: 'overloaded', what: 'uncommitted_entries' };
    }
    return null;
  }

  /**
   * Change the configuration to `target` voters and learners. A change of voters goes through
   * joint consensus (C_old,new, then C_new once that commits); a change of learners only is one
   * entry. One change at a time: the previous one must be committed and not joint.
   */
  proposeMembership(target: MembershipProposal): RaftResult<ProposeAccepted> {
    this.assertNoReadyOutstanding();
    if (this.membership === null) return rejected({ code: 'not_initialized' });
    const refusal = this.proposalRefusal();
    if (refusal !== null) return rejected(refusal);
    const current = this.membership;
    const voters = [...target.voters].sort((a, b) => a - b);
    const learners = [...target.learners].sort((a, b) => a - b);
    const problem = validateConfig({ voters, votersOutgoing: [], learners });
    if (problem !== null) return rejected({ code: 'invalid_config', message: problem });
    if (this.membershipIndex > this.log.committed || current.votersOutgoing.length > 0) {
      return rejected({ code: 'membership_change_in_progress' });
    }
    for (const id of voters) {
      if (!isVoter(current, id) && !current.learners.includes(id)) {
        return rejected({
          code: 'invalid_config',
          message: `node ${id} must join as a learner before it can vote`,
        });
      }
    }
    const lagging = this.laggingLearner(
      current,
      voters,
      Math.min(target.catchUpIndex ?? this.log.committed, this.log.committed),
    );
    if (lagging !== null) return rejected(lagging);
    const votersChange = !sameMembers(voters, current.voters);
    const members = [...voters, ...learners, ...(votersChange ? current.voters : [])];
    // Addresses travel with the configuration; members keep theirs unless the change brings new ones.
    const known = new Map((current.nodes ?? []).map((node) => [node.id, node]));
    for (const node of target.nodes ?? []) known.set(node.id, node);
    const nodes = [...known.values()].filter((node) => members.includes(node.id)).sort((a, b) => a.id - b.id);
    const config: MembershipConfig = {
      voters,
      votersOutgoing: votersChange ? [...current.voters] : [],
      learners,
      nodes,
    };
    return ok(this.appendConfig(config));
  }

  /**
   * A learner becomes a voter only once it has acknowledged `catchUpIndex` and answered within an
   * election timeout: a voter that cannot be reached (or is far behind) would count against the new
   * quorum at once, and a joint configuration that cannot commit can never be left.
   */
  private laggingLearner(
    current: MembershipConfig,
    voters: readonly NodeId[],
    catchUpIndex: number,
  ): RaftRejection | null {
    for (const id of voters) {
      if (isVoter(current, id)) continue;
      const progress = this.progress.get(id);
      assert(progress !== undefined, `the leader tracks learner ${id}`);
      const silentTicks = progress.lastAckTick < 0 ? null : this.leaderTicks - progress.lastAckTick;
      if (
        progress.match < catchUpIndex ||
        silentTicks === null ||
        silentTicks > this.config.electionTicksMin
      ) {
        return {
          code: 'learner_not_caught_up',
          nodeId: id,
          matchIndex: progress.match,
          requiredIndex: catchUpIndex,
        };
      }
    }
    return null;
  }

  private appendConfig(config: MembershipConfig): ProposeAccepted {
    assert(this.role === 'leader', 'only a leader appends configurations');
    const index = this.log.lastIndex() + 1;
    this.log.append([{ kind: 'config', term: this.term, index, config }]);
    this.refreshMembership();
    this.appendBroadcastPending = true;
    return { index, term: this.term };
  }

  /**
   * Hand leadership to `target`, a voter: once its log matches ours it gets TimeoutNow and
   * campaigns at once. Proposals are refused meanwhile; the transfer gives up after an election timeout.
   */
  transferLeadership(target: NodeId): RaftResult<null> {
    this.assertNoReadyOutstanding();
    if (this.membership === null) return rejected({ code: 'not_initialized' });
    if (this.role !== 'leader') return rejected({ code: 'not_leader', leaderId: this.leaderId });
    if (target === this.id) return ok(null);
    const progress = this.progress.get(target);
    if (progress === undefined || !isVoter(this.membership, target)) {
      return rejected({ code: 'invalid_config', message: `node ${target} is not a voter` });
    }
    this.transferTarget = target;
    this.transferElapsed = 0;
    if (progress.match === this.log.lastIndex()) this.sendTimeoutNow(target);
    else this.sendAppend(target, progress, false);
    return ok(null);
  }

  private sendTimeoutNow(target: NodeId): void {
    this.send({ type: 'timeout_now', from: this.id, to: target, term: this.term });
  }

  /**
   * After the state machine took a snapshot at `index` (applied and durable), drop the log
   * before it. Returns the snapshot's metadata, which the driver stores with the data.
   */
  compact(index: number): SnapshotMeta {
    this.assertNoReadyOutstanding();
    const term = this.log.term(index);
    assert(term !== null, `compact at ${index}: no such entry`);
    const config = this.log.configAt(index);
    assert(config !== null, 'a snapshot carries a configuration');
    const snapshot: SnapshotMeta = { index, term, config };
    this.log.compact(snapshot);
    return snapshot;
  }

  /**
   * Queue a linearizable read. Reads queued between two `ready()` calls share one heartbeat round;
   * each comes back as a ReadState (serve after applying its index) or a ReadFailure.
   */
  readIndex(requestId: number): RaftResult<null> {
    this.assertNoReadyOutstanding();
    assertIndex(requestId, 'read request id');
    if (this.membership === null) return rejected({ code: 'not_initialized' });
    if (this.role !== 'leader') return rejected({ code: 'not_leader', leaderId: this.leaderId });
    if (this.pendingReads.length >= this.config.pendingReadsMax) {
      return rejected({ code: 'overloaded', what: 'pending_reads' });
    }
    const index = this.committedInCurrentTerm() ? this.log.committed : 0;
    this.pendingReads.push({ requestId, round: this.readRound + 1, index });
    this.readBroadcastPending = true;
    return ok(null);
  }

  /** A message from a peer, or a local one (a timer's, or a test's script). */
  step(message: Message | LocalMessage): void {
    this.assertNoReadyOutstanding();
    if (message.type === 'hup' || message.type === 'beat' || message.type === 'check_quorum') {
      this.stepLocal(message);
      return;
    }
    assert(message.to === this.id, `message for ${message.to} delivered to ${this.id}`);
    assertIndex(message.term, 'message term');
    if (message.term > this.term) {
      if (!this.stepHigherTerm(message)) return;
    } else if (message.term < this.term) {
      this.stepLowerTerm(message);
      return;
    }
    if (message.type === 'pre_vote' || message.type === 'vote') {
      this.handleVoteRequest(message);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(message);
        return;
      case 'candidate':
      case 'pre_candidate':
        this.stepCandidate(message);
        return;
      case 'follower':
        this.stepFollower(message);
        return;
      default:
        unreachable(this.role, 'role');
    }
  }

  /**
   * Local messages (etcd's MsgHup, MsgBeat, MsgCheckQuorum): start an election if this node may;
   * as leader, send heartbeats, or step down unless a quorum was heard from since the last check.
   */
  private stepLocal(message: LocalMessage): void {
    switch (message.type) {
      case 'hup':
        if (this.role !== 'leader' && this.isPromotable()) this.campaign();
        return;
      case 'beat':
        if (this.role === 'leader') this.broadcastHeartbeat();
        return;
      case 'check_quorum':
        if (this.role === 'leader' && !this.quorumActive()) this.becomeFollower(this.term, NODE_NONE);
        return;
      default:
        unreachable(message, 'local message');
    }
  }

  // ---------------------------------------------------------------- ready / advance

  hasReady(): boolean {
    return (
      this.outbox.length > 0 ||
      this.appendBroadcastPending ||
      this.readBroadcastPending ||
      this.log.stableIndex < this.log.lastIndex() ||
      this.log.hasNextCommittedEntries() ||
      this.snapshotToInstall !== null ||
      this.readStates.length > 0 ||
      this.readFailures.length > 0 ||
      this.hardStateChanged()
    );
  }

  ready(): Ready {
    this.assertNoReadyOutstanding();
    if (this.appendBroadcastPending) {
      this.appendBroadcastPending = false;
      if (this.role === 'leader') this.broadcastAppend(false);
    }
    if (this.readBroadcastPending) {
      this.readBroadcastPending = false;
      if (this.role === 'leader') this.broadcastHeartbeat();
    }
    if (this.role === 'leader') this.releaseConfirmedReads();
    if (this.hardStateChanged()) this.handedOutHardState = this.currentHardState();
    const draft: ReadyDraft = {
      softState: { role: this.role, leaderId: this.leaderId, term: this.term },
      hardState: this.handedOutHardState,
      snapshot: this.snapshotToInstall,
      entries: this.log.unstableEntries(),
      outbox: this.outbox,
      committedEntries: this.log.nextCommittedEntries(this.config.applyEntriesMax),
      readStates: this.readStates,
      readFailures: this.readFailures,
    };
    const ready = assembleReady(draft, this.syncedHardState);
    this.outbox = [];
    this.snapshotToInstall = null;
    this.readStates = [];
    this.readFailures = [];
    this.readyOutstanding = true;
    return ready;
  }

  advance(ready: Ready): void {
    assert(this.readyOutstanding, 'advance without an outstanding ready');
    this.readyOutstanding = false;
    if (ready.hardState !== null) this.syncedHardState = ready.hardState;
    const lastEntry = ready.entries.at(-1);
    const stableAdvanced = lastEntry !== undefined && this.log.stableTo(lastEntry.index, lastEntry.term);
    if (ready.snapshot !== null && ready.snapshot.index > this.log.applied)
      this.log.appliedTo(ready.snapshot.index);
    const lastApplied = ready.committedEntries.at(-1);
    if (lastApplied !== undefined) {
      assert(
        lastApplied.index === this.log.applied + ready.committedEntries.length,
        'applied entries are contiguous',
      );
      this.log.appliedTo(lastApplied.index);
    }
    // The leader counts itself only for entries on its own disk, so commit may move now.
    if (stableAdvanced && this.role === 'leader' && this.maybeCommit()) this.broadcastAppend(false);
    this.log.check();
  }

  /** The leader this node knows of (itself when leading; NODE_NONE when unknown), without building a full status. */
  get knownLeader(): NodeId {
    return this.leaderId;
  }

  /** The configuration in effect (newest in the log), without building a full status. */
  get membershipConfig(): MembershipConfig | null {
    return this.membership;
  }

  status(): RaftStatus {
    const peers: PeerStatus[] = [];
    for (const [id, progress] of this.progress) {
      peers.push({ id, matchIndex: progress.match, nextIndex: progress.next, state: progress.state });
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      leaderId: this.leaderId,
      firstIndex: this.log.firstIndex(),
      snapshot:
        this.log.snapshot === null ? null : { index: this.log.snapshot.index, term: this.log.snapshot.term },
      lastIndex: this.log.lastIndex(),
      lastTerm: this.log.lastTerm(),
      stableIndex: this.log.stableIndex,
      commitIndex: this.log.committed,
      appliedIndex: this.log.applied,
      membership: this.membership,
      peers,
      messagesDropped: this.messagesDropped,
      ticksSinceQuorumAck: this.ticksSinceQuorumAck(),
    };
  }

  /** The age of the newest tick a quorum of voters (joint: both) acknowledged; a leader acks itself now. */
  private ticksSinceQuorumAck(): number | null {
    if (this.role !== 'leader' || this.membership === null) return null;
    const ackTick = jointAckedIndex(this.membership, (id) =>
      id === this.id ? this.leaderTicks : (this.progress.get(id)?.lastAckTick ?? -1),
    );
    return ackTick < 0 ? null : this.leaderTicks - ackTick;
  }

  // ---------------------------------------------------------------- term handling

  /** A message from a higher term. Returns false when the message is to be ignored. */
  private stepHigherTerm(message: Message): boolean {
    if (message.type === 'pre_vote' || message.type === 'vote') {
      // CheckQuorum lease: while we hear from a leader, a disruptive candidate gets no answer.
      const inLease =
        this.config.checkQuorum &&
        !message.transfer &&
        this.leaderId !== NODE_NONE &&
        this.electionElapsed < this.config.electionTicksMin;
      if (inLease) return false;
    }
    if (message.type === 'pre_vote') return true;
    if (message.type === 'pre_vote_response' && message.granted) return true;
    this.becomeFollower(message.term, isFromLeader(message) ? message.from : NODE_NONE);
    return true;
  }

  private stepLowerTerm(message: Message): void {
    if (isFromLeader(message)) {
      // A stale leader learns our term and steps down (needed with PreVote/CheckQuorum, where
      // a partitioned node's higher term would otherwise never reach it).
      this.send({
        type: 'append_response',
        from: this.id,
        to: message.from,
        term: this.term,
        success: false,
        index: 0,
        hintIndex: 0,
        hintTerm: 0,
      });
    } else if (message.type === 'pre_vote') {
      this.send({
        type: 'pre_vote_response',
        from: this.id,
        to: message.from,
        term: this.term,
        granted: false,
      });
    }
  }

  private handleVoteRequest(message: VoteRequest): void {
    const isPreVote = message.type === 'pre_vote';
    const canVote =
      this.vote === message.from ||
      (this.vote === NODE_NONE && this.leaderId === NODE_NONE) ||
      (isPreVote && message.term > this.term);
    const responseType = isPreVote ? 'pre_vote_response' : 'vote_response';
    if (canVote && this.log.isUpToDate(message.lastLogIndex, message.lastLogTerm)) {
      // A granted pre-vote answers in the candidate's future term; a real vote is recorded.
      this.send({ type: responseType, from: this.id, to: message.from, term: message.term, granted: true });
      if (!isPreVote) {
        assert(message.term === this.term, 'a vote is granted only in the current term');
        this.electionElapsed = 0;
        this.vote = message.from;
      }
      return;
    }
    this.send({ type: responseType, from: this.id, to: message.from, term: this.term, granted: false });
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, leaderId: NodeId): void {
    assert(term >= this.term, `term moves backwards: ${term} < ${this.term}`);
    if (this.role === 'leader') this.failPendingReads(leaderId);
    if (term !== this.term) {
      this.term = term;
      this.vote = NODE_NONE;
    }
    this.role = 'follower';
    this.leaderId = leaderId;
    this.resetTimers();
    this.progress.clear();
    this.votes.clear();
    this.transferTarget = NODE_NONE;
  }

  private becomePreCandidate(): void {
    assert(this.role !== 'leader', 'a leader never becomes a pre-candidate');
    this.role = 'pre_candidate';
    this.leaderId = NODE_NONE;
    this.votes.clear();
    this.resetTimers();
  }

  private becomeCandidate(): void {
    assert(this.role !== 'leader', 'a leader never becomes a candidate');
    this.term += 1;
    this.vote = this.id;
    this.role = 'candidate';
    this.leaderId = NODE_NONE;
    this.votes.clear();
    this.resetTimers();
  }

  private becomeLeader(): void {
    assert(this.role === 'candidate', 'only a candidate becomes leader');
    assert(this.membership !== null, 'a leader has a configuration');
    this.role = 'leader';
    this.leaderId = this.id;
    this.resetTimers();
    this.progress.clear();
    this.reconcileProgress();
    this.leaderTicks = 0;
    // The votes that elected us are the first quorum acknowledgement.
    for (const [id, granted] of this.votes) {
      const progress = this.progress.get(id);
      if (granted && progress !== undefined) progress.lastAckTick = 0;
    }
    this.pendingReads = [];
    this.readRound = 0;
    // A blank entry of the new term lets the leader commit (and learn) everything before it.
    this.log.append([{ kind: 'blank', term: this.term, index: this.log.lastIndex() + 1 }]);
    this.broadcastAppend(true);
  }

  /** The leader tracks exactly the members of its configuration (voters of both halves and learners). */
  private reconcileProgress(): void {
    assert(this.membership !== null, 'a leader has a configuration');
    const members = allMembers(this.membership);
    for (const id of [...this.progress.keys()]) {
      if (!members.includes(id)) this.progress.delete(id);
    }
    for (const id of members) {
      if (id !== this.id && !this.progress.has(id)) {
        this.progress.set(id, new Progress(this.log.lastIndex() + 1, this.config.inflightAppendsMax));
      }
    }
  }

  private resetTimers(): void {
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTicks = this.drawElectionTicks();
  }

  private drawElectionTicks(): number {
    return this.prng.nextIntInclusive(this.config.electionTicksMin, this.config.electionTicksMax);
  }

  /**
   * May this node campaign? A voter of its newest configuration may; so may a voter of the last
   * committed one while the newest is not committed yet. Without the second rule a leader that
   * appended "demote me" and lost its quorum before committing it could never be replaced: the
   * joint configuration still needs its vote, and its log may be the only one that is up to date.
   */
  private isPromotable(): boolean {
    if (this.membership === null) return false;
    if (isVoter(this.membership, this.id)) return true;
    if (this.membershipIndex <= this.log.committed) return false;
    const committedConfig = this.committedConfig();
    return committedConfig !== null && isVoter(committedConfig, this.id);
  }

  /** The configuration in effect at the commit index, cached per commit index (rarely needed). */
  private committedConfig(): MembershipConfig | null {
    if (this.committedConfigCache === null || this.committedConfigCache.commit !== this.log.committed) {
      this.committedConfigCache = {
        commit: this.log.committed,
        config: this.log.configAt(this.log.committed),
      };
    }
    return this.committedConfigCache.config;
  }

  // ---------------------------------------------------------------- elections

  /** Start an election; a transfer (TimeoutNow) skips PreVote and the voters' leases. */
  private campaign(transfer = false): void {
    assert(this.membership !== null, 'campaign needs a configuration');
    if (this.config.preVote && !transfer) {
      this.becomePreCandidate();
      this.requestVotes('pre_vote', this.term + 1, false);
    } else {
      this.becomeCandidate();
      this.requestVotes('vote', this.term, transfer);
    }
  }

  private requestVotes(type: 'pre_vote' | 'vote', term: number, transfer: boolean): void {
    assert(this.membership !== null, 'requestVotes needs a configuration');
    this.votes.set(this.id, true);
    if (this.tallyVotes()) return;
    for (const id of allMembers(this.membership)) {
      if (id === this.id || !isVoter(this.membership, id)) continue;
      this.send({
        type,
        from: this.id,
        to: id,
        term,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
        transfer,
      });
    }
  }

  /** Count the votes; on a decision change role. Returns true when the election is decided. */
  private tallyVotes(): boolean {
    assert(this.membership !== null, 'tally needs a configuration');
    const result = jointVoteResult(this.membership, this.votes);
    if (result === 'pending') return false;
    if (result === 'lost') {
      this.becomeFollower(this.term, NODE_NONE);
      return true;
    }
    if (this.role === 'pre_candidate') {
      this.becomeCandidate();
      this.requestVotes('vote', this.term, false);
    } else {
      this.becomeLeader();
    }
    return true;
  }

  private stepCandidate(message: Message): void {
    switch (message.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // Someone won this term: follow them.
        this.becomeFollower(this.term, message.from);
        this.stepFollower(message);
        return;
      case 'pre_vote_response':
      case 'vote_response':
        this.handleVoteResponse(message);
        return;
      default:
        return;
    }
  }

  private handleVoteResponse(message: VoteResponse): void {
    const expected = this.role === 'pre_candidate' ? 'pre_vote_response' : 'vote_response';
    if (message.type !== expected) return;
    if (this.membership === null || !isVoter(this.membership, message.from)) return;
    if (this.votes.has(message.from)) return;
    // A grant counts only for the term we campaign for (a stale pre-vote grant names an older one).
    if (message.granted && message.term !== (this.role === 'pre_candidate' ? this.term + 1 : this.term))
      return;
    this.votes.set(message.from, message.granted);
    this.tallyVotes();
  }

  // ---------------------------------------------------------------- follower

  private stepFollower(message: Message): void {
    if (message.type === 'append') {
      this.electionElapsed = 0;
      this.leaderId = message.from;
      this.handleAppend(message);
    } else if (message.type === 'heartbeat') {
      this.electionElapsed = 0;
      this.leaderId = message.from;
      this.handleHeartbeat(message);
    } else if (message.type === 'snapshot') {
      this.electionElapsed = 0;
      this.leaderId = message.from;
      this.handleSnapshot(message);
    } else if (message.type === 'timeout_now' && this.isPromotable()) {
      this.campaign(true); // a transfer: skips PreVote and the voters' leases
    }
  }

  /** Install the leader's snapshot unless our log already holds (and has committed) what it covers. */
  private handleSnapshot(message: InstallSnapshot): void {
    const snapshot = message.snapshot;
    const reply = {
      type: 'append_response',
      from: this.id,
      to: message.from,
      term: this.term,
      success: true,
      hintIndex: 0,
      hintTerm: 0,
    } as const;
    if (snapshot.index <= this.log.committed) {
      this.send({ ...reply, index: this.log.committed });
      return;
    }
    if (this.log.matchTerm(snapshot.index, snapshot.term)) {
      // We hold the entry the snapshot ends with, so the log prefix matches: just commit it (etcd does the same).
      this.log.commitTo(snapshot.index);
      this.send({ ...reply, index: this.log.committed });
      return;
    }
    this.log.installSnapshot(snapshot);
    this.snapshotToInstall = snapshot;
    this.refreshMembership();
    this.send({ ...reply, index: snapshot.index });
  }

  private handleAppend(message: AppendRequest): void {
    const reply = { type: 'append_response', from: this.id, to: message.from, term: this.term } as const;
    if (message.prevLogIndex < this.log.committed) {
      this.send({ ...reply, success: true, index: this.log.committed, hintIndex: 0, hintTerm: 0 });
      return;
    }
    const lastNewIndex = this.log.maybeAppend(
      message.prevLogIndex,
      message.prevLogTerm,
      message.commitIndex,
      message.entries,
    );
    if (lastNewIndex !== null) {
      this.refreshMembershipAfterAppend(message.entries);
      this.send({ ...reply, success: true, index: lastNewIndex, hintIndex: 0, hintTerm: 0 });
      return;
    }
    const hintIndex = this.log.findConflictByTerm(
      Math.min(message.prevLogIndex, this.log.lastIndex()),
      message.prevLogTerm,
    );
    const hintTerm = this.log.term(hintIndex);
    assert(hintTerm !== null, 'hint index lies inside the log');
    this.send({ ...reply, success: false, index: message.prevLogIndex, hintIndex, hintTerm });
  }

  private handleHeartbeat(message: Heartbeat): void {
    // The leader sends min(match, commit), so our log agrees with its up to that index.
    this.log.commitTo(Math.min(message.commitIndex, this.log.lastIndex()));
    this.send({
      type: 'heartbeat_response',
      from: this.id,
      to: message.from,
      term: this.term,
      readRound: message.readRound,
    });
  }

  /**
   * The newest config entry in the log is the active configuration (Raft thesis section 4.1), so a
   * config entry arriving or the active one being truncated away changes it.
   */
  private refreshMembershipAfterAppend(entries: readonly Entry[]): void {
    const activeReplaced =
      this.membershipIndex > 0 && !this.log.matchTerm(this.membershipIndex, this.membershipTerm);
    if (activeReplaced || entries.some((entry) => entry.kind === 'config')) this.refreshMembership();
  }

  private refreshMembership(): void {
    const entry = this.log.lastConfigEntry();
    const snapshot = this.log.snapshot;
    if (entry !== null && entry.kind === 'config') {
      this.membership = entry.config;
      this.membershipIndex = entry.index;
      this.membershipTerm = entry.term;
    } else if (snapshot !== null) {
      this.membership = snapshot.config;
      this.membershipIndex = snapshot.index;
      this.membershipTerm = snapshot.term;
    } else {
      this.membership = null;
      this.membershipIndex = 0;
      this.membershipTerm = 0;
    }
    if (this.role === 'leader') this.reconcileProgress();
  }

  // ---------------------------------------------------------------- leader

  private tickLeader(): void {
    this.leaderTicks += 1;
    this.heartbeatElapsed += 1;
    this.electionElapsed += 1;
    this.tickTransfer();
    this.tickSnapshots();
    if (this.electionElapsed >= this.config.electionTicksMin) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum) {
        this.step(CHECK_QUORUM);
        if (this.role !== 'leader') return;
      }
    }
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.step(BEAT);
    }
  }

  private tickTransfer(): void {
    if (this.transferTarget === NODE_NONE) return;
    this.transferElapsed += 1;
    if (this.transferElapsed >= this.config.electionTicksMin) this.transferTarget = NODE_NONE; // gave up
  }

  /** A snapshot that is not acknowledged within a few election timeouts is sent again (it may have been lost). */
  private tickSnapshots(): void {
    for (const [id, progress] of this.progress) {
      if (progress.state !== 'snapshot') continue;
      progress.snapshotTicks += 1;
      if (progress.snapshotTicks < SNAPSHOT_RETRY_ELECTIONS * this.config.electionTicksMax) continue;
      progress.becomeProbe();
      this.sendAppend(id, progress, true);
    }
  }

  /** CheckQuorum: did a quorum talk to us since the last check? Resets the activity marks. */
  private quorumActive(): boolean {
    assert(this.membership !== null, 'leader has a configuration');
    const active = new Map<NodeId, boolean>();
    for (const id of allMembers(this.membership)) {
      const progress = this.progress.get(id);
      active.set(id, id === this.id || (progress?.recentActive ?? false));
      if (progress !== undefined) progress.recentActive = false;
    }
    return jointVoteResult(this.membership, active) === 'won';
  }

  private stepLeader(message: Message): void {
    switch (message.type) {
      case 'append_response':
        this.handleAppendResponse(message);
        return;
      case 'heartbeat_response':
        this.handleHeartbeatResponse(message);
        return;
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        assert(false, `two leaders in term ${this.term}: ${this.id} and ${message.from}`);
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(message: AppendResponse): void {
    const progress = this.progress.get(message.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    progress.lastAckTick = this.leaderTicks;
    if (!message.success) {
      let matchHint = message.hintIndex;
      if (message.hintTerm > 0) matchHint = this.log.findConflictByTerm(message.hintIndex, message.hintTerm);
      if (progress.maybeDecreaseTo(message.index, matchHint)) {
        if (progress.state === 'replicate') progress.becomeProbe();
        this.sendAppend(message.from, progress, false);
      }
      return;
    }
    assert(
      message.index <= this.log.lastIndex(),
      `follower ${message.from} acks ${message.index} beyond our log`,
    );
    const wasPaused = progress.isPaused();
    if (!progress.maybeUpdate(message.index)) return;
    if (progress.state === 'snapshot' && progress.match >= progress.pendingSnapshotIndex)
      progress.becomeProbe();
    if (progress.state === 'probe') progress.becomeReplicate();
    else progress.inflights.freeLE(message.index);
    // A new commit index alone is not sent at once: it rides on the next append or heartbeat (at most
    // one heartbeat interval later). Clients are answered by the leader, so nothing waits on it, and
    // an empty append per follower per commit was half of all Raft messages with one client.
    if (this.maybeCommit()) {
      this.broadcastAppend(false);
    } else if (wasPaused || progress.state === 'replicate') {
      this.sendAppendsTo(message.from, progress);
    }
    if (message.from === this.transferTarget && progress.match === this.log.lastIndex())
      this.sendTimeoutNow(message.from);
  }

  private handleHeartbeatResponse(message: HeartbeatResponse): void {
    const progress = this.progress.get(message.from);
    if (progress === undefined) return;
    progress.recentActive = true;
    progress.lastAckTick = this.leaderTicks;
    progress.probeSent = false;
    progress.readRoundAcked = Math.max(progress.readRoundAcked, message.readRound);
    this.releaseConfirmedReads();
    if (progress.match < this.log.lastIndex()) {
      // Appends may have been lost: free a slot and probe with an (possibly empty) append.
      if (progress.state === 'replicate' && progress.inflights.full()) progress.inflights.freeFirstOne();
      this.sendAppend(message.from, progress, true);
    }
  }

  private maybeCommit(): boolean {
    assert(this.membership !== null, 'leader has a configuration');
    const acked = jointAckedIndex(this.membership, (id) => this.matchIndexOf(id));
    // Raft section 5.4.2: only an entry of the current term is committed by counting replicas.
    if (acked <= this.log.committed || this.log.term(acked) !== this.term) return false;
    this.log.commitTo(acked);
    this.afterConfigCommitted();
    return true;
  }

  /**
   * Once the configuration in effect is committed: a joint one is followed by C_new at once, and
   * a leader that C_new leaves out hands over to its most caught-up voter and steps down.
   */
  private afterConfigCommitted(): void {
    const membership = this.membership;
    assert(membership !== null, 'leader has a configuration');
    if (this.role !== 'leader' || this.membershipIndex > this.log.committed) return;
    if (membership.votersOutgoing.length > 0) {
      const members = [...membership.voters, ...membership.learners];
      const nodes = (membership.nodes ?? []).filter((node) => members.includes(node.id));
      this.appendConfig({
        voters: membership.voters,
        votersOutgoing: [],
        learners: membership.learners,
        nodes,
      });
      return;
    }
    if (membership.voters.includes(this.id)) return;
    let successor: NodeId = NODE_NONE;
    let successorMatch = -1;
    for (const id of membership.voters) {
      const match = this.progress.get(id)?.match ?? 0;
      if (match > successorMatch) {
        successor = id;
        successorMatch = match;
      }
    }
    if (successor !== NODE_NONE && successorMatch === this.log.lastIndex()) this.sendTimeoutNow(successor);
    this.becomeFollower(this.term, NODE_NONE);
  }

  private matchIndexOf(id: NodeId): number {
    if (id === this.id) return this.log.stableIndex;
    return this.progress.get(id)?.match ?? 0;
  }

  private committedInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private broadcastAppend(sendIfEmpty: boolean): void {
    for (const [id, progress] of this.progress) {
      // A follower in probe (new, or after a rejection) is probed even with nothing new to send.
      if (sendIfEmpty || progress.state === 'probe') this.sendAppend(id, progress, true);
      this.sendAppendsTo(id, progress);
    }
  }

  /** Fill the follower's in-flight window (bounded by inflightAppendsMax). */
  private sendAppendsTo(id: NodeId, progress: Progress): void {
    for (let sent = 0; sent < this.config.inflightAppendsMax; sent += 1) {
      if (!this.sendAppend(id, progress, false)) return;
    }
  }

  /** Send one AppendEntries to `id` if its window allows; returns whether something was sent. */
  private sendAppend(id: NodeId, progress: Progress, sendIfEmpty: boolean): boolean {
    if (progress.isPaused()) return false;
    const prevLogIndex = progress.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex);
    if (prevLogTerm === null) return this.sendSnapshot(id, progress);
    const entries = this.log.slice(
      progress.next,
      this.log.lastIndex(),
      this.config.appendEntriesMax,
      this.config.appendBytesMax,
    );
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.send({
      type: 'append',
      from: this.id,
      to: id,
      term: this.term,
      prevLogIndex,
      prevLogTerm,
      entries,
      commitIndex: this.log.committed,
    });
    const last = entries.at(-1);
    if (progress.state === 'replicate' && last !== undefined) {
      progress.next = last.index + 1;
      progress.inflights.add(last.index);
    } else if (progress.state === 'probe') {
      progress.probeSent = true;
    }
    return true;
  }

  /** The follower needs entries we compacted: send our snapshot (its data follows from the driver). */
  private sendSnapshot(id: NodeId, progress: Progress): boolean {
    const snapshot = this.log.snapshot;
    assert(snapshot !== null, `leader lacks entry ${progress.next - 1} and has no snapshot`);
    progress.becomeSnapshot(snapshot.index);
    this.send({ type: 'snapshot', from: this.id, to: id, term: this.term, snapshot });
    return true;
  }

  private broadcastHeartbeat(): void {
    this.readRound += 1;
    for (const [id, progress] of this.progress) {
      const commitIndex = Math.min(progress.match, this.log.committed);
      this.send({
        type: 'heartbeat',
        from: this.id,
        to: id,
        term: this.term,
        commitIndex,
        readRound: this.readRound,
      });
    }
  }

  /** Release reads whose round a quorum has acknowledged, once the leader committed in its term. */
  private releaseConfirmedReads(): void {
    if (this.pendingReads.length === 0 || !this.committedInCurrentTerm()) return;
    assert(this.membership !== null, 'leader has a configuration');
    const confirmedRound = jointAckedIndex(this.membership, (id) =>
      id === this.id ? this.readRound : (this.progress.get(id)?.readRoundAcked ?? 0),
    );
    let released = 0;
    for (const read of this.pendingReads) {
      if (read.round > confirmedRound) break;
      this.readStates.push({
        requestId: read.requestId,
        index: read.index === 0 ? this.log.committed : read.index,
      });
      released += 1;
    }
    if (released > 0) this.pendingReads = this.pendingReads.slice(released);
  }

  private failPendingReads(leaderId: NodeId): void {
    for (const read of this.pendingReads) {
      this.readFailures.push({ requestId: read.requestId, reason: 'not_leader', leaderId });
    }
    this.pendingReads = [];
    this.readBroadcastPending = false;
  }

  // ---------------------------------------------------------------- helpers

  private send(message: Message): void {
    assert(message.to !== this.id, 'a node never messages itself');
    if (this.outbox.length >= OUTBOX_MESSAGES_MAX) {
      this.messagesDropped += 1;
      return;
    }
    this.outbox.push(message);
  }

  private currentHardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private hardStateChanged(): boolean {
    const handedOut = this.handedOutHardState;
    return (
      handedOut.term !== this.term || handedOut.vote !== this.vote || handedOut.commit !== this.log.committed
    );
  }

  private assertNoReadyOutstanding(): void {
    assert(!this.readyOutstanding, 'the core is not stepped between ready() and advance()');
  }
}
