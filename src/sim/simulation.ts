import type { RaftNode } from '../node/raft-node.ts';
import { assert } from '../base/assert.ts';
import { SeededPrng } from '../raft/prng.ts';
import type { MembershipConfig, NodeId } from '../raft/types.ts';
import { checkReadFresh, SimViolation } from './checkers.ts';
import { checkFinalState, clusterConverged } from './convergence.ts';
import { EventQueue } from './event-queue.ts';
import { injectRandomFault, type FaultContext } from './faults.ts';
import { SimNetwork } from './network.ts';
import { messageOfError, statusOfError, type SimResult, type SimStatus } from './outcome.ts';
import { drawSettings, type SimSettings } from './settings.ts';
import { SimCluster, type SimMutations } from './sim-cluster.ts';
import { LEASE_KEY_PREFIX, SimLeaseClients } from './lease-clients.ts';
import { SimElectionObservers } from './election-observers.ts';
import { SimLockClients } from './lock-clients.ts';
import { SimWatchers } from './sim-watchers.ts';
import { WatchChecker } from './watch-checker.ts';
import { Workload } from './workload.ts';

export type { SimMutations } from './sim-cluster.ts';

/** Bounds of one run: events, and how often convergence is polled. */
export const EVENTS_PER_RUN_MAX = 20_000_000;
export const CONVERGENCE_POLL_MS = 50;
/** After healing, clients keep going this long (the healed cluster must serve them), then pause. */
export const LIVENESS_CLIENT_MS = 1_000;
export const PROBE_RETRY_MS = 100;
export const INIT_RETRY_MS = 100;
/**
 * A healthy cluster revokes an expired lease within this long past its TTL (after the last grant or
 * keepalive sent, and after the last leader change): the lessor's check interval, a commit, and room
 * for an election of the healed cluster.
 */
export const LEASE_EXPIRY_SLACK_MS = 1_500;
/**
 * Microtask turns run after each event while lock calls (promises) are in flight: enough for an
 * answer to pass through the lock service's layers of awaits; a continuation left over runs after
 * the next event (later in virtual time, still deterministic).
 */
export const MICROTASK_TURNS_PER_EVENT = 32;
/** The lock clients' PRNG is seeded from the run's seed apart from the run's PRNG (older seeds keep their schedules). */
const LOCK_PRNG_SALT = 0x10c4;
const OBSERVER_PRNG_SALT = 0x0b5e;
/** The key the fault's read probes read (any key: freshness is about the index served at). */
const READ_PROBE_KEY = 'k1';

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

/** One seeded run: a safety phase with faults, then a liveness phase on a healed cluster. */
export class Simulation {
  readonly settings: SimSettings;
  private readonly events = new EventQueue();
  private readonly cluster: SimCluster;
  private readonly workload: Workload;
  private readonly leaseClients: SimLeaseClients;
  private readonly watchers: SimWatchers;
  private readonly lockClients: SimLockClients;
  private readonly observers: SimElectionObservers;
  private phase: 'safety' | 'liveness' | 'done' = 'safety';
  private convergedAtMs = -1;
  private historyChecked = false;
  private probeAcked = false;
  private readonly scripted: boolean;
  private readonly faultContext: FaultContext;

  constructor(settings: SimSettings, mutations: SimMutations = {}, options: ScriptedOptions = {}) {
    this.settings = settings;
    this.scripted = options.scripted ?? false;
    // The order of the forks is part of what a seed means: network, then workload, then the nodes.
    const prng = new SeededPrng(settings.seed);
    const network = new SimNetwork(this.events, prng.fork(), { ...settings.network });
    this.cluster = new SimCluster(settings, this.events, prng, network, mutations);
    const cluster = this.cluster;
    this.workload = new Workload(this.events, prng.fork(), settings.workload, {
      liveNode: (id) => cluster.node(id) ?? undefined,
      randomLiveNodeId: () => cluster.randomLiveNodeId(),
      committedCount: () => cluster.checker.committedChain.length,
    });
    const directory = {
      liveNode: (id: NodeId) => cluster.node(id) ?? undefined,
      randomLiveNodeId: () => cluster.randomLiveNodeId(),
    };
    this.leaseClients = new SimLeaseClients(
      this.events,
      prng.fork(),
      settings.leases,
      directory,
      cluster.leaseChecker,
    );
    this.watchers = new SimWatchers(
      this.events,
      prng.fork(),
      settings.watchers,
      {
        ...directory,
        hub: (id) => cluster.hub(id),
        appliedIndex: (id) => cluster.node(id)?.stateMachine.appliedIndex ?? 0,
      },
      new WatchChecker(cluster.changeHistory),
    );
    this.lockClients = new SimLockClients(
      this.events,
      new SeededPrng(settings.seed ^ LOCK_PRNG_SALT),
      settings.locks,
      settings.leases.leaseTtlSeconds,
      { ...directory, hub: (id) => cluster.hub(id) },
      { locks: cluster.lockChecker, leases: cluster.leaseChecker },
    );
    this.observers = new SimElectionObservers(
      this.events,
      new SeededPrng(settings.seed ^ OBSERVER_PRNG_SALT),
      settings.locks,
      { ...directory, hub: (id) => cluster.hub(id) },
      cluster.lockChecker.observations,
    );
    this.faultContext = {
      cluster,
      duringSafety: (delayMs, action) => {
        this.events.after(delayMs, () => {
          if (this.phase === 'safety') action();
        });
      },
      readProbe: (id) => {
        this.readProbe(id);
      },
    };
  }

