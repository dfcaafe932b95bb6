import { assert } from '../../base/assert.ts';
import { defaultRaftConfig, type RaftConfig } from '../../raft/config.ts';
import { RaftCore } from '../../raft/core.ts';
import { runReady } from '../../raft/ready-loop.ts';
import { SeededPrng } from '../../raft/prng.ts';
import type { RaftResult } from '../../raft/errors.ts';
import {
  EMPTY_HARD_STATE,
  type Entry,
  type HardState,
  type MembershipConfig,
  type Message,
  type NodeId,
  type Ready,
  type SnapshotMeta,
} from '../../raft/types.ts';
import { formatEntry, formatMessage, formatRejection, formatSnapshot } from './format.ts';

export const NODES_MAX = 16;
/** Messages waiting for delivery (a script that lets more pile up is broken). */
export const QUEUE_MESSAGES_MAX = 100_000;
/** Readies one `process-ready` handles per node before it gives up (the core would be looping). */
export const READIES_PER_NODE_MAX = 64;

/** What a node has on its (instant, crash-proof) disk. */
export interface HarnessDisk {
  hardState: HardState;
  snapshot: SnapshotMeta | null;
  entries: Entry[];
}

export interface HarnessNode {
  readonly id: NodeId;
  core: RaftCore;
  readonly disk: HarnessDisk;
  /** Times the node was (re)started: its PRNG seed moves with it. */
  starts: number;
  /** The soft state last printed (`role term leader`), to print changes once. */
  announced: string;
}

/** Which queued messages a command acts on (any field left out matches every message). */
export interface MessageFilter {
  readonly from?: NodeId;
  readonly to?: NodeId;
  readonly type?: string;
}

function matches(message: Message, filter: MessageFilter): boolean {
  return (
    (filter.from === undefined || message.from === filter.from) &&
    (filter.to === undefined || message.to === filter.to) &&
    (filter.type === undefined || message.type === filter.type)
  );
}

/** What `announce` prints: a node's role, term and leader. */
function softState(core: RaftCore): string {
  const status = core.status();
  return `${status.role} in term ${status.term}, leader ${status.leaderId === 0 ? 'none' : status.leaderId}`;
}

/** Print and store the synced write of a Ready: snapshot, hard state, entries (one write). */
function persist(node: HarnessNode, ready: Ready, out: string[]): void {
  const disk = node.disk;
  if (ready.snapshot !== null) {
    out.push(`  persist snapshot ${formatSnapshot(ready.snapshot)}`);
    disk.snapshot = ready.snapshot;
    disk.entries = [];
  }
  if (ready.hardState !== null) {
    const { term, vote, commit } = ready.hardState;
    out.push(`  persist hard state term ${term} vote ${vote} commit ${commit}`);
    disk.hardState = ready.hardState;
  }
  const first = ready.entries[0];
  if (first !== undefined) {
    disk.entries.length = Math.max(0, first.index - (disk.snapshot?.index ?? 0) - 1);
    disk.entries.push(...ready.entries);
    for (const entry of ready.entries) out.push(`  persist ${formatEntry(entry)}`);
  }
}

/**
 * The driver's side of one Ready, through the project's one Ready loop (`runReady`), so a script
 * shows the order the node executes: messages that may leave early, early applies, the synced
 * write, then what waits for it. Every step is printed; the disk is instant and never fails.
 */
export function processReady(node: HarnessNode, send: (message: Message) => void): string[] {
  const out: string[] = [];
  runReady(node.core, {
    persist: (ready, done) => {
      persist(node, ready, out);
      done();
    },
    send: (_ready, messages) => {
      for (const message of messages) {
        out.push(`  send ${formatMessage(message)}`);
        send(message);
      }
    },
    apply: (ready) => {
      if (ready.snapshot !== null) out.push(`  apply snapshot ${formatSnapshot(ready.snapshot)}`);
      for (const entry of ready.committedEntries) out.push(`  apply ${formatEntry(entry)}`);
      return true;
    },
    answerReads: (ready) => {
      for (const read of ready.readStates) out.push(`  read ${read.requestId} ready at ${read.index}`);
      for (const failure of ready.readFailures)
        out.push(`  read ${failure.requestId} failed: ${failure.reason} (leader ${failure.leaderId})`);
    },
    advanced: () => undefined,
  });
  return out;
}

