import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { WatchSink } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { LogCommand, WatchEvent } from '../../src/api/types.ts';
import { AssertionError } from '../../src/base/assert.ts';
import { encodeProposal } from '../../src/node/codec.ts';
import type { Snapshot } from '../../src/node/interfaces.ts';
import { MemoryKvStateMachine, type StateMachine } from '../../src/node/kv-state-machine.ts';
import { applyEntry } from '../../src/node/ready-executor.ts';
import type { Session } from '../../src/node/sessions.ts';
import { startWatchHub, type WatchHistorySource } from '../../src/node/watch-history.ts';
import { WatchHub } from '../../src/node/watch-hub.ts';
import type { Entry, MembershipConfig } from '../../src/raft/types.ts';
import { ManualClock } from '../support/manual-clock.ts';
import { LmdbMachines } from './state-machines.ts';

const lmdb = new LmdbMachines('aspen-watch-history-');
const CONFIG: MembershipConfig = { voters: [1], votersOutgoing: [], learners: [] };
const TERM = 2;

const command = (index: number, logCommand: LogCommand, session: Session | null = null): Entry => ({
  kind: 'command',
  term: TERM,
  index,
  data: encodeProposal({ command: logCommand, session, proposedAtMs: 1_000 + index }),
});

/** A log of every kind of entry: puts, deletes, a lease and its revoke, a session retry, a transaction. */
function sampleLog(): Entry[] {
  const session = { clientId: 'client-1', sequence: 1 };
  const commands: (LogCommand | [LogCommand, Session])[] = [
    { Set: { key: 'a', value: '1' } },
    [{ Set: { key: 'b', value: '2' } }, session],
    { LeaseGrant: { lease_id: 0, ttl_seconds: 10 } },
    { Set: { key: 'a', value: '3' } },
    [{ Set: { key: 'b', value: '2' } }, session], // a retry: answered from the session table, no change
    {
      SetMulti: {
        pairs: [
          ['c/1', 'x'],
          ['c/2', 'y'],
        ],
      },
    },
    { Delete: { key: 'a' } },
    { Delete: { key: 'missing' } }, // nothing to delete: no change
    { CompareAndSwap: { key: 'b', expected: '2', new_value: '4' } },
    {
      Transaction: {
        compare: [{ key: 'b', target: 'value', op: 'equal', value: '4' }],
        success: [{ Set: { key: 'd', value: '5' } }, { Delete: { key: 'c/1' } }],
        failure: [],
      },
    },
    { DeleteMulti: { keys: ['c/2', 'd'] } },
    { Set: { key: 'e', value: '6' } },
  ];
  const entries: Entry[] = [
    { kind: 'config', term: 1, index: 1, config: CONFIG },
    { kind: 'blank', term: TERM, index: 2 },
  ];
  for (const item of commands) {
    const index = entries.length + 1;
    entries.push(Array.isArray(item) ? command(index, item[0], item[1]) : command(index, item));
    if (index === 6) entries.push(command(index + 1, { Set: { key: 'leased', value: 'l', lease_id: 5 } }));
  }
  // An expiry from an older term is refused; one from the entry's own term revokes.
  entries.push(command(entries.length + 1, { LeaseRevoke: { lease_id: 5, expired_in_term: 1 } }));
  entries.push(command(entries.length + 1, { LeaseRevoke: { lease_id: 5, expired_in_term: TERM } }));
  entries.push({ kind: 'blank', term: TERM + 1, index: entries.length + 1 });
  return entries;
}

/** Apply `entries` as the executor does (in one batch), telling `hub` (when given) of each. */
function applyLive(machine: StateMachine, entries: readonly Entry[], hub: WatchHub | null): void {
  machine.batch(() => {
    for (const entry of entries) {
      const outcome = applyEntry(machine, entry);
      hub?.applied(entry.index, outcome);
    }
  });
}

