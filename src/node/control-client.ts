import type { ClusterController, KeyValueStore } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import {
  checkedSession,
  encodeContinuationToken,
  validateKey,
  validateScan,
  validateWriteCommand,
} from '../api/limits.ts';
import {
  checkedAddLearner,
  checkedChangeMembership,
  checkedInitMembers,
  checkedLearnerId,
  checkedSnapshotTarget,
} from '../api/membership-validation.ts';
import type {
  AddLearnerRequest,
  ChangeMembershipRequest,
  ClusterNode,
  ClusterState,
  DeleteRequest,
  DeleteResult,
  InitRequest,
  RaftMetrics,
  ReadRequest,
  ReadResult,
  RemoveLearnerRequest,
  ScanRequest,
  ScanResult,
  SnapshotRequest,
  SnapshotResult,
  WriteRequest,
  WriteResult,
} from '../api/types.ts';
import { assert, AssertionError } from '../base/assert.ts';
import type { RaftStatus } from '../raft/core.ts';
import type { MembershipConfig, NodeAddress } from '../raft/types.ts';
import type { NodeId } from '../raft/types.ts';
import type { Snapshot } from './interfaces.ts';
import { callNode } from './node-call.ts';
import { appliedRevision, keyValue, writeResult } from './write-results.ts';
import type { Callback, MembershipTarget, RaftNode, ReadServed, WriteApplied } from './raft-node.ts';

/** How long a request may wait for the cluster. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
export const REQUEST_TIMEOUT_MS_MAX = 60_000;
/** A learner counts as caught up within this many entries of the leader's log. */
export const LEARNER_LAG_ENTRIES_MAX = 64;
/** How often a waiting add-learner looks at the learner's progress. */
export const LEARNER_POLL_MS = 20;
/** How long add-learner waits for the learner to catch up. */
export const LEARNER_CATCH_UP_TIMEOUT_MS_DEFAULT = 30_000;
/** How long change-membership waits for a learner it promotes to acknowledge the commit index. */
export const LEARNER_PROMOTE_WAIT_MS = 2_000;
/** Proposals a change-membership makes at most while it waits (one per poll). */
export const LEARNER_PROMOTE_ATTEMPTS_MAX = LEARNER_PROMOTE_WAIT_MS / LEARNER_POLL_MS + 1;
/**
 * The longest an add-learner runs on the leader with the default timeouts: its proposal, the
 * catch-up wait, and the removal of a learner that never answered (40 s). A follower that forwards
 * one waits this long for the leader's answer, not the 5 s of a forwarded write.
 */
export const ADD_LEARNER_RUN_MS_MAX =
  REQUEST_TIMEOUT_MS_DEFAULT + LEARNER_CATCH_UP_TIMEOUT_MS_DEFAULT + REQUEST_TIMEOUT_MS_DEFAULT;
/** The longest a change-membership runs on the leader: its promotion retries, then its proposal. */
export const CHANGE_MEMBERSHIP_RUN_MS_MAX = LEARNER_PROMOTE_WAIT_MS + REQUEST_TIMEOUT_MS_DEFAULT;

/** A request timeout option: the default when absent, else an integer in [1, REQUEST_TIMEOUT_MS_MAX] (RangeError). */
export function checkedRequestTimeout(timeoutMs: number = REQUEST_TIMEOUT_MS_DEFAULT): number {
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > REQUEST_TIMEOUT_MS_MAX) {
    throw new RangeError(`requestTimeoutMs must be in [1, ${REQUEST_TIMEOUT_MS_MAX}], got ${timeoutMs}`);
  }
  return timeoutMs;
}

export interface RaftControlClientOptions {
  readonly requestTimeoutMs?: number;
  readonly learnerCatchUpTimeoutMs?: number;
}

/**
 * Implements the API contracts by messaging the RaftNode, each call bounded by a timeout, every
 * failure mapped to an AspenError. A timed-out write is indeterminate (it may still apply).
 */
export class RaftControlClient implements ClusterController, KeyValueStore {
  private readonly node: RaftNode;
  private readonly requestTimeoutMs: number;
  private readonly learnerCatchUpTimeoutMs: number;

  constructor(node: RaftNode, options: RaftControlClientOptions = {}) {
    this.node = node;
    this.requestTimeoutMs = checkedRequestTimeout(options.requestTimeoutMs);
    this.learnerCatchUpTimeoutMs = options.learnerCatchUpTimeoutMs ?? LEARNER_CATCH_UP_TIMEOUT_MS_DEFAULT;
  }

