import { decodeSnapshotState, MemoryKvStateMachine } from '../node/kv-state-machine.ts';
import { assert } from '../base/assert.ts';
import type { NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';
import { checkLinearizability, type HistoryOperation } from './linearizability.ts';
import type { SimCluster } from './sim-cluster.ts';

/**
 * Nodes of the leader's (non-joint) configuration that exist; nodes removed from the cluster may lag
 * forever, and the ghost (a learner that never runs) never converges. Null while there is no such
 * leader, or it has not committed all of its log.
 */
export function convergedMembers(cluster: SimCluster): NodeId[] | null {
  const leaderId = cluster.currentLeaderId();
  const status = leaderId === undefined ? undefined : cluster.node(leaderId)?.status();
  const membership = status?.membership;
  if (
    status === undefined ||
    membership === null ||
    membership === undefined ||
    membership.votersOutgoing.length > 0
  )
    return null;
  if (status.commitIndex === 0 || status.commitIndex !== status.lastIndex) return null;
  return [...membership.voters, ...membership.learners].filter((id) => cluster.has(id));
}

/** One leader all members agree on, committed in its term, every member applied the same index. */
export function clusterConverged(cluster: SimCluster): boolean {
  const members = convergedMembers(cluster);
  const leaderId = cluster.currentLeaderId();
  if (members === null || leaderId === undefined) return false;
  let applied = -1;
  for (const id of members) {
    const status = cluster.node(id)?.status();
    if (status === undefined) return false;
    if (applied === -1) applied = status.appliedIndex;
    if (
      status.leaderId !== leaderId ||
      status.appliedIndex !== applied ||
      status.commitIndex !== status.lastIndex
    )
      return false;
  }
  const leader = cluster.node(leaderId);
  const status = leader?.status();
  return status !== undefined && leader !== null && leader.logTerm(status.commitIndex) === status.term;
}

/**
 * After convergence: identical state machines (every key), and a linearizable client history.
 * Returns whether the history was decided (false: the checker's budget or size bound was reached).
 */
export function checkFinalState(cluster: SimCluster, history: readonly HistoryOperation[]): boolean {
  let reference: { id: NodeId; machine: MemoryKvStateMachine } | null = null;
  const members = convergedMembers(cluster) ?? [];
  for (const id of cluster.ids()) {
    if (!members.includes(id)) continue;
    const machine = cluster.node(id)?.stateMachine;
    assert(machine instanceof MemoryKvStateMachine, 'sim nodes use the memory state machine');
    if (reference === null) {
      reference = { id, machine };
      continue;
    }
    const difference = stateMachineDifference(reference.machine, machine);
    if (difference !== null) {
      throw new SimViolation(
        'safety',
        `state machines of nodes diverge after convergence (node ${id} against node ${reference.id}): ${difference}`,
      );
    }
  }
  const result = checkLinearizability(history);
  if (result.status === 'violation') {
    throw new SimViolation(
      'linearizability',
      `history not linearizable on key ${result.key}: ${result.message}`,
    );
  }
  return result.status === 'ok';
}

/**
 * How `b` differs from `a` over the applied index, the applied membership, every record (key,
 * value, revisions, lease) and every lease, or null when they are equal. The records come from each machine's snapshot,
 * which holds all of them sorted by key.
 */
export function stateMachineDifference(a: MemoryKvStateMachine, b: MemoryKvStateMachine): string | null {
  if (a.appliedIndex !== b.appliedIndex) return `applied index ${a.appliedIndex} != ${b.appliedIndex}`;
  const membershipA = JSON.stringify(a.appliedMembership);
  const membershipB = JSON.stringify(b.appliedMembership);
  if (membershipA !== membershipB) return `applied membership ${membershipA} != ${membershipB}`;
  const stateA = decodeSnapshotState(a.snapshot(), a.appliedIndex);
  const stateB = decodeSnapshotState(b.snapshot(), b.appliedIndex);
  const count = Math.max(stateA.records.length, stateB.records.length);
  for (let position = 0; position < count; position += 1) {
    const left = JSON.stringify(stateA.records[position] ?? null);
    const right = JSON.stringify(stateB.records[position] ?? null);
    if (left !== right) return `record ${position} in key order: ${left} != ${right}`;
  }
  const leasesA = JSON.stringify(stateA.leases);
  const leasesB = JSON.stringify(stateB.leases);
  if (leasesA !== leasesB) return `leases ${leasesA} != ${leasesB}`;
  return null;
}