/** Every event `hub` serves from `start` on (a watcher on every key, with prev), by revision. */
function served(hub: WatchHub, clock: ManualClock, start: number): [number, readonly WatchEvent[]][] {
  const seen: [number, readonly WatchEvent[]][] = [];
  const sink: WatchSink = {
    events: (revision, events) => seen.push([revision, events]),
    progress: () => undefined,
    canceled: (reason) => {
      throw new Error(`canceled: ${reason}`);
    },
    ready: () => true,
  };
  const subscription = hub.open(
    { prefix: '', start_revision: start, prev_kv: true, progress_interval_ms: 0 },
    sink,
  );
  clock.advance(0);
  subscription.close();
  return seen;
}

function compactedAt(hub: WatchHub, start: number): number {
  try {
    served(hub, new ManualClock(), start);
  } catch (error) {
    expect(error).toBeInstanceOf(AspenError);
    expect((error as AspenError).code).toBe('COMPACTED');
    return (error as AspenError).compactRevision ?? -1;
  }
  throw new Error(`revision ${start} was served`);
}

/** The node's durable parts after applying `entries` with a snapshot at `snapshotIndex` (0: none). */
function durable(
  entries: readonly Entry[],
  snapshotIndex: number,
): { snapshot: Snapshot | null; rest: Entry[] } {
  if (snapshotIndex === 0) return { snapshot: null, rest: [...entries] };
  const machine = new MemoryKvStateMachine();
  applyLive(machine, entries.slice(0, snapshotIndex), null);
  const term = entries[snapshotIndex - 1]?.term ?? 0;
  return {
    snapshot: { meta: { index: snapshotIndex, term, config: CONFIG }, data: machine.snapshot() },
    rest: entries.slice(snapshotIndex),
  };
}

function rebuild(entries: readonly Entry[], snapshotIndex: number, extra: Partial<WatchHistorySource> = {}) {
  const clock = new ManualClock();
  const { snapshot, rest } = durable(entries, snapshotIndex);
  const started = startWatchHub({ clock, appliedIndex: entries.length, snapshot, entries: rest, ...extra });
  return { clock, ...started };
}

