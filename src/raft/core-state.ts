import { assert, assertIndex } from '../base/assert.ts';
import { assertRaftConfig, OUTBOX_MESSAGES_MAX, type RaftConfig } from './config.ts';
import { RaftLog } from './log.ts';
import type { Prng } from './prng.ts';
import { Progress } from './progress.ts';
import { ReadOnly } from './read-only.ts';
import { allMembers, isVoter, jointAckedIndex, jointVoteResult } from './quorum.ts';
import {
  NODE_NONE,
  type Entry,
  type HardState,
  type MembershipConfig,
  type Message,
  type NodeId,
  type PersistedState,
  type Role,
  type SnapshotMeta,
} from './types.ts';
import type { ProposeAccepted } from './status.ts';

/**
 * The state every part of the core shares (terms, roles, the log, progress, the outbox, reads) and
 * the transitions between roles. The core is layered by concern: this state, then replication
 * (replication.ts), then elections (elections.ts), then the inputs and the Ready (core.ts).
 */
export abstract class RaftState {
  readonly id: NodeId;
  protected readonly config: RaftConfig;
  protected readonly prng: Prng;
  readonly log = new RaftLog();

  protected term = 0;
  protected vote: NodeId = NODE_NONE;
  protected role: Role = 'follower';
  protected leaderId: NodeId = NODE_NONE;
  protected membership: MembershipConfig | null = null;
  /** Index and term of the config entry in effect (0/0 while uninitialized). */
  protected membershipIndex = 0;
  protected membershipTerm = 0;

  protected readonly progress = new Map<NodeId, Progress>();
  protected readonly votes = new Map<NodeId, boolean>();
  protected electionElapsed = 0;
  protected heartbeatElapsed = 0;
  /** Ticks since this node became leader: the clock for acknowledgement ages. */
  protected leaderTicks = 0;
  protected randomizedElectionTicks: number;

  protected outbox: Message[] = [];
  protected messagesDropped = 0;
  protected appendBroadcastPending = false;

  protected readonly reads = new ReadOnly();

  /** The newest hard state handed out in a Ready: a change to it makes a Ready. */
  protected handedOutHardState: HardState;
  /** The hard state on disk: its term and vote are synced; a newer commit index waits for the next sync. */
  protected syncedHardState: HardState;
  protected readyOutstanding = false;
  /** A snapshot from the leader the driver must install with the next Ready. */
  protected snapshotToInstall: SnapshotMeta | null = null;
  /** Leadership transfer in progress: the target and the ticks it has taken so far. */
  protected transferTarget: NodeId = NODE_NONE;
  protected transferElapsed = 0;
  protected committedConfigCache: {
    readonly commit: number;
    readonly config: MembershipConfig | null;
  } | null = null;

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

