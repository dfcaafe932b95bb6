import { defaultRaftConfig, type RaftConfig } from '../../src/raft/config.ts';
import { RaftCore } from '../../src/raft/core.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { runReady, type ReadyExecutor } from '../../src/raft/ready-loop.ts';
import {
  EMPTY_HARD_STATE,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type SnapshotMeta,
} from '../../src/raft/types.ts';

/** Delivery rounds `stabilize` may run before giving up (a livelock is a test failure). */
export const STABILIZE_ROUNDS_MAX = 1_000;

interface Disk {
  hardState: HardState;
  snapshot: SnapshotMeta | null;
  entries: Entry[];
}

function record(lists: Map<NodeId, number[]>, id: NodeId, value: number): void {
  const list = lists.get(id);
  if (list === undefined) lists.set(id, [value]);
  else list.push(value);
}

/**
 * A tiny deterministic cluster of pure cores for unit tests: instant disks that survive crashes,
 * a FIFO message queue, and link cuts. Every Ready is processed in etcd's order.
 */
export class Cluster {
  readonly cores = new Map<NodeId, RaftCore>();
  private readonly executors = new Map<NodeId, ReadyExecutor>();
  readonly disks = new Map<NodeId, Disk>();
  readonly applied = new Map<NodeId, Entry[]>();
  readonly readStates = new Map<NodeId, number[]>();
  readonly readFailures = new Map<NodeId, number[]>();
  /** Every message ever sent, for counting. */
  readonly sent: Message[] = [];
  queue: Message[] = [];
  private readonly cut = new Set<string>();
  private readonly overrides: Partial<RaftConfig>;
  private seed: number;

  constructor(ids: readonly NodeId[], overrides: Partial<RaftConfig> = {}, seed = 1) {
    this.overrides = overrides;
    this.seed = seed;
    for (const id of ids) {
      this.disks.set(id, { hardState: EMPTY_HARD_STATE, snapshot: null, entries: [] });
      this.start(id);
    }
  }

  private start(id: NodeId): void {
    const disk = this.disks.get(id);
    if (disk === undefined) throw new Error(`no disk for ${id}`);
    this.seed += 1;
    const config = { ...defaultRaftConfig(id), ...this.overrides, id };
    this.cores.set(
      id,
      new RaftCore(config, new SeededPrng(this.seed), {
        hardState: disk.hardState,
        snapshot: disk.snapshot,
        entries: disk.entries.slice(),
      }),
    );
    this.applied.set(id, []);
    this.executors.set(id, this.executor(id, disk));
  }

  /** An instant disk that survives crashes, the FIFO queue, and the applied and read records. */
  private executor(id: NodeId, disk: Disk): ReadyExecutor {
    return {
      persist: (ready, done) => {
        const first = ready.entries[0];
        if (first !== undefined) {
          disk.entries.length = Math.max(0, first.index - (disk.snapshot?.index ?? 0) - 1);
          disk.entries.push(...ready.entries);
        }
        if (ready.hardState !== null) disk.hardState = ready.hardState;
        done();
      },
      send: (_ready, messages) => {
        for (const message of messages) {
          this.sent.push(message);
          if (!this.cut.has(`${message.from}>${message.to}`)) this.queue.push(message);
        }
      },
      apply: (ready) => {
        this.applied.get(id)?.push(...ready.committedEntries);
        return true;
      },
      answerReads: (ready) => {
        for (const state of ready.readStates) record(this.readStates, id, state.requestId);
        for (const failure of ready.readFailures) record(this.readFailures, id, failure.requestId);
      },
      advanced: () => undefined,
    };
  }

  core(id: NodeId): RaftCore {
    const core = this.cores.get(id);
    if (core === undefined) throw new Error(`node ${id} is down`);
    return core;
  }

  /** Run every pending Ready of every live node (persist, send, apply, advance). */
  processAll(): void {
    for (const id of this.cores.keys()) this.process(id);
  }

  process(id: NodeId): void {
    const core = this.core(id);
    const executor = this.executors.get(id);
    if (executor === undefined) throw new Error(`no executor for ${id}`);
    for (let round = 0; round < 10 && core.hasReady(); round += 1) runReady(core, executor);
  }

  /** Deliver what is queued (FIFO); messages to down or cut nodes are lost. */
  deliver(drop: (message: Message) => boolean = () => false): number {
    const messages = this.queue;
    this.queue = [];
    for (const message of messages) {
      if (drop(message) || this.cut.has(`${message.from}>${message.to}`)) continue;
      this.cores.get(message.to)?.step(message);
    }
    return messages.length;
  }

  stabilize(): void {
    for (let round = 0; round < STABILIZE_ROUNDS_MAX; round += 1) {
      this.processAll();
      if (this.deliver() === 0) {
        this.processAll();
        if (this.queue.length === 0) return;
      }
    }
    throw new Error('cluster did not stabilize');
  }

  tick(id: NodeId, count = 1): void {
    for (let tick = 0; tick < count; tick += 1) this.core(id).tick();
  }

  /** Tick every live node once and stabilize, `count` times. */
  tickAll(count: number): void {
    for (let tick = 0; tick < count; tick += 1) {
      for (const core of this.cores.values()) core.tick();
      this.stabilize();
    }
  }

  isolate(id: NodeId): void {
    for (const other of this.disks.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  crash(id: NodeId): void {
    this.cores.delete(id);
  }

  restart(id: NodeId): void {
    this.start(id);
  }

  leaders(): NodeId[] {
    return [...this.cores.values()].filter((core) => core.status().role === 'leader').map((core) => core.id);
  }

  /** Bootstrap from `id` with `voters` and stabilize until it leads. */
  bootstrap(id: NodeId, voters: readonly NodeId[]): void {
    const result = this.core(id).init({ voters, votersOutgoing: [], learners: [] });
    if (!result.ok) throw new Error(`init failed: ${JSON.stringify(result.error)}`);
    this.stabilize();
  }

  propose(id: NodeId, text: string): number {
    const result = this.core(id).propose(new TextEncoder().encode(text));
    if (!result.ok) throw new Error(`propose failed: ${JSON.stringify(result.error)}`);
    return result.value.index;
  }
}
