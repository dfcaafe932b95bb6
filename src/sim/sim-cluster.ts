import type { Clock, RaftNodeObserver, Snapshot } from '../node/interfaces.ts';
import { RaftNode } from '../node/raft-node.ts';
import { WatchHub } from '../node/watch-hub.ts';
import { assert } from '../base/assert.ts';
import { defaultRaftConfig, type RaftConfig } from '../raft/config.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { Entry, NodeId, Ready } from '../raft/types.ts';
import { SafetyChecker, SimViolation } from './checkers.ts';
import { SimDisk } from './disk.ts';
import { DOWNTIME_MS_MAX, DOWNTIME_MS_MIN } from './faults.ts';
import type { EventQueue } from './event-queue.ts';
import type { SimNetwork } from './network.ts';
import { LeaseChecker } from './lease-checker.ts';
import { electionNames, lockNames } from './lock-clients.ts';
import { LockChecker } from './lock-checker.ts';
import { ObservedKvStateMachine, SessionChecker, type SimApplyObserver } from './session-checker.ts';
import { ChangeHistory } from './watch-checker.ts';
import type { SimSettings } from './settings.ts';
import { SimTransport } from './sim-transport.ts';
import { SimSnapshotFiles } from './sim-snapshot-files.ts';

/** Lines of the recent-events trace a failure prints. */
export const TRACE_LINES_MAX = 60;

/** Deliberate bugs the simulator must catch (see docs/simulation.md); production never sets them. */
export interface SimMutations {
  readonly raftConfig?: (config: RaftConfig) => RaftConfig;
}

interface SimNode {
  readonly id: NodeId;
  readonly disk: SimDisk;
  /** The node's snapshot files (file mode), else null: snapshots are bytes. */
  readonly files: SimSnapshotFiles | null;
  node: RaftNode | null;
  /** The node's watch hub (a new one each time the node starts). */
  hub: WatchHub | null;
  transport: SimTransport | null;
  lastRole: string;
}

/** What the cluster counts for the run's statistics (the faults count partitions and membership changes). */
export interface ClusterStats {
  leadersElected: number;
  crashes: number;
  partitions: number;
  readsDuringNewerLeader: number;
  snapshotsInstalled: number;
  membershipChanges: number;
  tornWrites: number;
  /** File mode: received snapshot files installed, restarts restored from the marked file, crashes during an install. */
  fileSnapshotsInstalled: number;
  fileSnapshotsRestored: number;
  installCrashes: number;
  /** Virtual time a node last became leader (the healthy-cluster lease expiry bound starts after it). */
  lastLeaderElectedMs: number;
}

/**
 * The simulated world: the nodes (real RaftNodes on simulated disks, transports and clocks), the
 * safety checker hooked into each of them, and the trace of what happened.
 */
export class SimCluster {
  readonly settings: SimSettings;
  readonly events: EventQueue;
  /** The run's PRNG: node forks, fault draws and picks all come from it, in event order. */
  readonly prng: SeededPrng;
  readonly network: SimNetwork;
  readonly checker: SafetyChecker;
  /** Exactly-once: no (client, sequence) applied twice on any node. */
  readonly sessionChecker = new SessionChecker();
  /** Leases: never expired early, the same lease effects on every node (issue 15). */
  readonly leaseChecker: LeaseChecker;
  /** Locks: owners' tokens increase, no overlapping grants, fenced writes only by the owner (issue 16). */
  readonly lockChecker: LockChecker;
  /** What each revision changed, as the first node to apply it saw it; every node must agree. */
  readonly changeHistory = new ChangeHistory();
  readonly trace: string[] = [];
  readonly stats: ClusterStats = {
    leadersElected: 0,
    crashes: 0,
    partitions: 0,
    readsDuringNewerLeader: 0,
    snapshotsInstalled: 0,
    membershipChanges: 0,
    tornWrites: 0,
    fileSnapshotsInstalled: 0,
    fileSnapshotsRestored: 0,
    installCrashes: 0,
    lastLeaderElectedMs: 0,
  };
  /** Extra slowdown of each node's timers (1 = normal), set by the slow-node fault. */
  readonly slowdown = new Map<NodeId, number>();
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly views = new Map<
    NodeId,
    { node: RaftNode; disk: SimDisk; files: SimSnapshotFiles | null }
  >();
  /**
   * Crash node `id` in `delayMs` (if the faults still run), restart it `downtimeMs` later: set by
   * the simulation, null in scripted runs. An install that just started is its target.
   */
  crashLater: ((id: NodeId, delayMs: number, downtimeMs: number) => void) | null = null;
  private readonly mutations: SimMutations;

