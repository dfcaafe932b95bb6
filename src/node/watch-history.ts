import { assert, assertIndex } from '../base/assert.ts';
import { WATCH_HISTORY_REVISIONS_MAX } from '../base/limits.ts';
import type { Entry } from '../raft/types.ts';
import type { Clock, Snapshot } from './interfaces.ts';
import { MemoryKvStateMachine } from './kv-state-machine.ts';
import { applyEntry } from './ready-executor.ts';
import { WatchHub, type WatchBounds } from './watch-hub.ts';

/** The largest snapshot decoded (into a scratch in-memory machine) to rebuild the watch history at start. */
export const WATCH_REBUILD_SNAPSHOT_BYTES_MAX = 64 * 1024 * 1024;
/** The most log entries applied again to rebuild the watch history at start: the history's own bound. */
export const WATCH_REBUILD_ENTRIES_MAX = WATCH_HISTORY_REVISIONS_MAX;

/** What a node starts from: its durable snapshot, the durable log entries after it, and its state machine. */
export interface WatchHistorySource {
  readonly clock: Clock;
  /** The state machine's applied index at start (A). */
  readonly appliedIndex: number;
  /** The durable snapshot (S = its index), or null (S = 0). */
  readonly snapshot: Snapshot | null;
  /** The durable log entries right after the snapshot, in index order (PersistedState.entries). */
  readonly entries: readonly Entry[];
  readonly bounds?: Partial<WatchBounds>;
  /** Tests shrink these; production uses the named limits. */
  readonly snapshotBytesMax?: number;
  readonly entriesMax?: number;
}

export interface StartedWatchHub {
  readonly hub: WatchHub;
  /** The first revision the rebuilt history may hold (S + 1), or null when nothing was rebuilt. */
  readonly rebuiltFrom: number | null;
  /** Why the history starts at the applied index although older entries are in the log (one line), or null. */
  readonly skipped: string | null;
}

/**
 * The node's watch hub at start, with the history its log holds (DESIGN.md §12 "Watch": the Raft
 * log is the history). A durable state machine (LMDB) starts at its applied index A, beyond the
 * snapshot S: the entries (S, A] are in the log but never reach the hub through the executor. They
 * are applied again, in order and exactly as the executor applies them, to a scratch in-memory
 * machine restored from the snapshot, and each outcome goes to a hub that starts at S (whose own
 * bounds evict what is too old). The changes are the ones the durable machine reported: both run
 * the same apply code on the same state.
 *
 * Bounded: a snapshot over snapshotBytesMax or more than entriesMax entries to apply again is not
 * rebuilt; the history then starts at A and `skipped` says why. With A ≤ S nothing is rebuilt: the
 * node restores the snapshot (the hub hears it) and applies the log through the hub.
 */
export function startWatchHub(source: WatchHistorySource): StartedWatchHub {
  const applied = source.appliedIndex;
  assertIndex(applied, 'applied index');
  const base = { clock: source.clock, ...(source.bounds === undefined ? {} : { bounds: source.bounds }) };
  const snapshotIndex = source.snapshot?.meta.index ?? 0;
  const atApplied = (skipped: string | null): StartedWatchHub => ({
    hub: new WatchHub({ ...base, appliedIndex: applied }),
    rebuiltFrom: null,
    skipped,
  });
  if (applied <= snapshotIndex) return atApplied(null);
  if (source.snapshot !== null && source.snapshot.data === null)
    return atApplied(
      `watch: history starts at ${applied}: the snapshot at ${snapshotIndex} is a file larger than the ${WATCH_REBUILD_SNAPSHOT_BYTES_MAX} bytes decoded to rebuild it from the log`,
    );
  const snapshotBytes = source.snapshot?.data?.byteLength ?? 0;
  const snapshotBytesMax = source.snapshotBytesMax ?? WATCH_REBUILD_SNAPSHOT_BYTES_MAX;
  if (snapshotBytes > snapshotBytesMax)
    return atApplied(
      `watch: history starts at ${applied}: the snapshot at ${snapshotIndex} is ${snapshotBytes} bytes, more than the ${snapshotBytesMax} decoded to rebuild it from the log`,
    );
  const entriesMax = source.entriesMax ?? WATCH_REBUILD_ENTRIES_MAX;
  if (applied - snapshotIndex > entriesMax)
    return atApplied(
      `watch: history starts at ${applied}: ${applied - snapshotIndex} entries since the snapshot at ${snapshotIndex}, more than the ${entriesMax} applied again to rebuild it from the log`,
    );
  assert(
    source.entries.length >= applied - snapshotIndex,
    `the durable log holds ${source.entries.length} entries after ${snapshotIndex}, fewer than applied (${applied})`,
  );
  const hub = new WatchHub({ ...base, appliedIndex: snapshotIndex });
  replay(source.snapshot, source.entries.slice(0, applied - snapshotIndex), hub);
  assert(hub.appliedIndex === applied, 'the rebuilt history reaches the applied index');
  return { hub, rebuiltFrom: snapshotIndex + 1, skipped: null };
}

/** Apply `entries` (right after the snapshot) to a scratch machine as the executor does; each outcome to `hub`. */
function replay(snapshot: Snapshot | null, entries: readonly Entry[], hub: WatchHub): void {
  const machine = new MemoryKvStateMachine();
  if (snapshot !== null) {
    assert(snapshot.data !== null, 'only a snapshot with bytes is replayed');
    machine.restore(snapshot.data, snapshot.meta.index, snapshot.meta.config);
  }
  const first = (snapshot?.meta.index ?? 0) + 1;
  for (const [position, entry] of entries.entries()) {
    assert(
      entry.index === first + position,
      `the durable log holds entry ${first + position} for the watch history, found ${entry.index}`,
    );
    hub.applied(entry.index, applyEntry(machine, entry));
  }
}