  /**
   * A crash aimed at a moment (an install in progress); the node restarts `downtimeMs` later. Once
   * the faults stop, each node is still crashed this way once (installs happen most while the
   * healed cluster catches up), so the liveness phase sees finitely many of them.
   */
  private readonly crashLater = (id: NodeId, delayMs: number, downtimeMs: number): void => {
    this.events.after(delayMs, () => {
      if (this.phase === 'done') return;
      if (this.phase === 'liveness') {
        if (this.crashedWhileHealed.has(id)) return;
        this.crashedWhileHealed.add(id);
      }
      this.cluster.crashNode(id);
      this.events.after(downtimeMs, () => {
        this.cluster.restartNode(id);
      });
    });
  };
  private readonly crashedWhileHealed = new Set<NodeId>();

  /** See FaultContext.readProbe: a failed read says nothing; a stale one fails the run. */
  private readProbe(id: NodeId): void {
    const node = this.cluster.node(id);
    if (node === null) return;
    const committedAtSend = this.cluster.checker.committedChain.length;
    node.read(READ_PROBE_KEY, (outcome) => {
      if (outcome.ok) checkReadFresh(READ_PROBE_KEY, id, outcome.value.appliedIndex, committedAtSend);
    });
  }

  async run(): Promise<SimResult> {
    try {
      this.setUp();
      await this.runClientsUntil(this.settings.safetyPhaseMs);
      this.startLivenessPhase();
      await this.runClientsUntil(this.settings.safetyPhaseMs + this.settings.livenessLimitMs);
      if (this.convergedAtMs < 0) {
        throw new SimViolation(
          'liveness',
          `no convergence within ${this.settings.livenessLimitMs} ms after healing; probe acked: ${this.probeAcked}\n${this.cluster.describeNodes()}`,
        );
      }
      this.workload.stop();
      this.watchers.stop();
      this.observers.stop();
      this.historyChecked = checkFinalState(this.cluster, this.workload.history);
      return this.result('ok', 'ok');
    } catch (error) {
      return this.result(statusOfError(error), messageOfError(error));
    }
  }

  private setUp(): void {
    if (!this.scripted) this.cluster.crashLater = this.crashLater;
    this.cluster.setUp();
    this.events.after(1, () => {
      this.ensureInitialized();
    });
    if (this.scripted) return;
    this.workload.start();
    this.leaseClients.start();
    this.lockClients.start();
    this.observers.start();
    this.watchers.start([{ prefix: '' }, { prefix: LEASE_KEY_PREFIX }, { key: 'k1' }, { prefix: 'k' }]);
    this.scheduleFault();
  }