  constructor(
    settings: SimSettings,
    events: EventQueue,
    prng: SeededPrng,
    network: SimNetwork,
    mutations: SimMutations,
  ) {
    this.settings = settings;
    this.events = events;
    this.prng = prng;
    this.network = network;
    this.mutations = mutations;
    this.checker = new SafetyChecker(this.views);
    this.leaseChecker = new LeaseChecker(settings.tickSkew);
    this.lockChecker = new LockChecker(lockNames(settings.locks), electionNames(settings.locks));
  }

  /** Every node's disk, then the node itself, in id order. */
  setUp(): void {
    for (let id = 1; id <= this.settings.nodeCount; id += 1) {
      const latency = this.prng.fork();
      const disk = new SimDisk(
        this.events,
        () => latency.nextIntInclusive(this.settings.diskLatencyMsMin, this.settings.diskLatencyMsMax),
        (batchParts) =>
          latency.chance(this.settings.tornWriteProbability) ? latency.nextIntInclusive(1, batchParts) : 0,
      );
      const files = this.settings.snapshots.files ? this.snapshotFiles(id, disk) : null;
      this.nodes.set(id, { id, disk, files, node: null, hub: null, transport: null, lastRole: 'follower' });
      this.startNode(id);
    }
  }

  /** File mode: node `id`'s files on its own PRNG stream (forked only in file mode: byte seeds replay as before). */
  private snapshotFiles(id: NodeId, disk: SimDisk): SimSnapshotFiles {
    const prng = this.prng.fork();
    const files = new SimSnapshotFiles({
      events: this.events,
      prng,
      settings: this.settings.snapshots,
      disk,
      note: (text) => {
        this.note(`node ${id} ${text}`);
      },
      installing: (switchInMs) => {
        if (this.crashLater === null || !prng.chance(this.settings.snapshots.installCrashProbability)) return;
        const delayMs = prng.nextIntInclusive(0, switchInMs - 1);
        this.crashLater(id, delayMs, prng.nextIntInclusive(DOWNTIME_MS_MIN, DOWNTIME_MS_MAX));
      },
    });
    disk.files = files;
    return files;
  }

  /** Node ids in id order (crashed ones included). */
  ids(): NodeId[] {
    return [...this.nodes.keys()];
  }

  has(id: NodeId): boolean {
    return this.nodes.has(id);
  }

  /** The running node `id`, or null when it is down (or does not exist). */
  node(id: NodeId): RaftNode | null {
    return this.nodes.get(id)?.node ?? null;
  }

  /** The watch hub of the running node `id` (undefined when it is down). */
  hub(id: NodeId): WatchHub | undefined {
    const simNode = this.nodes.get(id);
    return simNode?.node === null ? undefined : (simNode?.hub ?? undefined);
  }

  /** The id of a node that is never started: the membership fault may add it as a learner. */
  get ghostId(): NodeId {
    return this.settings.nodeCount + 1;
  }

  note(text: string): void {
    if (this.trace.length >= TRACE_LINES_MAX) this.trace.shift();
    this.trace.push(`${String(this.events.nowMs).padStart(6)} ms  ${text}`);
  }

  pick(ids: readonly NodeId[]): NodeId {
    const id = ids[this.prng.nextIntInclusive(0, ids.length - 1)];
    assert(id !== undefined, 'pick from a non-empty list');
    return id;
  }

  /** The leader of the highest term among live nodes that believe they lead. */
  currentLeaderId(): NodeId | undefined {
    let newest: { id: NodeId; term: number } | undefined;
    for (const simNode of this.nodes.values()) {
      const status = simNode.node?.status();
      if (status?.role === 'leader' && (newest === undefined || status.term > newest.term))
        newest = { id: simNode.id, term: status.term };
    }
    return newest?.id;
  }

  randomLiveNodeId(): NodeId | undefined {
    const live: NodeId[] = [];
    for (const simNode of this.nodes.values()) if (simNode.node !== null) live.push(simNode.id);
    return live.length === 0 ? undefined : this.pick(live);
  }

