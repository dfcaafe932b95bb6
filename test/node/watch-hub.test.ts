import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { WatchSink } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { WatchEvent, WatchRequest } from '../../src/api/types.ts';
import { KEY_BYTES_MAX, WATCH_PROGRESS_INTERVAL_MS_DEFAULT } from '../../src/base/limits.ts';
import {
  WATCH_SHARED_FILTERS_MAX,
  WATCH_SHARED_REVISIONS_MAX,
  WatchHub,
  type WatchBounds,
} from '../../src/node/watch-hub.ts';
import { ManualClock } from '../support/manual-clock.ts';
import { del, outcome, put, record } from '../support/watch-changes.ts';

type Seen =
  | { kind: 'events'; revision: number; events: readonly WatchEvent[] }
  | { kind: 'progress'; revision: number }
  | { kind: 'canceled'; reason: string; revision: number };

class RecordingSink implements WatchSink {
  readonly seen: Seen[] = [];
  isReady = true;
  events(revision: number, events: readonly WatchEvent[]): void {
    expect(this.canceled_()).toBe(false);
    this.seen.push({ kind: 'events', revision, events });
  }
  progress(revision: number): void {
    this.seen.push({ kind: 'progress', revision });
  }
  canceled(reason: string, revision: number): void {
    this.seen.push({ kind: 'canceled', reason, revision });
  }
  ready(): boolean {
    return this.isReady;
  }
  canceled_(): boolean {
    return this.seen.some((item) => item.kind === 'canceled');
  }
  revisions(): number[] {
    return this.seen.flatMap((item) => (item.kind === 'events' ? [item.revision] : []));
  }
  keys(): string[] {
    return this.seen.flatMap((item) => (item.kind === 'events' ? item.events.map((event) => event.key) : []));
  }
}

/** Counts how often the hub asks whether the sink is ready (each walk of a watcher asks). */
class CountingSink extends RecordingSink {
  readyCalls = 0;
  override ready(): boolean {
    this.readyCalls += 1;
    return super.ready();
  }
}

function hub(appliedIndex = 0, bounds: Partial<WatchBounds> = {}) {
  const clock = new ManualClock();
  return { clock, hub: new WatchHub({ clock, appliedIndex, bounds }) };
}

function openFails(target: WatchHub, request: WatchRequest): AspenError {
  try {
    target.open(request, new RecordingSink());
  } catch (error) {
    expect(error).toBeInstanceOf(AspenError);
    return error as AspenError;
  }
  throw new Error(`open(${JSON.stringify(request)}) did not fail`);
}

