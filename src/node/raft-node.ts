import { AspenError } from '../api/errors.ts';
import type { LeaseInfoResult, LeaseKeepAliveResult, LeaseListResult, LogCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { StorageError } from './errors.ts';
import type { RaftConfig } from '../raft/config.ts';
import { RaftCore, type MembershipProposal, type RaftStatus } from '../raft/core.ts';
import type { Prng } from '../raft/prng.ts';
import { runReady } from '../raft/ready-loop.ts';
import type { Entry, MembershipConfig, Message, NodeId, PersistedState } from '../raft/types.ts';
import { BoundedQueue } from '../base/bounded-queue.ts';
import { encodeProposal } from './codec.ts';
import type { Session } from './sessions.ts';
import { asStorageError, toAspenError } from './errors.ts';
import type {
  ApplyListener,
  Clock,
  LogStore,
  PersistBatch,
  RaftNodeObserver,
  Snapshot,
  SnapshotChunk,
  SnapshotFileSource,
  Transport,
  WireMessage,
} from './interfaces.ts';
import type { StateMachine } from './kv-state-machine.ts';
import { LeaseKeeper, type LeaseMutations } from './lease-keeper.ts';
import { raftEvents, snapshotEvent, type RaftView } from './raft-events.ts';
import { NodeReadyExecutor, withAppliedCommit } from './ready-executor.ts';
import {
  RequestTracker,
  type Callback,
  type Outcome,
  type ReadServed,
  type WriteApplied,
} from './request-tracker.ts';
import { SnapshotManager } from './snapshot-manager.ts';
import { quotaRefusal } from './quota.ts';

export {
  PENDING_READS_MAX,
  PENDING_WRITES_MAX,
  type Callback,
  type Outcome,
  type ReadServed,
  type WriteApplied,
} from './request-tracker.ts';

/** Mailbox bound and how much of it one turn drains before yielding. */
export const MAILBOX_MESSAGES_MAX = 10_000;
export const MAILBOX_DRAIN_MAX = 1_024;
/** Tick length bounds; the core counts time in ticks only. */
export const TICK_MS_MIN = 1;
export const TICK_MS_MAX = 1_000;

type MailboxItem =
  | { readonly kind: 'message'; readonly message: Message }
  | { readonly kind: 'tick' }
  | {
      readonly kind: 'write';
      readonly command: LogCommand;
      readonly session: Session | null;
      readonly callback: Callback<WriteApplied>;
    }
  | { readonly kind: 'read'; readonly key: string | null; readonly callback: Callback<ReadServed> }
  | { readonly kind: 'init'; readonly config: MembershipConfig; readonly callback: Callback<null> }
  | { readonly kind: 'chunk'; readonly chunk: SnapshotChunk }
  | {
      readonly kind: 'membership';
      readonly target: MembershipTarget;
      readonly callback: Callback<MembershipConfig>;
    }
  | { readonly kind: 'transfer'; readonly target: NodeId; readonly callback: Callback<null> }
  | { readonly kind: 'snapshot'; readonly callback: Callback<Snapshot> }
  | { readonly kind: 'read_snapshot'; readonly callback: Callback<Snapshot> };

/** Callers of triggerSnapshot waiting for one snapshot file at most. */
const SNAPSHOT_WAITERS_MAX = 64;

/** A snapshot file: the applied index it holds (0 while copying) and the triggers waiting for it. */
interface SnapshotCopy {
  readonly index: number;
  readonly waiting: Callback<Snapshot>[];
}

/** A membership change as the core takes it (voters, learners, new addresses, the promotion bar). */
export type MembershipTarget = MembershipProposal;

export interface RaftNodeOptions {
  readonly config: RaftConfig;
  readonly prng: Prng;
  readonly persisted: PersistedState;
  readonly logStore: LogStore;
  readonly stateMachine: StateMachine;
  readonly transport: Transport;
  readonly clock: Clock;
  /** Length of one core tick in clock milliseconds. */
  readonly tickMs: number;
  readonly observer?: RaftNodeObserver;
  readonly mailboxMessagesMax?: number;
  /** The durable snapshot (with data) that `persisted` starts after, if any. */
  readonly snapshot?: Snapshot | null;
  readonly snapshotThresholdEntries?: number;
  /** Snapshot once the entries applied since the last one carry this many bytes (bounds the in-memory log). */
  readonly snapshotThresholdBytes?: number;
  readonly snapshotChunkBytes?: number;
  /** The machine keeps its snapshots as files (LMDB): taken off the event loop, no bytes in memory. */
  readonly snapshotFiles?: SnapshotFileSource;
  /** Told the configuration in effect at start and whenever it changes (to keep the transport's peers current). */
  readonly onMembership?: (config: MembershipConfig) => void;
  /**
   * Storage failed (a persist, or a state-machine write): the node has stopped, failed every
   * waiting request as indeterminate, and acknowledges nothing more; the owner stops the process.
   * Called once. Without it the error is thrown (the process dies loudly, as on a broken invariant).
   */
  readonly onFatal?: (error: StorageError) => void;
  /** Told of every applied entry and every snapshot installed (the watch history). */
  readonly applyListener?: ApplyListener;
  /** Simulator only (src/sim/mutants.ts): lease bugs its checkers must catch. Production sets none. */
  readonly leaseMutations?: LeaseMutations;
  /** Keepalives served per second as leader; default LEASE_KEEPALIVES_PER_SECOND_MAX (tests inject less). */
  readonly leaseKeepAlivesPerSecondMax?: number;
  /**
   * --quota-backend-bytes: once the state machine holds this many bytes (StateMachine.sizeBytes), the
   * leader refuses writes that may add data (QUOTA_EXCEEDED); deletes pass. Absent: no quota.
   */
  readonly quotaBytes?: number;
}

/**
 * The seed's RaftActor: one owner of one RaftCore behind a bounded mailbox. A turn drains the
 * mailbox into the core, then runs one Ready through `runReady`, executing the core's contract:
 * one synced write for the whole batch (group commit), the messages the core lets leave before it
 * and after it, the apply, the reads, advance. Nothing steps the core while a batch is being
 * persisted or a snapshot written; what arrives meanwhile waits in the mailbox and joins the next
 * batch. Requests waiting for the core live in a RequestTracker, snapshots in a SnapshotManager.
 */
export class RaftNode {
  readonly id: number;
  private readonly core: RaftCore;
  private readonly options: RaftNodeOptions;
  private readonly mailbox: BoundedQueue<MailboxItem>;
  private readonly requests = new RequestTracker();
  private readonly snapshots: SnapshotManager;
  private readonly executor: NodeReadyExecutor;
  private readonly leases: LeaseKeeper;
  private announcedMembership: MembershipConfig | null = null;
  /** The core as last observed (observeCore); the configuration starts unknown, so the first one is told. */
  private view: RaftView;
  private turnScheduled = false;
  /** A Ready is being executed (between core.ready() and core.advance()). */
  private readyInProgress = false;
  private stopped = false;
  private started = false;
  private cancelTick: () => void = () => undefined;
  /** A snapshot file being copied, and who waits for it. */
  private copying: SnapshotCopy | null = null;
  /** A synced snapshot file whose mark is not written yet (the next turn between Readys writes it). */
  private copied: SnapshotCopy | null = null;
  messagesDropped = 0;

  constructor(options: RaftNodeOptions) {
    if (
      !Number.isSafeInteger(options.tickMs) ||
      options.tickMs < TICK_MS_MIN ||
      options.tickMs > TICK_MS_MAX
    ) {
      throw new RangeError(`tickMs must be in [${TICK_MS_MIN}, ${TICK_MS_MAX}], got ${options.tickMs}`);
    }
    const quota = options.quotaBytes;
    assert(quota === undefined || (Number.isSafeInteger(quota) && quota > 0), `quotaBytes ${quota}`);
    this.options = options;
    this.id = options.config.id;
    this.snapshots = new SnapshotManager({
      nodeId: this.id,
      clock: options.clock,
      snapshot: options.snapshot ?? null,
      thresholdEntries: options.snapshotThresholdEntries,
      thresholdBytes: options.snapshotThresholdBytes,
      chunkBytes: options.snapshotChunkBytes,
      files: options.snapshotFiles,
      failed: (error) => {
        this.failStop(error);
      },
      received: (message) => {
        this.deliver(message);
      },
      isStopped: () => this.stopped,
      backlog: (to) => options.transport.backlog?.(to) ?? 0,
    });
    const latest = this.snapshots.latest;
    const persistedMeta = options.persisted.snapshot ?? null;
    assert(
      (persistedMeta?.index ?? 0) === (latest?.meta.index ?? 0),
      'snapshot data matches the persisted metadata',
    );
    if (latest !== null && options.stateMachine.appliedIndex < latest.meta.index) {
      // A snapshot file is restored by the storage at open (the machine is never behind it here).
      assert(
        latest.data !== null,
        `the machine (${options.stateMachine.appliedIndex}) is behind its snapshot file`,
      );
      options.stateMachine.restore(latest.data, latest.meta.index, latest.meta.config);
      // The keeper has no deadlines yet (no authority before the first Ready): only the owner listens.
      options.applyListener?.restored(latest.meta.index);
      options.observer?.snapshotInstalled?.(this.id, latest);
      options.observer?.raftEvent?.(this.id, snapshotEvent('snapshot_loaded', latest));
    }
    this.core = new RaftCore(
      options.config,
      options.prng,
      withAppliedCommit(options.persisted, options.stateMachine.appliedIndex),
    );
    this.view = { leadership: this.core.leadership(), membership: null };
    this.mailbox = new BoundedQueue(options.mailboxMessagesMax ?? MAILBOX_MESSAGES_MAX);
    const leaseHost = {
      id: this.id,
      clock: options.clock,
      stateMachine: options.stateMachine,
      core: this.core,
      isStopped: () => this.stopped,
      propose: (command: LogCommand, callback: Callback<WriteApplied>) => {
        this.write(command, callback);
      },
      barrier: (callback: Callback<ReadServed>) => {
        this.barrier(callback);
      },
    };
    this.leases = new LeaseKeeper(
      leaseHost,
      options.leaseMutations,
      options.applyListener,
      options.leaseKeepAlivesPerSecondMax,
    );
    this.executor = new NodeReadyExecutor({
      id: this.id,
      options: { ...options, applyListener: this.leases },
      snapshots: this.snapshots,
      requests: this.requests,
      isStopped: () => this.stopped,
      failStop: (error) => {
        this.failStop(error);
      },
      knownLeader: () => this.core.knownLeader,
      done: () => {
        this.readyDone();
      },
    });
  }

  /** Start ticking the core every tickMs of the clock. */
  start(): void {
    assert(!this.started, 'start a node once');
    this.started = true;
    this.observeCore();
    this.scheduleTick();
  }

  /**
   * Tell the owner about a new configuration (compared by identity: the core replaces, never
   * mutates), and the observer what changed since the last look (raftEvents).
   */
  private observeCore(): void {
    const config = this.core.membershipConfig;
    if (config !== null && config !== this.announcedMembership) {
      this.announcedMembership = config;
      this.options.onMembership?.(config);
    }
    const observer = this.options.observer;
    if (observer?.raftEvent === undefined) return;
    // A quiet turn (most of them) tells nothing and allocates nothing.
    if (config === this.view.membership && this.core.leadershipIs(this.view.leadership)) return;
    const view: RaftView = { leadership: this.core.leadership(), membership: config };
    for (const event of raftEvents(this.id, this.view, view)) observer.raftEvent(this.id, event);
    this.view = view;
  }

  private scheduleTick(): void {
    this.cancelTick = this.options.clock.setTimer(this.options.tickMs, () => {
      if (this.stopped) return;
      this.tick();
      this.scheduleTick();
    });
  }

  // ---------------------------------------------------------------- inputs (any time)

  /** A Raft message or snapshot chunk from the network. Dropped (and counted) when the mailbox is full. */
  deliver(message: WireMessage): void {
    if (this.stopped) return;
    if (message.type === 'client_request' || message.type === 'client_response') return; // not Raft: routed by the owner
    const item: MailboxItem =
      message.type === 'snapshot_chunk' ? { kind: 'chunk', chunk: message } : { kind: 'message', message };
    if (!this.enqueue(item)) this.messagesDropped += 1;
  }

  tick(): void {
    if (this.stopped) return;
    if (!this.enqueue({ kind: 'tick' })) this.messagesDropped += 1;
  }

  /**
   * Propose a command (with a client session: exactly-once); the entry carries this node's clock
   * time. Lease commands come only from the lease calls and the expiry check, never from /write.
   */
  write(command: LogCommand, callback: Callback<WriteApplied>, session: Session | null = null): void {
    this.enqueueRequest({ kind: 'write', command, session, callback }, callback);
  }

  read(key: string, callback: Callback<ReadServed>): void {
    this.enqueueRequest({ kind: 'read', key, callback }, callback);
  }

  /**
   * A ReadIndex barrier: answers once this node's state machine reflects everything committed
   * before the call, so reading it afterwards (scans) is linearizable.
   */
  barrier(callback: Callback<ReadServed>): void {
    this.enqueueRequest({ kind: 'read', key: null, callback }, callback);
  }

  /** Renew a lease (leader with authority only; LEASE_NOT_FOUND once absent or expired). */
  keepAlive(leaseId: number, callback: Callback<LeaseKeepAliveResult>): void {
    this.leases.keepAlive(leaseId, callback);
  }

  /** A lease's TTL, remaining seconds by the leader's deadline, and (keys) a page of its keys. */
  leaseInfo(
    leaseId: number,
    keys: { after: string | null } | null,
    callback: Callback<LeaseInfoResult>,
  ): void {
    this.leases.info(leaseId, keys, callback);
  }

  /** Every lease by id, with its remaining seconds. */
  leaseList(callback: Callback<LeaseListResult>): void {
    this.leases.list(callback);
  }

  /** The lease deadline this node tracks (checkers and tests); undefined without authority. */
  leaseDeadline(leaseId: number): number | undefined {
    return this.leases.deadline(leaseId);
  }

  init(config: MembershipConfig, callback: Callback<null>): void {
    this.enqueueRequest({ kind: 'init', config, callback }, callback);
  }

  /** Move to `target` voters and learners; answers once the final configuration is applied here. */
  changeMembership(target: MembershipTarget, callback: Callback<MembershipConfig>): void {
    this.enqueueRequest({ kind: 'membership', target, callback }, callback);
  }

  /** Hand leadership to `target`; answers when the request is sent (watch the status for the outcome). */
  transferLeadership(target: NodeId, callback: Callback<null>): void {
    this.enqueueRequest({ kind: 'transfer', target, callback }, callback);
  }

  /** Take a snapshot now (the seed's /trigger-snapshot). */
  triggerSnapshot(callback: Callback<Snapshot>): void {
    this.enqueueRequest({ kind: 'snapshot', callback }, callback);
  }

  /**
   * The state machine as a snapshot at its applied index, read between Ready cycles, without
   * compacting the log or persisting anything (GET /backup).
   */
  readSnapshot(callback: Callback<Snapshot>): void {
    this.enqueueRequest({ kind: 'read_snapshot', callback }, callback);
  }

  /** Stopped (shut down, or fail-stopped on a storage failure): it takes no more work. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Length of one core tick in clock milliseconds. */
  get tickMs(): number {
    return this.options.tickMs;
  }

  /** The longest election timeout in clock milliseconds (the shortest lease TTL follows from it). */
  get electionTimeoutMaxMs(): number {
    return this.options.config.electionTicksMax * this.options.tickMs;
  }

  status(): RaftStatus {
    return this.core.status();
  }

  /** The leader this node knows of (0 when unknown): cheap enough to ask on every client request. */
  knownLeader(): NodeId {
    return this.core.knownLeader;
  }

  /** The entry at `index` in this node's in-memory log (for checkers and diagnostics). */
  logEntry(index: number): Entry | undefined {
    return this.core.log.entry(index);
  }

  /** Term of the entry at `index`, including the snapshot point; null when not held. */
  logTerm(index: number): number | null {
    return this.core.log.term(index);
  }

  get clock(): Clock {
    return this.options.clock;
  }

  get stateMachine(): StateMachine {
    return this.options.stateMachine;
  }

  /** Stop taking work and fail everything that waits (the caller treats writes as indeterminate). */
  stop(): void {
    this.halt(new AspenError('SHUTTING_DOWN', `node ${this.id} is shutting down`, { definite: false }));
  }

  /**
   * Storage failed: stop at once, so nothing after the failure is acknowledged, fail what waits as
   * indeterminate, and tell the owner (once). A broken assertion never comes here: it is thrown.
   */
  private failStop(cause: unknown): void {
    if (this.stopped) return;
    const error = asStorageError(cause);
    this.halt(
      new AspenError('SHUTTING_DOWN', `node ${this.id} stopped: ${error.message}`, { definite: false }),
    );
    const onFatal = this.options.onFatal;
    if (onFatal === undefined) throw error;
    onFatal(error);
  }

  private halt(error: AspenError): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cancelTick();
    this.requests.failAll(error);
    for (let item = this.mailbox.shift(); item !== undefined; item = this.mailbox.shift()) {
      if ('callback' in item) item.callback({ ok: false, error });
    }
  }

  private enqueueRequest(item: MailboxItem, callback: Callback<never>): void {
    if (this.stopped) {
      callback({ ok: false, error: new AspenError('SHUTTING_DOWN', `node ${this.id} is shutting down`) });
      return;
    }
    if (!this.enqueue(item)) {
      callback({
        ok: false,
        error: new AspenError('OVERLOADED', `node ${this.id} mailbox is full (${this.mailbox.capacity})`),
      });
    }
  }

  private enqueue(item: MailboxItem): boolean {
    if (!this.mailbox.push(item)) return false;
    this.scheduleTurn();
    return true;
  }

  /** The core may be stepped: no Ready is being executed and no snapshot written. */
  private get idle(): boolean {
    return !this.readyInProgress && !this.snapshots.busy;
  }

  private scheduleTurn(): void {
    if (this.turnScheduled || !this.idle || this.stopped) return;
    this.turnScheduled = true;
    this.options.clock.setTimer(0, () => {
      this.turnScheduled = false;
      this.runTurn();
    });
  }

  // ---------------------------------------------------------------- the turn

  private runTurn(): void {
    if (this.stopped || !this.idle) return;
    for (let drained = 0; drained < MAILBOX_DRAIN_MAX; drained += 1) {
      const item = this.mailbox.peek();
      if (item === undefined) break;
      // A snapshot is taken between Ready cycles; it waits for the one in progress.
      if (item.kind === 'snapshot' && this.core.hasReady()) break;
      this.mailbox.shift();
      this.handle(item);
      if (this.snapshots.busy) return; // handle() started writing a snapshot
    }
    this.observeCore();
    if (this.core.hasReady()) {
      this.readyInProgress = true;
      runReady(this.core, this.executor);
    } else if (this.copied !== null && this.copiedRecordable(this.copied))
      this.recordCopiedSnapshot(this.copied);
    else if (this.snapshotDue()) this.takeSnapshot(null);
    else if (this.mailbox.length > 0) this.scheduleTurn();
  }

  private handle(item: MailboxItem): void {
    switch (item.kind) {
      case 'message':
        this.core.step(item.message);
        return;
      case 'tick':
        this.core.tick();
        this.leases.tick();
        return;
      case 'write':
        this.handleWrite(item.command, item.session, item.callback);
        return;
      case 'read':
        this.handleRead(item.key, item.callback);
        return;
      case 'init': {
        const result = this.core.init(item.config);
        item.callback(
          result.ok ? { ok: true, value: null } : { ok: false, error: toAspenError(result.error) },
        );
        return;
      }
      case 'chunk': {
        const message = this.snapshots.acceptChunk(item.chunk);
        if (message !== null) this.core.step(message);
        return;
      }
      case 'membership':
        this.handleMembership(item.target, item.callback);
        return;
      case 'transfer': {
        const result = this.core.transferLeadership(item.target);
        item.callback(
          result.ok ? { ok: true, value: null } : { ok: false, error: toAspenError(result.error) },
        );
        return;
      }
      case 'snapshot':
        this.takeSnapshot(item.callback);
        return;
      case 'read_snapshot':
        item.callback(this.currentSnapshot());
        return;
    }
  }

  /** The state machine at its applied index (a read: nothing is compacted or written). */
  private currentSnapshot(): Outcome<Snapshot> {
    const index = this.options.stateMachine.appliedIndex;
    if (index === 0)
      return { ok: false, error: new AspenError('NOT_INITIALIZED', 'nothing has been applied yet') };
    const term = this.core.log.term(index);
    const config = this.core.log.configAt(index);
    assert(term !== null && config !== null, `the log knows the applied entry ${index}`);
    try {
      return {
        ok: true,
        value: { meta: { index, term, config }, data: this.options.stateMachine.snapshot() },
      };
    } catch (error) {
      // Too large for a snapshot, or unreadable: the read fails, nothing was written.
      if (!(error instanceof StorageError)) throw error;
      return {
        ok: false,
        error: new AspenError('INTERNAL', `cannot read the state machine: ${error.message}`),
      };
    }
  }

  private handleMembership(target: MembershipTarget, callback: Callback<MembershipConfig>): void {
    if (target.voters.length === 0) {
      callback({
        ok: false,
        error: new AspenError('INVALID_INPUT', 'a configuration needs at least one voter'),
      });
      return;
    }
    if (this.requests.membershipInProgress) {
      callback({ ok: false, error: toAspenError({ code: 'membership_change_in_progress' }) });
      return;
    }
    const result = this.core.proposeMembership(target);
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    this.requests.trackMembership(result.value, callback);
  }

  /** The Ready is done: check for a snapshot (not only when idle: under steady load every turn has a Ready). */
  private readyDone(): void {
    assert(this.readyInProgress, 'a Ready is done only once it started');
    this.readyInProgress = false;
    this.observeCore();
    this.leases.refresh();
    if (this.copied !== null && this.copiedRecordable(this.copied)) this.recordCopiedSnapshot(this.copied);
    else if (this.snapshotDue()) this.takeSnapshot(null);
    else if (this.core.hasReady() || this.mailbox.length > 0) this.scheduleTurn();
  }

  private snapshotDue(): boolean {
    if (this.copying !== null || this.copied !== null) return false;
    return this.snapshots.due(this.options.stateMachine.appliedIndex);
  }

  /** The core has applied (and holds durably) the entry a synced snapshot file holds. */
  private copiedRecordable(copied: SnapshotCopy): boolean {
    return copied.index <= Math.min(this.core.log.applied, this.core.log.stableIndex);
  }

  /** Snapshot the state machine at its applied index, compact the core's log, and persist both. */
  private takeSnapshot(callback: Callback<Snapshot> | null): void {
    assert(this.idle, 'snapshots are taken between Ready cycles');
    const index = this.options.stateMachine.appliedIndex;
    const latest = this.snapshots.latest;
    if (index <= (latest?.meta.index ?? 0)) {
      if (latest === null)
        callback?.({ ok: false, error: new AspenError('NOT_INITIALIZED', 'nothing has been applied yet') });
      else callback?.({ ok: true, value: latest });
      if (this.mailbox.length > 0) this.scheduleTurn();
      return;
    }
    const files = this.options.snapshotFiles;
    if (files !== undefined) {
      this.copySnapshot(files, callback);
      return;
    }
    const snapshot: Snapshot = { meta: this.core.compact(index), data: this.options.stateMachine.snapshot() };
    this.persistSnapshot(snapshot, callback === null ? [] : [callback]);
  }

  /**
   * Start a snapshot file (a copy made off the event loop): the node goes on stepping and applying
   * meanwhile; once the copy is synced, the next turn compacts the log up to the index it holds.
   */
  private copySnapshot(files: SnapshotFileSource, callback: Callback<Snapshot> | null): void {
    if (this.copying !== null) {
      if (callback !== null && this.copying.waiting.length < SNAPSHOT_WAITERS_MAX)
        this.copying.waiting.push(callback);
      else callback?.({ ok: false, error: new AspenError('TIMEOUT', 'too many snapshot requests waiting') });
      this.scheduleTurn();
      return;
    }
    const copying: SnapshotCopy = { index: 0, waiting: callback === null ? [] : [callback] };
    this.copying = copying;
    files.take().then(
      (index) => {
        this.copying = null;
        if (this.stopped) return;
        this.copied = { index, waiting: copying.waiting };
        this.scheduleTurn();
      },
      (error: unknown) => {
        this.copying = null;
        this.failStop(error);
      },
    );
    this.scheduleTurn();
  }

  /**
   * A snapshot file is synced: compact the core's log up to the index it holds and write its mark.
   * The core must have applied that far (after a restart the machine may be ahead for a moment).
   */
  private recordCopiedSnapshot(copied: SnapshotCopy): void {
    const latest = this.snapshots.latest;
    assert(this.copiedRecordable(copied), 'the core holds the copied index');
    this.copied = null;
    if (copied.index <= (latest?.meta.index ?? 0)) {
      // A snapshot received meanwhile is newer: the copy is not needed (the next one removes it).
      for (const callback of copied.waiting)
        if (latest === null) callback({ ok: false, error: new AspenError('NOT_INITIALIZED', 'no snapshot') });
        else callback({ ok: true, value: latest });
      this.scheduleTurn();
      return;
    }
    this.persistSnapshot({ meta: this.core.compact(copied.index), data: null }, copied.waiting);
  }

  /** Write `snapshot` (the core's log is compacted to it): the node steps nothing until it is durable. */
  private persistSnapshot(snapshot: Snapshot, callbacks: readonly Callback<Snapshot>[]): void {
    this.snapshots.beginWrite(snapshot);
    const batch: PersistBatch = { snapshot, hardState: null, entries: [] };
    this.options.logStore.persist(batch, (error) => {
      if (this.stopped) return;
      if (error !== null) {
        this.failStop(error);
        return;
      }
      this.options.observer?.persisted?.(this.id, batch);
      this.options.observer?.raftEvent?.(this.id, snapshotEvent('snapshot_taken', snapshot));
      this.snapshots.endWrite();
      for (const callback of callbacks) callback({ ok: true, value: snapshot });
      this.scheduleTurn();
    });
  }

  private handleWrite(command: LogCommand, session: Session | null, callback: Callback<WriteApplied>): void {
    const refusal = this.requests.writeRefusal() ?? this.quotaRefusal(command);
    if (refusal !== null) {
      callback({ ok: false, error: refusal });
      return;
    }
    const proposedAtMs = Math.max(0, Math.floor(this.options.clock.nowMs()));
    const result = this.core.propose(encodeProposal({ command, session, proposedAtMs }));
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    this.requests.trackWrite(result.value, callback);
  }

  /**
   * Past the quota a write that may add data is refused before it is proposed (definite). Only a
   * leader checks: a follower's proposal fails as NOT_LEADER anyway, and forwarded writes are proposed
   * on the leader, whose state machine is the one that counts. Apply never looks at the size, so
   * every node applies the same entries whatever its own file looks like.
   */
  private quotaRefusal(command: LogCommand): AspenError | null {
    const quota = this.options.quotaBytes;
    if (quota === undefined || this.core.knownLeader !== this.id) return null;
    return quotaRefusal(command, this.options.stateMachine.sizeBytes, quota);
  }

  private handleRead(key: string | null, callback: Callback<ReadServed>): void {
    const refusal = this.requests.readRefusal();
    if (refusal !== null) {
      callback({ ok: false, error: refusal });
      return;
    }
    const requestId = this.requests.takeReadId();
    const result = this.core.readIndex(requestId);
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    this.requests.trackRead(requestId, key, callback);
  }
}