  crashNode(id: NodeId): void {
    const simNode = this.nodes.get(id);
    if (simNode?.node === null || simNode === undefined) return;
    simNode.node.stop();
    simNode.node = null;
    simNode.hub = null;
    if (simNode.files?.crash().installHit === true) {
      this.stats.installCrashes += 1;
      this.note(`node ${id} crashes during a snapshot install`);
    }
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

  restartNode(id: NodeId): void {
    const simNode = this.nodes.get(id);
    if (simNode === undefined || simNode.node !== null) return;
    this.startNode(id);
    this.note(`restart node ${id}`);
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
    const clock = this.nodeClock(id);
    const stateMachine = new ObservedKvStateMachine(id, this.applyObserver);
    this.openFiles(simNode, stateMachine, snapshot);
    const { watchLagRevisionsMax, watchHistoryRevisionsMax } = this.settings.watchers;
    const hub = new WatchHub({
      clock,
      // A fresh in-memory state machine replays from the snapshot and the log (a file: restored already).
      appliedIndex: stateMachine.appliedIndex,
      bounds: { lagRevisionsMax: watchLagRevisionsMax, historyRevisionsMax: watchHistoryRevisionsMax },
    });
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
      stateMachine,
      ...(simNode.files === null ? {} : { snapshotFiles: simNode.files }),
      transport,
      clock,
      tickMs: this.settings.tickMs,
      observer: this.observer(simNode),
      applyListener: hub,
    });
    simNode.node = node;
    simNode.hub = hub;
    simNode.transport = transport;
    simNode.lastRole = 'follower';
    this.views.set(id, { node, disk: simNode.disk, files: simNode.files });
    node.start();
  }

  /**
   * File mode, as WalLogStore.load at open: the files the log does not mark go, and the fresh
   * machine is restored from the marked one before the node starts (RaftNode never restores a file).
   */
  private openFiles(simNode: SimNode, machine: ObservedKvStateMachine, snapshot: Snapshot | null): void {
    const files = simNode.files;
    if (files === null) return;
    const marked = snapshot !== null && snapshot.data === null ? snapshot : null;
    files.prune(marked?.meta.index ?? null);
    files.attach(machine);
    if (marked === null) return;
    const bytes = files.durable(marked.meta.index);
    if (bytes === undefined)
      throw new SimViolation(
        'safety',
        `node ${simNode.id}: the log marks snapshot file ${marked.meta.index}, which is gone`,
      );
    this.checker.checkSnapshot(simNode.id, marked);
    machine.restore(bytes, marked.meta.index, marked.meta.config);
    this.stats.fileSnapshotsRestored += 1;
    this.stats.snapshotsInstalled += 1;
  }

  /** Every apply of every node, to the checkers that follow the state machines. */
  private readonly applyObserver: SimApplyObserver = (nodeId, index, command, session, outcome) => {
    this.changeHistory.onApplied(nodeId, index, outcome?.changes ?? []);
    this.lockChecker.onApplied(index, command, outcome, this.events.nowMs);
    if (command === null || outcome === null) return;
    this.sessionChecker.onApplied(nodeId, index, session, outcome);
    this.leaseChecker.onApplied(nodeId, index, command, outcome, this.events.nowMs);
  };

  /** The checkers' hooks into one node. */
  private observer(simNode: SimNode): RaftNodeObserver {
    return {
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
        if (installed.data !== null) return;
        // A received file was switched in: the machine holds exactly its state now.
        this.stats.fileSnapshotsInstalled += 1;
        const machine = simNode.node?.stateMachine;
        assert(machine !== undefined, 'an install completes on a running node');
        this.checker.checkState(
          nodeId,
          installed.meta.index,
          machine.snapshot(),
          'the machine after an install',
        );
      },
    };
  }

  /**
   * Each node's clock drifts: it runs at 1 / (1 + skew) of virtual time (skew within ±CLOCK_DRIFT_PERCENT_MAX %),
   * its readings and its timers alike, so a TTL measured on a fast clock ends early in virtual time
   * (the lease checker allows exactly that much). The slow-node fault stretches timers only (a
   * stalled process, not a drifting clock).
   */
  private nodeClock(id: NodeId): Clock {
    const skew = 1 + (this.settings.tickSkew[id - 1] ?? 0);
    return {
      nowMs: () => this.events.nowMs / skew,
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
    const term = this.node(nodeId)?.status().term ?? 0;
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
        this.stats.lastLeaderElectedMs = this.events.nowMs;
        this.note(`node ${nodeId} leads term ${ready.softState.term}`);
      }
      simNode.lastRole = role;
    }
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

  /** One line per node: what a liveness failure needs to be read. */
  describeNodes(): string {
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
}
