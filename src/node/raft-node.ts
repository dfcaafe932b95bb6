import { AspenError } from '../api/errors.ts';
import type { WriteCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { StorageError } from './errors.ts';
import { APPLY_ENTRIES_MAX, type RaftConfig } from '../raft/config.ts';
import { RaftCore, type MembershipProposal, type RaftStatus } from '../raft/core.ts';
import type { RaftRejection } from '../raft/errors.ts';
import type { Prng } from '../raft/prng.ts';
import type {
  Entry,
  HardState,
  MembershipConfig,
  Message,
  NodeId,
  PersistedState,
  Ready,
} from '../raft/types.ts';
import { BoundedQueue } from '../base/bounded-queue.ts';
import { decodeCommand, encodeCommand } from './codec.ts';
import type {
  Clock,
  LogStore,
  PersistBatch,
  RaftNodeObserver,
  Snapshot,
  SnapshotChunk,
  Transport,
  WireMessage,
} from './interfaces.ts';
import { SNAPSHOT_CHUNK_BYTES_MAX, SnapshotAssembler, snapshotChunks } from './snapshot-transfer.ts';
import type { ApplyOutcome, KvRecord, StateMachine } from './kv-state-machine.ts';

/** Mailbox bound (DESIGN.md section 9) and how much of it one turn drains before yielding. */
export const MAILBOX_MESSAGES_MAX = 10_000;
export const MAILBOX_DRAIN_MAX = 1_024;
/** Requests that may wait for an answer at once: proposals awaiting apply, reads awaiting confirmation or apply. */
export const PENDING_WRITES_MAX = 20_000;
export const PENDING_READS_MAX = 10_000;
/** Tick length bounds; the core counts time in ticks only. */
export const TICK_MS_MIN = 1;
export const TICK_MS_MAX = 1_000;
/** Take a snapshot (and compact the log) once this many entries were applied since the last one. */
export const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT = 10_000;

export type Outcome<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: AspenError };
export type Callback<T> = (outcome: Outcome<T>) => void;

export interface WriteApplied {
  readonly index: number;
  readonly outcome: ApplyOutcome;
}

/** A read answered at a linearizable point: the record, or undefined when the key is absent. */
export interface ReadServed {
  readonly record: KvRecord | undefined;
  readonly appliedIndex: number;
}

type MailboxItem =
  | { readonly kind: 'message'; readonly message: Message }
  | { readonly kind: 'tick' }
  | { readonly kind: 'write'; readonly command: WriteCommand; readonly callback: Callback<WriteApplied> }
  | { readonly kind: 'read'; readonly key: string | null; readonly callback: Callback<ReadServed> }
  | { readonly kind: 'init'; readonly config: MembershipConfig; readonly callback: Callback<null> }
  | { readonly kind: 'chunk'; readonly chunk: SnapshotChunk }
  | {
      readonly kind: 'membership';
      readonly target: MembershipTarget;
      readonly callback: Callback<MembershipConfig>;
    }
  | { readonly kind: 'transfer'; readonly target: NodeId; readonly callback: Callback<null> }
  | { readonly kind: 'snapshot'; readonly callback: Callback<Snapshot> };

/** A membership change as the core takes it (voters, learners, new addresses, the promotion bar). */
export type MembershipTarget = MembershipProposal;

/** A membership change waiting to take effect: its entry, then (for a joint change) C_new. */
interface PendingMembership {
  readonly index: number;
  readonly term: number;
  readonly callback: Callback<MembershipConfig>;
  /** The joint entry applied; now waiting for the C_new that follows it. */
  awaitingLeave: boolean;
}

interface PendingWrite {
  readonly term: number;
  readonly callback: Callback<WriteApplied>;
}

interface PendingRead {
  /** The key to read, or null for a plain linearizability barrier (scans). */
  readonly key: string | null;
  readonly callback: Callback<ReadServed>;
  /** Set once the core released the read: serve after applying this index. */
  index: number;
}

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
  readonly snapshotChunkBytes?: number;
  /** Told the configuration in effect at start and whenever it changes (to keep the transport's peers current). */
  readonly onMembership?: (config: MembershipConfig) => void;
  /**
   * Storage failed (a persist, or a state-machine write): the node has stopped, failed every
   * waiting request as indeterminate, and acknowledges nothing more; the owner stops the process.
   * Called once. Without it the error is thrown (the process dies loudly, as on a broken invariant).
   */
  readonly onFatal?: (error: StorageError) => void;
}