  async addLearner(request: AddLearnerRequest): Promise<ClusterState> {
    const learner = checkedAddLearner(request);
    const { status, membership } = this.leaderStatus();
    if (membership.voters.includes(learner.id) || membership.votersOutgoing.includes(learner.id)) {
      throw new AspenError('INVALID_INPUT', `node ${learner.id} is already a voter`);
    }
    const added = !membership.learners.includes(learner.id);
    if (added) {
      const nodes = [toNodeAddress(learner)];
      const target = { voters: membership.voters, learners: [...membership.learners, learner.id], nodes };
      await this.call<MembershipConfig>('add-learner', (callback) => {
        this.node.changeMembership(target, callback);
      });
    }
    try {
      await this.waitCaughtUp(learner.id, status.lastIndex);
    } catch (error) {
      if (!(error instanceof AspenError) || error.code !== 'TIMEOUT') throw error;
      throw await this.rollBackLearner(learner.id, added, error);
    }
    return this.currentState();
  }

  /**
   * add-learner timed out. A learner this call added that never answered (unreachable, wrong
   * address, not running) is taken out again; one that is catching up stays: it acknowledged an
   * entry, or it is being sent a snapshot (the leader sends one only after the learner's answer
   * showed it lacks the log; a large one takes longer than the wait). Either way the error says
   * which, and how to remove it by hand.
   */
  private async rollBackLearner(learnerId: NodeId, added: boolean, timeout: AspenError): Promise<AspenError> {
    const peer = this.node.status().peers.find((candidate) => candidate.id === learnerId);
    const answered = (peer?.matchIndex ?? 0) > 0 || peer?.state === 'snapshot';
    const removeHint = `remove it with POST /remove-learner {"learner_id":${learnerId}} or \`aspen member remove ${learnerId}\``;
    if (!added || answered) {
      return new AspenError(
        'TIMEOUT',
        `${timeout.message}; it stays a learner and keeps catching up (promote it later, or ${removeHint})`,
        { definite: false },
      );
    }
    try {
      await this.removeLearner({ learner_id: learnerId });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return new AspenError(
        'TIMEOUT',
        `${timeout.message}; it never answered and could not be removed again (${reason}): ${removeHint}`,
        { definite: false },
      );
    }
    return new AspenError(
      'TIMEOUT',
      `${timeout.message}; it never answered, so it was removed again (is it running, and is its raft_addr reachable from the leader?)`,
    );
  }

  async changeMembership(request: ChangeMembershipRequest): Promise<ClusterState> {
    const { members, learners: wantedLearners } = checkedChangeMembership(request);
    // A promoted learner must have acknowledged what was committed when the call arrived.
    const catchUpIndex = this.leaderStatus().status.commitIndex;
    await this.proposeMembership(() => {
      const { membership } = this.leaderStatus(); // as it is now: another change may have committed meanwhile
      checkMembershipTarget(membership, members, wantedLearners);
      const learners = wantedLearners ?? membership.learners.filter((id) => !members.includes(id));
      return { voters: members, learners, catchUpIndex };
    });
    return this.currentState();
  }

  async removeLearner(request: RemoveLearnerRequest): Promise<ClusterState> {
    const learnerId = checkedLearnerId(request);
    const { membership } = this.leaderStatus();
    if (!membership.learners.includes(learnerId)) {
      const what = membership.voters.includes(learnerId)
        ? 'a voter (demote it first: /change-membership with it under "learners")'
        : 'not in the cluster';
      throw new AspenError('INVALID_INPUT', `node ${learnerId} is not a learner: it is ${what}`);
    }
    const target = {
      voters: membership.voters,
      learners: membership.learners.filter((id) => id !== learnerId),
    };
    await this.call<MembershipConfig>('remove-learner', (callback) => {
      this.node.changeMembership(target, callback);
    });
    return this.currentState();
  }

  /**
   * Propose a change; while the core refuses it because a learner to promote has not caught up yet,
   * ask again every LEARNER_POLL_MS for up to LEARNER_PROMOTE_WAIT_MS (a healthy learner catches up
   * within a round trip; an unreachable one never does, and the last refusal is the answer). The
   * target is built afresh for each attempt from the configuration in effect then.
   */
  private async proposeMembership(build: () => MembershipTarget): Promise<void> {
    const clock = this.node.clock;
    const deadlineMs = clock.nowMs() + LEARNER_PROMOTE_WAIT_MS;
    for (let attempt = 1; attempt <= LEARNER_PROMOTE_ATTEMPTS_MAX; attempt += 1) {
      const target = build();
      try {
        await this.call<MembershipConfig>('change-membership', (callback) => {
          this.node.changeMembership(target, callback);
        });
        return;
      } catch (error) {
        const last = attempt === LEARNER_PROMOTE_ATTEMPTS_MAX || clock.nowMs() + LEARNER_POLL_MS > deadlineMs;
        if (!(error instanceof AspenError) || error.code !== 'LEARNER_NOT_CAUGHT_UP' || last) throw error;
      }
      await new Promise<void>((resolve) => {
        clock.setTimer(LEARNER_POLL_MS, resolve);
      });
    }
    throw new AssertionError('the last promotion attempt answers or throws');
  }

