import { RaftControlClient } from '../../src/node/control-client.ts';
import { RaftLeaseClient } from '../../src/node/lease-client.ts';
import type {
  Clock,
  LogStore,
  PersistBatch,
  RaftNodeObserver,
  WireMessage,
} from '../../src/node/interfaces.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import type { LeaseMutations } from '../../src/node/lease-keeper.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogState } from '../../src/storage/memory-log-store.ts';

/**
 * RaftNodes on one virtual clock with an in-memory network (1 ms per message) and in-memory disks
 * (a sync takes one timer turn): seconds of leases run in milliseconds, the same way every run.
 */

/** Timers a run may hold at once (a runaway loop is a bug in the test). */
const TIMERS_MAX = 100_000;
/** Microtask turns given to promise chains after each timer (the control client awaits twice). */
const MICROTASK_TURNS = 8;
export const TICK_MS = 10;

interface Timer {
  readonly atMs: number;
  readonly sequence: number;
  readonly run: () => void;
  cancelled: boolean;
}

export class VirtualClock implements Clock {
  private now = 0;
  private sequence = 0;
  private timers: Timer[] = [];

  nowMs(): number {
    return this.now;
  }

  setTimer(delayMs: number, callback: () => void): () => void {
    if (this.timers.length >= TIMERS_MAX) throw new Error('too many timers');
    this.sequence += 1;
    const timer = {
      atMs: this.now + Math.max(0, delayMs),
      sequence: this.sequence,
      run: callback,
      cancelled: false,
    };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  }

  /** The next timer due at or before `untilMs`, taken off the list; the clock moves to its time. */
  takeDue(untilMs: number): Timer | null {
    let best: Timer | null = null;
    let bestAt = -1;
    this.timers = this.timers.filter((timer) => !timer.cancelled);
    for (const [position, timer] of this.timers.entries()) {
      if (timer.atMs > untilMs) continue;
      if (
        best === null ||
        timer.atMs < best.atMs ||
        (timer.atMs === best.atMs && timer.sequence < best.sequence)
      ) {
        best = timer;
        bestAt = position;
      }
    }
    if (best === null) return null;
    this.timers.splice(bestAt, 1);
    this.now = Math.max(this.now, best.atMs);
    return best;
  }

  advanceTo(timeMs: number): void {
    this.now = Math.max(this.now, timeMs);
  }
}

class VirtualDisk implements LogStore {
  readonly state = new MemoryLogState();
  private readonly clock: Clock;

  constructor(clock: Clock) {
    this.clock = clock;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    this.state.apply(batch);
    this.clock.setTimer(0, () => {
      done(null);
    });
  }
}

export interface VirtualNode {
  readonly id: number;
  readonly node: RaftNode;
  readonly client: RaftControlClient;
  readonly leases: RaftLeaseClient;
  up: boolean;
}

/** What a test watches: every node's observer, and every message as it is delivered. */
export interface VirtualWatch {
  readonly observer?: RaftNodeObserver;
  readonly delivered?: (message: WireMessage) => void;
}

export class VirtualCluster {
  readonly clock = new VirtualClock();
  readonly nodes: VirtualNode[] = [];
  private readonly watch: VirtualWatch;

  /** `keepAlivesPerSecondMax`: each node's keepalive bound (default: the production constant). */
  constructor(
    size: number,
    mutations: LeaseMutations = {},
    keepAlivesPerSecondMax?: number,
    watch: VirtualWatch = {},
  ) {
    this.watch = watch;
    for (let id = 1; id <= size; id += 1) {
      const disk = new VirtualDisk(this.clock);
      const { persisted, snapshot } = disk.state.load();
      const node = new RaftNode({
        config: defaultRaftConfig(id),
        prng: new SeededPrng(id * 7919),
        persisted,
        snapshot,
        logStore: disk,
        stateMachine: new MemoryKvStateMachine(),
        transport: {
          send: (message) => {
            this.send(message);
          },
        },
        clock: this.clock,
        tickMs: TICK_MS,
        leaseMutations: mutations,
        ...(watch.observer === undefined ? {} : { observer: watch.observer }),
        ...(keepAlivesPerSecondMax === undefined
          ? {}
          : { leaseKeepAlivesPerSecondMax: keepAlivesPerSecondMax }),
      });
      const client = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
      const leases = new RaftLeaseClient(node, { requestTimeoutMs: 2_000 });
      this.nodes.push({ id, node, client, leases, up: true });
    }
  }

  private send(message: WireMessage): void {
    const from = this.nodes[message.from - 1];
    const to = this.nodes[message.to - 1];
    if (from?.up !== true || to?.up !== true) return;
    this.clock.setTimer(1, () => {
      if (!from.up || !to.up) return;
      this.watch.delivered?.(message);
      to.node.deliver(message);
    });
  }

  /** Start every node and initialize the cluster from node 1; resolves once a leader has authority. */
  async start(): Promise<void> {
    for (const { node } of this.nodes) node.start();
    const first = this.node(1);
    const members = this.nodes.map(({ id }) => ({
      id,
      addr: `node-${id}`,
      raft_addr: `127.0.0.1:${27000 + id}`,
    }));
    await this.settle(first.client.init({ initial_members: members }));
    await this.run(500);
  }

  node(id: number): VirtualNode {
    const found = this.nodes[id - 1];
    if (found === undefined) throw new Error(`no node ${id}`);
    return found;
  }

  leader(): VirtualNode {
    const leaders = this.nodes.filter((entry) => entry.up && entry.node.status().role === 'leader');
    const newest = leaders.sort((a, b) => b.node.status().term - a.node.status().term)[0];
    if (newest === undefined) throw new Error('no leader');
    return newest;
  }

  follower(): VirtualNode {
    const leader = this.leader();
    const found = this.nodes.find((entry) => entry.up && entry !== leader);
    if (found === undefined) throw new Error('no follower');
    return found;
  }

  /** Crash a node: it stops, and the network drops everything to and from it. */
  kill(id: number): void {
    const entry = this.node(id);
    entry.up = false;
    entry.node.stop();
  }

  /** Run the cluster for `ms` of virtual time. */
  async run(ms: number): Promise<void> {
    const until = this.clock.nowMs() + ms;
    for (let timer = this.clock.takeDue(until); timer !== null; timer = this.clock.takeDue(until)) {
      timer.run();
      await microtasks();
    }
    this.clock.advanceTo(until);
  }

  /** Run until `promise` settles (at most `maxMs` of virtual time), then return its outcome. */
  async settle<T>(promise: Promise<T>, maxMs = 10_000): Promise<T> {
    let settled = false;
    const tracked = promise.finally(() => {
      settled = true;
    });
    tracked.catch(() => undefined);
    const until = this.clock.nowMs() + maxMs;
    await microtasks();
    while (!settled) {
      const timer = this.clock.takeDue(until);
      if (timer === null) break;
      timer.run();
      await microtasks();
    }
    return tracked;
  }
}

async function microtasks(): Promise<void> {
  for (let turn = 0; turn < MICROTASK_TURNS; turn += 1) await Promise.resolve();
}