/**
 * The seed's RaftActor: one owner of one RaftCore behind a bounded mailbox. A turn drains the
 * mailbox into the core, then runs one Ready cycle in the asserted order: persist (one synced write
 * for the whole batch: group commit), send, apply, answer, advance. A leader sends its appends and
 * applies already-durable committed entries while it persists; a Ready that only moves the commit
 * index is not synced. Nothing steps the core while a batch is being persisted; what arrives
 * meanwhile waits in the mailbox and joins the next batch.
 */
export class RaftNode {
  readonly id: number;
  private readonly core: RaftCore;
  private readonly options: RaftNodeOptions;
  private readonly mailbox: BoundedQueue<MailboxItem>;
  private readonly pendingWrites = new Map<number, PendingWrite>();
  private readonly pendingReads = new Map<number, PendingRead>();
  private pendingMembership: PendingMembership | null = null;
  private readonly snapshotAssembler = new SnapshotAssembler();
  /** The newest snapshot this node holds (sent to followers that need compacted entries). */
  private latestSnapshot: Snapshot | null;
  /** A snapshot fully received from the leader, waiting for the core to accept it. */
  private receivedSnapshot: Snapshot | null = null;
  private readonly snapshotThresholdEntries: number;
  private readonly snapshotChunkBytes: number;
  private announcedMembership: MembershipConfig | null = null;
  /** The newest hard state: its term and vote are synced; its commit index may not be yet. */
  private storedHardState: HardState;
  /** storedHardState carries a commit index not yet written: it goes with the next synced batch. */
  private commitDeferred = false;
  private nextReadId = 1;
  private turnScheduled = false;
  private persisting = false;
  private stopped = false;
  private started = false;
  private cancelTick: () => void = () => undefined;
  messagesDropped = 0;

  constructor(options: RaftNodeOptions) {
    if (
      !Number.isSafeInteger(options.tickMs) ||
      options.tickMs < TICK_MS_MIN ||
      options.tickMs > TICK_MS_MAX
    ) {
      throw new RangeError(`tickMs must be in [${TICK_MS_MIN}, ${TICK_MS_MAX}], got ${options.tickMs}`);
    }
    this.options = options;
    this.id = options.config.id;
    this.snapshotThresholdEntries = options.snapshotThresholdEntries ?? SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT;
    this.snapshotChunkBytes = options.snapshotChunkBytes ?? SNAPSHOT_CHUNK_BYTES_MAX;
    assert(this.snapshotThresholdEntries >= 1, 'snapshot threshold is at least one entry');
    assert(
      this.snapshotChunkBytes >= 1 && this.snapshotChunkBytes <= SNAPSHOT_CHUNK_BYTES_MAX,
      'snapshot chunk size in range',
    );
    this.latestSnapshot = options.snapshot ?? null;
    const persistedMeta = options.persisted.snapshot ?? null;
    assert(
      (persistedMeta?.index ?? 0) === (this.latestSnapshot?.meta.index ?? 0),
      'snapshot data matches the persisted metadata',
    );
    if (this.latestSnapshot !== null && options.stateMachine.appliedIndex < this.latestSnapshot.meta.index) {
      options.stateMachine.restore(
        this.latestSnapshot.data,
        this.latestSnapshot.meta.index,
        this.latestSnapshot.meta.config,
      );
      options.observer?.snapshotInstalled?.(this.id, this.latestSnapshot);
    }
    this.core = new RaftCore(
      options.config,
      options.prng,
      withAppliedCommit(options.persisted, options.stateMachine.appliedIndex),
    );
    this.storedHardState = options.persisted.hardState;
    this.mailbox = new BoundedQueue(options.mailboxMessagesMax ?? MAILBOX_MESSAGES_MAX);
  }

  /** Start ticking the core every tickMs of the clock. */
  start(): void {
    assert(!this.started, 'start a node once');
    this.started = true;
    this.announceMembership();
    this.scheduleTick();
  }

