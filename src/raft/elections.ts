import { assert } from '../base/assert.ts';
import { allMembers, isVoter, jointVoteResult } from './quorum.ts';
import {
  NODE_NONE,
  type AppendRequest,
  type Heartbeat,
  type InstallSnapshot,
  type Message,
  type TimeoutNow,
  type VoteRequest,
  type VoteResponse,
} from './types.ts';
import { RaftReplication } from './replication.ts';

function isFromLeader(message: Message): message is AppendRequest | Heartbeat | InstallSnapshot | TimeoutNow {
  return (
    message.type === 'append' ||
    message.type === 'heartbeat' ||
    message.type === 'snapshot' ||
    message.type === 'timeout_now'
  );
}

/** Elections: PreVote and votes, terms seen in messages, and becoming leader. */
export abstract class RaftElections extends RaftReplication {
  /** A message from a higher term. Returns false when the message is to be ignored. */
  protected stepHigherTerm(message: Message): boolean {
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

  protected stepLowerTerm(message: Message): void {
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

  protected handleVoteRequest(message: VoteRequest): void {
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

  protected becomeLeader(): void {
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
    this.reads.reset();
    // A blank entry of the new term lets the leader commit (and learn) everything before it.
    this.log.append([{ kind: 'blank', term: this.term, index: this.log.lastIndex() + 1 }]);
    this.broadcastAppend(true);
  }

  /** Start an election; a transfer (TimeoutNow) skips PreVote and the voters' leases. */
  protected campaign(transfer = false): void {
    assert(this.membership !== null, 'campaign needs a configuration');
    if (this.config.preVote && !transfer) {
      this.becomePreCandidate();
      this.requestVotes('pre_vote', this.term + 1, false);
    } else {
      this.becomeCandidate();
      this.requestVotes('vote', this.term, transfer);
    }
  }

  protected requestVotes(type: 'pre_vote' | 'vote', term: number, transfer: boolean): void {
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
  protected tallyVotes(): boolean {
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

  protected stepCandidate(message: Message): void {
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

  protected handleVoteResponse(message: VoteResponse): void {
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
}