describe('WatchHub', () => {
  it('passes each revision’s matching changes in one call, in order, from the next revision by default', () => {
    const { clock, hub: watch } = hub(10);
    watch.applied(11, outcome(11, [put('a', '1', 11)]));
    const sink = new RecordingSink();
    watch.open({ prefix: 'a', start_revision: 12 }, sink);
    expect(sink.seen).toEqual([]); // never called inside open
    watch.applied(12, outcome(12, [put('a/1', 'x', 12), put('b', 'y', 12), put('a/2', 'z', 12)]));
    watch.applied(13, null);
    watch.applied(14, outcome(14, [del('a/1', record('x', 12))]));
    clock.advance(0);
    expect(sink.revisions()).toEqual([12, 14]);
    expect(sink.keys()).toEqual(['a/1', 'a/2', 'a/1']);
    const deleteEvent = sink.seen[1];
    expect(deleteEvent).toEqual({
      kind: 'events',
      revision: 14,
      events: [
        {
          type: 'delete',
          key: 'a/1',
          value: '',
          create_index: 0,
          mod_index: 0,
          version: 0,
          lease_id: 0,
          revision: 14,
        },
      ],
    });
  });

  it('filters an exact key, and "" as a prefix watches everything', () => {
    const { clock, hub: watch } = hub();
    const exact = new RecordingSink();
    const all = new RecordingSink();
    watch.open({ key: 'a' }, exact);
    watch.open({ prefix: '' }, all);
    clock.advance(0);
    watch.applied(1, outcome(1, [put('a', '1', 1), put('ab', '2', 1)]));
    watch.applied(2, outcome(2, [put('ab', '3', 2)]));
    expect(exact.keys()).toEqual([]); // applied() only records: delivery is the next turn
    clock.advance(0);
    expect(exact.keys()).toEqual(['a']);
    expect(all.keys()).toEqual(['a', 'ab', 'ab']);
  });

  it('replays from a start revision in the history, and prev only with prev_kv', () => {
    const { clock, hub: watch } = hub();
    watch.applied(1, outcome(1, [put('k', 'v1', 1)]));
    watch.applied(2, outcome(2, [put('k', 'v2', 2, record('v1', 1))]));
    const plain = new RecordingSink();
    const withPrev = new RecordingSink();
    watch.open({ key: 'k', start_revision: 2 }, plain);
    watch.open({ key: 'k', start_revision: 1, prev_kv: true }, withPrev);
    clock.advance(0);
    expect(plain.revisions()).toEqual([2]);
    expect(plain.seen[0]).toMatchObject({ events: [{ value: 'v2' }] });
    expect((plain.seen[0] as { events: readonly WatchEvent[] }).events[0]).not.toHaveProperty('prev');
    expect(withPrev.revisions()).toEqual([1, 2]);
    expect(withPrev.seen[0]).toMatchObject({ events: [{ prev: null }] });
    expect(withPrev.seen[1]).toMatchObject({
      events: [{ prev: { key: 'k', value: 'v1', create_index: 1, mod_index: 1, version: 1, lease_id: 0 } }],
    });
  });

  it('without a start revision the first turn tells where the stream starts, even without progress', () => {
    const { clock, hub: watch } = hub(7);
    const quiet = new RecordingSink();
    const busy = new RecordingSink();
    expect(watch.open({ prefix: 'a', progress_interval_ms: 0 }, quiet).startRevision).toBe(8);
    expect(watch.open({ prefix: '' }, busy).startRevision).toBe(8);
    expect(watch.open({ prefix: '', start_revision: 12 }, new RecordingSink()).startRevision).toBe(12);
    watch.applied(8, outcome(8, [put('b', '1', 8)])); // before the first turn
    clock.advance(0);
    expect(quiet.seen).toEqual([{ kind: 'progress', revision: 8 }]);
    expect(busy.seen).toEqual([
      { kind: 'events', revision: 8, events: [expect.objectContaining({ key: 'b' })] },
    ]);
    clock.advance(1_000);
    expect(quiet.seen).toHaveLength(1);
  });

  it('a progress timer on a fractional clock fires once per interval (no zero-delay re-arming)', () => {
    // Found by the simulator's drifting clocks: 2449.3981588715806 - 2026.3981588715808 < 423, yet
    // 2026.3981588715808 + 423 - 2449.3981588715806 <= 0, so the timer re-armed itself at once forever.
    const { clock, hub: watch } = hub(5);
    clock.advance(2026.3981588715808);
    const sink = new RecordingSink();
    watch.open({ prefix: '', start_revision: 6, progress_interval_ms: 423 }, sink);
    clock.advance(423);
    expect(sink.seen).toEqual([{ kind: 'progress', revision: 5 }]);
    expect(clock.pending).toBe(1);
  });

  it('a future start revision waits for it', () => {
    const { clock, hub: watch } = hub(5);
    const sink = new RecordingSink();
    watch.open({ prefix: '', start_revision: 8, progress_interval_ms: 100 }, sink);
    for (let index = 6; index <= 9; index += 1) watch.applied(index, outcome(index, [put('k', 'v', index)]));
    clock.advance(0);
    expect(sink.revisions()).toEqual([8, 9]);
  });

  it('refuses a start revision before the history: COMPACTED with the compact revision', () => {
    const { hub: watch } = hub(41);
    expect(watch.compactRevision).toBe(42);
    const error = openFails(watch, { key: 'k', start_revision: 41 });
    expect(error.code).toBe('COMPACTED');
    expect(error.compactRevision).toBe(42);
    expect(error.toJSON().error).toMatchObject({ code: 'COMPACTED', compact_revision: 42 });
    expect(() => watch.open({ key: 'k', start_revision: 42 }, new RecordingSink())).not.toThrow();
  });

  it('validates the request', () => {
    const { hub: watch } = hub();
    const cases: [WatchRequest, string][] = [
      [{}, 'INVALID_INPUT'],
      [{ key: 'a', prefix: 'a' }, 'INVALID_INPUT'],
      [{ key: '' }, 'INVALID_INPUT'],
      [{ key: 'x'.repeat(KEY_BYTES_MAX + 1) }, 'KEY_TOO_LARGE'],
      [{ prefix: 'é'.repeat(KEY_BYTES_MAX / 2 + 1) }, 'KEY_TOO_LARGE'],
      [{ key: 'a', start_revision: 0 }, 'INVALID_INPUT'],
      [{ key: 'a', start_revision: 1.5 }, 'INVALID_INPUT'],
      [{ key: 'a', start_revision: 2 ** 53 }, 'INVALID_INPUT'],
      [{ key: 'a', progress_interval_ms: 99 }, 'INVALID_INPUT'],
      [{ key: 'a', progress_interval_ms: 600_001 }, 'INVALID_INPUT'],
      [{ key: 'a', progress_interval_ms: -1 }, 'INVALID_INPUT'],
    ];
    for (const [request, code] of cases)
      expect(openFails(watch, request).code, JSON.stringify(request)).toBe(code);
    expect(watch.watcherCount).toBe(0);
    watch.open({ key: 'x'.repeat(KEY_BYTES_MAX), progress_interval_ms: 0 }, new RecordingSink());
    watch.open({ prefix: '', progress_interval_ms: 100 }, new RecordingSink());
    expect(watch.watcherCount).toBe(2);
  });

  it('bounds the watchers: TOO_MANY_WATCHERS, and a closed watcher frees its place', () => {
    const { hub: watch } = hub(0, { watchersMax: 2 });
    watch.open({ key: 'a' }, new RecordingSink());
    const second = watch.open({ key: 'b' }, new RecordingSink());
    expect(openFails(watch, { key: 'c' }).code).toBe('TOO_MANY_WATCHERS');
    second.close();
    second.close(); // twice is harmless
    expect(() => watch.open({ key: 'c' }, new RecordingSink())).not.toThrow();
  });

  it('holds back while the sink is not ready and goes on at resume, without gap or duplicate', () => {
    const { clock, hub: watch } = hub();
    const sink = new RecordingSink();
    const subscription = watch.open({ prefix: '' }, sink);
    clock.advance(0);
    watch.applied(1, outcome(1, [put('a', '1', 1)]));
    clock.advance(0);
    sink.isReady = false;
    watch.applied(2, outcome(2, [put('a', '2', 2)]));
    clock.advance(0);
    watch.applied(3, outcome(3, [put('a', '3', 3)]));
    clock.advance(0);
    expect(sink.revisions()).toEqual([1]);
    sink.isReady = true;
    subscription.resume();
    expect(sink.revisions()).toEqual([1, 2, 3]);
    subscription.resume();
    expect(sink.revisions()).toEqual([1, 2, 3]);
  });

  it('cancels a consumer that lags more than the bound while not ready', () => {
    const { clock, hub: watch } = hub(0, { lagRevisionsMax: 3 });
    const slow = new RecordingSink();
    const idle = new RecordingSink();
    watch.open({ prefix: 'a', start_revision: 1 }, slow);
    watch.open({ prefix: 'zzz', start_revision: 1 }, idle); // not ready either, but nothing of its is pending
    clock.advance(0);
    slow.isReady = false;
    idle.isReady = false;
    watch.applied(1, outcome(1, [put('a', '1', 1)]));
    for (let index = 2; index <= 3; index += 1) watch.applied(index, null);
    clock.advance(0);
    expect(slow.canceled_()).toBe(false); // 3 behind: at the bound
    watch.applied(4, null);
    expect(slow.canceled_()).toBe(false); // checked in the delivery turn, not inside applied()
    clock.advance(0);
    expect(slow.seen).toEqual([
      { kind: 'canceled', reason: 'slow consumer: 4 revisions behind', revision: 0 },
    ]);
    expect(idle.canceled_()).toBe(false);
    expect(watch.watcherCount).toBe(1);
  });

  it('cancels a watcher whose cursor falls out of the bounded history; the compact revision moves up', () => {
    const { clock, hub: watch } = hub(0, { historyRevisionsMax: 3, lagRevisionsMax: 1_000 });
    const slow = new RecordingSink();
    const fast = new RecordingSink();
    watch.open({ prefix: '' }, slow);
    watch.open({ prefix: '' }, fast);
    clock.advance(0);
    watch.applied(1, outcome(1, [put('a', '1', 1)]));
    clock.advance(0);
    slow.isReady = false;
    for (let index = 2; index <= 4; index += 1) {
      watch.applied(index, outcome(index, [put('a', 'x', index)]));
      clock.advance(0);
    }
    expect(watch.compactRevision).toBe(2);
    expect(slow.canceled_()).toBe(false);
    watch.applied(5, outcome(5, [put('a', 'y', 5)]));
    expect(watch.compactRevision).toBe(3);
    clock.advance(0);
    expect(slow.seen.at(-1)).toMatchObject({ kind: 'canceled', revision: 1 });
    expect((slow.seen.at(-1) as { reason: string }).reason).toMatch(/^compacted/);
    expect(fast.revisions()).toEqual([1, 2, 3, 4, 5]);
    expect(watch.historySize.revisions).toBe(3);
    expect(openFails(watch, { prefix: '', start_revision: 2 }).compactRevision).toBe(3);
  });

  it('bounds the history by bytes (keys and values counted)', () => {
    const { hub: watch } = hub(0, { historyBytesMax: 1_000 });
    for (let index = 1; index <= 20; index += 1)
      watch.applied(index, outcome(index, [put('k', 'v'.repeat(100), index)]));
    const { bytes, revisions } = watch.historySize;
    expect(bytes).toBeLessThanOrEqual(1_000);
    expect(revisions).toBeGreaterThan(1);
    expect(watch.compactRevision).toBe(20 - revisions + 1);
  });

  it('a snapshot restore cancels the watchers it skips over and restarts the history', () => {
    const { clock, hub: watch } = hub();
    const caughtUp = new RecordingSink();
    const future = new RecordingSink();
    watch.applied(1, outcome(1, [put('a', '1', 1)]));
    watch.open({ prefix: '', start_revision: 2, progress_interval_ms: 0 }, caughtUp);
    watch.open({ prefix: '', start_revision: 50 }, future);
    clock.advance(0);
    watch.restored(10);
    expect(caughtUp.seen).toEqual([
      { kind: 'canceled', reason: 'compacted: the node installed a snapshot at 10', revision: 1 },
    ]);
    expect(future.canceled_()).toBe(false);
    expect(watch.compactRevision).toBe(11);
    expect(watch.historySize).toEqual({ revisions: 0, bytes: 0 });
    expect(openFails(watch, { prefix: '', start_revision: 10 }).code).toBe('COMPACTED');
    watch.applied(11, outcome(11, [put('a', '2', 11)]));
    expect(() => watch.open({ prefix: '', start_revision: 11 }, new RecordingSink())).not.toThrow();
  });

  it('progress only when nothing is pending, never ahead of an unsent event', () => {
    const { clock, hub: watch } = hub();
    const sink = new RecordingSink();
    watch.open({ prefix: 'a', start_revision: 1, progress_interval_ms: 100 }, sink);
    clock.advance(99);
    expect(sink.seen).toEqual([]);
    clock.advance(1);
    expect(sink.seen).toEqual([{ kind: 'progress', revision: 0 }]);
    watch.applied(1, outcome(1, [put('b', '1', 1)])); // not matching
    clock.advance(100);
    expect(sink.seen.at(-1)).toEqual({ kind: 'progress', revision: 1 });
    sink.isReady = false;
    watch.applied(2, outcome(2, [put('a', '2', 2)]));
    watch.applied(3, outcome(3, [put('b', '3', 3)]));
    clock.advance(500);
    expect(sink.seen).toHaveLength(2); // pending event: no progress
    sink.isReady = true;
    clock.advance(100); // the timer passes on the event first, then tells progress
    expect(sink.seen.slice(2)).toEqual([
      { kind: 'events', revision: 2, events: [expect.objectContaining({ key: 'a' }) as WatchEvent] },
      { kind: 'progress', revision: 3 },
    ]);
  });

  it('events reset the progress interval; 0 means no progress; the default is used when absent', () => {
    const { clock, hub: watch } = hub();
    const busy = new RecordingSink();
    const none = new RecordingSink();
    const byDefault = new RecordingSink();
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 100 }, busy);
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, none);
    watch.open({ prefix: '', start_revision: 1 }, byDefault);
    for (let index = 1; index <= 10; index += 1) {
      clock.advance(50);
      watch.applied(index, outcome(index, [put('k', 'v', index)]));
    }
    expect(busy.seen.every((item) => item.kind === 'events')).toBe(true);
    clock.advance(WATCH_PROGRESS_INTERVAL_MS_DEFAULT);
    expect(busy.seen.filter((item) => item.kind === 'progress').length).toBeGreaterThan(10);
    expect(none.seen.filter((item) => item.kind === 'progress')).toEqual([]);
    expect(byDefault.seen.filter((item) => item.kind === 'progress')).toEqual([
      { kind: 'progress', revision: 10 },
    ]);
  });

  it('watchers of one filter share each recent revision’s events; others match for themselves', () => {
    const { clock, hub: watch } = hub(0);
    const same = [new RecordingSink(), new RecordingSink()];
    for (const sink of same) watch.open({ prefix: 'a', start_revision: 1 }, sink);
    const withPrev = new RecordingSink();
    watch.open({ prefix: 'a', start_revision: 1, prev_kv: true }, withPrev);
    const byKey = new RecordingSink();
    watch.open({ key: 'a', start_revision: 1 }, byKey);
    clock.advance(0);
    watch.applied(1, outcome(1, [put('a', '1', 1), put('ab', '2', 1)]));
    clock.advance(0);
    const [first, second] = same.map((sink) => sink.seen[0]);
    expect(first?.kind === 'events' && second?.kind === 'events').toBe(true);
    if (first?.kind !== 'events' || second?.kind !== 'events') return;
    expect(second.events).toBe(first.events); // one array for both
    expect(withPrev.seen[0]).toMatchObject({ kind: 'events', revision: 1 });
    expect(withPrev.seen[0]).not.toEqual(first); // prev_kv is another filter
    expect(byKey.keys()).toEqual(['a']); // the key "a" is not the prefix "a"
    // Past the shared window a watcher starting far back still gets every revision, equal to the others'.
    const sharedWindow = WATCH_SHARED_REVISIONS_MAX + 5;
    for (let index = 2; index <= sharedWindow; index += 1)
      watch.applied(index, outcome(index, [put('a', `${index}`, index)]));
    const late = new RecordingSink();
    watch.open({ prefix: 'a', start_revision: 1 }, late);
    clock.advance(0);
    expect(late.seen).toEqual(same[0]?.seen);
    expect(late.revisions()).toHaveLength(sharedWindow);
  });

  it('more filters than a revision shares: each watcher still gets its own filter’s events', () => {
    const { clock, hub: watch } = hub(0);
    const filters = Array.from({ length: WATCH_SHARED_FILTERS_MAX + 3 }, (_, index) => `k${index}`);
    const sinks = filters.map((key) => {
      const sink = new RecordingSink();
      watch.open({ key, start_revision: 1 }, sink);
      return sink;
    });
    clock.advance(0);
    watch.applied(
      1,
      outcome(
        1,
        filters.map((key) => put(key, key, 1)),
      ),
    );
    clock.advance(0);
    sinks.forEach((sink, index) => {
      expect(sink.keys()).toEqual([filters[index]]);
    });
  });

  it('applied() only records: one later turn delivers, and a blocked watcher is not walked until resume', () => {
    const { clock, hub: watch } = hub(0, { lagRevisionsMax: 1_000 });
    const fast = new CountingSink();
    const slow = new CountingSink();
    const subscription = watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, slow);
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, fast);
    clock.advance(0);
    slow.isReady = false;
    watch.applied(1, outcome(1, [put('a', '1', 1)]));
    watch.applied(2, outcome(2, [put('a', '2', 2)]));
    expect(fast.readyCalls + slow.readyCalls).toBe(0); // no sink is touched inside applied()
    expect(clock.pending).toBe(1); // one turn for both revisions
    clock.advance(0);
    expect(fast.revisions()).toEqual([1, 2]);
    const asked = slow.readyCalls;
    expect(asked).toBeGreaterThan(0);
    for (let index = 3; index <= 50; index += 1) {
      watch.applied(index, outcome(index, [put('a', `${index}`, index)]));
      clock.advance(0);
    }
    expect(slow.readyCalls).toBe(asked); // blocked: passed by until resume
    expect(fast.revisions()).toHaveLength(50);
    slow.isReady = true;
    subscription.resume();
    expect(slow.seen).toEqual(fast.seen);
  });

  it('a burst larger than the history within one turn is delivered whole to the watchers that keep up', () => {
    const { clock, hub: watch } = hub(0, { historyRevisionsMax: 3, lagRevisionsMax: 1_000 });
    const keepsUp = new RecordingSink();
    const blocked = new RecordingSink();
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, keepsUp);
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, blocked);
    clock.advance(0);
    blocked.isReady = false;
    for (let index = 1; index <= 10; index += 1) watch.applied(index, outcome(index, [put('k', 'v', index)]));
    clock.advance(0);
    expect(keepsUp.revisions()).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    expect(keepsUp.canceled_()).toBe(false);
    expect(watch.compactRevision).toBe(8);
    expect(blocked.seen).toEqual([
      { kind: 'canceled', reason: 'compacted: revision 1 is no longer in the history', revision: 0 },
    ]);
  });

  it('walks a watcher far behind in bounded turns', () => {
    const { clock, hub: watch } = hub(0, { revisionsPerTurnMax: 4 });
    for (let index = 1; index <= 20; index += 1) watch.applied(index, outcome(index, [put('k', 'v', index)]));
    const sink = new RecordingSink();
    watch.open({ prefix: '', start_revision: 1, progress_interval_ms: 0 }, sink);
    clock.advance(0);
    expect(sink.revisions()).toHaveLength(20);
    expect(sink.revisions()).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('stops at once when the sink closes the watcher inside a call', () => {
    const { clock, hub: watch } = hub();
    for (let index = 1; index <= 5; index += 1) watch.applied(index, outcome(index, [put('k', 'v', index)]));
    const sink = new RecordingSink();
    const subscription = watch.open(
      { prefix: '', start_revision: 1 },
      {
        ready: () => true,
        progress: () => undefined,
        canceled: () => undefined,
        events: (revision) => {
          sink.seen.push({ kind: 'events', revision, events: [] });
          subscription.close();
        },
      },
    );
    clock.advance(0);
    expect(sink.revisions()).toEqual([1]);
    expect(watch.watcherCount).toBe(0);
    expect(clock.pending).toBe(0);
  });

  it('asserts applied entries arrive in order', () => {
    const { hub: watch } = hub(3);
    expect(() => {
      watch.applied(5, null);
    }).toThrow(/applied 5 after 3/);
  });
});