  /** Tell the owner about a new configuration (compared by identity: the core replaces, never mutates). */
  private announceMembership(): void {
    const config = this.core.membershipConfig;
    if (config === null || config === this.announcedMembership) return;
    this.announcedMembership = config;
    this.options.onMembership?.(config);
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

  write(command: WriteCommand, callback: Callback<WriteApplied>): void {
    this.enqueueRequest({ kind: 'write', command, callback }, callback);
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

  /** Stopped (shut down, or fail-stopped on a storage failure): it takes no more work. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Length of one core tick in clock milliseconds. */
  get tickMs(): number {
    return this.options.tickMs;
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
    const error =
      cause instanceof StorageError
        ? cause
        : new StorageError(`storage failed: ${cause instanceof Error ? cause.message : String(cause)}`, {
            cause,
          });
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
    for (const pending of this.pendingWrites.values()) pending.callback({ ok: false, error });
    for (const pending of this.pendingReads.values()) pending.callback({ ok: false, error });
    this.pendingMembership?.callback({ ok: false, error });
    this.pendingWrites.clear();
    this.pendingReads.clear();
    this.pendingMembership = null;
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

  private scheduleTurn(): void {
    if (this.turnScheduled || this.persisting || this.stopped) return;
    this.turnScheduled = true;
    this.options.clock.setTimer(0, () => {
      this.turnScheduled = false;
      this.runTurn();
    });
  }

  // ---------------------------------------------------------------- the turn

  private runTurn(): void {
    if (this.stopped || this.persisting) return;
    for (let drained = 0; drained < MAILBOX_DRAIN_MAX; drained += 1) {
      const item = this.mailbox.peek();
      if (item === undefined) break;
      // A snapshot is taken between Ready cycles; it waits for the one in progress.
      if (item.kind === 'snapshot' && this.core.hasReady()) break;
      this.mailbox.shift();
      this.handle(item);
      if (this.snapshotInProgress()) return; // handle() started writing a snapshot
    }
    this.announceMembership();
    if (this.core.hasReady()) this.startReady();
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
        return;
      case 'write':
        this.handleWrite(item.command, item.callback);
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
      case 'chunk':
        this.handleChunk(item.chunk);
        return;
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
    }
  }

  private handleChunk(chunk: SnapshotChunk): void {
    if (chunk.to !== this.id) return;
    const snapshot = this.snapshotAssembler.accept(chunk);
    if (snapshot === null) return;
    this.receivedSnapshot = snapshot;
    this.core.step({
      type: 'snapshot',
      from: chunk.from,
      to: chunk.to,
      term: chunk.term,
      snapshot: snapshot.meta,
    });
  }

  private handleMembership(target: MembershipTarget, callback: Callback<MembershipConfig>): void {
    if (target.voters.length === 0) {
      callback({
        ok: false,
        error: new AspenError('INVALID_INPUT', 'a configuration needs at least one voter'),
      });
      return;
    }
    if (this.pendingMembership !== null) {
      callback({ ok: false, error: toAspenError({ code: 'membership_change_in_progress' }) });
      return;
    }
    const result = this.core.proposeMembership(target);
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    this.pendingMembership = {
      index: result.value.index,
      term: result.value.term,
      callback,
      awaitingLeave: false,
    };
  }

  private snapshotInProgress(): boolean {
    return this.persisting;
  }

  private snapshotDue(): boolean {
    const applied = this.options.stateMachine.appliedIndex;
    return applied - (this.latestSnapshot?.meta.index ?? 0) >= this.snapshotThresholdEntries;
  }

  /** Snapshot the state machine at its applied index, compact the core's log, and persist both. */
  private takeSnapshot(callback: Callback<Snapshot> | null): void {
    assert(!this.persisting, 'snapshots are taken between Ready cycles');
    const index = this.options.stateMachine.appliedIndex;
    const latest = this.latestSnapshot;
    if (index <= (latest?.meta.index ?? 0)) {
      if (latest === null)
        callback?.({ ok: false, error: new AspenError('NOT_INITIALIZED', 'nothing has been applied yet') });
      else callback?.({ ok: true, value: latest });
      if (this.mailbox.length > 0) this.scheduleTurn();
      return;
    }
    const snapshot: Snapshot = { meta: this.core.compact(index), data: this.options.stateMachine.snapshot() };
    this.latestSnapshot = snapshot;
    this.persisting = true;
    const batch: PersistBatch = { snapshot, hardState: null, entries: [] };
    this.options.logStore.persist(batch, (error) => {
      if (this.stopped) return;
      if (error !== null) {
        this.failStop(error);
        return;
      }
      this.options.observer?.persisted?.(this.id, batch);
      this.persisting = false;
      callback?.({ ok: true, value: snapshot });
      this.scheduleTurn();
    });
  }

  private handleWrite(command: WriteCommand, callback: Callback<WriteApplied>): void {
    if (this.pendingWrites.size >= PENDING_WRITES_MAX) {
      callback({
        ok: false,
        error: new AspenError('OVERLOADED', `${PENDING_WRITES_MAX} writes are already waiting; retry later`),
      });
      return;
    }
    const result = this.core.propose(encodeCommand(command));
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    const displaced = this.pendingWrites.get(result.value.index);
    if (displaced !== undefined) {
      // We lost leadership and regained it; our log dropped the older proposal at this index, but
      // another node may still hold it and commit it later, so its outcome is unknown.
      assert(displaced.term < result.value.term, `two proposals at index ${result.value.index} in one term`);
      const error = new AspenError(
        'NOT_LEADER',
        'leadership changed; the write may or may not have been applied',
        { definite: false },
      );
      displaced.callback({ ok: false, error });
    }
    this.pendingWrites.set(result.value.index, { term: result.value.term, callback });
  }

  private handleRead(key: string | null, callback: Callback<ReadServed>): void {
    if (this.pendingReads.size >= PENDING_READS_MAX) {
      callback({
        ok: false,
        error: new AspenError('OVERLOADED', `${PENDING_READS_MAX} reads are already waiting; retry later`),
      });
      return;
    }
    const requestId = this.nextReadId;
    this.nextReadId += 1;
    const result = this.core.readIndex(requestId);
    if (!result.ok) {
      callback({ ok: false, error: toAspenError(result.error) });
      return;
    }
    this.pendingReads.set(requestId, { key, callback, index: 0 });
  }

  private startReady(): void {
    const ready = this.core.ready();
    this.persisting = true;
    const snapshot = this.snapshotFor(ready);
    const stored = this.storedHardState;
    const hardState = ready.hardState ?? (this.commitDeferred ? stored : null);
    const termOrVoteMoved =
      ready.hardState !== null &&
      (ready.hardState.term !== stored.term || ready.hardState.vote !== stored.vote);
    if (ready.hardState !== null) this.storedHardState = ready.hardState;
    if (snapshot === null && ready.entries.length === 0 && !termOrVoteMoved) {
      // Nothing to store, or only the commit index moved: no sync to wait for (etcd's MustSync rule).
      // A new commit index is written with the next synced batch; a crash may lose it, and a
      // restarted node re-learns it from the leader.
      if (ready.hardState !== null) this.commitDeferred = true;
      this.finishReady(ready);
      return;
    }
    this.commitDeferred = false;
    // A leader sends its appends while its own disk syncs (thesis 10.2.1): followers sync in
    // parallel, and the leader counts itself toward a quorum only once its sync is done (advance).
    // Everything else waits: a vote or an acknowledgement is a promise about what is on disk, and
    // so is a new term or vote (a leader of one voter elects itself in the Ready that stores it).
    const sendEarly = ready.softState.role === 'leader' && !termOrVoteMoved;
    if (sendEarly) this.sendMessages(ready);
    // The committed entries handed out are durable here already (the core releases only stable
    // ones) and on a quorum: a leader applies them and answers their clients while this Ready's
    // own entries sync, as etcd's server does (followers answer no one; they keep the plain order).
    const appliedEarly = sendEarly && snapshot === null;
    if (appliedEarly) this.applyEntries(ready.committedEntries);
    if (this.stopped) return; // applying failed: storage fail-stop
    const batch: PersistBatch = { snapshot, hardState, entries: ready.entries };
    this.options.logStore.persist(batch, (error) => {
      if (this.stopped) return;
      // A failed sync leaves us unsure what is on disk: fail-stop rather than acknowledge.
      if (error !== null) {
        this.failStop(error);
        return;
      }
      this.options.observer?.persisted?.(this.id, batch);
      if (snapshot !== null && !this.installSnapshot(snapshot)) return; // installing failed: storage fail-stop
      this.finishReady(ready, sendEarly, appliedEarly);
    });
  }

  /** The received snapshot data the core accepted in this Ready, if it accepted one. */
  private snapshotFor(ready: Ready): Snapshot | null {
    if (ready.snapshot === null) return null;
    const received = this.receivedSnapshot;
    assert(received !== null, 'the core accepts only a snapshot the node received');
    assert(
      received.meta.index === ready.snapshot.index && received.meta.term === ready.snapshot.term,
      'accepted snapshot is the received one',
    );
    this.receivedSnapshot = null;
    return received;
  }

  /** Restore the state machine from `snapshot`; false when storage failed (the node fail-stopped). */
  private installSnapshot(snapshot: Snapshot): boolean {
    try {
      this.options.stateMachine.restore(snapshot.data, snapshot.meta.index, snapshot.meta.config);
    } catch (error) {
      if (!(error instanceof StorageError)) throw error;
      this.failStop(error);
      return false;
    }
    this.latestSnapshot = snapshot;
    this.options.observer?.snapshotInstalled?.(this.id, snapshot);
    // Proposals the snapshot covers can no longer be matched to their entries: outcome unknown.
    const error = new AspenError('NOT_LEADER', 'replaced by a snapshot before the write was seen applied', {
      definite: false,
    });
    for (const [index, pending] of this.pendingWrites) {
      if (index > snapshot.meta.index) continue;
      this.pendingWrites.delete(index);
      pending.callback({ ok: false, error });
    }
    if (this.pendingMembership !== null && this.pendingMembership.index <= snapshot.meta.index) {
      this.pendingMembership.callback({ ok: false, error });
      this.pendingMembership = null;
    }
    return true;
  }

  private sendMessage(message: Message): void {
    if (message.type !== 'snapshot') {
      this.options.transport.send(message);
      return;
    }
    const snapshot = this.latestSnapshot;
    assert(
      snapshot !== null && snapshot.meta.index === message.snapshot.index,
      'the core sends the snapshot the node holds',
    );
    const route = { from: message.from, to: message.to, term: message.term };
    for (const chunk of snapshotChunks(snapshot, route, this.snapshotChunkBytes))
      this.options.transport.send(chunk);
  }

  private sendMessages(ready: Ready): void {
    this.options.observer?.ready?.(this.id, ready);
    for (const message of ready.messages) this.sendMessage(message);
  }

  /** After persisting: send, apply, answer, advance — the order etcd's Ready contract requires. */
  private finishReady(ready: Ready, messagesSent = false, entriesApplied = false): void {
    assert(this.persisting, 'finishReady only after startReady');
    if (!messagesSent) this.sendMessages(ready);
    if (!entriesApplied) this.applyEntries(ready.committedEntries);
    if (this.stopped) return; // applying failed: storage fail-stop
    for (const failure of ready.readFailures) {
      this.resolveRead(failure.requestId, {
        ok: false,
        error: new AspenError('NOT_LEADER', 'leadership lost before the read was confirmed', {
          leaderId: failure.leaderId || null,
        }),
      });
    }
    for (const state of ready.readStates) {
      const pending = this.pendingReads.get(state.requestId);
      if (pending !== undefined) pending.index = state.index;
    }
    this.serveReads();
    this.core.advance(ready);
    this.persisting = false;
    // Checked here, not only when idle: under steady load every turn has a Ready.
    if (this.snapshotDue()) this.takeSnapshot(null);
    else if (this.core.hasReady() || this.mailbox.length > 0) this.scheduleTurn();
  }

  /** Apply the entries in one state-machine batch, then answer their clients (never inside the batch). */
  private applyEntries(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    assert(
      entries.length <= APPLY_ENTRIES_MAX,
      `apply batch of ${entries.length} entries exceeds ${APPLY_ENTRIES_MAX}`,
    );
    const outcomes: (ApplyOutcome | null | undefined)[] = [];
    try {
      this.applyBatch(entries, outcomes);
    } catch (error) {
      // The batch was one transaction and it was aborted: none of it is applied or answered.
      if (!(error instanceof StorageError)) throw error;
      this.failStop(error);
      return;
    }
    for (const [position, entry] of entries.entries()) {
      const outcome = outcomes[position];
      if (outcome !== undefined) this.answerApplied(entry, outcome);
    }
  }

  private applyBatch(entries: readonly Entry[], outcomes: (ApplyOutcome | null | undefined)[]): void {
    const machine = this.options.stateMachine;
    machine.batch(() => {
      for (const entry of entries) {
        // Applying is idempotent by index: a state machine that already holds the entry skips it.
        if (entry.index <= machine.appliedIndex) {
          outcomes.push(undefined);
          continue;
        }
        if (entry.kind === 'command') outcomes.push(machine.apply(entry.index, decodeCommand(entry.data)));
        else {
          machine.applyNoop(entry.index, entry.kind === 'config' ? entry.config : undefined);
          outcomes.push(null);
        }
      }
    });
  }

  private answerApplied(entry: Entry, outcome: ApplyOutcome | null): void {
    this.options.observer?.applied?.(this.id, entry);
    if (entry.kind === 'config') this.resolveMembership(entry);
    const pending = this.pendingWrites.get(entry.index);
    if (pending === undefined) return;
    this.pendingWrites.delete(entry.index);
    if (pending.term === entry.term && outcome !== null) {
      pending.callback({ ok: true, value: { index: entry.index, outcome } });
    } else {
      // Another leader's entry took this index: ours can never be applied.
      const error = new AspenError('NOT_LEADER', 'leadership changed before the write committed', {
        leaderId: this.core.status().leaderId || null,
      });
      pending.callback({ ok: false, error });
    }
  }

  /** A config entry applied: the pending change took effect, or lost to another leader's entry. */
  private resolveMembership(entry: Entry & { readonly kind: 'config' }): void {
    const pending = this.pendingMembership;
    if (pending === null || entry.index < pending.index) return;
    if (!pending.awaitingLeave && (entry.index !== pending.index || entry.term !== pending.term)) {
      this.pendingMembership = null;
      pending.callback({
        ok: false,
        error: new AspenError('NOT_LEADER', 'leadership changed before the membership change committed'),
      });
      return;
    }
    if (entry.config.votersOutgoing.length > 0) {
      pending.awaitingLeave = true;
      return;
    }
    this.pendingMembership = null;
    pending.callback({ ok: true, value: entry.config });
  }

  private serveReads(): void {
    const appliedIndex = this.options.stateMachine.appliedIndex;
    for (const [requestId, pending] of this.pendingReads) {
      if (pending.index === 0 || pending.index > appliedIndex) continue;
      this.options.observer?.readServed?.(this.id, pending.index, appliedIndex);
      const record = pending.key === null ? undefined : this.options.stateMachine.get(pending.key);
      this.resolveRead(requestId, { ok: true, value: { record, appliedIndex } });
    }
  }

  private resolveRead(requestId: number, outcome: Outcome<ReadServed>): void {
    const pending = this.pendingReads.get(requestId);
    if (pending === undefined) return;
    this.pendingReads.delete(requestId);
    pending.callback(outcome);
  }
}

/**
 * The state machine may have applied entries whose commit index was never synced (it is written
 * only with the next synced batch). Only committed, locally durable entries are applied, so the
 * core starts with its commit index at least there, never behind what the machine shows.
 */
function withAppliedCommit(persisted: PersistedState, appliedIndex: number): PersistedState {
  if (appliedIndex <= persisted.hardState.commit) return persisted;
  const lastIndex = persisted.entries.at(-1)?.index ?? persisted.snapshot?.index ?? 0;
  assert(
    appliedIndex <= lastIndex,
    `state machine applied ${appliedIndex} beyond the durable log (${lastIndex})`,
  );
  return { ...persisted, hardState: { ...persisted.hardState, commit: appliedIndex } };
}

export function toAspenError(rejection: RaftRejection): AspenError {
  switch (rejection.code) {
    case 'not_leader':
      return rejection.leaderId === 0
        ? new AspenError('NO_LEADER', 'no leader is known; an election may be in progress')
        : new AspenError('NOT_LEADER', `node ${rejection.leaderId} is the leader`, {
            leaderId: rejection.leaderId,
          });
    case 'not_initialized':
      return new AspenError('NOT_INITIALIZED', 'the cluster is not initialized: POST /init first');
    case 'already_initialized':
      return new AspenError('ALREADY_INITIALIZED', 'this node is already initialized');
    case 'overloaded':
      return new AspenError('OVERLOADED', `too many ${rejection.what.replace('_', ' ')}; retry later`);
    case 'invalid_config':
      return new AspenError('INVALID_INPUT', rejection.message);
    case 'membership_change_in_progress':
      return new AspenError(
        'MEMBERSHIP_CHANGE_IN_PROGRESS',
        'another membership change is still in progress; retry when it completes',
      );
    case 'learner_not_caught_up':
      return new AspenError(
        'LEARNER_NOT_CAUGHT_UP',
        `learner ${rejection.nodeId} has not caught up (it acknowledged index ${rejection.matchIndex} of ${rejection.requiredIndex}, or not within an election timeout); ` +
          `wait for it to catch up, or remove it with POST /remove-learner`,
      );
  }
}
