import { assert, assertIndex, unreachable } from '../base/assert.ts';
import { ok, rejected, type RaftRejection, type RaftResult } from './errors.ts';
import { isVoter, validateConfig } from './quorum.ts';
import { assembleReady, type ReadyDraft } from './ready.ts';
import {
  NODE_NONE,
  type LocalMessage,
  type MembershipConfig,
  type Message,
  type NodeId,
  type Ready,
  type SnapshotMeta,
} from './types.ts';
import { RaftElections } from './elections.ts';
import type { Leadership, MembershipProposal, PeerStatus, ProposeAccepted, RaftStatus } from './status.ts';

export type { Leadership, MembershipProposal, PeerStatus, ProposeAccepted, RaftStatus } from './status.ts';

const HUP: LocalMessage = { type: 'hup' };
const BEAT: LocalMessage = { type: 'beat' };
const CHECK_QUORUM: LocalMessage = { type: 'check_quorum' };

function sameMembers(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((id) => b.includes(id));
}

/**
 * The pure Raft state machine (after etcd-io/raft): no I/O, no clock, no global randomness.
 * The driver calls `tick()` on a timer and `step()` on receipt, then drains `ready()` and calls
 * `advance()`. Between `ready()` and `advance()` the driver must not call anything else.
 * Split by concern: shared state and role changes (core-state.ts), log replication
 * (replication.ts), elections (elections.ts), ReadIndex (read-only.ts), the Ready rules
 * (ready.ts); this file holds the inputs, the local messages and the Ready itself.
 */
export class RaftCore extends RaftElections {
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
    if (this.reads.pendingCount >= this.config.pendingReadsMax) {
      return rejected({ code: 'overloaded', what: 'pending_reads' });
    }
    const index = this.committedInCurrentTerm() ? this.log.committed : 0;
    this.reads.add(requestId, index);
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

  hasReady(): boolean {
    return (
      this.outbox.length > 0 ||
      this.appendBroadcastPending ||
      this.reads.broadcastPending ||
      this.log.stableIndex < this.log.lastIndex() ||
      this.log.hasNextCommittedEntries() ||
      this.snapshotToInstall !== null ||
      this.reads.hasOutput() ||
      this.hardStateChanged()
    );
  }

  ready(): Ready {
    this.assertNoReadyOutstanding();
    if (this.appendBroadcastPending) {
      this.appendBroadcastPending = false;
      if (this.role === 'leader') this.broadcastAppend(false);
    }
    if (this.reads.broadcastPending) {
      this.reads.broadcastPending = false;
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
      readStates: this.reads.takeStates(),
      readFailures: this.reads.takeFailures(),
    };
    const ready = assembleReady(draft, this.syncedHardState);
    this.outbox = [];
    this.snapshotToInstall = null;
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

  /** Role, term, leader and transfer target, without building a full status (the runtime compares them turn by turn). */
  leadership(): Leadership {
    return { role: this.role, term: this.term, leaderId: this.leaderId, transferTarget: this.transferTarget };
  }

  /** Whether `seen` still says who leads, without building a Leadership (asked after every turn). */
  leadershipIs(seen: Leadership): boolean {
    return (
      seen.role === this.role &&
      seen.term === this.term &&
      seen.leaderId === this.leaderId &&
      seen.transferTarget === this.transferTarget
    );
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
}
