import { MemoryKvStateMachine } from '../node/kv-state-machine.ts';
import type { Clock } from '../node/interfaces.ts';
import { RaftNode } from '../node/raft-node.ts';
import { AssertionError, assert } from '../base/assert.ts';
import { defaultRaftConfig, type RaftConfig } from '../raft/config.ts';
import { SeededPrng } from '../raft/prng.ts';
import type { Entry, MembershipConfig, NodeId, Ready } from '../raft/types.ts';
import { SafetyChecker, SimViolation } from './checkers.ts';
import { SimDisk } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { checkLinearizability } from './linearizability.ts';
import { SimTransport } from './sim-transport.ts';
import { SimNetwork, type NetworkSettings } from './network.ts';
import { Workload, type WorkloadSettings } from './workload.ts';

/** Bounds of one run: events, trace lines, and how often convergence is polled. */
export const EVENTS_PER_RUN_MAX = 20_000_000;
export const TRACE_LINES_MAX = 60;
export const CONVERGENCE_POLL_MS = 50;
/** After healing, clients keep going this long (the healed cluster must serve them), then pause. */
export const LIVENESS_CLIENT_MS = 1_000;
export const PROBE_RETRY_MS = 100;
export const INIT_RETRY_MS = 100;
export const PARTITION_MS_MIN = 100;
export const DOWNTIME_MS_MIN = 10;
export const DOWNTIME_MS_MAX = 2_000;
export const PARTITION_MS_MAX = 2_000;

/** Every knob of a run, drawn from the seed and printed first so that a failure can be read and replayed. */
export interface SimSettings {
  readonly seed: number;
  /** Nodes that exist; the first `initialVoters` form the cluster, the rest join by membership changes. */
  readonly nodeCount: number;
  readonly initialVoters: number;
  readonly snapshotThresholdEntries: number;
  readonly snapshotChunkBytes: number;
  readonly tickMs: number;
  readonly tickSkew: readonly number[];
  readonly electionTicksMin: number;
  readonly electionTicksMax: number;
  readonly heartbeatTicks: number;
  readonly inflightAppendsMax: number;
  readonly appendEntriesMax: number;
  readonly network: NetworkSettings;
  readonly diskLatencyMsMin: number;
  readonly diskLatencyMsMax: number;
  /** Probability that a crash leaves a prefix of the batch in flight on disk (a torn last write). */
  readonly tornWriteProbability: number;
  readonly safetyPhaseMs: number;
  readonly livenessLimitMs: number;
  readonly faultIntervalMsMin: number;
  readonly faultIntervalMsMax: number;
  readonly faults: {
    readonly partition: number;
    readonly oneWay: number;
    readonly crash: number;
    readonly heal: number;
    readonly restart: number;
    readonly lossChange: number;
    /** A node's timers run 1.5-4x slow (a starved or paused process). */
    readonly slow: number;
    /** The leader is asked to add, promote, demote or remove a node. */
    readonly membership: number;
  };
  readonly workload: WorkloadSettings;
}

export type SimStatus = 'ok' | 'crash' | 'liveness' | 'correctness';

export interface SimResult {
  readonly seed: number;
  readonly status: SimStatus;
  readonly message: string;
  readonly settings: SimSettings;
  readonly trace: readonly string[];
  readonly stats: {
    readonly virtualMs: number;
    readonly events: number;
    readonly committedEntries: number;
    readonly leadersElected: number;
    readonly crashes: number;
    readonly partitions: number;
    readonly opsOk: number;
    readonly opsFailed: number;
    readonly opsUnknown: number;
    readonly messagesSent: number;
    readonly messagesDropped: number;
    readonly checks: number;
    readonly convergedAfterMs: number;
    readonly readsDuringNewerLeader: number;
    readonly snapshotsInstalled: number;
    readonly membershipChanges: number;
    readonly tornWrites: number;
  };
}

