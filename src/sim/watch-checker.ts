import type { WatchEvent } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { KvChange } from '../node/kv-state-machine.ts';
import type { NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';

/** A change as the checker compares it: what a watcher must see of it. */
interface ChangeLine {
  readonly key: string;
  readonly line: string;
}

function changeLine(change: KvChange): ChangeLine {
  const record = change.record;
  const line =
    record === null
      ? `delete ${change.key}`
      : `put ${change.key}=${record.value} c${record.createIndex} m${record.modIndex} v${record.version} l${record.leaseId}`;
  return { key: change.key, line };
}

function eventLine(event: WatchEvent): string {
  return event.type === 'delete'
    ? `delete ${event.key}`
    : `put ${event.key}=${event.value} c${event.create_index} m${event.mod_index} v${event.version} l${event.lease_id}`;
}

/** Which keys a watcher watches. */
export interface WatchFilter {
  readonly key?: string;
  readonly prefix?: string;
}

function matches(filter: WatchFilter, key: string): boolean {
  return filter.key !== undefined ? key === filter.key : key.startsWith(filter.prefix ?? '');
}

/**
 * The committed history of changes, revision by revision: the first node to apply an index records
 * what it changed, and every later apply of that index (another node, a restarted one) must change
 * exactly the same (watchers on any node see one history).
 */
export class ChangeHistory {
  private readonly byIndex = new Map<number, readonly ChangeLine[]>();
  checks = 0;

  onApplied(nodeId: NodeId, index: number, changes: readonly KvChange[]): void {
    const lines = changes.map(changeLine);
    const first = this.byIndex.get(index);
    if (first === undefined) {
      this.byIndex.set(index, lines);
      return;
    }
    this.checks += 1;
    const a = first.map((change) => change.line).join('; ');
    const b = lines.map((change) => change.line).join('; ');
    if (a !== b) violation(`node ${nodeId} applied index ${index} as [${b}], another node as [${a}]`);
  }

  /** The changes of `revision` a filter selects; undefined when no node has applied it yet. */
  matching(revision: number, filter: WatchFilter): readonly string[] | undefined {
    const lines = this.byIndex.get(revision);
    if (lines === undefined) return undefined;
    return lines.filter((change) => matches(filter, change.key)).map((change) => change.line);
  }
}

/** What one watcher saw so far (it survives the streams it resumes through). */
export interface WatcherLedger {
  readonly id: number;
  readonly filter: WatchFilter;
  /** Every revision up to here was passed on (events or progress); 0 before the first stream starts. */
  lastSeen: number;
}

/** Revisions the gap check walks at once (a watcher never skips more than the history it was sent). */
export const GAP_SCAN_REVISIONS_MAX = 1_000_000;

/**
 * Watch's promises (issue 15), checked on every event a simulated watcher receives: revisions
 * strictly increase (no duplicate, in order), each revision's events are exactly the matching
 * changes of the committed history (all together), and no revision in between had a matching
 * change (no gap) — across crashes of the watcher's node and resumption on another one. A progress
 * event promises that nothing matching is pending up to its revision.
 */
export class WatchChecker {
  private readonly history: ChangeHistory;
  eventsChecked = 0;
  progressChecked = 0;
  resumes = 0;

  constructor(history: ChangeHistory) {
    this.history = history;
  }

  /** A stream opened at `startRevision`: the ledger continues from there (a resume must not skip). */
  onOpened(watcher: WatcherLedger, startRevision: number, nodeId: NodeId): void {
    if (watcher.lastSeen > 0) {
      this.resumes += 1;
      if (startRevision > watcher.lastSeen + 1)
        violation(
          `watcher ${watcher.id} resumed on node ${nodeId} at ${startRevision} after seeing ${watcher.lastSeen}`,
        );
    }
    watcher.lastSeen = startRevision - 1;
  }

  onEvents(watcher: WatcherLedger, nodeId: NodeId, revision: number, events: readonly WatchEvent[]): void {
    this.eventsChecked += events.length;
    this.checkNoGap(watcher, nodeId, revision - 1);
    const expected = this.history.matching(revision, watcher.filter);
    const got = events.map(eventLine);
    if (expected === undefined)
      violation(`watcher ${watcher.id} got revision ${revision} from node ${nodeId}, which no node applied`);
    if (got.length === 0 || expected.join('; ') !== got.join('; '))
      violation(
        `watcher ${watcher.id} (node ${nodeId}) got revision ${revision} as [${got.join('; ')}], the history has [${expected.join('; ')}]`,
      );
    for (const event of events)
      assert(event.revision === revision, `event of revision ${event.revision} sent as ${revision}`);
    watcher.lastSeen = revision;
  }

  onProgress(watcher: WatcherLedger, nodeId: NodeId, revision: number): void {
    this.progressChecked += 1;
    if (revision < watcher.lastSeen)
      violation(`watcher ${watcher.id} got progress ${revision} after revision ${watcher.lastSeen}`);
    this.checkNoGap(watcher, nodeId, revision);
    watcher.lastSeen = revision;
  }

  /** No revision in (lastSeen, upTo] has a matching change (it would have been sent). */
  private checkNoGap(watcher: WatcherLedger, nodeId: NodeId, upTo: number): void {
    if (upTo < watcher.lastSeen)
      violation(
        `watcher ${watcher.id} (node ${nodeId}) went back: revision ${upTo + 1} after ${watcher.lastSeen}`,
      );
    assert(upTo - watcher.lastSeen <= GAP_SCAN_REVISIONS_MAX, 'gap scans are bounded');
    for (let revision = watcher.lastSeen + 1; revision <= upTo; revision += 1) {
      const missed = this.history.matching(revision, watcher.filter);
      if (missed === undefined)
        violation(
          `watcher ${watcher.id} (node ${nodeId}) passed revision ${revision}, which no node applied`,
        );
      if (missed.length > 0)
        violation(
          `watcher ${watcher.id} (node ${nodeId}) skipped revision ${revision} [${missed.join('; ')}]`,
        );
    }
  }
}

function violation(message: string): never {
  throw new SimViolation('safety', message);
}