  /**
   * The operator's /init on node 1, repeated until some node holds a configuration (a crash can
   * lose an init whose entry was not yet synced, as it would in production).
   */
  private ensureInitialized(): void {
    for (const id of this.cluster.ids()) {
      if (this.cluster.node(id)?.status().membership != null) return;
    }
    const voters = this.cluster.ids().filter((id) => id <= this.settings.initialVoters);
    this.cluster.node(1)?.init({ voters, votersOutgoing: [], learners: [] }, (outcome) => {
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
    this.cluster.crashNode(id);
  }

  restart(id: NodeId): void {
    this.cluster.restartNode(id);
  }

  partition(sideA: readonly NodeId[], sideB: readonly NodeId[]): void {
    this.cluster.network.partition(sideA, sideB);
  }

  cutOneWay(from: NodeId, to: NodeId): void {
    this.cluster.network.blockOneWay(from, to);
  }

  healNetwork(): void {
    this.cluster.network.healAll();
  }

  /** The leader of the highest term among live nodes that believe they lead. */
  leaderId(): NodeId | undefined {
    return this.cluster.currentLeaderId();
  }

  nodeStatus(id: NodeId): ReturnType<RaftNode['status']> | undefined {
    return this.cluster.node(id)?.status();
  }

  write(nodeId: NodeId, key: string, value: string): RequestHandle<number> {
    const handle: RequestHandle<number> = { done: false, ok: false, value: null, errorCode: null };
    this.liveNode(nodeId, 'write to').write({ Set: { key, value } }, (outcome) => {
      handle.done = true;
      handle.ok = outcome.ok;
      if (outcome.ok) handle.value = outcome.value.index;
      else handle.errorCode = outcome.error.code;
    });
    return handle;
  }

  read(nodeId: NodeId, key: string): RequestHandle<string | null> {
    const handle: RequestHandle<string | null> = { done: false, ok: false, value: null, errorCode: null };
    this.liveNode(nodeId, 'read from').read(key, (outcome) => {
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
    this.liveNode(nodeId, 'membership change on').changeMembership(target, (outcome) => {
      handle.done = true;
      handle.ok = outcome.ok;
      if (outcome.ok) handle.value = outcome.value;
      else handle.errorCode = outcome.error.code;
    });
    return handle;
  }

  transferLeadership(nodeId: NodeId, target: NodeId): void {
    this.cluster.node(nodeId)?.transferLeadership(target, () => undefined);
  }

  /** Writes issued back to back (the node batches them); returns how many were acknowledged. */
  writeMany(nodeId: NodeId, count: number, keyCount: number): { acknowledged: number } {
    const node = this.liveNode(nodeId, 'writes to');
    const result = { acknowledged: 0 };
    for (let index = 0; index < count; index += 1) {
      node.write({ Set: { key: `bulk-${index % keyCount}`, value: String(index) } }, (outcome) => {
        if (outcome.ok) result.acknowledged += 1;
      });
    }
    return result;
  }

  get snapshotsInstalled(): number {
    return this.cluster.stats.snapshotsInstalled;
  }

  /** Committed entries on the canonical chain (checked on every step). */
  get committedCount(): number {
    return this.cluster.checker.committedChain.length;
  }

  private liveNode(id: NodeId, what: string): RaftNode {
    const node = this.cluster.node(id);
    assert(node !== null, `${what} live node ${id}`);
    return node;
  }

  // ---------------------------------------------------------------- faults and phases

  private scheduleFault(): void {
    const delayMs = this.cluster.prng.nextIntInclusive(
      this.settings.faultIntervalMsMin,
      this.settings.faultIntervalMsMax,
    );
    this.events.after(delayMs, () => {
      if (this.phase !== 'safety') return;
      injectRandomFault(this.faultContext, this.settings.faults);
      this.scheduleFault();
    });
  }

  private runUntil(endMs: number): void {
    while (this.events.runNext(endMs)) {
      if (this.events.eventsRun > EVENTS_PER_RUN_MAX)
        throw new Error(`run exceeded ${EVENTS_PER_RUN_MAX} events`);
      if (this.phase === 'done') return;
    }
  }

  /**
   * runUntil, letting the lock clients' promise continuations run after each event while any is in
   * flight, and failing the run on what they or the lock checker found.
   */
  private async runClientsUntil(endMs: number): Promise<void> {
    while (this.events.runNext(endMs)) {
      if (this.events.eventsRun > EVENTS_PER_RUN_MAX)
        throw new Error(`run exceeded ${EVENTS_PER_RUN_MAX} events`);
      if (this.lockClients.busy || this.observers.busy) {
        for (let turn = 0; turn < MICROTASK_TURNS_PER_EVENT; turn += 1) await Promise.resolve();
        if (this.lockClients.failure !== null) throw this.lockClients.failure;
        if (this.observers.failure !== null) throw this.observers.failure;
      }
      if (this.cluster.lockChecker.failure !== null) throw this.cluster.lockChecker.failure;
      if (this.phase === 'done') return;
    }
  }

  private startLivenessPhase(): void {
    this.phase = 'liveness';
    this.cluster.network.healAll();
    this.cluster.slowdown.clear();
    this.cluster.network.settings.lossProbability = 0;
    for (const id of this.cluster.ids()) this.cluster.restartNode(id);
    this.cluster.note('liveness phase: network healed, all nodes up');
    this.events.after(LIVENESS_CLIENT_MS, () => {
      this.workload.pause();
      this.leaseClients.pause();
      this.lockClients.pause();
    });
    this.sendProbe(this.cluster.ids()[0] ?? 1);
    this.pollConvergence(this.events.nowMs);
  }

  /** A write the healed cluster must acknowledge; follows leader hints, retries until done. */
  private sendProbe(targetId: NodeId): void {
    if (this.probeAcked || this.phase === 'done') return;
    const node = this.cluster.node(targetId);
    let nextTarget = this.cluster.randomLiveNodeId() ?? targetId;
    node?.write({ Set: { key: 'liveness-probe', value: String(this.events.nowMs) } }, (outcome) => {
      if (outcome.ok) this.probeAcked = true;
      else if (outcome.error.leaderId !== null) nextTarget = outcome.error.leaderId;
    });
    this.events.after(PROBE_RETRY_MS, () => {
      this.sendProbe(nextTarget);
    });
  }

  /** Converged: the probe acked, no client waiting, and the cluster agrees (see clusterConverged). */
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

  private isConverged(): boolean {
    if (
      !this.probeAcked ||
      this.workload.inFlightCount > 0 ||
      this.events.nowMs < this.settings.safetyPhaseMs + LIVENESS_CLIENT_MS
    )
      return false;
    return clusterConverged(this.cluster) && this.leasesGone();
  }

  /**
   * Invariant (a) of leases: once the cluster is healthy, no lease (and so no key on it) outlives
   * its TTL by more than LEASE_EXPIRY_SLACK_MS past the last grant or keepalive any client sent and
   * the last leader change. True once the leader holds no lease (the converged members hold what it
   * holds; a node removed from the cluster keeps what it last applied).
   */
  private leasesGone(): boolean {
    const leaderId = this.cluster.currentLeaderId();
    const leases = leaderId === undefined ? 0 : (this.cluster.node(leaderId)?.stateMachine.leaseCount ?? 0);
    if (leases === 0) return leaderId !== undefined;
    const sinceMs = Math.max(
      this.leaseClients.lastRequestSentMs,
      this.lockClients.lastRequestSentMs,
      this.cluster.stats.lastLeaderElectedMs,
      this.settings.safetyPhaseMs,
    );
    const dueMs = sinceMs + this.settings.leases.leaseTtlSeconds * 1000 + LEASE_EXPIRY_SLACK_MS;
    if (this.events.nowMs > dueMs)
      throw new SimViolation(
        'liveness',
        `${leases} leases still held by leader ${leaderId} at ${this.events.nowMs} ms; they were due by ${dueMs} ms\n${this.cluster.describeNodes()}`,
      );
    return false;
  }

  private result(status: SimStatus, message: string): SimResult {
    const stats = this.cluster.stats;
    return {
      seed: this.settings.seed,
      status,
      message,
      settings: this.settings,
      trace: this.cluster.trace,
      stats: {
        virtualMs: this.events.nowMs,
        events: this.events.eventsRun,
        committedEntries: this.cluster.checker.committedChain.length,
        leadersElected: stats.leadersElected,
        crashes: stats.crashes,
        partitions: stats.partitions,
        opsOk: this.workload.opsOk,
        opsFailed: this.workload.opsFailed,
        opsUnknown: this.workload.opsUnknown,
        opsConditional: this.workload.opsConditional,
        opsConditionalSucceeded: this.workload.opsConditionalSucceeded,
        writeRetries: this.workload.writeRetries,
        retriesAnswered: this.workload.retriesAnswered,
        sessionsExpired: this.workload.sessionsExpired,
        duplicateAnswers: this.cluster.sessionChecker.duplicateAnswers,
        historyUndecided: status === 'ok' && !this.historyChecked ? 1 : 0,
        messagesSent: this.cluster.network.sent,
        messagesDropped: this.cluster.network.dropped,
        checks: this.cluster.checker.checks,
        convergedAfterMs: this.convergedAtMs,
        readsDuringNewerLeader: stats.readsDuringNewerLeader,
        snapshotsInstalled: stats.snapshotsInstalled,
        membershipChanges: stats.membershipChanges,
        tornWrites: stats.tornWrites,
        fileSnapshotsInstalled: stats.fileSnapshotsInstalled,
        fileSnapshotsRestored: stats.fileSnapshotsRestored,
        installCrashes: stats.installCrashes,
        leaseGrants: this.leaseClients.grants,
        leaseExpiries: this.cluster.leaseChecker.expiries,
        leaseKeepAlivesAcked: this.cluster.leaseChecker.keepAlivesAcked,
        leasesLost: this.leaseClients.leasesLost,
        watchEvents: this.watchers.checker.eventsChecked,
        watchResumes: this.watchers.checker.resumes,
        watchCanceled: this.watchers.canceled,
        watchCompacted: this.watchers.compacted,
        lockCalls: this.lockClients.lockCalls,
        lockGrants: this.cluster.lockChecker.grants,
        lockTimeouts: this.lockClients.lockTimeouts,
        fencedWrites: this.cluster.lockChecker.fencedWrites,
        campaigns: this.lockClients.campaigns,
        proclaims: this.cluster.lockChecker.proclaims,
        observations: this.cluster.lockChecker.observations.observed,
      },
    };
  }
}

export function runSeed(seed: number, mutations: SimMutations = {}): Promise<SimResult> {
  return new Simulation(drawSettings(seed), mutations).run();
}
