import { AspenError } from '../api/errors.ts';
import type { WriteCommand } from '../api/types.ts';
import { assert } from '../raft/assert.ts';
import type { RaftConfig } from '../raft/config.ts';
import { RaftCore, type RaftStatus } from '../raft/core.ts';
import type { RaftRejection } from '../raft/errors.ts';
import type { Prng } from '../raft/prng.ts';
import type { Entry, MembershipConfig, Message, PersistedState, Ready } from '../raft/types.ts';
import { BoundedQueue } from './bounded-queue.ts';
import { decodeCommand, encodeCommand } from './codec.ts';
import type { Clock, LogStore, RaftNodeObserver, Transport } from './interfaces.ts';
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

export type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: AspenError };
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
  | { readonly kind: 'read'; readonly key: string; readonly callback: Callback<ReadServed> }
  | { readonly kind: 'init'; readonly config: MembershipConfig; readonly callback: Callback<null> };

interface PendingWrite {
  readonly term: number;
  readonly callback: Callback<WriteApplied>;
}

interface PendingRead {
  readonly key: string;
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
}

/**
 * The seed's RaftActor: one owner of one RaftCore behind a bounded mailbox. A turn drains the
 * mailbox into the core, then runs one Ready cycle in the asserted order: persist (one synced write
 * for the whole batch: group commit), send, apply, answer, advance. Nothing steps the core while a
 * batch is being persisted; what arrives meanwhile waits in the mailbox and joins the next batch.
 */
export class RaftNode {
  readonly id: number;
  private readonly core: RaftCore;
  private readonly options: RaftNodeOptions;
  private readonly mailbox: BoundedQueue<MailboxItem>;
  private readonly pendingWrites = new Map<number, PendingWrite>();
  private readonly pendingReads = new Map<number, PendingRead>();
  private nextReadId = 1;
  private turnScheduled = false;
  private persisting = false;
  private stopped = false;
  private started = false;
  private cancelTick: () => void = () => undefined;
  messagesDropped = 0;

  constructor(options: RaftNodeOptions) {
    if (!Number.isSafeInteger(options.tickMs) || options.tickMs < TICK_MS_MIN || options.tickMs > TICK_MS_MAX) {
      throw new RangeError(`tickMs must be in [${TICK_MS_MIN}, ${TICK_MS_MAX}], got ${options.tickMs}`);
    }
    this.options = options;
    this.id = options.config.id;
    this.core = new RaftCore(options.config, options.prng, options.persisted);
    this.mailbox = new BoundedQueue(options.mailboxMessagesMax ?? MAILBOX_MESSAGES_MAX);
  }

  /** Start ticking the core every tickMs of the clock. */
  start(): void {
    assert(!this.started, 'start a node once');
    this.started = true;
    this.scheduleTick();
  }

  private scheduleTick(): void {
    this.cancelTick = this.options.clock.setTimer(this.options.tickMs, () => {
      if (this.stopped) return;
      this.tick();
      this.scheduleTick();
    });
  }

  // ---------------------------------------------------------------- inputs (any time)

