import type { PersistBatch, Snapshot } from '../node/interfaces.ts';
import { MemoryKvStateMachine } from '../node/kv-state-machine.ts';
import { decodeProposal } from '../node/codec.ts';
import type { RaftNode } from '../node/raft-node.ts';
import type { Entry, MembershipConfig, NodeId, Ready } from '../raft/types.ts';
import type { SimDisk } from './disk.ts';
import type { SimSnapshotFiles } from './sim-snapshot-files.ts';

export type ViolationKind = 'safety' | 'liveness' | 'linearizability';

/** A broken invariant found by a checker: the run stops and prints its seed. */
export class SimViolation extends Error {
  override readonly name = 'SimViolation';
  readonly kind: ViolationKind;

  constructor(kind: ViolationKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

/**
 * Read freshness (stronger than linearizability, and what ReadIndex promises): a read reflects
 * every entry committed anywhere before it was sent, so it is served at an index no lower.
 */
export function checkReadFresh(key: string, nodeId: NodeId, servedAt: number, committedBefore: number): void {
  if (servedAt < committedBefore)
    throw new SimViolation(
      'linearizability',
      `stale read of ${key} on node ${nodeId}: served at index ${servedAt}, but ${committedBefore} entries were committed before it started`,
    );
}

function violation(message: string): never {
  throw new SimViolation('safety', message);
}

/**
 * The checker's own quorum rule, written independently of src/raft/quorum.ts so that a bug there
 * cannot hide itself: a set is a quorum when it holds a strict majority of C_new and, while
 * joint, of C_old too.
 */
export function isQuorum(config: MembershipConfig, members: ReadonlySet<NodeId>): boolean {
  const majority = (voters: readonly NodeId[]): boolean => {
    if (voters.length === 0) return true;
    let count = 0;
    for (const id of voters) if (members.has(id)) count += 1;
    return count * 2 > voters.length;
  };
  return majority(config.voters) && majority(config.votersOutgoing);
}

function sameVoters(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((id) => b.includes(id));
}

export function sameEntry(a: Entry, b: Entry): boolean {
  if (a === b) return true;
  if (a.index !== b.index || a.term !== b.term || a.kind !== b.kind) return false;
  if (a.kind === 'command' && b.kind === 'command') {
    return (
      a.data.byteLength === b.data.byteLength && a.data.every((byte, position) => byte === b.data[position])
    );
  }
  if (a.kind === 'config' && b.kind === 'config')
    return JSON.stringify(a.config) === JSON.stringify(b.config);
  return true;
}

interface NodeView {
  readonly node: RaftNode;
  readonly disk: SimDisk;
  /** The node's snapshot files (file mode), null when its snapshots are bytes. */
  readonly files: SimSnapshotFiles | null;
}

/**
 * Raft's safety properties (paper Figure 3), checked incrementally on every persisted batch,
 * every Ready and every applied entry:
 * election safety, log matching, leader completeness, state machine safety, vote durability,
 * and "committed means durable on a quorum" (committed entries are never lost).
 */
export class SafetyChecker {
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** The one committed chain every node must agree with (index 1 at position 0). */
  private readonly committed: Entry[] = [];
  /** For each (index, term) ever persisted: the entry and the term of the entry before it. */
  private readonly entryOrigin = new Map<string, { readonly entry: Entry; readonly previousTerm: number }>();
  private readonly votes = new Map<string, NodeId>();
  private readonly durableTerm = new Map<NodeId, number>();
  private readonly commitSeen = new Map<NodeId, number>();
  private readonly views: ReadonlyMap<NodeId, NodeView>;
  /** Replays the committed chain: its snapshot bytes after each index (for snapshot checks). */
  private readonly reference = new MemoryKvStateMachine();
  private readonly referenceStates = new Map<number, string>();
  private lastCommittedConfig: MembershipConfig | null = null;
  checks = 0;

  constructor(views: ReadonlyMap<NodeId, NodeView>) {
    this.views = views;
  }

  get committedChain(): readonly Entry[] {
    return this.committed;
  }

  /** Vote durability and log matching, on what just became durable on `nodeId`'s disk. */
  onPersisted(nodeId: NodeId, batch: PersistBatch, disk: SimDisk): void {
    this.checks += 1;
    const hardState = batch.hardState;
    if (hardState !== null) {
      const previousTerm = this.durableTerm.get(nodeId) ?? 0;
      if (hardState.term < previousTerm)
        violation(`node ${nodeId} durable term went back from ${previousTerm} to ${hardState.term}`);
      this.durableTerm.set(nodeId, hardState.term);
      if (hardState.vote !== 0) {
        const key = `${nodeId}@${hardState.term}`;
        const earlier = this.votes.get(key);
        if (earlier !== undefined && earlier !== hardState.vote) {
          violation(`node ${nodeId} voted for ${earlier} and ${hardState.vote} in term ${hardState.term}`);
        }
        this.votes.set(key, hardState.vote);
      }
    }
    if (batch.snapshot !== null) this.checkSnapshot(nodeId, batch.snapshot);
    for (const entry of batch.entries) this.checkLogMatching(nodeId, entry, disk.termAt(entry.index - 1));
  }

  /**
   * A snapshot holds exactly the state the committed chain has after its index: its bytes, or the
   * bytes of the node's durable file at that index (a snapshot file the log marks must exist).
   */
  checkSnapshot(nodeId: NodeId, snapshot: Snapshot): void {
    this.checks += 1;
    const meta = snapshot.meta;
    const canonical = this.committed[meta.index - 1];
    if (canonical === undefined || canonical.term !== meta.term)
      violation(`node ${nodeId} holds a snapshot at ${meta.index}:${meta.term} off the committed chain`);
    let data = snapshot.data;
    if (data === null) {
      const files = this.views.get(nodeId)?.files ?? null;
      if (files === null) violation(`node ${nodeId}: a snapshot without bytes, and no snapshot files`);
      data = files.durable(meta.index) ?? null;
      if (data === null) violation(`node ${nodeId}: snapshot ${meta.index} has no durable file`);
    }
    this.checkState(nodeId, meta.index, data, 'snapshot');
  }

  /** `state` (a snapshot, or a machine's bytes) is what the committed chain holds after `index`. */
  checkState(nodeId: NodeId, index: number, state: Uint8Array, what: string): void {
    const expected = this.referenceStates.get(index);
    if (expected === undefined) violation(`no reference state at ${index}`);
    if (Buffer.from(state).toString('base64') !== expected)
      violation(`node ${nodeId}: ${what} at ${index} differs from the state of the log prefix it replaces`);
  }

  /** Log matching by induction: one entry per (index, term), always preceded by the same term. */
  private checkLogMatching(nodeId: NodeId, entry: Entry, previousTerm: number): void {
    const key = `${entry.index}:${entry.term}`;
    const origin = this.entryOrigin.get(key);
    if (origin === undefined) {
      this.entryOrigin.set(key, { entry, previousTerm });
      return;
    }
    if (!sameEntry(origin.entry, entry))
      violation(`log matching: node ${nodeId} holds a different entry at ${key}`);
    if (origin.previousTerm !== previousTerm) {
      violation(
        `log matching: node ${nodeId} has term ${previousTerm} before ${key}, first seen after term ${origin.previousTerm}`,
      );
    }
  }

  /** Election safety, leader completeness, and the committed chain, on every Ready. */
  onReady(nodeId: NodeId, ready: Ready): void {
    this.checks += 1;
    const view = this.views.get(nodeId);
    if (view === undefined) violation(`ready from unknown node ${nodeId}`);
    if (ready.softState.role === 'leader') this.checkLeader(nodeId, ready.softState.term, view.node);
    this.observeCommit(nodeId, ready.commitIndex, view.node);
  }

  private checkLeader(nodeId: NodeId, term: number, node: RaftNode): void {
    const known = this.leaderOfTerm.get(term);
    if (known === nodeId) return;
    if (known !== undefined)
      violation(`election safety: nodes ${known} and ${nodeId} both lead term ${term}`);
    this.leaderOfTerm.set(term, nodeId);
    this.checkElectedByQuorum(nodeId, term, node);
    // Leader completeness: every entry committed in an earlier term is in the new leader's log
    // (entries its snapshot covers are checked when the snapshot is).
    const firstIndex = node.status().firstIndex;
    for (const entry of this.committed) {
      if (entry.term >= term || entry.index < firstIndex) continue;
      const ours = node.logEntry(entry.index);
      if (ours === undefined || !sameEntry(ours, entry)) {
        violation(
          `leader completeness: leader ${nodeId} of term ${term} lacks committed entry ${entry.index}:${entry.term}`,
        );
      }
    }
  }

  /**
   * A leader won the durable votes of a quorum of its configuration's voters: learners and
   * non-members never count.
   */
  private checkElectedByQuorum(nodeId: NodeId, term: number, node: RaftNode): void {
    const membership = node.status().membership;
    if (membership === null) violation(`node ${nodeId} leads term ${term} without a configuration`);
    const voted = new Set<NodeId>();
    for (const id of this.views.keys()) {
      if (this.votes.get(`${id}@${term}`) === nodeId) voted.add(id);
    }
    if (!isQuorum(membership, voted)) {
      violation(
        `node ${nodeId} leads term ${term} with votes from [${[...voted].join(',')}], not a quorum of ${JSON.stringify(membership)}`,
      );
    }
  }

  private observeCommit(nodeId: NodeId, commit: number, node: RaftNode): void {
    const seen = this.commitSeen.get(nodeId) ?? 0;
    if (commit <= seen) return;
    this.commitSeen.set(nodeId, commit);
    // Entries a received snapshot covers are not in the log; the snapshot itself is checked.
    const firstIndex = node.status().firstIndex;
    for (let index = Math.max(seen + 1, firstIndex); index <= commit; index += 1) {
      const entry = node.logEntry(index);
      if (entry === undefined) violation(`node ${nodeId} commits ${index} but does not hold it`);
      const canonical = this.committed[index - 1];
      if (canonical === undefined) {
        if (index !== this.committed.length + 1) violation(`committed chain gap at ${index}`);
        this.checkDurableOnQuorum(nodeId, entry, node);
        this.committed.push(entry);
        this.extendReference(entry);
      } else if (!sameEntry(canonical, entry)) {
        violation(
          `state machine safety: node ${nodeId} commits ${index}:${entry.term}, chain has ${index}:${canonical.term}`,
        );
      }
    }
  }

  /**
   * A committed entry is on the disks of a quorum of voters (of the configuration the observer
   * runs, of the last committed one, or, for a configuration entry, of its own): no crash of a
   * minority can lose it. A configuration takes effect when appended, so a leader may commit one
   * under its own voters and append the next change in the same turn, before this check sees it.
   */
  private checkDurableOnQuorum(nodeId: NodeId, entry: Entry, node: RaftNode): void {
    const membership = node.status().membership;
    if (membership === null) violation(`node ${nodeId} commits without a configuration`);
    const durable = new Set<NodeId>();
    for (const [id, view] of this.views) {
      if (view.disk.holds(entry.index, entry.term)) durable.add(id);
    }
    const previous = this.lastCommittedConfig;
    const own = entry.kind === 'config' ? entry.config : null;
    if (
      !isQuorum(membership, durable) &&
      (previous === null || !isQuorum(previous, durable)) &&
      (own === null || !isQuorum(own, durable))
    ) {
      violation(`durability: entry ${entry.index}:${entry.term} committed before a quorum synced it`);
    }
  }

  /** Apply a newly committed entry to the reference machine; check configuration transitions. */
  private extendReference(entry: Entry): void {
    if (entry.kind === 'command') {
      const { command, session, proposedAtMs } = decodeProposal(entry.data);
      this.reference.apply(entry.index, command, session, proposedAtMs, entry.term);
    } else this.reference.applyNoop(entry.index);
    this.referenceStates.set(entry.index, Buffer.from(this.reference.snapshot()).toString('base64'));
    if (entry.kind === 'config') this.checkConfigTransition(entry.config, entry.index);
  }

  /**
   * Never two disjoint quorums: consecutive committed configurations are C -> C (learners only),
   * C_old -> C_old,new, or C_old,new -> C_new.
   */
  private checkConfigTransition(next: MembershipConfig, index: number): void {
    const previous = this.lastCommittedConfig;
    this.lastCommittedConfig = next;
    if (previous === null) return;
    const previousJoint = previous.votersOutgoing.length > 0;
    const nextJoint = next.votersOutgoing.length > 0;
    let allowed: boolean;
    if (previousJoint) allowed = !nextJoint && sameVoters(next.voters, previous.voters);
    else if (nextJoint) allowed = sameVoters(next.votersOutgoing, previous.voters);
    else allowed = sameVoters(next.voters, previous.voters);
    if (!allowed)
      violation(
        `configuration at ${index} ${JSON.stringify(next)} may not follow ${JSON.stringify(previous)}`,
      );
  }

  /** State machine safety: a node applies exactly the committed chain, in order. */
  onApplied(nodeId: NodeId, entry: Entry): void {
    this.checks += 1;
    const canonical = this.committed[entry.index - 1];
    if (canonical === undefined)
      violation(`node ${nodeId} applied ${entry.index} before anyone committed it`);
    if (!sameEntry(canonical, entry))
      violation(
        `state machine safety: node ${nodeId} applied ${entry.index}:${entry.term}, chain has ${canonical.term}`,
      );
  }
}
