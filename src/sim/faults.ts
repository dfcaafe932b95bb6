import { assert } from '../base/assert.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import type { SimCluster } from './sim-cluster.ts';

export const PARTITION_MS_MIN = 100;
export const PARTITION_MS_MAX = 2_000;
export const DOWNTIME_MS_MIN = 10;
export const DOWNTIME_MS_MAX = 2_000;
/** A leader cut off in a minority runs this many times slow, with this probability (see slowDeposedLeader). */
export const DEPOSED_LEADER_SLOW_PROBABILITY = 0.5;
export const DEPOSED_LEADER_SLOWDOWN_MIN = 3;
export const DEPOSED_LEADER_SLOWDOWN_MAX = 8;
/** Reads sent to a slowed, cut-off leader, spread evenly over its partition. */
export const DEPOSED_LEADER_READS = 8;

/** What a fault acts on. */
export interface FaultContext {
  readonly cluster: SimCluster;
  /** Run `action` after `delayMs` unless the safety phase (the one with faults) is over by then. */
  duringSafety(delayMs: number, action: () => void): void;
  /**
   * A linearizable read on node `id` (if it is up), held to read freshness: served at an applied
   * index no lower than what was committed anywhere when it was sent (else the run fails).
   */
  readProbe(id: NodeId): void;
}

/**
 * One kind of fault. Each seed draws the fault's weight once, in [weight.min, weight.max]; every
 * fault interval, one fault is picked with probability weight / (sum of weights) and injected.
 * `inject` draws the fault's own parameters (victim, duration, factor) from the run's PRNG.
 */
export interface Fault {
  readonly name: string;
  readonly weight: { readonly min: number; readonly max: number };
  /**
   * Where this fault's weight sits among the seed's draws. The weights were drawn in this order
   * before the table existed; keeping it keeps every old seed's settings. A new fault takes the
   * next number (and appends itself to the table), so old seeds draw what they drew before.
   */
  readonly weightDrawOrder: number;
  readonly inject: (context: FaultContext) => void;
}

/** The faults, in the order a draw walks them (the first whose cumulative weight covers the draw). */
export const FAULTS = [
  {
    name: 'partition',
    weight: { min: 0, max: 3 },
    weightDrawOrder: 0,
    inject: injectPartition,
  },
  { name: 'oneWay', weight: { min: 0, max: 2 }, weightDrawOrder: 1, inject: injectOneWayCut },
  { name: 'crash', weight: { min: 0, max: 6 }, weightDrawOrder: 2, inject: injectCrash },
  { name: 'heal', weight: { min: 0, max: 2 }, weightDrawOrder: 3, inject: injectHeal },
  { name: 'membership', weight: { min: 0, max: 3 }, weightDrawOrder: 7, inject: injectMembershipChange },
  { name: 'slow', weight: { min: 1, max: 3 }, weightDrawOrder: 6, inject: injectSlowNode },
  { name: 'restart', weight: { min: 1, max: 4 }, weightDrawOrder: 4, inject: injectRestart },
  { name: 'lossChange', weight: { min: 0, max: 1 }, weightDrawOrder: 5, inject: injectLossChange },
] as const satisfies readonly Fault[];

export type FaultName = (typeof FAULTS)[number]['name'];
/** Each fault's weight in one run. */
export type FaultWeights = Readonly<Record<FaultName, number>>;

const FAULTS_BY_WEIGHT_DRAW: readonly Fault[] = [...FAULTS].sort(
  (a, b) => a.weightDrawOrder - b.weightDrawOrder,
);
for (const [position, fault] of FAULTS_BY_WEIGHT_DRAW.entries())
  assert(fault.weightDrawOrder === position, `fault ${fault.name}: weightDrawOrder ${position} expected`);

/** A seed's fault weights, drawn in `weightDrawOrder`. */
export function drawFaultWeights(prng: SeededPrng): FaultWeights {
  const weights: Partial<Record<FaultName, number>> = {};
  for (const fault of FAULTS_BY_WEIGHT_DRAW)
    weights[fault.name as FaultName] = prng.nextIntInclusive(fault.weight.min, fault.weight.max);
  return weights as FaultWeights;
}