  /** A Raft message from the network. Dropped (and counted) when the mailbox is full. */
  deliver(message: Message): void {
    if (this.stopped) return;
    if (!this.enqueue({ kind: 'message', message })) this.messagesDropped += 1;
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

  init(config: MembershipConfig, callback: Callback<null>): void {
    this.enqueueRequest({ kind: 'init', config, callback }, callback);
  }

  status(): RaftStatus {
    return this.core.status();
  }

  /** The entry at `index` in this node's in-memory log (for checkers and diagnostics). */
  logEntry(index: number): Entry | undefined {
    return this.core.log.entry(index);
  }

  get clock(): Clock {
    return this.options.clock;
  }

  get stateMachine(): StateMachine {
    return this.options.stateMachine;
  }

  /** Stop taking work and fail everything that waits (the caller treats writes as indeterminate). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cancelTick();
    const error = new AspenError('SHUTTING_DOWN', `node ${this.id} is shutting down`, { definite: false });
    for (const pending of this.pendingWrites.values()) pending.callback({ ok: false, error });
    for (const pending of this.pendingReads.values()) pending.callback({ ok: false, error });
    this.pendingWrites.clear();
    this.pendingReads.clear();
    for (let item = this.mailbox.shift(); item !== undefined; item = this.mailbox.shift()) {
      if (item.kind === 'write' || item.kind === 'read' || item.kind === 'init') item.callback({ ok: false, error });
    }
  }

  private enqueueRequest(item: MailboxItem, callback: Callback<never>): void {
    if (this.stopped) {
      callback({ ok: false, error: new AspenError('SHUTTING_DOWN', `node ${this.id} is shutting down`) });
      return;
    }
    if (!this.enqueue(item)) {
      callback({ ok: false, error: new AspenError('OVERLOADED', `node ${this.id} mailbox is full (${this.mailbox.capacity})`) });
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
      const item = this.mailbox.shift();
      if (item === undefined) break;
      this.handle(item);
    }
    if (this.core.hasReady()) this.startReady();
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
        item.callback(result.ok ? { ok: true, value: null } : { ok: false, error: toAspenError(result.error) });
        return;
      }
    }
  }

  private handleWrite(command: WriteCommand, callback: Callback<WriteApplied>): void {
    if (this.pendingWrites.size >= PENDING_WRITES_MAX) {
      callback({ ok: false, error: new AspenError('OVERLOADED', `${PENDING_WRITES_MAX} writes are already waiting; retry later`) });
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
      const error = new AspenError('NOT_LEADER', 'leadership changed; the write may or may not have been applied', { definite: false });
      displaced.callback({ ok: false, error });
    }
    this.pendingWrites.set(result.value.index, { term: result.value.term, callback });
  }

  private handleRead(key: string, callback: Callback<ReadServed>): void {
    if (this.pendingReads.size >= PENDING_READS_MAX) {
      callback({ ok: false, error: new AspenError('OVERLOADED', `${PENDING_READS_MAX} reads are already waiting; retry later`) });
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
    if (ready.hardState === null && ready.entries.length === 0) {
      this.finishReady(ready);
      return;
    }
    const batch = { hardState: ready.hardState, entries: ready.entries };
    this.options.logStore.persist(batch, (error) => {
      if (this.stopped) return;
      // A failed sync leaves us unsure what is on disk: stop loudly rather than acknowledge.
      if (error !== null) throw new Error(`node ${this.id}: log store failed to persist`, { cause: error });
      this.options.observer?.persisted?.(this.id, batch);
      this.finishReady(ready);
    });
  }

  /** After persisting: send, apply, answer, advance — the order etcd's Ready contract requires. */
  private finishReady(ready: Ready): void {
    assert(this.persisting, 'finishReady only after startReady');
    this.options.observer?.ready?.(this.id, ready);
    for (const message of ready.messages) this.options.transport.send(message);
    for (const entry of ready.committedEntries) this.applyEntry(entry);
    for (const failure of ready.readFailures) {
      this.resolveRead(failure.requestId, { ok: false, error: new AspenError('NOT_LEADER', 'leadership lost before the read was confirmed', { leaderId: failure.leaderId || null }) });
    }
    for (const state of ready.readStates) {
      const pending = this.pendingReads.get(state.requestId);
      if (pending !== undefined) pending.index = state.index;
    }
    this.serveReads();
    this.core.advance(ready);
    this.persisting = false;
    if (this.core.hasReady() || this.mailbox.length > 0) this.scheduleTurn();
  }

  private applyEntry(entry: Entry): void {
    const machine = this.options.stateMachine;
    // Applying is idempotent by index: a state machine that already holds the entry skips it.
    if (entry.index <= machine.appliedIndex) return;
    let outcome: ApplyOutcome | null = null;
    if (entry.kind === 'command') outcome = machine.apply(entry.index, decodeCommand(entry.data));
    else machine.applyNoop(entry.index);
    this.options.observer?.applied?.(this.id, entry);
    const pending = this.pendingWrites.get(entry.index);
    if (pending === undefined) return;
    this.pendingWrites.delete(entry.index);
    if (pending.term === entry.term && outcome !== null) {
      pending.callback({ ok: true, value: { index: entry.index, outcome } });
    } else {
      // Another leader's entry took this index: ours can never be applied.
      const error = new AspenError('NOT_LEADER', 'leadership changed before the write committed', { leaderId: this.core.status().leaderId || null });
      pending.callback({ ok: false, error });
    }
  }

  private serveReads(): void {
    const appliedIndex = this.options.stateMachine.appliedIndex;
    for (const [requestId, pending] of this.pendingReads) {
      if (pending.index === 0 || pending.index > appliedIndex) continue;
      this.options.observer?.readServed?.(this.id, pending.index, appliedIndex);
      this.resolveRead(requestId, { ok: true, value: { record: this.options.stateMachine.get(pending.key), appliedIndex } });
    }
  }

  private resolveRead(requestId: number, outcome: Outcome<ReadServed>): void {
    const pending = this.pendingReads.get(requestId);
    if (pending === undefined) return;
    this.pendingReads.delete(requestId);
    pending.callback(outcome);
  }
}

export function toAspenError(rejection: RaftRejection): AspenError {
  switch (rejection.code) {
    case 'not_leader':
      return rejection.leaderId === 0
        ? new AspenError('NO_LEADER', 'no leader is known; an election may be in progress')
        : new AspenError('NOT_LEADER', `node ${rejection.leaderId} is the leader`, { leaderId: rejection.leaderId });
    case 'not_initialized':
      return new AspenError('NOT_INITIALIZED', 'the cluster is not initialized: POST /init first');
    case 'already_initialized':
      return new AspenError('ALREADY_INITIALIZED', 'this node is already initialized');
    case 'overloaded':
      return new AspenError('OVERLOADED', `too many ${rejection.what.replace('_', ' ')}; retry later`);
    case 'invalid_config':
      return new AspenError('INVALID_INPUT', rejection.message);
  }
}
