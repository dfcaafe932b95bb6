import { AspenError } from './errors.ts';
import {
  ADDRESS_CHARS_MAX,
  CLUSTER_NODES_MAX,
  isPeerIdText,
  isRaftAddress,
  requestFields,
} from './limits.ts';
import { isNodeId, type NodeId } from '../base/ids.ts';
import type { ClusterNode, SnapshotTarget } from './types.ts';

/**
 * Checks of the membership calls' untrusted input (docs/api.md "Cluster"), shared by the node's
 * control client, the follower that forwards, and the wire codec: each throws INVALID_INPUT with
 * the rule.
 */

/** A member as /init and /add-learner take it once complete: id, addr, raft_addr, optional peer_id. */
export function checkedClusterNode(value: unknown, what: string): ClusterNode {
  const candidate = value as Partial<ClusterNode> | null | undefined;
  if (!isNodeId(candidate?.id)) throw new AspenError('INVALID_INPUT', `${what} needs a positive integer id`);
  if (typeof candidate.addr !== 'string' || typeof candidate.raft_addr !== 'string') {
    throw new AspenError('INVALID_INPUT', `${what} ${candidate.id} needs string addr and raft_addr`);
  }
  if (candidate.addr.length > ADDRESS_CHARS_MAX || candidate.raft_addr.length > ADDRESS_CHARS_MAX) {
    throw new AspenError(
      'INVALID_INPUT',
      `${what} ${candidate.id}: addresses are at most ${ADDRESS_CHARS_MAX} characters`,
    );
  }
  if (!isRaftAddress(candidate.raft_addr)) {
    throw new AspenError(
      'INVALID_INPUT',
      `${what} ${candidate.id}: raft_addr must be ip:port or a multiaddr, got "${candidate.raft_addr}"`,
    );
  }
  const node = { id: candidate.id, addr: candidate.addr, raft_addr: candidate.raft_addr };
  if (candidate.peer_id === undefined) return node;
  if (typeof candidate.peer_id !== 'string' || !isPeerIdText(candidate.peer_id))
    throw new AspenError('INVALID_INPUT', `${what} ${candidate.id}: peer_id must be a libp2p peer id`);
  return { ...node, peer_id: candidate.peer_id };
}

/** A list of at least `countMin` distinct node ids, at most CLUSTER_NODES_MAX, sorted. */
export function checkedMembers(value: unknown, what: string, countMin = 1): NodeId[] {
  if (!Array.isArray(value) || value.length < countMin)
    throw new AspenError('INVALID_INPUT', `${what} must be an array of at least ${countMin} node ids`);
  if (value.length > CLUSTER_NODES_MAX)
    throw new AspenError('INVALID_INPUT', `a cluster has at most ${CLUSTER_NODES_MAX} nodes`);
  const members: NodeId[] = [];
  for (const id of value as unknown[]) {
    if (!isNodeId(id)) throw new AspenError('INVALID_INPUT', `${what}: node ids are positive integers`);
    if (members.includes(id)) throw new AspenError('INVALID_INPUT', `${what}: node ${id} is listed twice`);
    members.push(id);
  }
  return members.sort((a, b) => a - b);
}

/** /add-learner's body: the learner, complete (the HTTP layer filled in raft_addr and peer_id). */
export function checkedAddLearner(request: unknown): ClusterNode {
  return checkedClusterNode(requestFields(request).learner, 'learner');
}

/** /change-membership's body: the voters, and the learners wanted (null: keep those not named). */
export function checkedChangeMembership(request: unknown): {
  readonly members: NodeId[];
  readonly learners: NodeId[] | null;
} {
  const body = requestFields(request);
  const members = checkedMembers(body.members, 'members');
  const learners = body.learners === undefined ? null : checkedMembers(body.learners, 'learners', 0);
  return { members, learners };
}

/** /remove-learner's body: the learner's id. */
export function checkedLearnerId(request: unknown): NodeId {
  const learnerId = requestFields(request).learner_id;
  if (!isNodeId(learnerId)) throw new AspenError('INVALID_INPUT', 'learner_id must be a positive integer');
  return learnerId;
}

/** /trigger-snapshot's optional body: which node snapshots ("leader" when absent). */
export function checkedSnapshotTarget(request: unknown): SnapshotTarget {
  const node = requestFields(request).node;
  if (node === undefined) return 'leader';
  if (node !== 'leader' && node !== 'local')
    throw new AspenError('INVALID_INPUT', 'node must be "leader" or "local"');
  return node;
}

/** /init's body: 1 to CLUSTER_NODES_MAX complete members, each id once. */
export function checkedInitMembers(request: unknown): ClusterNode[] {
  const members = requestFields(request).initial_members;
  if (!Array.isArray(members) || members.length === 0) {
    throw new AspenError(
      'INVALID_INPUT',
      'initial_members must be a non-empty array of {id, addr, raft_addr}',
    );
  }
  if (members.length > CLUSTER_NODES_MAX)
    throw new AspenError('INVALID_INPUT', `a cluster has at most ${CLUSTER_NODES_MAX} nodes`);
  const seen = new Set<number>();
  const nodes: ClusterNode[] = [];
  for (const member of members as unknown[]) {
    const node = checkedClusterNode(member, 'initial member');
    if (seen.has(node.id)) throw new AspenError('INVALID_INPUT', `member ${node.id} is listed twice`);
    seen.add(node.id);
    nodes.push(node);
  }
  return nodes;
}