describe('startWatchHub', () => {
  it.each([0, 4, 9])(
    'with a snapshot at %i, serves from the snapshot on exactly what a hub watching an LMDB machine saw',
    (snapshotIndex) => {
      const entries = sampleLog();
      const liveClock = new ManualClock();
      const live = new WatchHub({ clock: liveClock, appliedIndex: 0 });
      applyLive(lmdb.machine(), entries, live);

      const { clock, hub, rebuiltFrom, skipped } = rebuild(entries, snapshotIndex);
      expect([rebuiltFrom, skipped]).toEqual([snapshotIndex + 1, null]);
      expect(hub.appliedIndex).toBe(entries.length);
      expect(hub.compactRevision).toBe(snapshotIndex + 1);
      const rebuilt = served(hub, clock, snapshotIndex + 1);
      expect(rebuilt).toEqual(served(live, liveClock, snapshotIndex + 1));
      expect(rebuilt.length).toBeGreaterThan(3);
      if (snapshotIndex > 0) expect(compactedAt(hub, snapshotIndex)).toBe(snapshotIndex + 1);
    },
  );

  it('serves the right changes: an expiry in its term deletes the lease’s key; retries, stale expiries and absent deletes change nothing', () => {
    const { clock, hub } = rebuild(sampleLog(), 0);
    const summary = served(hub, clock, 1).map(([revision, events]) => [
      revision,
      events.map((event) => `${event.type} ${event.key}=${event.value} prev=${event.prev?.value ?? '-'}`),
    ]);
    expect(summary).toEqual([
      [3, ['put a=1 prev=-']],
      [4, ['put b=2 prev=-']],
      [6, ['put a=3 prev=1']],
      [7, ['put leased=l prev=-']],
      [9, ['put c/1=x prev=-', 'put c/2=y prev=-']],
      [10, ['delete a= prev=3']],
      [12, ['put b=4 prev=2']],
      [13, ['put d=5 prev=-', 'delete c/1= prev=x']],
      [14, ['delete c/2= prev=y', 'delete d= prev=5']],
      [15, ['put e=6 prev=-']],
      [17, ['delete leased= prev=l']],
    ]);
  });

  it("keeps only what the hub's own bounds allow", () => {
    const { clock, hub } = rebuild(sampleLog(), 0, { bounds: { historyRevisionsMax: 3 } });
    // The three newest changed revisions are 14, 15 and 17.
    expect(hub.compactRevision).toBe(14);
    expect(compactedAt(hub, 13)).toBe(14);
    expect(served(hub, clock, 14).map(([revision]) => revision)).toEqual([14, 15, 17]);
  });

  it('starts at the applied index, saying why, past the snapshot or entry bounds', () => {
    const entries = sampleLog();
    const applied = entries.length;
    const bigSnapshot = rebuild(entries, 4, { snapshotBytesMax: 10 });
    expect(bigSnapshot.rebuiltFrom).toBeNull();
    expect(bigSnapshot.hub.compactRevision).toBe(applied + 1);
    expect(bigSnapshot.skipped).toMatch(
      new RegExp(`^watch: history starts at ${applied}: the snapshot at 4 is \\d+ bytes, more than the 10 `),
    );
    expect(compactedAt(bigSnapshot.hub, applied)).toBe(applied + 1);

    const manyEntries = rebuild(entries, 4, { entriesMax: applied - 5 });
    expect(manyEntries.hub.compactRevision).toBe(applied + 1);
    expect(manyEntries.skipped).toBe(
      `watch: history starts at ${applied}: ${applied - 4} entries since the snapshot at 4, more than the ${applied - 5} applied again to rebuild it from the log`,
    );
    // Exactly at the bound it rebuilds.
    expect(rebuild(entries, 4, { entriesMax: applied - 4 }).hub.compactRevision).toBe(5);
  });

  it('rebuilds nothing when the machine is not beyond the snapshot (the node restores and applies through the hub)', () => {
    const entries = sampleLog();
    const { snapshot, rest } = durable(entries, 9);
    for (const appliedIndex of [0, 9]) {
      const started = startWatchHub({ clock: new ManualClock(), appliedIndex, snapshot, entries: rest });
      expect([started.rebuiltFrom, started.skipped, started.hub.compactRevision]).toEqual([
        null,
        null,
        appliedIndex + 1,
      ]);
    }
  });

  it('asserts that the log holds every entry between the snapshot and the applied index', () => {
    const entries = sampleLog();
    const { snapshot, rest } = durable(entries, 4);
    const source = { clock: new ManualClock(), appliedIndex: entries.length, snapshot };
    expect(() => startWatchHub({ ...source, entries: rest.slice(0, -1) })).toThrow(AssertionError);
    expect(() => startWatchHub({ ...source, entries: rest.slice(1) })).toThrow(AssertionError);
  });

  it('property: a rebuilt hub serves what a hub watching the live applies serves, from any snapshot', () => {
    const keys = ['k0', 'k1', 'k2', 'p/k3'];
    const step = fc.oneof(
      fc.record({ set: fc.constantFrom(...keys), value: fc.string({ maxLength: 4 }) }),
      fc.record({ del: fc.constantFrom(...keys) }),
      fc.constant({ blank: true }),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), fc.nat(), (steps, cut) => {
        const entries: Entry[] = steps.map((item, position): Entry => {
          const index = position + 1;
          if ('set' in item) return command(index, { Set: { key: item.set, value: item.value } });
          if ('del' in item) return command(index, { Delete: { key: item.del } });
          return { kind: 'blank', term: TERM, index };
        });
        const snapshotIndex = cut % (entries.length + 1);
        const liveClock = new ManualClock();
        const live = new WatchHub({ clock: liveClock, appliedIndex: 0 });
        applyLive(new MemoryKvStateMachine(), entries, live);
        const { clock, hub } = rebuild(entries, snapshotIndex);
        const expected = served(live, liveClock, snapshotIndex + 1);
        expect(served(hub, clock, snapshotIndex + 1)).toEqual(expected);
      }),
      { numRuns: 100 },
    );
  });
});
