import type { LeaderResult } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { QueueKey } from './lock-checker.ts';

/** Leader changes remembered per election (the oldest half is forgotten at the bound; runs have far fewer). */
export const LEADER_CHANGES_PER_NAME_MAX = 100_000;
/** Observation streams followed at once (the oldest is forgotten first; runs open far fewer). */
export const OBSERVE_STREAMS_MAX = 100_000;

/** The leader of an election from one index on (null: none). */
interface LeaderChange {
  readonly index: number;
  readonly leader: QueueKey | null;
}

/**
 * The promise of `/election/observe` (issue 16), from the committed history: an observation stream
 * reports the leader as of each revision it names (key, create revision, value — or none), its
 * revisions increase, and it misses no change: between two reports of one stream the leader did not
 * change (a change at revision r is reported at r). Fed by the LockChecker, which follows the owner
 * of each election name through the first apply of every index.
 */
export class ObserveChecker {
  private readonly history = new Map<string, LeaderChange[]>();
  /** Stream → the revision of its last report. */
  private readonly lastReport = new Map<number, number>();
  private readonly processedIndex: () => number;
  private readonly fail: (message: string) => void;
  observed = 0;

  constructor(names: readonly string[], processedIndex: () => number, fail: (message: string) => void) {
    for (const name of names) this.history.set(name, [{ index: 0, leader: null }]);
    this.processedIndex = processedIndex;
    this.fail = fail;
  }

  /** The committed history: from `index` on, `leader` leads `name` (its key, token or value changed). */
  onLeader(name: string, index: number, leader: QueueKey | null): void {
    const changes = this.history.get(name);
    assert(changes !== undefined, `election ${name} is checked`);
    const last = changes[changes.length - 1];
    assert(last !== undefined && last.index < index, 'leader changes arrive in index order');
    if (changes.length >= LEADER_CHANGES_PER_NAME_MAX) changes.splice(0, LEADER_CHANGES_PER_NAME_MAX / 2);
    changes.push({ index, leader });
  }

  /** Stream `stream` of an observer of `name` reported `leader` as of `revision`. */
  onObserved(stream: number, name: string, revision: number, leader: LeaderResult | null): void {
    const changes = this.history.get(name);
    assert(changes !== undefined, `election ${name} is checked`);
    this.observed += 1;
    const where = `observation stream ${stream} of ${name} at revision ${revision}`;
    if (revision > this.processedIndex()) {
      this.fail(`${where}: no node had applied that revision`);
      return;
    }
    const previous = this.lastReport.get(stream);
    this.remember(stream, revision);
    const at = lastAtOrBefore(changes, revision);
    const current = changes[at];
    // Forgotten (a very long run): nothing left to compare with.
    if (current === undefined || current.index > revision) return;
    if (!sameLeader(current.leader, leader)) {
      this.fail(`${where} reported ${describe(leader)}; the history says ${describe(current.leader)}`);
      return;
    }
    if (previous !== undefined && revision <= previous)
      this.fail(`${where} came after a report at revision ${previous}`);
    else if (previous !== undefined) this.checkNoChangeBetween(changes, where, previous, revision);
  }

  /** Stream `stream` of an observer of `name` says nothing changed up to `revision`. */
  onProgress(stream: number, name: string, revision: number): void {
    const changes = this.history.get(name);
    const previous = this.lastReport.get(stream);
    assert(changes !== undefined, `election ${name} is checked`);
    if (previous === undefined || revision <= previous) return;
    this.checkNoChangeBetween(
      changes,
      `progress of observation stream ${stream} of ${name}`,
      previous,
      revision + 1,
    );
  }

  /** A change at an index in (previous, next) went unreported by a stream whose reports were at both ends. */
  private checkNoChangeBetween(
    changes: readonly LeaderChange[],
    where: string,
    previous: number,
    next: number,
  ): void {
    if ((changes[0]?.index ?? 0) > previous) return; // forgotten
    const after = changes[lastAtOrBefore(changes, previous) + 1];
    if (after !== undefined && after.index < next)
      this.fail(
        `${where}: the leader changed to ${describe(after.leader)} at revision ${after.index}, after the stream's ` +
          `report at revision ${previous}, and was not reported`,
      );
  }

  private remember(stream: number, revision: number): void {
    const oldest = this.lastReport.keys().next();
    if (!this.lastReport.has(stream) && this.lastReport.size >= OBSERVE_STREAMS_MAX && oldest.done !== true)
      this.lastReport.delete(oldest.value);
    this.lastReport.set(stream, revision);
  }
}

/** The position of the last change at or before `revision` (0 when all are later: forgotten). */
function lastAtOrBefore(changes: readonly LeaderChange[], revision: number): number {
  let low = 0;
  let high = changes.length - 1;
  // bounded: a binary search, log2(LEADER_CHANGES_PER_NAME_MAX) rounds
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if ((changes[middle]?.index ?? Infinity) <= revision) low = middle;
    else high = middle - 1;
  }
  return low;
}

function sameLeader(expected: QueueKey | null, reported: LeaderResult | null): boolean {
  if (expected === null || reported === null) return expected === reported;
  return (
    expected.key === reported.key && expected.token === reported.revision && expected.value === reported.value
  );
}

function describe(leader: Pick<QueueKey, 'key' | 'value'> | null): string {
  return leader === null ? 'no leader' : `${leader.key} = ${JSON.stringify(leader.value)}`;
}