  /** On the leader by default (NOT_LEADER or NO_LEADER elsewhere); `node` "local": on this node. */
  async triggerSnapshot(request: SnapshotRequest = {}): Promise<SnapshotResult> {
    if (checkedSnapshotTarget(request) === 'leader') this.leaderStatus();
    const snapshot = await this.call<Snapshot>('trigger-snapshot', (callback) => {
      this.node.triggerSnapshot(callback);
    });
    return { snapshot: { index: snapshot.meta.index, term: snapshot.meta.term } };
  }

  /** Membership changes go to the leader; elsewhere the caller learns who leads. */
  private leaderStatus(): { status: RaftStatus; membership: MembershipConfig } {
    const status = this.node.status();
    if (status.membership === null)
      throw new AspenError('NOT_INITIALIZED', 'the cluster is not initialized: POST /init first');
    if (status.role !== 'leader') {
      if (status.leaderId === 0)
        throw new AspenError('NO_LEADER', 'no leader is known; an election may be in progress');
      throw new AspenError('NOT_LEADER', `node ${status.leaderId} is the leader`, {
        leaderId: status.leaderId,
      });
    }
    return { status, membership: status.membership };
  }

  /** Poll the learner's match index until it is within LEARNER_LAG_ENTRIES_MAX of `targetIndex`. */
  private waitCaughtUp(learnerId: number, targetIndex: number): Promise<void> {
    const clock = this.node.clock;
    const deadlineMs = clock.nowMs() + this.learnerCatchUpTimeoutMs;
    return new Promise<void>((resolve, reject) => {
      const poll = (): void => {
        const status = this.node.status();
        const match = status.peers.find((peer) => peer.id === learnerId)?.matchIndex ?? 0;
        // Within the lag bound of the target, and holding at least the log's start (so it knows the cluster).
        if (status.role === 'leader' && match >= Math.max(1, targetIndex - LEARNER_LAG_ENTRIES_MAX)) {
          resolve();
          return;
        }
        if (this.node.isStopped) {
          reject(
            new AspenError(
              'SHUTTING_DOWN',
              `node ${this.node.id} stopped while learner ${learnerId} caught up`,
              { definite: false },
            ),
          );
          return;
        }
        if (status.role !== 'leader') {
          reject(
            new AspenError('NOT_LEADER', 'leadership changed while the learner caught up', {
              leaderId: status.leaderId || null,
              definite: false,
            }),
          );
          return;
        }
        if (clock.nowMs() >= deadlineMs) {
          reject(
            new AspenError(
              'TIMEOUT',
              `learner ${learnerId} did not catch up within ${this.learnerCatchUpTimeoutMs} ms (match ${match} of ${targetIndex})`,
              { definite: false },
            ),
          );
          return;
        }
        clock.setTimer(LEARNER_POLL_MS, poll);
      };
      poll();
    });
  }

  async init(request: InitRequest): Promise<ClusterState> {
    const members = checkedInitMembers(request);
    const nodes = members.map(toNodeAddress);
    await this.call<null>('init', (callback) => {
      this.node.init(
        { voters: members.map((member) => member.id), votersOutgoing: [], learners: [], nodes },
        callback,
      );
    });
    return this.currentState();
  }

  currentState(): Promise<ClusterState> {
    const status = this.node.status();
    const membership = status.membership;
    const describe = (id: NodeId): ClusterNode => {
      const known = membership?.nodes?.find((node) => node.id === id);
      if (known === undefined) return { id, addr: `node-${id}`, raft_addr: '' };
      const node = { id, addr: known.addr, raft_addr: known.raftAddr };
      return known.peerId === undefined ? node : { ...node, peer_id: known.peerId };
    };
    const voters =
      membership === null
        ? []
        : [...new Set([...membership.voters, ...membership.votersOutgoing])].sort((a, b) => a - b);
    const learners = membership === null ? [] : [...membership.learners].sort((a, b) => a - b);
    return Promise.resolve({
      nodes: voters.map(describe),
      members: voters,
      learners: learners.map(describe),
      leader: status.leaderId === 0 ? null : status.leaderId,
    });
  }

