import { assert } from '../base/assert.ts';
import { CLUSTER_NODES_MAX } from '../base/limits.ts';
import type { MembershipConfig, NodeId } from './types.ts';

export { CLUSTER_NODES_MAX };

export type VoteResult = 'won' | 'lost' | 'pending';

/**
 * The highest index acknowledged by a majority of `voters`. An empty voter set places no
 * constraint (returns MAX_SAFE_INTEGER) so that a non-joint config composes with `min`.
 */
export function majorityAckedIndex(voters: readonly NodeId[], acked: (id: NodeId) => number): number {
  assert(voters.length <= CLUSTER_NODES_MAX, `too many voters: ${voters.length}`);
  if (voters.length === 0) return Number.MAX_SAFE_INTEGER;
  const values: number[] = [];
  for (const id of voters) values.push(acked(id));
  values.sort((a, b) => b - a);
  const quorum = Math.floor(voters.length / 2) + 1;
  const value = values[quorum - 1];
  assert(value !== undefined, 'quorum index out of range');
  return value;
}

/** Joint consensus: an index counts only when both majorities (C_new and C_old) acknowledge it. */
export function jointAckedIndex(config: MembershipConfig, acked: (id: NodeId) => number): number {
  assert(config.voters.length > 0, 'a configuration needs at least one voter');
  return Math.min(majorityAckedIndex(config.voters, acked), majorityAckedIndex(config.votersOutgoing, acked));
}

export function majorityVoteResult(
  voters: readonly NodeId[],
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  if (voters.length === 0) return 'won';
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const vote = votes.get(id);
    if (vote === undefined) missing += 1;
    else if (vote) granted += 1;
  }
  const quorum = Math.floor(voters.length / 2) + 1;
  if (granted >= quorum) return 'won';
  if (granted + missing >= quorum) return 'pending';
  return 'lost';
}

export function jointVoteResult(config: MembershipConfig, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  const incoming = majorityVoteResult(config.voters, votes);
  const outgoing = majorityVoteResult(config.votersOutgoing, votes);
  if (incoming === 'won' && outgoing === 'won') return 'won';
  if (incoming === 'lost' || outgoing === 'lost') return 'lost';
  return 'pending';
}

export function isVoter(config: MembershipConfig, id: NodeId): boolean {
  return config.voters.includes(id) || config.votersOutgoing.includes(id);
}

/** Every node the leader replicates to: voters of both configs and learners, each once. */
export function allMembers(config: MembershipConfig): NodeId[] {
  const members = new Set<NodeId>();
  for (const id of config.voters) members.add(id);
  for (const id of config.votersOutgoing) members.add(id);
  for (const id of config.learners) members.add(id);
  return [...members].sort((a, b) => a - b);
}

/** Structural checks of a configuration; returns an error message or null. */
export function validateConfig(config: MembershipConfig): string | null {
  if (config.voters.length === 0) return 'a configuration needs at least one voter';
  const all = [...config.voters, ...config.learners];
  if (new Set(all).size !== all.length) return 'a node is listed twice (voters and learners are disjoint)';
  if (new Set(config.votersOutgoing).size !== config.votersOutgoing.length)
    return 'an outgoing voter is listed twice';
  if (allMembers(config).length > CLUSTER_NODES_MAX)
    return `a cluster has at most ${CLUSTER_NODES_MAX} nodes`;
  for (const id of all) {
    if (!Number.isSafeInteger(id) || id < 1) return `node ids are positive integers, got ${id}`;
  }
  if ((config.nodes?.length ?? 0) > CLUSTER_NODES_MAX) return `at most ${CLUSTER_NODES_MAX} node addresses`;
  return null;
}
