import type { ElectionSink, WatchService, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { RaftControlClient } from '../node/control-client.ts';
import { NodeElectionService } from '../node/election-service.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { EventQueue } from './event-queue.ts';
import { electionNames, type LockClientSettings, type LockDirectory } from './lock-clients.ts';
import type { ObserveChecker } from './observe-checker.ts';

/** How often an observer looks whether its node is still the one it observes from. */
export const OBSERVER_POLL_MS = 50;
/** Pause before an observer whose start failed (no node, a scan in doubt) tries again. */
export const OBSERVER_RETRY_MS = 100;

interface SimObserver {
  readonly name: string;
  /** The hub of the node it observes from (null: not observing; the next poll starts it). */
  hub: WatchService | null;
  nodeId: number;
  subscription: WatchSubscription | null;
  /** The current stream's number (each start is a new stream; reports of older ones are dropped). */
  stream: number;
  starting: boolean;
}

/**
 * Observers of each election (`NodeElectionService.observe` on a random live node): each report goes
 * to the ObserveChecker; a stream that ends (canceled, or its node crashed) is started again on a
 * random live node as a new stream. Starting is a promise (a linearizable scan first).
 */
export class SimElectionObservers {
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly settings: LockClientSettings;
  private readonly directory: LockDirectory;
  private readonly checker: ObserveChecker;
  private readonly observers: SimObserver[] = [];
  private running = false;
  private inFlight = 0;
  private streams = 0;
  /** An error that is not an AspenError (a crash of the code under test), kept for the simulation. */
  failure: Error | null = null;
  canceled = 0;

  constructor(
    events: EventQueue,
    prng: SeededPrng,
    settings: LockClientSettings,
    directory: LockDirectory,
    checker: ObserveChecker,
  ) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
    this.directory = directory;
    this.checker = checker;
  }

  get busy(): boolean {
    return this.inFlight > 0;
  }

  start(): void {
    this.running = true;
    for (const name of electionNames(this.settings)) {
      for (let index = 0; index < this.settings.observerCount; index += 1) {
        const observer: SimObserver = {
          name,
          hub: null,
          nodeId: 0,
          subscription: null,
          stream: 0,
          starting: false,
        };
        this.observers.push(observer);
        this.events.after(this.prng.nextIntInclusive(0, OBSERVER_RETRY_MS), () => {
          this.poll(observer);
        });
      }
    }
  }

  stop(): void {
    this.running = false;
    for (const observer of this.observers) this.drop(observer);
  }

  private poll(observer: SimObserver): void {
    if (!this.running) return;
    const gone = observer.hub !== null && this.directory.hub(observer.nodeId) !== observer.hub;
    if (gone || (observer.hub === null && !observer.starting)) {
      this.drop(observer);
      this.open(observer);
    }
    this.events.after(OBSERVER_POLL_MS, () => {
      this.poll(observer);
    });
  }

  private open(observer: SimObserver): void {
    const nodeId = this.directory.randomLiveNodeId();
    const node = nodeId === undefined ? undefined : this.directory.liveNode(nodeId);
    const hub = nodeId === undefined ? undefined : this.directory.hub(nodeId);
    if (nodeId === undefined || node === undefined || hub === undefined) return;
    const store = new RaftControlClient(node, { requestTimeoutMs: this.settings.lockRequestTimeoutMs });
    const elections = new NodeElectionService({ store, watch: hub, clock: node.clock });
    this.streams += 1;
    const stream = this.streams;
    observer.stream = stream;
    observer.starting = true;
    this.inFlight += 1;
    elections
      .observe({ name: observer.name }, this.sink(observer, stream))
      .then((subscription) => {
        if (observer.stream !== stream || !this.running) subscription.close();
        else {
          observer.subscription = subscription;
          observer.hub = hub;
          observer.nodeId = nodeId;
        }
      })
      .catch((error: unknown) => {
        if (!(error instanceof AspenError))
          this.failure ??= error instanceof Error ? error : new Error(String(error));
      })
      .finally(() => {
        this.inFlight -= 1;
        if (observer.stream === stream) observer.starting = false;
      });
  }

  private sink(observer: SimObserver, stream: number): ElectionSink {
    const current = (): boolean => observer.stream === stream;
    return {
      leader: (revision, leader) => {
        if (current()) this.checker.onObserved(stream, observer.name, revision, leader);
      },
      progress: (revision) => {
        if (current()) this.checker.onProgress(stream, observer.name, revision);
      },
      canceled: () => {
        if (!current()) return;
        this.canceled += 1;
        this.drop(observer); // the next poll starts a new stream
      },
      ready: () => true,
    };
  }

  private drop(observer: SimObserver): void {
    observer.subscription?.close();
    observer.subscription = null;
    observer.hub = null;
    observer.stream = 0;
    observer.starting = false;
  }
}