  getMetrics(): Promise<RaftMetrics> {
    const status = this.node.status();
    const roleNames = {
      follower: 'Follower',
      pre_candidate: 'Candidate',
      candidate: 'Candidate',
      leader: 'Leader',
    } as const;
    const isLearner = status.membership?.learners.includes(status.id) ?? false;
    const membership = status.membership;
    return Promise.resolve({
      node_id: status.id,
      state: isLearner ? 'Learner' : roleNames[status.role],
      current_leader: status.leaderId === 0 ? null : status.leaderId,
      current_term: status.term,
      vote: status.vote === 0 ? null : status.vote,
      last_log_index: status.lastIndex,
      commit_index: status.commitIndex,
      last_applied: status.appliedIndex,
      snapshot: status.snapshot,
      membership_config:
        membership === null
          ? null
          : {
              voters: membership.voters,
              voters_outgoing: membership.votersOutgoing,
              learners: membership.learners,
            },
      replication:
        status.role === 'leader'
          ? status.peers.map((peer) => ({ node_id: peer.id, matched_index: peer.matchIndex }))
          : null,
      millis_since_quorum_ack:
        status.ticksSinceQuorumAck === null ? null : status.ticksSinceQuorumAck * this.node.tickMs,
    });
  }

  async write(request: WriteRequest): Promise<WriteResult> {
    const problem = validateWriteCommand((request as { command?: unknown } | null)?.command);
    if (problem !== null) throw problem;
    const session = checkedSession(request);
    const applied = await this.call<WriteApplied>('write', (callback) => {
      this.node.write(request.command, callback, session);
    });
    return writeResult(request.command, applied);
  }

  async delete(request: DeleteRequest): Promise<DeleteResult> {
    const problem = validateKey((request as { key?: unknown } | null)?.key);
    if (problem !== null) throw problem;
    const session = checkedSession(request);
    const applied = await this.call<WriteApplied>('delete', (callback) => {
      this.node.write({ Delete: { key: request.key } }, callback, session);
    });
    const revision = appliedRevision(applied);
    return { key: request.key, deleted: applied.outcome.deleted[0] ?? false, revision };
  }

  /**
   * Keys with a prefix, in key order, after a ReadIndex barrier (linearizable). The continuation
   * token is the last key of the page, base64url-encoded.
   */
  async scan(request: ScanRequest): Promise<ScanResult> {
    const bounds = validateScan(request);
    if (bounds instanceof AspenError) throw bounds;
    const served = await this.call<ReadServed>('scan', (callback) => {
      this.node.barrier(callback);
    });
    // The page is read now, at the state machine's applied index: the barrier's or a later one.
    const revision = this.node.stateMachine.appliedIndex;
    assert(revision >= served.appliedIndex, 'the applied index never goes back');
    const page = this.node.stateMachine.scan(bounds.prefix, bounds.afterKey, bounds.limit);
    const last = page.records.at(-1);
    return {
      entries: page.records.map(([key, record]) => ({ key, value: record.value })),
      count: page.records.length,
      is_truncated: page.more,
      continuation_token: page.more && last !== undefined ? encodeContinuationToken(last[0]) : null,
      revision,
    };
  }

  async read(request: ReadRequest): Promise<ReadResult> {
    const problem = validateKey((request as { key?: unknown } | null)?.key);
    if (problem !== null) throw problem;
    const served = await this.call<ReadServed>('read', (callback) => {
      this.node.read(request.key, callback);
    });
    const record = served.record;
    if (record === undefined) throw new AspenError('KEY_NOT_FOUND', `key not found: ${request.key}`);
    return { ...keyValue(request.key, record), revision: served.appliedIndex };
  }

  /** Submit to the node and wait at most requestTimeoutMs; a late answer is ignored. */
  private call<T>(what: string, submit: (callback: Callback<T>) => void): Promise<T> {
    return callNode(this.node, this.requestTimeoutMs, what, submit);
  }
}

/** The replicated form of a member: its peer id travels with it once known. */
function toNodeAddress(node: ClusterNode): NodeAddress {
  const address = { id: node.id, addr: node.addr, raftAddr: node.raft_addr };
  return node.peer_id === undefined ? address : { ...address, peerId: node.peer_id };
}

/** The voters and learners asked for must be nodes of the cluster, each in one role. */
function checkMembershipTarget(
  membership: MembershipConfig,
  members: readonly NodeId[],
  learners: readonly NodeId[] | null,
): void {
  for (const id of members) {
    const isVoter = membership.voters.includes(id) || membership.votersOutgoing.includes(id);
    if (!isVoter && !membership.learners.includes(id))
      throw new AspenError('INVALID_INPUT', `node ${id} must be added as a learner first`);
  }
  for (const id of learners ?? []) {
    if (members.includes(id))
      throw new AspenError('INVALID_INPUT', `node ${id} is named as both a member and a learner`);
    if (!membership.voters.includes(id) && !membership.learners.includes(id)) {
      throw new AspenError('INVALID_INPUT', `node ${id} is not in the cluster: add it with /add-learner`);
    }
  }
}
