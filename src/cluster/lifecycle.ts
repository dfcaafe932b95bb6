import { assert, AssertionError } from '../base/assert.ts';
import { firstLine, type StorageError } from './errors.ts';
import type { Log } from './logger.ts';

/** After a storage failure, the longest wait for HTTP, discovery and the endpoint to stop before the failure is reported. */
export const FATAL_STOP_WAIT_MS = 5_000;

/**
 * The components of a node in the seed's start order: metadata store (the data dir, locked), endpoint
 * (libp2p with its gossip service), cluster services (discovery), Raft core and RaftNode, RPC
 * (forwarding over the endpoint), HTTP. They stop in reverse.
 */
export const START_STEPS = ['storage', 'endpoint', 'discovery', 'raft', 'rpc', 'http'] as const;
export type StartStep = (typeof START_STEPS)[number];

/** How a component stops: after a start (graceful), after a failed start (unwind), after a storage failure (fatal). */
export type StopMode = 'graceful' | 'unwind' | 'fatal';

/**
 * The one start/stop shape of every component (js-libp2p's Startable, split in two): a start step
 * returns what it started and the one way to stop it. A start that throws has started nothing (it
 * cleans up its own half-done work); one that returns is stopped exactly once, in reverse order.
 */
export interface Started<T> {
  readonly value: T;
  stop(mode: StopMode): Promise<void>;
}

/** What the owner and the tests may hook into. */
export interface LifecycleHooks {
  /**
   * Storage failed while running: the node stopped itself (Raft, HTTP, RPC, discovery, endpoint; the
   * store let go without marking its state machine clean, so the next start rebuilds it). The owner
   * says so in one line and ends the process. Without it the failure is logged.
   */
  readonly onFatal?: (error: StorageError) => void;
  /** Test hook: called before each start step; a throw there fails that step. */
  readonly beforeStep?: (step: StartStep) => void;
  /** Test hook: told each component that stopped, in the order they stop. */
  readonly onStopped?: (step: StartStep) => void;
}

interface Component {
  readonly step: StartStep;
  stop(mode: StopMode): Promise<void>;
}

/**
 * What has started, and the one way to stop it: in reverse, each component once, exactly those that
 * started. A storage failure reported by Raft (fail()) stops the node the same way, leaving the
 * store unclean on purpose.
 */
export class Lifecycle {
  private readonly started: Component[] = [];
  /** Each start step's duration, bounded by START_STEPS. */
  private readonly stepMs: string[] = [];
  private readonly log: Log;
  private readonly options: LifecycleHooks;
  private readonly nodeId: number;
  private starting = true;
  private stopping: Promise<void> | null = null;
  /** The storage failure that stopped (or is stopping) the node. */
  failure: StorageError | null = null;

  constructor(nodeId: number, log: Log, options: LifecycleHooks) {
    this.nodeId = nodeId;
    this.log = log;
    this.options = options;
  }

  /** Run one start step; a storage failure reported meanwhile fails the start before the next step. */
  async step<T>(step: StartStep, start: () => Promise<Started<T>> | Started<T>): Promise<T> {
    assert(this.starting && this.started.length < START_STEPS.length, `start step ${step} out of order`);
    if (this.failure !== null) throw this.failure;
    this.options.beforeStep?.(step);
    this.log(`start: ${step}`, 'debug');
    const begunMs = performance.now();
    const started = await start();
    this.stepMs.push(`${step} ${Math.round(performance.now() - begunMs)} ms`);
    this.started.push({ step, stop: (mode) => started.stop(mode) });
    return started.value;
  }

  /** How long each start step took, in order ("storage 812 ms, endpoint 95 ms, …"), for the node's "up" line. */
  get stepTimes(): string {
    return this.stepMs.join(', ');
  }

  /** The start completed: from now on a storage failure stops the node at once. */
  running(): void {
    if (this.failure !== null) throw this.failure;
    this.starting = false;
  }

  /** Raft's fatal hook: storage failed. */
  fail(error: StorageError): void {
    if (this.failure !== null) return;
    this.failure = error;
    if (this.starting || this.stopping !== null) return; // the start unwinds, or the stop under way finishes
    const report =
      this.options.onFatal ??
      ((failure: StorageError) => {
        this.log(`node ${this.nodeId} stopped: ${failure.message}`, 'error');
      });
    this.stopping = withinMs(this.stopAll('fatal'), FATAL_STOP_WAIT_MS, this.log).then(() => {
      report(error);
    });
  }

  /** Stop what started (graceful after a start, unwind after a failed one). */
  async stop(mode: 'graceful' | 'unwind'): Promise<void> {
    this.stopping ??= this.stopAll(this.failure === null ? mode : 'fatal');
    await this.stopping;
    if (this.failure !== null) throw this.failure;
  }

  /** Every started component gets its stop, in reverse, even after one failed; the first failure is thrown at the end. */
  private async stopAll(mode: StopMode): Promise<void> {
    const failures: unknown[] = [];
    for (let index = this.started.length - 1; index >= 0; index -= 1) {
      const component = this.started[index];
      assert(component !== undefined, 'started components are dense');
      try {
        await component.stop(this.failure === null ? mode : 'fatal');
        this.options.onStopped?.(component.step);
        this.log(`stopped: ${component.step}`, 'debug');
      } catch (error) {
        if (error instanceof AssertionError) throw error;
        this.log(`stop ${component.step}: ${firstLine(error)}`, 'error');
        failures.push(error);
      }
    }
    this.started.length = 0;
    if (failures.length > 0) throw failures[0];
  }
}

/** Wait for `work` at most `limitMs`; a failure or an overrun is logged, never thrown (the caller reports the cause). */
async function withinMs(work: Promise<void>, limitMs: number, log: Log): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log(`stopping took longer than ${limitMs} ms; reporting anyway`, 'warn');
      resolve();
    }, limitMs);
  });
  try {
    await Promise.race([
      work.catch((error: unknown) => {
        if (error instanceof AssertionError) throw error;
      }),
      overrun,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
