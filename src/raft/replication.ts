import { assert } from '../base/assert.ts';
import { Progress } from './progress.ts';
import { jointAckedIndex } from './quorum.ts';
import {
  NODE_NONE,
  type AppendRequest,
  type AppendResponse,
  type Heartbeat,
  type HeartbeatResponse,
  type InstallSnapshot,
  type Message,
  type NodeId,
} from './types.ts';
import { RaftState } from './core-state.ts';

/** A snapshot not acknowledged within this many election timeouts is sent again. */
export const SNAPSHOT_RETRY_ELECTIONS = 3;

/** Log replication: the leader's appends, heartbeats, snapshots and commit; the follower's answers. */
export abstract class RaftReplication extends RaftState {
  /** Start an election (elections.ts); a transfer (TimeoutNow) skips PreVote and the voters' leases. */
  protected abstract campaign(transfer?: boolean): void;

  protected stepFollower(message: Message): void {
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
  protected handleSnapshot(message: InstallSnapshot): void {
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

  protected handleAppend(message: AppendRequest): void {
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

  protected handleHeartbeat(message: Heartbeat): void {
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

  protected tickTransfer(): void {
    if (this.transferTarget === NODE_NONE) return;
    this.transferElapsed += 1;
    if (this.transferElapsed >= this.config.electionTicksMin) this.transferTarget = NODE_NONE; // gave up
  }

  /** A snapshot that is not acknowledged within a few election timeouts is sent again (it may have been lost). */
  protected tickSnapshots(): void {
    for (const [id, progress] of this.progress) {
      if (progress.state !== 'snapshot') continue;
      progress.snapshotTicks += 1;
      if (progress.snapshotTicks < SNAPSHOT_RETRY_ELECTIONS * this.config.electionTicksMax) continue;
      progress.becomeProbe();
      this.sendAppend(id, progress, true);
    }
  }

  protected stepLeader(message: Message): void {
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

  protected handleAppendResponse(message: AppendResponse): void {
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

  protected handleHeartbeatResponse(message: HeartbeatResponse): void {
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

  protected maybeCommit(): boolean {
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
  protected afterConfigCommitted(): void {
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

  protected broadcastAppend(sendIfEmpty: boolean): void {
    for (const [id, progress] of this.progress) {
      // A follower in probe (new, or after a rejection) is probed even with nothing new to send.
      if (sendIfEmpty || progress.state === 'probe') this.sendAppend(id, progress, true);
      this.sendAppendsTo(id, progress);
    }
  }

  /** Fill the follower's in-flight window (bounded by inflightAppendsMax). */
  protected sendAppendsTo(id: NodeId, progress: Progress): void {
    for (let sent = 0; sent < this.config.inflightAppendsMax; sent += 1) {
      if (!this.sendAppend(id, progress, false)) return;
    }
  }

  /** Send one AppendEntries to `id` if its window allows; returns whether something was sent. */
  protected sendAppend(id: NodeId, progress: Progress, sendIfEmpty: boolean): boolean {
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
  protected sendSnapshot(id: NodeId, progress: Progress): boolean {
    const snapshot = this.log.snapshot;
    assert(snapshot !== null, `leader lacks entry ${progress.next - 1} and has no snapshot`);
    progress.becomeSnapshot(snapshot.index);
    this.send({ type: 'snapshot', from: this.id, to: id, term: this.term, snapshot });
    return true;
  }

  protected broadcastHeartbeat(): void {
    const readRound = this.reads.nextRound();
    for (const [id, progress] of this.progress) {
      const commitIndex = Math.min(progress.match, this.log.committed);
      this.send({
        type: 'heartbeat',
        from: this.id,
        to: id,
        term: this.term,
        commitIndex,
        readRound,
      });
    }
  }

  /** Release reads whose round a quorum has acknowledged, once the leader committed in its term. */
  protected releaseConfirmedReads(): void {
    if (this.reads.pendingCount === 0 || !this.committedInCurrentTerm()) return;
    assert(this.membership !== null, 'leader has a configuration');
    const confirmedRound = jointAckedIndex(this.membership, (id) =>
      id === this.id ? this.reads.round : (this.progress.get(id)?.readRoundAcked ?? 0),
    );
    this.reads.release(confirmedRound, this.log.committed);
  }
}
