import type { WatchService, WatchSink, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { utf8Length, validateKey, validateScan } from '../api/limits.ts';
import type { WatchEvent, WatchRequest } from '../api/types.ts';
import { assert, assertIndex } from '../base/assert.ts';
import {
  WATCH_BUFFER_EVENTS_MAX,
  WATCH_HISTORY_BYTES_MAX,
  WATCH_HISTORY_REVISIONS_MAX,
  WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
  WATCH_PROGRESS_INTERVAL_MS_MAX,
  WATCH_PROGRESS_INTERVAL_MS_MIN,
  WATCHERS_MAX,
} from '../base/limits.ts';
import type { ApplyListener, Clock } from './interfaces.ts';
import type { ApplyOutcome, KvChange } from './kv-state-machine.ts';
import { keyValue } from './write-results.ts';

/**
 * Revisions of history one watcher is walked through per turn (a delivery turn, a resume or a
 * progress timer): a watcher catching up from far back cannot hold the event loop; it goes on in the
 * next turn.
 */
export const WATCH_REVISIONS_PER_TURN_MAX = 256;
/** Bytes counted for one change besides its key and values (the objects that hold it). */
export const WATCH_CHANGE_OVERHEAD_BYTES = 64;
/**
 * The newest revisions that keep their matched events for sharing: every watcher with the same filter
 * (key or prefix, and prev_kv) gets the same array, so a sink can build its frame once per revision.
 * A watcher further behind matches for itself.
 */
export const WATCH_SHARED_REVISIONS_MAX = 64;
/** Filters one revision keeps shared events for (beyond: the watcher matches for itself). */
export const WATCH_SHARED_FILTERS_MAX = 16;
/** What a revision with no matching change gives every filter. */
const NO_EVENTS: readonly WatchEvent[] = Object.freeze([]);

/** The bounds of a hub; tests inject small ones, production uses the named limits. */
export interface WatchBounds {
  readonly watchersMax: number;
  /** Revisions a watcher whose sink is not ready may lag behind the applied index before it is canceled. */
  readonly lagRevisionsMax: number;
  readonly historyRevisionsMax: number;
  readonly historyBytesMax: number;
  readonly revisionsPerTurnMax: number;
}

export const DEFAULT_WATCH_BOUNDS: WatchBounds = {
  watchersMax: WATCHERS_MAX,
  lagRevisionsMax: WATCH_BUFFER_EVENTS_MAX,
  historyRevisionsMax: WATCH_HISTORY_REVISIONS_MAX,
  historyBytesMax: WATCH_HISTORY_BYTES_MAX,
  revisionsPerTurnMax: WATCH_REVISIONS_PER_TURN_MAX,
};

export interface WatchHubOptions {
  readonly clock: Clock;
  /**
   * The index of the last entry the hub is told of before it listens (the applied index, or the
   * snapshot index when startWatchHub feeds it the entries since): history starts after it.
   */
  readonly appliedIndex: number;
  readonly bounds?: Partial<WatchBounds>;
}

/** One revision that changed something, as the history keeps it. */
interface HistoryEntry {
  readonly revision: number;
  readonly changes: readonly KvChange[];
  readonly bytes: number;
  /**
   * Matched events by filter (Watcher.filter), while the entry is among the newest
   * WATCH_SHARED_REVISIONS_MAX of the history (then null); at most WATCH_SHARED_FILTERS_MAX filters.
   */
  shared: Map<string, readonly WatchEvent[]> | null;
}

interface Watcher {
  readonly id: number;
  /** Exactly one is set; a prefix may be "" (every key). */
  readonly key: string | null;
  readonly prefix: string | null;
  readonly prevKv: boolean;
  /** Key or prefix and prev_kv as one string: watchers with equal filters get the same events. */
  readonly filter: string;
  readonly intervalMs: number;
  readonly sink: WatchSink;
  /** The next revision to pass on; cursor - 1 is the last revision whose changes were all passed on. */
  cursor: number;
  /** When events or progress last went to the sink. */
  lastSentMs: number;
  cancelTimer: (() => void) | null;
  closed: boolean;
  /** Its sink was not ready for pending events: delivery turns pass it by until resume (or its timer). */
  blocked: boolean;
  /**
   * Opened without a start revision: the first turn tells it where it starts (a progress at the
   * applied index, unless events came first), so that it can resume without a gap from the start.
   */
  announce: boolean;
}

/** Why a delivery turn stopped. */
type TurnEnd = 'caught-up' | 'blocked' | 'budget' | 'closed';

/**
 * The node's watch source (DESIGN.md §12 "Watch"): it listens to every applied entry, keeps a history
 * of recent changes, and walks each watcher through it in revision order, one `events` call per
 * revision with matching changes, while the watcher's sink is ready.
 *
 * Delivery is never inside Raft's apply path: `applied` records the revision (and its changes) and
 * schedules one delivery turn (clock.setTimer(0)); the turn walks every watcher that is not blocked
 * and checks the blocked ones for lag and compaction (O(1) each). A blocked watcher waits for its
 * resume (or its progress timer). Only when the history's bounds would drop a revision that the
 * watchers that kept up have not been walked through yet (a burst larger than the history within one
 * turn) does `applied` run the pending turn first, so keeping up is never punished as compaction.
 *
 * History: every changed revision in [compactRevision, appliedIndex], bounded by revisions and
 * bytes (the oldest evicted first, moving compactRevision up). It starts after the applied index the
 * hub is built with, and is refilled from the log at node start: a state machine that replays its
 * log (memory storage) passes every entry since the snapshot through the hub; for a durable one
 * (LMDB), which holds them already, startWatchHub (watch-history.ts) applies the entries since the
 * snapshot again to a scratch machine and feeds their changes to a hub built at the snapshot index.
 * So after a restart the history reaches back to the snapshot (within the bounds); a client asking
 * for an older revision gets 410 COMPACTED with compact_revision (and can read the current state).
 *
 * Cancels: a watcher whose sink is not ready and that lags more than lagRevisionsMax revisions behind
 * the applied index ('slow consumer'), one whose cursor falls out of the history, and on a snapshot
 * restore every watcher whose cursor is at or before the snapshot ('compacted'). `open` never calls
 * the sink before it returns: the first delivery runs in a later turn. A watcher opened without a
 * start revision hears a progress at the applied index first (unless events come first), so its
 * client knows where the stream starts and can resume from there without a gap.
 */
export class WatchHub implements ApplyListener, WatchService {
  private readonly clock: Clock;
  private readonly bounds: WatchBounds;
  private readonly watchers = new Map<number, Watcher>();
  /** History in revision order; live entries are history[historyHead..]. */
  private history: (HistoryEntry | undefined)[] = [];
  private historyHead = 0;
  private historyBytes = 0;
  private lastApplied: number;
  private compact: number;
  private nextWatcherId = 1;
  /** Watchers that stopped on the turn budget and go on in the next turn. */
  private readonly unfinished = new Set<Watcher>();
  /** Revisions arrived since the last full turn: the next turn visits every watcher. */
  private arrived = false;
  /**
   * Every watcher that is neither blocked nor unfinished (one catching up from far back) has been
   * walked through this revision: evicting up to it cancels none of the watchers that keep up.
   */
  private settled: number;
  private cancelTurn: (() => void) | null = null;

  constructor(options: WatchHubOptions) {
    assertIndex(options.appliedIndex, 'watch hub applied index');
    this.clock = options.clock;
    this.bounds = { ...DEFAULT_WATCH_BOUNDS, ...options.bounds };
    for (const [name, value] of Object.entries(this.bounds))
      assert(Number.isSafeInteger(value) && value > 0, `watch bound ${name} must be positive, got ${value}`);
    this.lastApplied = options.appliedIndex;
    this.settled = options.appliedIndex;
    this.compact = options.appliedIndex + 1;
  }

  /** The oldest revision a watcher may start from. */
  get compactRevision(): number {
    return this.compact;
  }

  get appliedIndex(): number {
    return this.lastApplied;
  }

  get watcherCount(): number {
    return this.watchers.size;
  }

  /** Changed revisions the history holds, and their counted bytes. */
  get historySize(): { readonly revisions: number; readonly bytes: number } {
    return { revisions: this.history.length - this.historyHead, bytes: this.historyBytes };
  }

  // ------------------------------------------------------------------ ApplyListener

  /** Record the revision and schedule a delivery turn: no watcher is walked here (see the class). */
  applied(index: number, outcome: ApplyOutcome | null): void {
    assert(index === this.lastApplied + 1, `watch hub: applied ${index} after ${this.lastApplied}`);
    this.lastApplied = index;
    const changes = outcome?.changes ?? [];
    if (changes.length > 0)
      this.append({ revision: index, changes, bytes: changesBytes(changes), shared: new Map() });
    this.evict();
    if (this.watchers.size === 0) {
      this.settled = index;
      return;
    }
    this.arrived = true;
    this.scheduleTurn();
  }

  restored(index: number): void {
    assertIndex(index, 'snapshot index');
    this.history = [];
    this.historyHead = 0;
    this.historyBytes = 0;
    // The entries after `index` are applied again (and recorded again) if they were before.
    this.lastApplied = index;
    this.settled = Math.min(this.settled, index);
    this.compact = index + 1;
    for (const watcher of [...this.watchers.values()]) {
      if (watcher.cursor <= index)
        this.cancel(watcher, `compacted: the node installed a snapshot at ${index}`);
    }
  }

  // ------------------------------------------------------------------ WatchService

  open(request: WatchRequest, sink: WatchSink): WatchSubscription {
    const checked = this.check(request);
    const watcher: Watcher = {
      id: this.nextWatcherId,
      key: checked.key,
      prefix: checked.prefix,
      prevKv: request.prev_kv === true,
      filter: filterOf(checked.key, checked.prefix, request.prev_kv === true),
      intervalMs: checked.intervalMs,
      sink,
      cursor: checked.start,
      lastSentMs: this.clock.nowMs(),
      cancelTimer: null,
      closed: false,
      blocked: false,
      announce: request.start_revision === undefined,
    };
    this.nextWatcherId += 1;
    this.watchers.set(watcher.id, watcher);
    this.unfinished.add(watcher);
    this.scheduleTurn();
    this.armProgress(watcher);
    return {
      startRevision: checked.start,
      resume: () => {
        this.deliver(watcher);
      },
      close: () => {
        this.remove(watcher);
      },
    };
  }

  private check(request: WatchRequest): {
    key: string | null;
    prefix: string | null;
    start: number;
    intervalMs: number;
  } {
    const { key, prefix } = request;
    if ((key === undefined) === (prefix === undefined))
      throw new AspenError('INVALID_INPUT', 'give exactly one of key and prefix');
    const problem = key === undefined ? (prefix === '' ? null : validateScan({ prefix })) : validateKey(key);
    if (problem instanceof AspenError) throw problem;
    const start = request.start_revision ?? this.lastApplied + 1;
    if (!Number.isSafeInteger(start) || start < 1)
      throw new AspenError('INVALID_INPUT', `start_revision must be a positive integer, got ${start}`);
    const intervalMs = request.progress_interval_ms ?? WATCH_PROGRESS_INTERVAL_MS_DEFAULT;
    const intervalOk =
      Number.isSafeInteger(intervalMs) &&
      (intervalMs === 0 ||
        (intervalMs >= WATCH_PROGRESS_INTERVAL_MS_MIN && intervalMs <= WATCH_PROGRESS_INTERVAL_MS_MAX));
    if (!intervalOk)
      throw new AspenError(
        'INVALID_INPUT',
        `progress_interval_ms must be 0 or in [${WATCH_PROGRESS_INTERVAL_MS_MIN}, ${WATCH_PROGRESS_INTERVAL_MS_MAX}], got ${intervalMs}`,
      );
    if (start < this.compact)
      throw new AspenError(
        'COMPACTED',
        `revision ${start} is older than the history this node keeps (from ${this.compact})`,
        { compactRevision: this.compact },
      );
    if (this.watchers.size >= this.bounds.watchersMax)
      throw new AspenError(
        'TOO_MANY_WATCHERS',
        `this node serves at most ${this.bounds.watchersMax} watchers`,
      );
    return { key: key ?? null, prefix: prefix ?? null, start, intervalMs };
  }

  // ------------------------------------------------------------------ delivery

  /**
   * Walk one watcher through the history (bounded); one left before the history, or blocked too
   * far behind, is canceled.
   */
  private deliver(watcher: Watcher): void {
    if (watcher.closed) return;
    this.unfinished.delete(watcher);
    watcher.blocked = false;
    if (this.cancelIfBehind(watcher)) return;
    const end = this.walk(watcher);
    if (end === 'caught-up' && watcher.announce && watcher.sink.ready()) this.sendProgress(watcher);
    else if (end === 'budget') {
      this.unfinished.add(watcher);
      this.scheduleTurn();
    } else if (end === 'blocked') {
      watcher.blocked = true;
      this.cancelIfBehind(watcher);
    }
  }

  /**
   * Cancel a watcher whose cursor fell out of the history, or a blocked one more than lagRevisionsMax
   * behind the applied index (no walk: the lag is applied - cursor + 1). True when it was canceled.
   */
  private cancelIfBehind(watcher: Watcher): boolean {
    if (watcher.cursor < this.compact) {
      this.cancel(watcher, `compacted: revision ${watcher.cursor} is no longer in the history`);
      return true;
    }
    const behind = this.lastApplied - (watcher.cursor - 1);
    if (!watcher.blocked || behind <= this.bounds.lagRevisionsMax) return false;
    this.cancel(watcher, `slow consumer: ${behind} revisions behind`);
    return true;
  }

  private walk(watcher: Watcher): TurnEnd {
    let position = this.positionOf(watcher.cursor);
    for (let examined = 0; examined < this.bounds.revisionsPerTurnMax; examined += 1) {
      const entry = this.history[position];
      if (entry === undefined) {
        watcher.cursor = Math.max(watcher.cursor, this.lastApplied + 1);
        return 'caught-up';
      }
      assert(entry.revision >= watcher.cursor, 'the history position is at or after the cursor');
      const events = this.matching(watcher, entry);
      if (events.length > 0) {
        if (!watcher.sink.ready()) return 'blocked';
        watcher.lastSentMs = this.clock.nowMs();
        watcher.announce = false;
        watcher.cursor = entry.revision + 1;
        watcher.sink.events(entry.revision, events);
        if (watcher.closed) return 'closed';
      } else {
        watcher.cursor = entry.revision + 1;
      }
      position += 1;
    }
    return 'budget';
  }

  /** The index in `history` of the first entry at or after `revision` (history.length when none). */
  private positionOf(revision: number): number {
    let low = this.historyHead;
    let high = this.history.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const entry = this.history[middle];
      assert(entry !== undefined, 'a live history slot holds an entry');
      if (entry.revision < revision) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** The entry's events for the watcher's filter: shared with the watchers of the same filter if kept. */
  private matching(watcher: Watcher, entry: HistoryEntry): readonly WatchEvent[] {
    const shared = entry.shared;
    const kept = shared?.get(watcher.filter);
    if (kept !== undefined) return kept;
    let events: WatchEvent[] | null = null;
    for (const change of entry.changes) {
      const matches =
        watcher.key === null ? change.key.startsWith(watcher.prefix ?? '') : change.key === watcher.key;
      if (matches) (events ??= []).push(watchEvent(change, entry.revision, watcher.prevKv));
    }
    const found = events ?? NO_EVENTS;
    if (shared !== null && shared.size < WATCH_SHARED_FILTERS_MAX) shared.set(watcher.filter, found);
    return found;
  }

  /** One delivery turn in a later turn of the clock (one timer at a time). */
  private scheduleTurn(): void {
    if (this.cancelTurn !== null) return;
    this.cancelTurn = this.clock.setTimer(0, () => {
      this.cancelTurn = null;
      this.runTurn();
    });
  }

  /**
   * Revisions arrived: walk every watcher not blocked, and check the blocked ones (lag, compaction);
   * else go on with the watchers that stopped on their turn budget. At most watchersMax watchers,
   * each at most revisionsPerTurnMax revisions.
   */
  private runTurn(): void {
    this.cancelTurn?.();
    this.cancelTurn = null;
    const everyone = this.arrived;
    this.arrived = false;
    const reached = this.lastApplied;
    const waiting = everyone ? [...this.watchers.values()] : [...this.unfinished];
    this.unfinished.clear();
    for (const watcher of waiting) {
      if (watcher.blocked) this.cancelIfBehind(watcher);
      else this.deliver(watcher);
    }
    if (everyone) this.settled = reached;
  }

  // ------------------------------------------------------------------ progress

  private armProgress(watcher: Watcher): void {
    if (watcher.intervalMs === 0 || watcher.closed) return;
    const dueMs = watcher.lastSentMs + watcher.intervalMs;
    watcher.cancelTimer = this.clock.setTimer(Math.max(0, dueMs - this.clock.nowMs()), () => {
      watcher.cancelTimer = null;
      this.progressDue(watcher);
    });
  }

  /**
   * A watcher's progress timer fired: pass on what is pending first; only a watcher that has passed
   * on every revision up to the applied index (and is not waiting for a later start) hears progress.
   */
  private progressDue(watcher: Watcher): void {
    if (watcher.closed) return;
    const nowMs = this.clock.nowMs();
    // The same sum armProgress waited for: with fractional clock readings, `now - last >= interval`
    // can be false while `last + interval - now <= 0`, which re-armed a zero delay forever.
    if (nowMs >= watcher.lastSentMs + watcher.intervalMs) {
      this.deliver(watcher);
      if (isClosed(watcher)) return;
      if (watcher.cursor === this.lastApplied + 1 && watcher.sink.ready()) {
        this.sendProgress(watcher);
        if (isClosed(watcher)) return;
      } else {
        watcher.lastSentMs = nowMs; // try again a full interval later
      }
    }
    this.armProgress(watcher);
  }

  /** Only for a watcher that has passed on every revision up to the applied index. */
  private sendProgress(watcher: Watcher): void {
    assert(watcher.cursor === this.lastApplied + 1, 'progress only when nothing is pending');
    watcher.lastSentMs = this.clock.nowMs();
    watcher.announce = false;
    watcher.sink.progress(this.lastApplied);
  }

  // ------------------------------------------------------------------ history and watchers

  private append(entry: HistoryEntry): void {
    this.history.push(entry);
    this.historyBytes += entry.bytes;
    // The entry that just left the newest WATCH_SHARED_REVISIONS_MAX stops sharing.
    const leaving = this.history.length - 1 - WATCH_SHARED_REVISIONS_MAX;
    if (leaving >= this.historyHead) {
      const entryLeaving = this.history[leaving];
      assert(entryLeaving !== undefined, 'a live history slot holds an entry');
      entryLeaving.shared = null;
    }
  }

  /**
   * Drop the oldest revisions past the bounds (the next turn cancels the watchers left before the
   * history). Before dropping a revision the watchers that kept up have not been walked through, the
   * pending turn runs now.
   */
  private evict(): void {
    const { historyRevisionsMax, historyBytesMax } = this.bounds;
    let evicted = false;
    while (
      this.history.length - this.historyHead > historyRevisionsMax ||
      (this.historyBytes > historyBytesMax && this.historyHead < this.history.length)
    ) {
      const oldest = this.history[this.historyHead];
      assert(oldest !== undefined, 'a live history slot holds an entry');
      if (oldest.revision > this.settled && this.arrived) this.runTurn();
      this.history[this.historyHead] = undefined;
      this.historyHead += 1;
      this.historyBytes -= oldest.bytes;
      this.compact = oldest.revision + 1;
      evicted = true;
    }
    if (!evicted) return;
    if (this.historyHead > this.history.length / 2) {
      this.history = this.history.slice(this.historyHead);
      this.historyHead = 0;
    }
  }

  private cancel(watcher: Watcher, reason: string): void {
    const revision = watcher.cursor - 1;
    this.remove(watcher);
    watcher.sink.canceled(reason, revision);
  }

  private remove(watcher: Watcher): void {
    if (watcher.closed) return;
    watcher.closed = true;
    watcher.cancelTimer?.();
    watcher.cancelTimer = null;
    this.unfinished.delete(watcher);
    this.watchers.delete(watcher.id);
  }
}

/** Read through a call, so a sink callback that closed the watcher is seen (no stale narrowing). */
function isClosed(watcher: Watcher): boolean {
  return watcher.closed;
}

/** Watchers with equal filters see equal events (the key and prefix spaces kept apart). */
function filterOf(key: string | null, prefix: string | null, prevKv: boolean): string {
  assert((key === null) !== (prefix === null), 'a watcher has exactly one of key and prefix');
  return `${prevKv ? 'v' : '-'}${key === null ? `p${prefix ?? ''}` : `k${key}`}`;
}

function changesBytes(changes: readonly KvChange[]): number {
  let bytes = 0;
  for (const change of changes) {
    bytes += WATCH_CHANGE_OVERHEAD_BYTES + utf8Length(change.key);
    bytes += utf8Length(change.record?.value ?? '') + utf8Length(change.prev?.value ?? '');
  }
  return bytes;
}

/** A change as a watcher sees it: a delete has value "" and counters 0; `prev` only with prev_kv. */
export function watchEvent(change: KvChange, revision: number, prevKv: boolean): WatchEvent {
  const now =
    change.record === null
      ? { key: change.key, value: '', create_index: 0, mod_index: 0, version: 0, lease_id: 0 }
      : keyValue(change.key, change.record);
  const event: WatchEvent = { type: change.record === null ? 'delete' : 'put', ...now, revision };
  if (!prevKv) return event;
  return { ...event, prev: change.prev === null ? null : keyValue(change.key, change.prev) };
}