  protected becomeFollower(term: number, leaderId: NodeId): void {
    assert(term >= this.term, `term moves backwards: ${term} < ${this.term}`);
    if (this.role === 'leader') this.reads.failAll(leaderId);
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

  protected becomePreCandidate(): void {
    assert(this.role !== 'leader', 'a leader never becomes a pre-candidate');
    this.role = 'pre_candidate';
    this.leaderId = NODE_NONE;
    this.votes.clear();
    this.resetTimers();
  }

  protected becomeCandidate(): void {
    assert(this.role !== 'leader', 'a leader never becomes a candidate');
    this.term += 1;
    this.vote = this.id;
    this.role = 'candidate';
    this.leaderId = NODE_NONE;
    this.votes.clear();
    this.resetTimers();
  }

  /** The leader tracks exactly the members of its configuration (voters of both halves and learners). */
  protected reconcileProgress(): void {
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

  protected resetTimers(): void {
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTicks = this.drawElectionTicks();
  }

  protected drawElectionTicks(): number {
    return this.prng.nextIntInclusive(this.config.electionTicksMin, this.config.electionTicksMax);
  }

  /**
   * May this node campaign? A voter of its newest configuration may; so may a voter of the last
   * committed one while the newest is not committed yet. Without the second rule a leader that
   * appended "demote me" and lost its quorum before committing it could never be replaced: the
   * joint configuration still needs its vote, and its log may be the only one that is up to date.
   */
  protected isPromotable(): boolean {
    if (this.membership === null) return false;
    if (isVoter(this.membership, this.id)) return true;
    if (this.membershipIndex <= this.log.committed) return false;
    const committedConfig = this.committedConfig();
    return committedConfig !== null && isVoter(committedConfig, this.id);
  }

  /** The configuration in effect at the commit index, cached per commit index (rarely needed). */
  protected committedConfig(): MembershipConfig | null {
    if (this.committedConfigCache === null || this.committedConfigCache.commit !== this.log.committed) {
      this.committedConfigCache = {
        commit: this.log.committed,
        config: this.log.configAt(this.log.committed),
      };
    }
    return this.committedConfigCache.config;
  }

  /**
   * The newest config entry in the log is the active configuration (Raft thesis section 4.1), so a
   * config entry arriving or the active one being truncated away changes it.
   */
  protected refreshMembershipAfterAppend(entries: readonly Entry[]): void {
    const activeReplaced =
      this.membershipIndex > 0 && !this.log.matchTerm(this.membershipIndex, this.membershipTerm);
    if (activeReplaced || entries.some((entry) => entry.kind === 'config')) this.refreshMembership();
  }

  protected refreshMembership(): void {
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

  protected appendConfig(config: MembershipConfig): ProposeAccepted {
    assert(this.role === 'leader', 'only a leader appends configurations');
    const index = this.log.lastIndex() + 1;
    this.log.append([{ kind: 'config', term: this.term, index, config }]);
    this.refreshMembership();
    this.appendBroadcastPending = true;
    return { index, term: this.term };
  }

  protected sendTimeoutNow(target: NodeId): void {
    this.send({ type: 'timeout_now', from: this.id, to: target, term: this.term });
  }

  /** CheckQuorum: did a quorum talk to us since the last check? Resets the activity marks. */
  protected quorumActive(): boolean {
    assert(this.membership !== null, 'leader has a configuration');
    const active = new Map<NodeId, boolean>();
    for (const id of allMembers(this.membership)) {
      const progress = this.progress.get(id);
      active.set(id, id === this.id || (progress?.recentActive ?? false));
      if (progress !== undefined) progress.recentActive = false;
    }
    return jointVoteResult(this.membership, active) === 'won';
  }

  protected matchIndexOf(id: NodeId): number {
    if (id === this.id) return this.log.stableIndex;
    return this.progress.get(id)?.match ?? 0;
  }

  protected committedInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  /** The age of the newest tick a quorum of voters (joint: both) acknowledged; a leader acks itself now. */
  protected ticksSinceQuorumAck(): number | null {
    if (this.role !== 'leader' || this.membership === null) return null;
    const ackTick = jointAckedIndex(this.membership, (id) =>
      id === this.id ? this.leaderTicks : (this.progress.get(id)?.lastAckTick ?? -1),
    );
    return ackTick < 0 ? null : this.leaderTicks - ackTick;
  }

  protected send(message: Message): void {
    assert(message.to !== this.id, 'a node never messages itself');
    if (this.outbox.length >= OUTBOX_MESSAGES_MAX) {
      this.messagesDropped += 1;
      return;
    }
    this.outbox.push(message);
  }

  protected currentHardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  protected hardStateChanged(): boolean {
    const handedOut = this.handedOutHardState;
    return (
      handedOut.term !== this.term || handedOut.vote !== this.vote || handedOut.commit !== this.log.committed
    );
  }

  protected assertNoReadyOutstanding(): void {
    assert(!this.readyOutstanding, 'the core is not stepped between ready() and advance()');
  }
}