describe('WatchHub property: delivered revisions are the matching subsequence of history', () => {
  const KEYS = ['a', 'ab', 'b', 'ba', 'c'] as const;
  const FILTERS: WatchRequest[] = [{ prefix: '' }, { prefix: 'a' }, { key: 'b' }, { prefix: 'z' }];

  it('holds for random applied sequences and random ready() patterns', () => {
    const step = fc.oneof(
      fc.record({
        kind: fc.constant('apply' as const),
        changes: fc.array(fc.constantFrom(...KEYS), { maxLength: 3 }),
      }),
      fc.record({ kind: fc.constant('ready' as const), watcher: fc.nat(3), ready: fc.boolean() }),
      fc.record({ kind: fc.constant('resume' as const), watcher: fc.nat(3) }),
      fc.record({ kind: fc.constant('tick' as const), ms: fc.constantFrom(0, 50, 150) }),
    );
    fc.assert(
      fc.property(
        fc.array(step, { maxLength: 80 }),
        fc.array(fc.nat(10), { minLength: 4, maxLength: 4 }),
        (steps, starts) => {
          const { clock, hub: watch } = hub(0, { lagRevisionsMax: 20, revisionsPerTurnMax: 3 });
          const history = new Map<number, string[]>();
          const sinks = FILTERS.map(() => new RecordingSink());
          const subscriptions = FILTERS.map((filter, i) =>
            watch.open(
              { ...filter, start_revision: (starts[i] ?? 0) + 1, progress_interval_ms: 100 },
              sinks[i] as RecordingSink,
            ),
          );
          let index = 0;
          for (const item of steps) {
            if (item.kind === 'apply') {
              index += 1;
              history.set(index, item.changes);
              watch.applied(
                index,
                item.changes.length === 0
                  ? null
                  : outcome(
                      index,
                      item.changes.map((k) => put(k, 'v', index)),
                    ),
              );
            } else if (item.kind === 'ready') {
              (sinks[item.watcher] as RecordingSink).isReady = item.ready;
            } else if (item.kind === 'resume') {
              subscriptions[item.watcher]?.resume();
            } else {
              clock.advance(item.ms);
            }
          }
          for (const sink of sinks) sink.isReady = true;
          subscriptions.forEach((subscription) => {
            subscription.resume();
          });
          clock.advance(1_000);
          FILTERS.forEach((filter, i) => {
            checkWatcher(sinks[i] as RecordingSink, filter, (starts[i] ?? 0) + 1, history, index);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  /** Events are exactly the matching changes from the start on, up to the cancel if any; progress never runs ahead. */
  function checkWatcher(
    sink: RecordingSink,
    filter: WatchRequest,
    start: number,
    history: Map<number, string[]>,
    applied: number,
  ): void {
    const matches = (key: string) =>
      filter.key === undefined ? key.startsWith(filter.prefix ?? '') : key === filter.key;
    const canceled = sink.seen.find((item) => item.kind === 'canceled');
    const end = canceled === undefined ? applied : canceled.revision;
    const expected: [number, string[]][] = [];
    for (let revision = start; revision <= end; revision += 1) {
      const keys = (history.get(revision) ?? []).filter(matches);
      if (keys.length > 0) expected.push([revision, keys]);
    }
    const got = sink.seen.flatMap((item) =>
      item.kind === 'events'
        ? [[item.revision, item.events.map((event) => event.key)] as [number, string[]]]
        : [],
    );
    expect(got).toEqual(expected);
    let sent = start - 1;
    for (const item of sink.seen) {
      if (item.kind === 'events') sent = item.revision;
      if (item.kind === 'progress') {
        // nothing matching between the last event and the progress revision is unsent
        for (let revision = sent + 1; revision <= item.revision; revision += 1)
          expect((history.get(revision) ?? []).filter(matches)).toEqual([]);
        sent = item.revision;
      }
    }
    if (canceled !== undefined) expect(sink.seen.at(-1)).toBe(canceled);
  }
});