/** Pick one fault by weight (one draw from the run's PRNG) and inject it. */
export function injectRandomFault(context: FaultContext, weights: FaultWeights): void {
  let total = 0;
  for (const fault of FAULTS) total += weights[fault.name];
  assert(total > 0, 'some fault has a weight');
  let draw = context.cluster.prng.nextIntInclusive(1, total);
  for (const fault of FAULTS) {
    draw -= weights[fault.name];
    if (draw <= 0) {
      fault.inject(context);
      return;
    }
  }
  assert(false, 'a draw in [1, total] picks a fault');
}

/** The leader, half of the time (a draw), else undefined: faults aimed at the leader find more bugs. */
function leaderHalfTheTime(cluster: SimCluster): NodeId | undefined {
  return cluster.prng.chance(0.5) ? cluster.currentLeaderId() : undefined;
}

/**
 * A symmetric partition that heals by itself after 100 ms-2 s, long enough for elections on both
 * sides. Half the partitions put the leader in a minority: stale leaders are where reads go wrong.
 */
function injectPartition(context: FaultContext): void {
  const cluster = context.cluster;
  const ids = cluster.ids();
  const leaderId = leaderHalfTheTime(cluster);
  const side =
    leaderId === undefined
      ? ids.filter(() => cluster.prng.chance(0.5))
      : minorityWith(cluster, leaderId, ids);
  const other = ids.filter((id) => !side.includes(id));
  cluster.network.partition(side, other);
  cluster.stats.partitions += 1;
  const durationMs = cluster.prng.nextIntInclusive(PARTITION_MS_MIN, PARTITION_MS_MAX);
  cluster.note(`partition [${side.join(',')}] | [${other.join(',')}] for ${durationMs} ms`);
  if (leaderId !== undefined && cluster.prng.chance(DEPOSED_LEADER_SLOW_PROBABILITY))
    slowDeposedLeader(context, leaderId, durationMs);
  context.duringSafety(durationMs, () => {
    cluster.network.heal(side, other);
    cluster.note(`heal partition [${side.join(',')}] | [${other.join(',')}]`);
  });
}

/**
 * The leader cut off in a minority also runs slow (a paused process) while its partition lasts: its
 * CheckQuorum fires late, so it still believes it leads while the majority elects a new leader and
 * commits — the window in which only ReadIndex's confirmation keeps its reads from going stale.
 * Reads are sent to it all through that window (the workload's clients often wait on a write there).
 */
function slowDeposedLeader(context: FaultContext, leaderId: NodeId, durationMs: number): void {
  const cluster = context.cluster;
  const factor = cluster.prng.nextIntInclusive(DEPOSED_LEADER_SLOWDOWN_MIN, DEPOSED_LEADER_SLOWDOWN_MAX);
  cluster.slowdown.set(leaderId, factor);
  cluster.note(`node ${leaderId} runs ${factor}x slow while cut off`);
  for (let read = 1; read <= DEPOSED_LEADER_READS; read += 1) {
    context.duringSafety(Math.round((durationMs * read) / (DEPOSED_LEADER_READS + 1)), () => {
      context.readProbe(leaderId);
    });
  }
  context.duringSafety(durationMs, () => {
    if (cluster.slowdown.get(leaderId) === factor) cluster.slowdown.delete(leaderId);
  });
}

/** `leaderId` plus random others, fewer than half of all nodes in total. */
function minorityWith(cluster: SimCluster, leaderId: NodeId, ids: readonly NodeId[]): NodeId[] {
  const side = [leaderId];
  const sizeMax = Math.ceil(ids.length / 2) - 1;
  for (const id of ids) {
    if (id !== leaderId && side.length < sizeMax && cluster.prng.chance(0.5)) side.push(id);
  }
  return side;
}