export function drawSettings(seed: number): SimSettings {
  const prng = new SeededPrng(seed);
  const initialVoters = [1, 3, 3, 3, 5, 5][prng.nextIntInclusive(0, 5)] ?? 3;
  const nodeCount = Math.min(initialVoters + prng.nextIntInclusive(0, 2), 6);
  const heartbeatTicks = prng.nextIntInclusive(1, 3);
  const electionTicksMin = prng.nextIntInclusive(heartbeatTicks * 2 + 4, 20);
  const delayMsMin = prng.nextIntInclusive(0, 3);
  const tickSkew: number[] = [];
  for (let index = 0; index < nodeCount; index += 1) tickSkew.push(prng.nextIntInclusive(-10, 10) / 100);
  return {
    seed,
    nodeCount,
    initialVoters,
    snapshotThresholdEntries: prng.chance(0.2) ? 10_000 : prng.nextIntInclusive(3, 60),
    snapshotChunkBytes: prng.nextIntInclusive(16, 512),
    tickMs: 10,
    tickSkew,
    electionTicksMin,
    electionTicksMax: electionTicksMin + prng.nextIntInclusive(1, 20),
    heartbeatTicks,
    inflightAppendsMax: prng.nextIntInclusive(1, 16),
    appendEntriesMax: prng.chance(0.5) ? prng.nextIntInclusive(1, 3) : prng.nextIntInclusive(1, 64),
    network: {
      delayMsMin,
      delayMsMax: delayMsMin + prng.nextIntInclusive(1, 30),
      lossProbability: prng.chance(0.3) ? 0 : prng.nextIntInclusive(0, 15) / 100,
      duplicateProbability: prng.nextIntInclusive(0, 5) / 100,
    },
    diskLatencyMsMin: 1,
    diskLatencyMsMax: prng.nextIntInclusive(1, 12),
    tornWriteProbability: prng.nextIntInclusive(0, 50) / 100,
    safetyPhaseMs: prng.nextIntInclusive(2_000, 6_000),
    livenessLimitMs: 20_000,
    faultIntervalMsMin: 10,
    faultIntervalMsMax: prng.chance(0.5) ? prng.nextIntInclusive(20, 150) : prng.nextIntInclusive(150, 1_000),
    faults: {
      partition: prng.nextIntInclusive(0, 3),
      oneWay: prng.nextIntInclusive(0, 2),
      crash: prng.nextIntInclusive(0, 6),
      heal: prng.nextIntInclusive(0, 2),
      restart: prng.nextIntInclusive(1, 4),
      lossChange: prng.nextIntInclusive(0, 1),
      slow: prng.nextIntInclusive(1, 3),
      membership: prng.nextIntInclusive(0, 3),
    },
    workload: {
      clientCount: prng.nextIntInclusive(1, 6),
      keyCount: prng.nextIntInclusive(1, 6),
      readFraction: prng.nextIntInclusive(20, 60) / 100,
      deleteFraction: prng.nextIntInclusive(0, 10) / 100,
      opTimeoutMs: prng.nextIntInclusive(200, 2_000),
      thinkMsMax: prng.nextIntInclusive(0, 50),
      opsPerClientMax: 400,
      wanderProbability: prng.nextIntInclusive(0, 40) / 100,
    },
  };
}

/** Deliberate bugs the simulator must catch (see docs/simulation.md); production never sets them. */
export interface SimMutations {
  readonly raftConfig?: (config: RaftConfig) => RaftConfig;
}

/** A scripted run (scenario tests): no random faults and no random clients; the test drives. */
export interface ScriptedOptions {
  readonly scripted?: boolean;
}

/** The outcome of a scripted client request, filled in when the node answers. */
export interface RequestHandle<T> {
  done: boolean;
  ok: boolean;
  value: T | null;
  errorCode: string | null;
}

interface SimNode {
  readonly id: NodeId;
  readonly disk: SimDisk;
  node: RaftNode | null;
  transport: SimTransport | null;
  lastRole: string;
}

/** One seeded run: a safety phase with faults, then a liveness phase on a healed cluster. */
export class Simulation {
  readonly settings: SimSettings;
  private readonly events = new EventQueue();
  private readonly prng: SeededPrng;
  private readonly network: SimNetwork;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly views = new Map<NodeId, { node: RaftNode; disk: SimDisk }>();
  private readonly checker: SafetyChecker;
  private readonly workload: Workload;
  private readonly trace: string[] = [];
  private readonly mutations: SimMutations;
  private phase: 'safety' | 'liveness' | 'done' = 'safety';
  private convergedAtMs = -1;
  private probeAcked = false;
  /** Extra slowdown of each node's timers (1 = normal), set by the slow-node fault. */
  private readonly slowdown = new Map<NodeId, number>();
  private stats = {
    leadersElected: 0,
    crashes: 0,
    partitions: 0,
    readsDuringNewerLeader: 0,
    snapshotsInstalled: 0,
    membershipChanges: 0,
    tornWrites: 0,
  };

