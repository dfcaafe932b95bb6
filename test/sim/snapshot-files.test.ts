import { describe, expect, it } from 'vitest';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import type { SnapshotMeta } from '../../src/raft/types.ts';
import { SimDisk } from '../../src/sim/disk.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import type { SimResult } from '../../src/sim/outcome.ts';
import { drawSettings } from '../../src/sim/settings.ts';
import { SimSnapshotFiles } from '../../src/sim/sim-snapshot-files.ts';
import { Simulation } from '../../src/sim/simulation.ts';

const CONFIG = { voters: [1], votersOutgoing: [], learners: [] };
const FILE_SETTINGS = { files: true, fileLatencyMsMax: 5, installCrashProbability: 0 };

/** One node's files on a disk, and a machine that applied `keys` writes. */
function world(keys: number): {
  events: EventQueue;
  disk: SimDisk;
  files: SimSnapshotFiles;
  machine: MemoryKvStateMachine;
} {
  const events = new EventQueue();
  const disk = new SimDisk(events, () => 1);
  const files = new SimSnapshotFiles({
    events,
    prng: new SeededPrng(5),
    settings: FILE_SETTINGS,
    disk,
    installing: () => undefined,
    note: () => undefined,
  });
  disk.files = files;
  const machine = machineWith(keys);
  files.attach(machine);
  return { events, disk, files, machine };
}

function machineWith(keys: number): MemoryKvStateMachine {
  const machine = new MemoryKvStateMachine();
  for (let index = 1; index <= keys; index += 1)
    machine.apply(index, { Set: { key: `k${index}`, value: `v${index}` } }, null, 0, 1);
  return machine;
}

function runAll(events: EventQueue): void {
  while (events.runNext(Number.MAX_SAFE_INTEGER)) {
    // every pending completion, crash-dropped ones included
  }
}

/** Settle `promise` (a SimCompletion) into a box. */
function watch<T>(promise: Promise<T>): { value: T | undefined; settled: boolean } {
  const box: { value: T | undefined; settled: boolean } = { value: undefined, settled: false };
  void promise.then((value) => {
    box.value = value;
    box.settled = true;
  });
  return box;
}

function mark(disk: SimDisk, index: number): void {
  const meta: SnapshotMeta = { index, term: 1, config: CONFIG };
  disk.persist({ snapshot: { meta, data: null }, hardState: null, entries: [] }, () => undefined);
}

describe('simulated snapshot files', () => {
  it('a take holds the machine as it was when called, durable only once its copy completes', () => {
    const { events, files, machine } = world(3);
    const expected = machine.snapshot();
    const taken = watch(files.take());
    machine.apply(4, { Set: { key: 'later', value: 'x' } }, null, 0, 1); // applies go on meanwhile
    expect(files.durable(3)).toBeUndefined();
    runAll(events);
    expect(taken).toEqual({ value: 3, settled: true });
    expect(files.durable(3)).toEqual(expected);
  });

  it('a crash loses a copy, a received file and an install in flight; durable files stay', () => {
    const { events, disk, files } = world(3);
    runAll(events);
    watch(files.take());
    runAll(events);
    mark(disk, 3);
    runAll(events);
    const next = world(5);
    const received = next.machine.snapshot();
    files.beginReceive(5, received.byteLength);
    files.writeReceived(0, received);
    const finished = watch(files.finishReceive(5));
    const old = machineWith(1);
    files.attach(old);
    const installed = watch(files.install(3));
    const before = old.snapshot();
    expect(files.crash()).toEqual({ installHit: true });
    runAll(events);
    expect(finished.settled).toBe(false);
    expect(installed.settled).toBe(false);
    expect(old.snapshot()).toEqual(before); // the switch never happened: the old state
    expect(files.durable(5)).toBeUndefined();
    expect(files.durable(3)).toBeDefined();
  });

  it('receives pieces in any order, keeps it past an older mark, installs it once marked, prunes the older file', () => {
    const { events, disk, files } = world(2);
    watch(files.take());
    runAll(events);
    const source = world(4).machine;
    const bytes = source.snapshot();
    const half = Math.floor(bytes.byteLength / 2);
    files.beginReceive(4, bytes.byteLength);
    files.writeReceived(half, bytes.subarray(half));
    files.writeReceived(0, bytes.subarray(0, half));
    watch(files.finishReceive(4));
    runAll(events);
    mark(disk, 2); // the copy's mark: the received file, newer, waits for the core (seed 260658)
    runAll(events);
    expect(files.durable(4)).toEqual(new Uint8Array(bytes));
    expect(() => files.install(4)).toThrow(/the durable log must mark it \(it marks 2\)/);
    mark(disk, 4);
    runAll(events);
    expect(files.durable(2)).toBeUndefined(); // pruned once the newer mark was durable
    const machine = machineWith(1);
    files.attach(machine);
    const installed = watch(files.install(4));
    runAll(events);
    expect(installed.settled).toBe(true);
    expect(machine.appliedIndex).toBe(4);
    expect(machine.snapshot()).toEqual(bytes);
    expect(() => files.read(2, 0, 1)).toThrow(/snapshot file 2 exists/);
  });

  it('about half the seeds keep snapshots as files, drawn after every other setting', () => {
    let files = 0;
    for (let seed = 1; seed <= 400; seed += 1) if (drawSettings(seed).snapshots.files) files += 1;
    expect(files).toBeGreaterThan(150);
    expect(files).toBeLessThan(250);
  });

  it('seeds in file mode install received files, survive crashes during installs, restore from marked files', async () => {
    const totals = { installed: 0, restored: 0, installCrashes: 0 };
    const failures: SimResult[] = [];
    for (const seed of [2, 3, 11, 19, 23, 25]) {
      const settings = {
        ...drawSettings(seed),
        snapshots: { ...FILE_SETTINGS, fileLatencyMsMax: 20, installCrashProbability: 0.6 },
      };
      const result = await new Simulation(settings).run();
      if (result.status !== 'ok') failures.push(result);
      totals.installed += result.stats.fileSnapshotsInstalled;
      totals.restored += result.stats.fileSnapshotsRestored;
      totals.installCrashes += result.stats.installCrashes;
    }
    expect(failures.map((failure) => `seed ${failure.seed} ${failure.status}: ${failure.message}`)).toEqual(
      [],
    );
    expect(totals.installed).toBeGreaterThan(0);
    expect(totals.restored).toBeGreaterThan(0);
    expect(totals.installCrashes).toBeGreaterThan(0);
  });
});