/** One directed link cut: `from` cannot reach `to`, `to` still reaches `from`. */
function injectOneWayCut(context: FaultContext): void {
  const cluster = context.cluster;
  const ids = cluster.ids();
  const from = cluster.pick(ids);
  const to = cluster.pick(ids);
  if (from === to) return;
  cluster.network.blockOneWay(from, to);
  cluster.note(`cut ${from} -> ${to}`);
}

/**
 * A crash (the disk loses unsynced writes); the node comes back by itself after 10 ms-2 s, or
 * earlier by a restart fault. Half the crashes hit the leader: leader changes with divergent logs
 * are where bugs hide.
 */
function injectCrash(context: FaultContext): void {
  const cluster = context.cluster;
  const victim = leaderHalfTheTime(cluster) ?? cluster.pick(cluster.ids());
  cluster.crashNode(victim);
  context.duringSafety(cluster.prng.nextIntInclusive(DOWNTIME_MS_MIN, DOWNTIME_MS_MAX), () => {
    cluster.restartNode(victim);
  });
}

/** Every link back, every node at full speed. */
function injectHeal(context: FaultContext): void {
  context.cluster.network.healAll();
  context.cluster.slowdown.clear();
  context.cluster.note('heal network and slow nodes');
}

/** A node's timers run 1.5-4x slow (a starved or paused process); often the leader. */
function injectSlowNode(context: FaultContext): void {
  const cluster = context.cluster;
  const id = leaderHalfTheTime(cluster) ?? cluster.pick(cluster.ids());
  const factor = cluster.prng.nextIntInclusive(15, 40) / 10;
  cluster.slowdown.set(id, factor);
  cluster.note(`node ${id} runs ${factor}x slow`);
}

/** A crashed node (if any) restarts before its own downtime is over. */
function injectRestart(context: FaultContext): void {
  const cluster = context.cluster;
  const crashed = cluster.ids().filter((id) => cluster.node(id) === null);
  if (crashed.length > 0) cluster.restartNode(cluster.pick(crashed));
}

/** The network's loss probability changes to 0-20 %. */
function injectLossChange(context: FaultContext): void {
  const network = context.cluster.network;
  network.settings.lossProbability = context.cluster.prng.nextIntInclusive(0, 20) / 100;
  context.cluster.note(`loss ${network.settings.lossProbability}`);
}

/**
 * Ask the leader for a random membership change: add a learner, promote, demote or remove. The node
 * may be the ghost, a node that never runs (an operator's typo): it may be added and removed as a
 * learner, and the leader must refuse to promote it, as any learner that has not caught up.
 */
function injectMembershipChange(context: FaultContext): void {
  const cluster = context.cluster;
  const leaderId = cluster.currentLeaderId();
  const leader = leaderId === undefined ? null : cluster.node(leaderId);
  const membership = leader?.status().membership;
  if (leader === null || membership === null || membership === undefined) return;
  const voters = new Set(membership.voters);
  const learners = new Set(membership.learners);
  const id = cluster.pick([...cluster.ids(), cluster.ghostId]);
  const action = cluster.prng.nextIntInclusive(1, 4);
  if (action === 1 && !voters.has(id))
    learners.add(id); // add a learner (or keep one)
  else if (action === 2 && learners.has(id)) {
    learners.delete(id); // promote
    voters.add(id);
  } else if (action === 3 && voters.has(id) && voters.size > 1) {
    voters.delete(id); // demote
    learners.add(id);
  } else if (action === 4 && (learners.has(id) || (voters.has(id) && voters.size > 1))) {
    voters.delete(id); // remove, possibly the leader itself
    learners.delete(id);
  } else {
    return;
  }
  const target = {
    voters: [...voters].sort((a, b) => a - b),
    learners: [...learners].sort((a, b) => a - b),
  };
  cluster.note(
    `membership change at leader ${leaderId}: voters [${target.voters.join(',')}] learners [${target.learners.join(',')}]`,
  );
  cluster.stats.membershipChanges += 1;
  leader.changeMembership(target, (outcome) => {
    cluster.note(
      outcome.ok
        ? `membership now ${JSON.stringify(outcome.value)}`
        : `membership change failed: ${outcome.error.code}`,
    );
  });
}
