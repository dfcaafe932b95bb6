import type { WatchService, WatchSink, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import type { WatchEvent, WatchRequest } from '../api/types.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';
import { WatchChecker, type WatcherLedger, type WatchFilter } from './watch-checker.ts';

export interface WatcherSettings {
  /** Watchers that follow the run, each on one node at a time. */
  readonly watcherCount: number;
  /** Probability that a watcher stops taking events for a while after a revision (a slow consumer). */
  readonly watcherStallProbability: number;
  readonly watcherProgressIntervalMs: number;
  /** Each node's hub bounds, small enough that lagging watchers get canceled and history compacts. */
  readonly watchLagRevisionsMax: number;
  readonly watchHistoryRevisionsMax: number;
}

/** How often a watcher looks whether its node is still the one it streams from. */
export const WATCHER_POLL_MS = 50;
/** Longest stall of a slow watcher. */
export const WATCHER_STALL_MS_MAX = 400;

/** How the watchers reach nodes: the simulation knows which are up (a restarted node has a new hub). */
export interface WatchDirectory {
  hub(id: NodeId): WatchService | undefined;
  /** The node's applied index (its hub's: a stream without start_revision starts after it). */
  appliedIndex(id: NodeId): number;
  randomLiveNodeId(): NodeId | undefined;
}

interface SimWatcher extends WatcherLedger {
  nodeId: NodeId;
  hub: WatchService | null;
  subscription: WatchSubscription | null;
  /** The stream the sink of which may still report (a stream of a crashed node goes silent). */
  stream: object | null;
  stalled: boolean;
}

/**
 * Watchers on random nodes: each streams a key or a prefix, stalls at random (its node must hold
 * back, or cancel it when it lags too far), and when its stream ends — canceled, or its node crashed
 * — resumes on a random live node from the revision after the last it saw. The checker sees every
 * event; a COMPACTED answer to a resume is counted and the watcher starts over from the next revision.
 */
export class SimWatchers {
  readonly checker: WatchChecker;
  private readonly watchers: SimWatcher[] = [];
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly settings: WatcherSettings;
  private readonly directory: WatchDirectory;
  private running = false;
  canceled = 0;
  compacted = 0;

  constructor(
    events: EventQueue,
    prng: SeededPrng,
    settings: WatcherSettings,
    directory: WatchDirectory,
    checker: WatchChecker,
  ) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
    this.directory = directory;
    this.checker = checker;
  }

  start(filters: readonly WatchFilter[]): void {
    this.running = true;
    for (let id = 1; id <= this.settings.watcherCount; id += 1) {
      const filter = filters[this.prng.nextIntInclusive(0, filters.length - 1)] ?? { prefix: '' };
      const watcher: SimWatcher = {
        id,
        filter,
        lastSeen: 0,
        nodeId: 0,
        hub: null,
        subscription: null,
        stream: null,
        stalled: false,
      };
      this.watchers.push(watcher);
      this.poll(watcher);
    }
  }

  stop(): void {
    this.running = false;
    for (const watcher of this.watchers) this.drop(watcher);
  }

  /** Reopen a watcher whose stream ended or whose node is gone; then look again later. */
  private poll(watcher: SimWatcher): void {
    if (!this.running) return;
    if (watcher.hub === null || this.directory.hub(watcher.nodeId) !== watcher.hub) {
      this.drop(watcher);
      this.open(watcher);
    }
    this.events.after(WATCHER_POLL_MS, () => {
      this.poll(watcher);
    });
  }

  private open(watcher: SimWatcher): void {
    const nodeId = this.directory.randomLiveNodeId();
    const hub = nodeId === undefined ? undefined : this.directory.hub(nodeId);
    if (nodeId === undefined || hub === undefined) return;
    const request: WatchRequest = {
      ...watcher.filter,
      ...(watcher.lastSeen > 0 ? { start_revision: watcher.lastSeen + 1 } : {}),
      progress_interval_ms: this.settings.watcherProgressIntervalMs,
    };
    const stream = {};
    const start = request.start_revision ?? this.directory.appliedIndex(nodeId) + 1;
    // The ledger moves first: a hub may pass history on from inside open().
    this.checker.onOpened(watcher, start, nodeId);
    watcher.stream = stream;
    watcher.nodeId = nodeId;
    try {
      watcher.subscription = hub.open(request, this.sink(watcher, nodeId, stream));
    } catch (error) {
      if (!(error instanceof AspenError) || error.code !== 'COMPACTED') throw error;
      this.compacted += 1;
      watcher.stream = null;
      watcher.lastSeen = 0; // a legitimate gap: start over from the next revision
      return;
    }
    watcher.hub = hub;
  }

  private sink(watcher: SimWatcher, nodeId: NodeId, stream: object): WatchSink {
    const current = (): boolean => watcher.stream === stream;
    return {
      events: (revision: number, events: readonly WatchEvent[]) => {
        if (!current()) return;
        this.checker.onEvents(watcher, nodeId, revision, events);
        if (this.prng.chance(this.settings.watcherStallProbability)) this.stall(watcher);
      },
      progress: (revision: number) => {
        if (current()) this.checker.onProgress(watcher, nodeId, revision);
      },
      canceled: () => {
        if (!current()) return;
        this.canceled += 1;
        watcher.subscription = null;
        watcher.stream = null;
        watcher.hub = null; // the next poll resumes it
      },
      ready: () => !watcher.stalled,
    };
  }

  private stall(watcher: SimWatcher): void {
    watcher.stalled = true;
    this.events.after(this.prng.nextIntInclusive(1, WATCHER_STALL_MS_MAX), () => {
      watcher.stalled = false;
      watcher.subscription?.resume();
    });
  }

  private drop(watcher: SimWatcher): void {
    watcher.subscription?.close();
    watcher.subscription = null;
    watcher.stream = null;
    watcher.hub = null;
  }
}