  private readonly scripted: boolean;

  constructor(settings: SimSettings, mutations: SimMutations = {}, options: ScriptedOptions = {}) {
    this.settings = settings;
    this.mutations = mutations;
    this.scripted = options.scripted ?? false;
    this.prng = new SeededPrng(settings.seed);
    this.network = new SimNetwork(this.events, this.prng.fork(), { ...settings.network });
    this.checker = new SafetyChecker(this.views);
    this.workload = new Workload(this.events, this.prng.fork(), settings.workload, {
      liveNode: (id) => this.nodes.get(id)?.node ?? undefined,
      randomLiveNodeId: () => this.randomLiveNodeId(),
      committedCount: () => this.checker.committedChain.length,
    });
  }

  run(): SimResult {
    try {
      this.setUp();
      this.runUntil(this.settings.safetyPhaseMs);
      this.startLivenessPhase();
      this.runUntil(this.settings.safetyPhaseMs + this.settings.livenessLimitMs);
      if (this.convergedAtMs < 0) {
        throw new SimViolation(
          'liveness',
          `no convergence within ${this.settings.livenessLimitMs} ms after healing; probe acked: ${this.probeAcked}\n${this.describeNodes()}`,
        );
      }
      this.workload.stop();
      this.checkFinalState();
      return this.result('ok', 'ok');
    } catch (error) {
      if (error instanceof SimViolation)
        return this.result(error.kind === 'liveness' ? 'liveness' : 'correctness', error.message);
      const message =
        error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error);
      return this.result(error instanceof AssertionError ? 'crash' : 'crash', message);
    }
  }

  private setUp(): void {
    for (let id = 1; id <= this.settings.nodeCount; id += 1) {
      const latency = this.prng.fork();
      const disk = new SimDisk(
        this.events,
        () => latency.nextIntInclusive(this.settings.diskLatencyMsMin, this.settings.diskLatencyMsMax),
        (batchEntries) =>
          latency.chance(this.settings.tornWriteProbability) ? latency.nextIntInclusive(1, batchEntries) : 0,
      );
      this.nodes.set(id, { id, disk, node: null, transport: null, lastRole: 'follower' });
      this.startNode(id);
    }
    this.events.after(1, () => {
      this.ensureInitialized();
    });
    if (this.scripted) return;
    this.workload.start();
    this.scheduleFault();
  }

  /**
   * The operator's /init on node 1, repeated until some node holds a configuration (a crash can
   * lose an init whose entry was not yet synced, as it would in production).
   */
  private ensureInitialized(): void {
    for (const simNode of this.nodes.values()) {
      if (simNode.node?.status().membership != null) return;
    }
    const voters = [...this.nodes.keys()].filter((id) => id <= this.settings.initialVoters);
    this.nodes.get(1)?.node?.init({ voters, votersOutgoing: [], learners: [] }, (outcome) => {
      if (
        !outcome.ok &&
        outcome.error.code !== 'ALREADY_INITIALIZED' &&
        outcome.error.code !== 'SHUTTING_DOWN'
      ) {
        throw new SimViolation('safety', `init failed: ${outcome.error.message}`);
      }
    });
    this.events.after(INIT_RETRY_MS, () => {
      this.ensureInitialized();
    });
  }

  // ---------------------------------------------------------------- scripted control (scenario tests)

  /** Start a scripted run: nodes up, node 1 initializes the cluster with every node as a voter. */
  start(): void {
    assert(this.scripted, 'start() is for scripted runs');
    this.setUp();
  }

  runFor(durationMs: number): void {
    const endMs = this.events.nowMs + durationMs;
    this.runUntil(endMs);
    this.events.advanceTo(endMs);
  }

  get nowMs(): number {
    return this.events.nowMs;
  }

  crash(id: NodeId): void {
    this.crashNode(id);
  }

  restart(id: NodeId): void {
    this.restartNode(id);
  }

  partition(sideA: readonly NodeId[], sideB: readonly NodeId[]): void {
    this.network.partition(sideA, sideB);
  }

  cutOneWay(from: NodeId, to: NodeId): void {
    this.network.blockOneWay(from, to);
  }

  healNetwork(): void {
    this.network.healAll();
  }

  /** The leader of the highest term among live nodes that believe they lead. */
  leaderId(): NodeId | undefined {
    return this.currentLeaderId();
  }

  nodeStatus(id: NodeId): ReturnType<RaftNode['status']> | undefined {
    return this.nodes.get(id)?.node?.status();
  }

  write(nodeId: NodeId, key: string, value: string): RequestHandle<number> {
    const handle: RequestHandle<number> = { done: false, ok: false, value: null, errorCode: null };
    const node = this.nodes.get(nodeId)?.node;
    assert(node !== null && node !== undefined, `write to live node ${nodeId}`);
    node.write({ Set: { key, value } }, (outcome) => {
      handle.done = true;
      handle.ok = outcome.ok;
      if (outcome.ok) handle.value = outcome.value.index;
      else handle.errorCode = outcome.error.code;
    });
    return handle;
  }

  read(nodeId: NodeId, key: string): RequestHandle<string | null> {
    const handle: RequestHandle<string | null> = { done: false, ok: false, value: null, errorCode: null };
    const node = this.nodes.get(nodeId)?.node;
    assert(node !== null && node !== undefined, `read from live node ${nodeId}`);
    node.read(key, (outcome) => {
      handle.done = true;
      handle.ok = outcome.ok;
      if (outcome.ok) handle.value = outcome.value.record?.value ?? null;
      else handle.errorCode = outcome.error.code;
    });
    return handle;
  }

  changeMembership(
    nodeId: NodeId,
    target: { voters: NodeId[]; learners: NodeId[] },
  ): RequestHandle<MembershipConfig> {
    const handle: RequestHandle<MembershipConfig> = { done: false, ok: false, value: null, errorCode: null };
    const node = this.nodes.get(nodeId)?.node;
    assert(node !== null && node !== undefined, `membership change on live node ${nodeId}`);
    node.changeMembership(target, (outcome) => {
      handle.done = true;
      handle.ok = outcome.ok;
      if (outcome.ok) handle.value = outcome.value;
      else handle.errorCode = outcome.error.code;
    });
    return handle;
  }

  transferLeadership(nodeId: NodeId, target: NodeId): void {
    this.nodes.get(nodeId)?.node?.transferLeadership(target, () => undefined);
  }

  /** Writes issued back to back (the node batches them); returns how many were acknowledged. */
  writeMany(nodeId: NodeId, count: number, keyCount: number): { acknowledged: number } {
    const node = this.nodes.get(nodeId)?.node;
    assert(node !== null && node !== undefined, `writes to live node ${nodeId}`);
    const result = { acknowledged: 0 };
    for (let index = 0; index < count; index += 1) {
      node.write({ Set: { key: `bulk-${index % keyCount}`, value: String(index) } }, (outcome) => {
        if (outcome.ok) result.acknowledged += 1;
      });
    }
    return result;
  }

  get snapshotsInstalled(): number {
    return this.stats.snapshotsInstalled;
  }

  /** Committed entries on the canonical chain (checked on every step). */
  get committedCount(): number {
    return this.checker.committedChain.length;
  }

  private raftConfig(id: NodeId): RaftConfig {
    const config: RaftConfig = {
      ...defaultRaftConfig(id),
      electionTicksMin: this.settings.electionTicksMin,
      electionTicksMax: this.settings.electionTicksMax,
      heartbeatTicks: this.settings.heartbeatTicks,
      inflightAppendsMax: this.settings.inflightAppendsMax,
      appendEntriesMax: this.settings.appendEntriesMax,
    };
    return this.mutations.raftConfig === undefined ? config : this.mutations.raftConfig(config);
  }

  private startNode(id: NodeId): void {
    const simNode = this.nodes.get(id);
    assert(simNode !== undefined && simNode.node === null, `start node ${id} once`);
    const { persisted, snapshot } = simNode.disk.load();
    let node: RaftNode | null = null;
    const transport = new SimTransport(this.network, id, (message) => {
      node?.deliver(message);
    });
    for (let peer = 1; peer <= this.settings.nodeCount; peer += 1)
      if (peer !== id) transport.addPeer(peer, `sim-node-${peer}`);
    node = new RaftNode({
      config: this.raftConfig(id),
      prng: this.prng.fork(),
      persisted,
      snapshot,
      snapshotThresholdEntries: this.settings.snapshotThresholdEntries,
      snapshotChunkBytes: this.settings.snapshotChunkBytes,
      logStore: simNode.disk,
      stateMachine: new MemoryKvStateMachine(),
      transport,
      clock: this.nodeClock(id),
      tickMs: this.settings.tickMs,
      observer: {
        persisted: (nodeId, batch) => {
          this.checker.onPersisted(nodeId, batch, simNode.disk);
        },
        ready: (nodeId, ready) => {
          this.onReady(simNode, nodeId, ready);
        },
        applied: (nodeId, entry) => {
          this.checker.onApplied(nodeId, entry);
          this.checkConfigEntry(nodeId, entry);
        },
        readServed: (nodeId) => {
          this.onReadServed(nodeId);
        },
        snapshotInstalled: (nodeId, installed) => {
          this.stats.snapshotsInstalled += 1;
          this.checker.checkSnapshot(nodeId, installed);
        },
      },
    });
    simNode.node = node;
    simNode.transport = transport;
    simNode.lastRole = 'follower';
    this.views.set(id, { node, disk: simNode.disk });
    node.start();
  }

  /** Virtual time; each node's timers run at its own skewed rate (clock drift). */
  private nodeClock(id: NodeId): Clock {
    const skew = 1 + (this.settings.tickSkew[id - 1] ?? 0);
    return {
      nowMs: () => this.events.nowMs,
      setTimer: (delayMs, callback) => {
        const rate = skew * (this.slowdown.get(id) ?? 1);
        let cancelled = false;
        this.events.after(delayMs <= 0 ? 0 : Math.max(1, Math.round(delayMs * rate)), () => {
          if (!cancelled) callback();
        });
        return () => {
          cancelled = true;
        };
      },
    };
  }

  /** Coverage: count reads served while a leader of a newer term exists (where ReadIndex matters). */
  private onReadServed(nodeId: NodeId): void {
    const term = this.nodes.get(nodeId)?.node?.status().term ?? 0;
    for (const simNode of this.nodes.values()) {
      const status = simNode.node?.status();
      if (status?.role === 'leader' && status.term > term) {
        this.stats.readsDuringNewerLeader += 1;
        return;
      }
    }
  }

  private onReady(simNode: SimNode, nodeId: NodeId, ready: Ready): void {
    this.checker.onReady(nodeId, ready);
    const role = ready.softState.role;
    if (role !== simNode.lastRole) {
      if (role === 'leader') {
        this.stats.leadersElected += 1;
        this.note(`node ${nodeId} leads term ${ready.softState.term}`);
      }
      simNode.lastRole = role;
    }
  }

  private crashNode(id: NodeId): void {
    const simNode = this.nodes.get(id);
    if (simNode?.node === null || simNode === undefined) return;
    simNode.node.stop();
    simNode.node = null;
    const torn = simNode.disk.crash();
    if (torn !== null) {
      this.stats.tornWrites += 1;
      this.checker.onPersisted(id, torn, simNode.disk); // what reached the disk must still match the logs
    }
    void simNode.transport?.stop();
    simNode.transport = null;
    this.stats.crashes += 1;
    this.note(`crash node ${id}`);
  }

  private restartNode(id: NodeId): void {
    const simNode = this.nodes.get(id);
    if (simNode === undefined || simNode.node !== null) return;
    this.startNode(id);
    this.note(`restart node ${id}`);
  }

  // ---------------------------------------------------------------- faults

  private scheduleFault(): void {
    const delayMs = this.prng.nextIntInclusive(
      this.settings.faultIntervalMsMin,
      this.settings.faultIntervalMsMax,
    );
    this.events.after(delayMs, () => {
      if (this.phase !== 'safety') return;
      this.injectFault();
      this.scheduleFault();
    });
  }

  private injectFault(): void {
    const weights = this.settings.faults;
    const total =
      weights.partition +
      weights.oneWay +
      weights.crash +
      weights.heal +
      weights.restart +
      weights.lossChange +
      weights.slow +
      weights.membership;
    let draw = this.prng.nextIntInclusive(1, total);
    const ids = [...this.nodes.keys()];
    if ((draw -= weights.partition) <= 0) {
      // Half the partitions put the leader in a minority: stale leaders are where reads go wrong.
      const leaderId = this.prng.chance(0.5) ? this.currentLeaderId() : undefined;
      const side =
        leaderId === undefined ? ids.filter(() => this.prng.chance(0.5)) : this.minorityWith(leaderId, ids);
      const other = ids.filter((id) => !side.includes(id));
      this.network.partition(side, other);
      this.stats.partitions += 1;
      // A partition lasts long enough for elections on both sides, then heals on its own.
      const durationMs = this.prng.nextIntInclusive(PARTITION_MS_MIN, PARTITION_MS_MAX);
      this.note(`partition [${side.join(',')}] | [${other.join(',')}] for ${durationMs} ms`);
      this.events.after(durationMs, () => {
        if (this.phase !== 'safety') return;
        this.network.heal(side, other);
        this.note(`heal partition [${side.join(',')}] | [${other.join(',')}]`);
      });
    } else if ((draw -= weights.oneWay) <= 0) {
      const from = this.pick(ids);
      const to = this.pick(ids);
      if (from !== to) {
        this.network.blockOneWay(from, to);
        this.note(`cut ${from} -> ${to}`);
      }
    } else if ((draw -= weights.crash) <= 0) {
      // Half the crashes hit the leader: leader changes with divergent logs are where bugs hide.
      const leaderId = this.prng.chance(0.5) ? this.currentLeaderId() : undefined;
      const victim = leaderId ?? this.pick(ids);
      this.crashNode(victim);
      // A crashed node comes back on its own after a while (or earlier, by a restart fault).
      this.events.after(this.prng.nextIntInclusive(DOWNTIME_MS_MIN, DOWNTIME_MS_MAX), () => {
        if (this.phase === 'safety') this.restartNode(victim);
      });
    } else if ((draw -= weights.heal) <= 0) {
      this.network.healAll();
      this.slowdown.clear();
      this.note('heal network and slow nodes');
    } else if ((draw -= weights.membership) <= 0) {
      this.injectMembershipChange(ids);
    } else if ((draw -= weights.slow) <= 0) {
      const id = (this.prng.chance(0.5) ? this.currentLeaderId() : undefined) ?? this.pick(ids);
      const factor = this.prng.nextIntInclusive(15, 40) / 10;
      this.slowdown.set(id, factor);
      this.note(`node ${id} runs ${factor}x slow`);
    } else if ((draw -= weights.restart) <= 0) {
      const crashed = ids.filter((id) => this.nodes.get(id)?.node === null);
      if (crashed.length > 0) this.restartNode(this.pick(crashed));
    } else {
      this.network.settings.lossProbability = this.prng.nextIntInclusive(0, 20) / 100;
      this.note(`loss ${this.network.settings.lossProbability}`);
    }
  }

  /**
   * Ask the leader for a random membership change: add a learner, promote, demote or remove. The node
   * may be the ghost, a node that never runs (an operator's typo): it may be added and removed as a
   * learner, and the leader must refuse to promote it, as any learner that has not caught up.
   */
  private injectMembershipChange(ids: readonly NodeId[]): void {
    const leaderId = this.currentLeaderId();
    const leader = leaderId === undefined ? undefined : this.nodes.get(leaderId)?.node;
    const membership = leader?.status().membership;
    if (leader === undefined || leader === null || membership === null || membership === undefined) return;
    const voters = new Set(membership.voters);
    const learners = new Set(membership.learners);
    const id = this.pick([...ids, this.ghostId]);
    const action = this.prng.nextIntInclusive(1, 4);
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
    this.note(
      `membership change at leader ${leaderId}: voters [${target.voters.join(',')}] learners [${target.learners.join(',')}]`,
    );
    this.stats.membershipChanges += 1;
    leader.changeMembership(target, (outcome) => {
      this.note(
        outcome.ok
          ? `membership now ${JSON.stringify(outcome.value)}`
          : `membership change failed: ${outcome.error.code}`,
      );
    });
  }

  /** `leaderId` plus random others, fewer than half of all nodes in total. */
  private minorityWith(leaderId: NodeId, ids: readonly NodeId[]): NodeId[] {
    const side = [leaderId];
    const sizeMax = Math.ceil(ids.length / 2) - 1;
    for (const id of ids) {
      if (id !== leaderId && side.length < sizeMax && this.prng.chance(0.5)) side.push(id);
    }
    return side;
  }

  private pick(ids: readonly NodeId[]): NodeId {
    const id = ids[this.prng.nextIntInclusive(0, ids.length - 1)];
    assert(id !== undefined, 'pick from a non-empty list');
    return id;
  }

  private currentLeaderId(): NodeId | undefined {
    let newest: { id: NodeId; term: number } | undefined;
    for (const simNode of this.nodes.values()) {
      const status = simNode.node?.status();
      if (status?.role === 'leader' && (newest === undefined || status.term > newest.term))
        newest = { id: simNode.id, term: status.term };
    }
    return newest?.id;
  }

  private randomLiveNodeId(): NodeId | undefined {
    const live: NodeId[] = [];
    for (const simNode of this.nodes.values()) if (simNode.node !== null) live.push(simNode.id);
    return live.length === 0 ? undefined : this.pick(live);
  }

  // ---------------------------------------------------------------- phases

  private runUntil(endMs: number): void {
    while (this.events.runNext(endMs)) {
      if (this.events.eventsRun > EVENTS_PER_RUN_MAX)
        throw new Error(`run exceeded ${EVENTS_PER_RUN_MAX} events`);
      if (this.phase === 'done') return;
    }
  }

  private startLivenessPhase(): void {
    this.phase = 'liveness';
    this.network.healAll();
    this.slowdown.clear();
    this.network.settings.lossProbability = 0;
    for (const id of this.nodes.keys()) this.restartNode(id);
    this.note('liveness phase: network healed, all nodes up');
    this.events.after(LIVENESS_CLIENT_MS, () => {
      this.workload.pause();
    });
    this.sendProbe(this.nodes.keys().next().value ?? 1);
    this.pollConvergence(this.events.nowMs);
  }

  /** A write the healed cluster must acknowledge; follows leader hints, retries until done. */
  private sendProbe(targetId: NodeId): void {
    if (this.probeAcked || this.phase === 'done') return;
    const node = this.nodes.get(targetId)?.node;
    let nextTarget = this.randomLiveNodeId() ?? targetId;
    node?.write({ Set: { key: 'liveness-probe', value: String(this.events.nowMs) } }, (outcome) => {
      if (outcome.ok) this.probeAcked = true;
      else if (outcome.error.leaderId !== null) nextTarget = outcome.error.leaderId;
    });
    this.events.after(PROBE_RETRY_MS, () => {
      this.sendProbe(nextTarget);
    });
  }

  /** Converged: one leader all nodes agree on, committed in its term, every node applied the same index. */
  private pollConvergence(startMs: number): void {
    this.events.after(CONVERGENCE_POLL_MS, () => {
      if (this.isConverged()) {
        this.convergedAtMs = this.events.nowMs - startMs;
        this.phase = 'done';
        return;
      }
      this.pollConvergence(startMs);
    });
  }

  /**
   * Nodes of the leader's (non-joint) configuration that exist; nodes removed from the cluster may lag
   * forever, and the ghost (a learner that never runs) never converges.
   */
  private convergedMembers(): NodeId[] | null {
    const leaderId = this.currentLeaderId();
    const status = leaderId === undefined ? undefined : this.nodes.get(leaderId)?.node?.status();
    const membership = status?.membership;
    if (
      status === undefined ||
      membership === null ||
      membership === undefined ||
      membership.votersOutgoing.length > 0
    )
      return null;
    if (status.commitIndex === 0 || status.commitIndex !== status.lastIndex) return null;
    return [...membership.voters, ...membership.learners].filter((id) => this.nodes.has(id));
  }

  /** The id of a node that is never started (see injectMembershipChange). */
  private get ghostId(): NodeId {
    return this.settings.nodeCount + 1;
  }

  /** A learner is promoted only after it acknowledged the leader: the ghost never does, so it never votes. */
  private checkConfigEntry(nodeId: NodeId, entry: Entry): void {
    if (entry.kind !== 'config') return;
    const voters = [...entry.config.voters, ...entry.config.votersOutgoing];
    if (voters.includes(this.ghostId)) {
      throw new SimViolation(
        'safety',
        `node ${this.ghostId}, which never ran, is a voter in the configuration node ${nodeId} applied at index ${entry.index}`,
      );
    }
  }

  private isConverged(): boolean {
    if (
      !this.probeAcked ||
      this.workload.inFlightCount > 0 ||
      this.events.nowMs < this.settings.safetyPhaseMs + LIVENESS_CLIENT_MS
    )
      return false;
    const members = this.convergedMembers();
    const leaderId = this.currentLeaderId();
    if (members === null || leaderId === undefined) return false;
    let applied = -1;
    for (const id of members) {
      const status = this.nodes.get(id)?.node?.status();
      if (status === undefined) return false;
      if (applied === -1) applied = status.appliedIndex;
      if (
        status.leaderId !== leaderId ||
        status.appliedIndex !== applied ||
        status.commitIndex !== status.lastIndex
      )
        return false;
    }
    const leader = this.nodes.get(leaderId)?.node;
    const status = leader?.status();
    return (
      status !== undefined &&
      leader !== null &&
      leader !== undefined &&
      leader.logTerm(status.commitIndex) === status.term
    );
  }

  /** After convergence: identical state machines, and a linearizable client history. */
  private checkFinalState(): void {
    let reference: MemoryKvStateMachine | null = null;
    const members = this.convergedMembers() ?? [];
    for (const simNode of this.nodes.values()) {
      if (!members.includes(simNode.id)) continue;
      const machine = simNode.node?.stateMachine;
      assert(machine instanceof MemoryKvStateMachine, 'sim nodes use the memory state machine');
      if (reference === null) reference = machine;
      else if (!sameStateMachine(reference, machine, this.settings.workload.keyCount)) {
        throw new SimViolation(
          'safety',
          `state machines of nodes diverge after convergence (node ${simNode.id})`,
        );
      }
    }
    const result = checkLinearizability(this.workload.history);
    if (result.status === 'violation') {
      throw new SimViolation(
        'linearizability',
        `history not linearizable on key ${result.key}: ${result.message}`,
      );
    }
  }

  /** One line per node: what a liveness failure needs to be read. */
  private describeNodes(): string {
    const lines: string[] = [];
    for (const simNode of this.nodes.values()) {
      const status = simNode.node?.status();
      if (status === undefined) {
        lines.push(`  node ${simNode.id}: down`);
        continue;
      }
      const peers = status.peers
        .map((peer) => `${peer.id}:${peer.state}/m${peer.matchIndex}/n${peer.nextIndex}`)
        .join(' ');
      lines.push(
        `  node ${simNode.id}: ${status.role} term ${status.term} leader ${status.leaderId} log [${status.firstIndex}, ${status.lastIndex}] ` +
          `commit ${status.commitIndex} applied ${status.appliedIndex} config ${JSON.stringify(status.membership)} ${peers}`,
      );
    }
    return lines.join('\n');
  }

  private note(text: string): void {
    if (this.trace.length >= TRACE_LINES_MAX) this.trace.shift();
    this.trace.push(`${String(this.events.nowMs).padStart(6)} ms  ${text}`);
  }

  private result(status: SimStatus, message: string): SimResult {
    return {
      seed: this.settings.seed,
      status,
      message,
      settings: this.settings,
      trace: this.trace,
      stats: {
        virtualMs: this.events.nowMs,
        events: this.events.eventsRun,
        committedEntries: this.checker.committedChain.length,
        leadersElected: this.stats.leadersElected,
        crashes: this.stats.crashes,
        partitions: this.stats.partitions,
        opsOk: this.workload.opsOk,
        opsFailed: this.workload.opsFailed,
        opsUnknown: this.workload.opsUnknown,
        messagesSent: this.network.sent,
        messagesDropped: this.network.dropped,
        checks: this.checker.checks,
        convergedAfterMs: this.convergedAtMs,
        readsDuringNewerLeader: this.stats.readsDuringNewerLeader,
        snapshotsInstalled: this.stats.snapshotsInstalled,
        membershipChanges: this.stats.membershipChanges,
        tornWrites: this.stats.tornWrites,
      },
    };
  }
}

function sameStateMachine(a: MemoryKvStateMachine, b: MemoryKvStateMachine, keyCount: number): boolean {
  if (a.appliedIndex !== b.appliedIndex || a.size !== b.size) return false;
  for (let key = 0; key <= keyCount; key += 1) {
    const name = key === 0 ? 'liveness-probe' : `k${key}`;
    const left = a.get(name);
    const right = b.get(name);
    if (JSON.stringify(left) !== JSON.stringify(right)) return false;
  }
  return true;
}

export function runSeed(seed: number, mutations: SimMutations = {}): SimResult {
  return new Simulation(drawSettings(seed), mutations).run();
}