/**
 * Pure Raft cores driven step by step by a script: instant disks that survive crashes, one FIFO
 * queue of messages that moves only when told to, and link cuts. Every message, every Ready and
 * every change of a node's role, term or leader is printed.
 */
export class InteractionEnv {
  readonly nodes = new Map<NodeId, HarnessNode>();
  queue: Message[] = [];
  private readonly cut = new Set<string>();
  private readonly overrides: Partial<RaftConfig>;

  constructor(overrides: Partial<RaftConfig> = {}) {
    this.overrides = overrides;
  }

  node(id: NodeId): HarnessNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** Add a node; with `config` it starts from a snapshot at 1/1 holding it (a bootstrapped member). */
  addNode(id: NodeId, config: MembershipConfig | null): void {
    assert(!this.nodes.has(id) && this.nodes.size < NODES_MAX, `add node ${id} once, at most ${NODES_MAX}`);
    const disk: HarnessDisk =
      config === null
        ? { hardState: EMPTY_HARD_STATE, snapshot: null, entries: [] }
        : {
            hardState: { term: 1, vote: 0, commit: 1 },
            snapshot: { index: 1, term: 1, config },
            entries: [],
          };
    const core = this.startCore(id, disk, 0);
    this.nodes.set(id, { id, core, disk, starts: 1, announced: softState(core) });
  }

  private startCore(id: NodeId, disk: HarnessDisk, starts: number): RaftCore {
    const config: RaftConfig = { ...defaultRaftConfig(id), ...this.overrides, id };
    return new RaftCore(config, new SeededPrng(id * 1_000 + starts), {
      hardState: disk.hardState,
      snapshot: disk.snapshot,
      entries: disk.entries.slice(),
    });
  }

  /** A crash loses nothing here (every Ready is persisted before it is advanced): the node restarts from its disk. */
  restart(id: NodeId): void {
    const node = this.node(id);
    node.core = this.startCore(id, node.disk, node.starts);
    node.starts += 1;
  }

  /** A line when the node's role, term or leader changed since the last one printed. */
  announce(node: HarnessNode, out: string[]): void {
    const text = softState(node.core);
    if (text === node.announced) return;
    node.announced = text;
    out.push(`${node.id} is ${text}`);
  }

  announceAll(out: string[]): void {
    for (const node of this.nodes.values()) this.announce(node, out);
  }

  /** Handle every Ready of `ids` (every node, in id order, by default); false when none had one. */
  processReady(ids: readonly NodeId[], out: string[]): boolean {
    let any = false;
    for (const id of ids) {
      const node = this.node(id);
      for (let round = 0; node.core.hasReady(); round += 1) {
        assert(round < READIES_PER_NODE_MAX, `node ${id} keeps having Readies`);
        any = true;
        out.push(`> ${id} handling Ready`);
        out.push(
          ...processReady(node, (message) => {
            assert(this.queue.length < QUEUE_MESSAGES_MAX, 'message queue bounded');
            this.queue.push(message);
          }),
        );
      }
      this.announce(node, out);
    }
    return any;
  }

  /** Deliver (or drop) the queued messages `filter` matches, in queue order; the others stay queued. */
  deliver(filter: MessageFilter, drop: boolean, out: string[]): number {
    const chosen = this.queue.filter((message) => matches(message, filter));
    this.queue = this.queue.filter((message) => !matches(message, filter));
    for (const message of chosen) {
      const text = formatMessage(message);
      const target = this.nodes.get(message.to);
      if (drop) out.push(`dropped ${text}`);
      else if (this.cut.has(`${message.from}>${message.to}`)) out.push(`lost ${text} (link cut)`);
      else if (target === undefined) out.push(`lost ${text} (no node ${message.to})`);
      else {
        out.push(text);
        target.core.step(message);
        this.announce(target, out);
      }
    }
    return chosen.length;
  }

  partition(sides: readonly (readonly NodeId[])[]): void {
    for (const side of sides) {
      for (const other of sides) {
        if (other === side) continue;
        for (const from of side) for (const to of other) this.cut.add(`${from}>${to}`);
      }
    }
  }

  heal(): void {
    this.cut.clear();
  }

  /** A proposal's outcome: where it was appended, or why the core refused it. */
  static outcome(result: RaftResult<{ index: number; term: number } | null>): string {
    if (!result.ok) return formatRejection(result.error);
    return result.value === null ? 'ok' : `proposed at ${result.value.index}/${result.value.term}`;
  }
}
