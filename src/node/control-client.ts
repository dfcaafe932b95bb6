import type { ClusterController, KeyValueStore } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { validateWriteCommand, validateKey } from '../api/limits.ts';
import type { ClusterNode, ClusterState, InitRequest, RaftMetrics, ReadRequest, ReadResult, WriteRequest, WriteResult } from '../api/types.ts';
import { CLUSTER_NODES_MAX } from '../raft/quorum.ts';
import type { NodeId } from '../raft/types.ts';
import type { Callback, RaftNode, ReadServed, WriteApplied } from './raft-node.ts';

/** How long a request may wait for the cluster (DESIGN.md section 3). */
export const REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
export const REQUEST_TIMEOUT_MS_MAX = 60_000;

export interface RaftControlClientOptions {
  readonly requestTimeoutMs?: number;
}

/**
 * Implements the API contracts by messaging the RaftNode, each call bounded by a timeout, every
 * failure mapped to an AspenError. A timed-out write is indeterminate (it may still apply).
 */
export class RaftControlClient implements ClusterController, KeyValueStore {
  private readonly node: RaftNode;
  private readonly requestTimeoutMs: number;
  /** Addresses of known nodes; the membership issue replicates them inside config entries. */
  private readonly nodes = new Map<NodeId, ClusterNode>();

  constructor(node: RaftNode, options: RaftControlClientOptions = {}) {
    const timeout = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    if (!Number.isSafeInteger(timeout) || timeout < 1 || timeout > REQUEST_TIMEOUT_MS_MAX) {
      throw new RangeError(`requestTimeoutMs must be in [1, ${REQUEST_TIMEOUT_MS_MAX}], got ${timeout}`);
    }
    this.node = node;
    this.requestTimeoutMs = timeout;
  }

  async init(request: InitRequest): Promise<ClusterState> {
    const members = validateInitRequest(request);
    await this.call<null>('init', (callback) => {
      this.node.init({ voters: members.map((member) => member.id), votersOutgoing: [], learners: [] }, callback);
    });
    for (const member of members) this.nodes.set(member.id, member);
    return this.currentState();
  }

  currentState(): Promise<ClusterState> {
    const status = this.node.status();
    const membership = status.membership;
    const describe = (id: NodeId): ClusterNode => this.nodes.get(id) ?? { id, addr: `node-${id}`, raft_addr: '' };
    const voters = membership === null ? [] : [...new Set([...membership.voters, ...membership.votersOutgoing])].sort((a, b) => a - b);
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
    const roleNames = { follower: 'Follower', pre_candidate: 'Candidate', candidate: 'Candidate', leader: 'Leader' } as const;
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
      snapshot: null,
      membership_config:
        membership === null ? null : { voters: membership.voters, voters_outgoing: membership.votersOutgoing, learners: membership.learners },
      replication: status.role === 'leader' ? status.peers.map((peer) => ({ node_id: peer.id, matched_index: peer.matchIndex })) : null,
      millis_since_quorum_ack: null,
    });
  }

  async write(request: WriteRequest): Promise<WriteResult> {
    const problem = validateWriteCommand((request as { command?: unknown } | null)?.command);
    if (problem !== null) throw problem;
    const applied = await this.call<WriteApplied>('write', (callback) => {
      this.node.write(request.command, callback);
    });
    return { command: request.command, log_index: applied.index };
  }

  async read(request: ReadRequest): Promise<ReadResult> {
    const problem = validateKey((request as { key?: unknown } | null)?.key);
    if (problem !== null) throw problem;
    const served = await this.call<ReadServed>('read', (callback) => {
      this.node.read(request.key, callback);
    });
    const record = served.record;
    if (record === undefined) throw new AspenError('KEY_NOT_FOUND', `key not found: ${request.key}`);
    return { key: request.key, value: record.value, create_index: record.createIndex, mod_index: record.modIndex, version: record.version };
  }

  /** Submit to the node and wait at most requestTimeoutMs; a late answer is ignored. */
  private call<T>(what: string, submit: (callback: Callback<T>) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const cancelTimer = this.node.clock.setTimer(this.requestTimeoutMs, () => {
        if (settled) return;
        settled = true;
        const leaderless = this.node.status().leaderId === 0;
        const message = leaderless
          ? `${what}: no leader reachable within ${this.requestTimeoutMs} ms (is a quorum of nodes up?)`
          : `${what}: no answer within ${this.requestTimeoutMs} ms`;
        reject(new AspenError(leaderless ? 'NO_QUORUM' : 'TIMEOUT', message, { definite: false }));
      });
      submit((outcome) => {
        if (settled) return;
        settled = true;
        cancelTimer();
        if (outcome.ok) resolve(outcome.value);
        else reject(outcome.error);
      });
    });
  }
}

function validateInitRequest(request: InitRequest): ClusterNode[] {
  const members: unknown = (request as { initial_members?: unknown } | null)?.initial_members;
  if (!Array.isArray(members) || members.length === 0) {
    throw new AspenError('INVALID_INPUT', 'initial_members must be a non-empty array of {id, addr, raft_addr}');
  }
  if (members.length > CLUSTER_NODES_MAX) throw new AspenError('INVALID_INPUT', `a cluster has at most ${CLUSTER_NODES_MAX} nodes`);
  const seen = new Set<number>();
  for (const member of members as unknown[]) {
    const candidate = member as Partial<ClusterNode> | null;
    if (typeof candidate?.id !== 'number' || !Number.isSafeInteger(candidate.id) || candidate.id < 1) {
      throw new AspenError('INVALID_INPUT', 'each initial member needs a positive integer id');
    }
    if (typeof candidate.addr !== 'string' || typeof candidate.raft_addr !== 'string') {
      throw new AspenError('INVALID_INPUT', `member ${candidate.id} needs string addr and raft_addr`);
    }
    if (seen.has(candidate.id)) throw new AspenError('INVALID_INPUT', `member ${candidate.id} is listed twice`);
    seen.add(candidate.id);
  }
  return members as ClusterNode[];
}
