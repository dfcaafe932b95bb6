import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assert } from '../../src/base/assert.ts';
import type { Entry, HardState, PersistedState, SnapshotMeta } from '../../src/raft/types.ts';
import { StorageError } from '../../src/storage/errors.ts';
import { MemoryLogState } from '../../src/storage/memory-log-store.ts';
import { FRAME_ALIGN_BYTES, readFrame } from '../../src/storage/wal/frame.ts';
import { Wal, type WalBatch } from '../../src/storage/wal/wal.ts';
import { FaultyWalFs, KEEP_WRITTEN, LOSE_UNSYNCED, type CrashPlan, type DiskImage } from './faulty-wal-fs.ts';

/**
 * Fault properties of the WAL (src/storage/wal/) over an in-memory file system that loses
 * unsynced pages and names, tears the last write and flips bits (faulty-wal-fs.ts): whatever the
 * crash, reopening gives every acknowledged batch and at most the one in flight, or says the log
 * is corrupt; never other data.
 */

const DIR = '/data/wal';
const SEGMENT_BYTES_MIN = 8 * 1024;
const SEGMENT_BYTES_MAX = 64 * 1024;
const BATCHES_MAX = 40;
const ENTRIES_PER_BATCH_MAX = 6;
const COMMAND_BYTES_MAX = 3_000;
/** Event-loop turns a test waits for the WAL to acknowledge what it was given. */
const SETTLE_TURNS_MAX = 100_000;
/** Runs per property: the file stays at a few seconds (ASPEN_WAL_FAULT_RUNS for a long hunt). */
const RUNS = Number(process.env.ASPEN_WAL_FAULT_RUNS ?? 60);
const CONFIG = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };

type StepKind = 'append' | 'replace' | 'snapshotKeep' | 'snapshotDrop' | 'hard';

/** One Ready batch as fast-check draws it; `Builder` turns it into a valid one for the log so far. */
interface StepSpec {
  readonly kind: StepKind;
  readonly count: number;
  readonly back: number;
  readonly bytes: number;
  readonly hard: boolean;
  /** Wait for the WAL to acknowledge everything before the next batch (else they queue). */
  readonly wait: boolean;
}

interface Scenario {
  readonly batches: readonly WalBatch[];
  readonly waits: readonly boolean[];
  /** The log after the first j batches, as canonical text (index j). */
  readonly states: readonly string[];
}

function stepArbitrary(kinds: readonly StepKind[]): fc.Arbitrary<StepSpec> {
  return fc.record({
    kind: fc.constantFrom(...kinds),
    count: fc.integer({ min: 0, max: ENTRIES_PER_BATCH_MAX }),
    back: fc.nat({ max: 12 }),
    bytes: fc.nat({ max: COMMAND_BYTES_MAX }),
    hard: fc.boolean(),
    wait: fc.boolean(),
  });
}

const RAFT_LIKE: readonly StepKind[] = [
  'append',
  'append',
  'append',
  'replace',
  'snapshotKeep',
  'snapshotDrop',
  'hard',
];
const SNAPSHOT_HEAVY: readonly StepKind[] = [
  'append',
  'append',
  'snapshotKeep',
  'snapshotKeep',
  'snapshotDrop',
];

const planArbitrary: fc.Arbitrary<CrashPlan> = fc.record({
  keepPages: fc.array(fc.boolean(), { maxLength: 8 }),
  keepNames: fc.array(fc.boolean(), { maxLength: 4 }),
  keepSize: fc.boolean(),
  tear: fc.option(fc.nat(), { nil: null }),
  flip: fc.constant(null),
});

const segmentBytesArbitrary = fc
  .integer({ min: SEGMENT_BYTES_MIN / 1024, max: SEGMENT_BYTES_MAX / 1024 })
  .map((kib) => kib * 1024);

/** The log as text with a fixed key order, so that states compare exactly. */
function canonical(persisted: PersistedState): string {
  const hard = persisted.hardState;
  const meta = persisted.snapshot ?? null;
  return JSON.stringify({
    hardState: [hard.term, hard.vote, hard.commit],
    snapshot: meta === null ? null : [meta.index, meta.term, meta.config],
    entries: persisted.entries.map((entry) => {
      const head = [entry.kind, entry.index, entry.term];
      if (entry.kind === 'command') return [...head, Buffer.from(entry.data).toString('hex')];
      if (entry.kind === 'config') return [...head, entry.config];
      return head;
    }),
  });
}

/** Turns drawn steps into batches Raft could persist, tracking the log they make (the model). */
class Builder {
  readonly model = new MemoryLogState();
  term = 1;

  entries(first: number, count: number, bytes: number): Entry[] {
    const entries: Entry[] = [];
    for (let index = first; index < first + count; index += 1) {
      const size = (bytes * (index + 1)) % (COMMAND_BYTES_MAX + 1);
      if (index % 7 === 0) entries.push({ kind: 'config', index, term: this.term, config: CONFIG });
      else if (bytes === 0) entries.push({ kind: 'blank', index, term: this.term });
      else
        entries.push({
          kind: 'command',
          index,
          term: this.term,
          data: Uint8Array.from({ length: size }, (_, at) => (index * 31 + at) & 0xff),
        });
    }
    return entries;
  }

  next(spec: StepSpec): WalBatch {
    const model = this.model;
    const snap = model.snapshotIndex;
    const last = model.lastIndex;
    let snapshot: SnapshotMeta | null = null;
    let entries: Entry[] = [];
    if (spec.kind === 'append' || (spec.kind === 'snapshotKeep' && last === snap)) {
      entries = this.entries(last + 1, Math.max(1, spec.count), spec.bytes);
    } else if (spec.kind === 'replace') {
      this.term += 1;
      entries = this.entries(Math.max(snap + 1, last - spec.back), Math.max(1, spec.count), spec.bytes);
    } else if (spec.kind === 'snapshotKeep') {
      const index = snap + 1 + (spec.back % (last - snap));
      snapshot = { index, term: model.termAt(index), config: CONFIG };
      entries = this.entries(last + 1, spec.count % 3, spec.bytes);
    } else if (spec.kind === 'snapshotDrop') {
      this.term += 1; // a snapshot from a newer leader: the log does not continue it
      snapshot = { index: snap + 1 + spec.back, term: this.term, config: CONFIG };
      entries = this.entries(snapshot.index + 1, spec.count, spec.bytes);
    }
    const lastAfter = entries.at(-1)?.index ?? Math.max(last, snapshot?.index ?? 0);
    const needsHard = spec.hard || (snapshot === null && entries.length === 0);
    const hardState: HardState | null = needsHard ? { term: this.term, vote: 1, commit: lastAfter } : null;
    const batch = { snapshot, entries, hardState };
    model.apply({
      snapshot: snapshot === null ? null : { meta: snapshot, data: new Uint8Array(0) },
      entries,
      hardState,
    });
    return batch;
  }
}

function buildScenario(specs: readonly StepSpec[], waitAll: boolean): Scenario {
  const builder = new Builder();
  const states = [canonical(builder.model.load().persisted)];
  const batches: WalBatch[] = [];
  for (const spec of specs) {
    batches.push(builder.next(spec));
    states.push(canonical(builder.model.load().persisted));
  }
  return { batches, waits: specs.map((spec) => waitAll || spec.wait), states };
}

/** Turns of the event loop until `done()` holds or the machine is dead. */
async function settle(fs: FaultyWalFs, done: () => boolean): Promise<void> {
  for (let turn = 0; turn < SETTLE_TURNS_MAX; turn += 1) {
    if (done() || fs.frozen) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`the WAL did not settle in ${SETTLE_TURNS_MAX} turns`);
}

/** Feed the batches to a WAL on `fs` until the end or the crash: how many were issued and acknowledged. */
async function drive(
  fs: FaultyWalFs,
  scenario: Scenario,
  segmentBytes: number,
): Promise<{ issued: number; acked: number }> {
  const { wal } = Wal.open(DIR, { fs, segmentBytes });
  let issued = 0;
  let acked = 0;
  for (const [position, batch] of scenario.batches.entries()) {
    if (fs.frozen) break;
    const number = issued;
    issued += 1;
    wal.append(batch, (error) => {
      if (error !== null) return;
      assert(number === acked, `batch ${number} acknowledged after ${acked}`);
      acked += 1;
    });
    if (scenario.waits[position] === true) await settle(fs, () => acked === issued);
  }
  return { issued, acked };
}

function reopen(image: DiskImage, segmentBytes: number): { fs: FaultyWalFs; wal: Wal; state: string } {
  const fs = FaultyWalFs.restart(image);
  const opened = Wal.open(DIR, { fs, segmentBytes });
  return { fs, wal: opened.wal, state: canonical(opened.persisted) };
}

/** The states a restart may show: every acknowledged batch, and maybe the one in flight. */
function allowedStates(scenario: Scenario, run: { issued: number; acked: number }): string[] {
  const allowed = [scenario.states[run.acked] ?? ''];
  if (run.acked < run.issued) allowed.push(scenario.states[run.acked + 1] ?? '');
  return allowed;
}

/** The recovered log as a model, to predict what a batch written after the restart gives. */
function modelOf(persisted: PersistedState): MemoryLogState {
  const model = new MemoryLogState();
  const meta = persisted.snapshot ?? null;
  model.apply({
    snapshot: meta === null ? null : { meta, data: new Uint8Array(0) },
    hardState: null,
    entries: [],
  });
  model.apply({ snapshot: null, hardState: persisted.hardState, entries: persisted.entries });
  return model;
}

/**
 * After a recovery the WAL keeps working: one more batch is acknowledged, survives a crash that
 * loses everything unsynced, and reopening twice gives the same log.
 */
async function checkWritesAfterRecovery(image: DiskImage, segmentBytes: number): Promise<void> {
  const fs = FaultyWalFs.restart(image);
  const opened = Wal.open(DIR, { fs, segmentBytes });
  const model = modelOf(opened.persisted);
  const term = Math.max(opened.persisted.hardState.term, opened.persisted.entries.at(-1)?.term ?? 0) + 1;
  const entries: Entry[] = [{ kind: 'command', index: model.lastIndex + 1, term, data: Uint8Array.of(7, 7) }];
  const hardState = { term, vote: 2, commit: 0 };
  let acked = false;
  opened.wal.append({ snapshot: null, entries, hardState }, (error) => {
    acked = error === null;
  });
  await settle(fs, () => acked);
  expect(acked).toBe(true);
  model.apply({ snapshot: null, hardState, entries });
  const afterCrash = fs.crash(LOSE_UNSYNCED);
  const first = reopen(afterCrash, segmentBytes);
  expect(first.state).toBe(canonical(model.load().persisted));
  const second = reopen(first.fs.crash(LOSE_UNSYNCED), segmentBytes);
  expect(second.state).toBe(first.state);
}

/** Crash a run of `scenario` before step `freezeAt` (null: at its end) under `plan`, and check the restart. */
async function crashAndCheck(
  scenario: Scenario,
  segmentBytes: number,
  freezeAt: number | null,
  plan: CrashPlan,
): Promise<{ tore: boolean }> {
  const fs = new FaultyWalFs();
  if (freezeAt !== null) fs.freezeAfter(freezeAt);
  const run = await drive(fs, scenario, segmentBytes);
  const image = fs.crash(plan);
  const recovered = reopen(image, segmentBytes);
  expect(allowedStates(scenario, run)).toContain(recovered.state);
  await checkWritesAfterRecovery(recovered.fs.crash(KEEP_WRITTEN), segmentBytes);
  return { tore: fs.tore };
}

/** Steps a fault-free run of the scenario takes (and, when `record`, which ones). */
async function reference(scenario: Scenario, segmentBytes: number): Promise<FaultyWalFs> {
  const fs = new FaultyWalFs();
  fs.record = true;
  await drive(fs, scenario, segmentBytes);
  return fs;
}

/** Where a segment's valid frames end, and where the last of them starts. */
function frameSpan(bytes: Uint8Array): { lastStart: number; end: number } {
  let end = 0;
  let lastStart = 0;
  const framesMax = Math.ceil(bytes.length / FRAME_ALIGN_BYTES);
  for (let frames = 0; frames < framesMax; frames += 1) {
    const frame = readFrame(bytes, end);
    if (frame === null) break;
    lastStart = end;
    end = frame.end;
  }
  return { lastStart, end };
}

/** Open the image; null when it is refused as corrupt (a StorageError saying so: nothing else). */
function openOrCorrupt(image: DiskImage, segmentBytes: number): ReturnType<typeof reopen> | null {
  try {
    return reopen(image, segmentBytes);
  } catch (error) {
    expect(error).toBeInstanceOf(StorageError);
    expect((error as Error).message).toMatch(/ is corrupt: /);
    return null;
  }
}

describe('WAL under a faulty file system', () => {
  it('a crash at any step, losing unsynced pages or tearing the last write, keeps every acknowledged batch (property)', async () => {
    let rolled = 0; // runs that started a second segment
    let tore = 0; // runs whose crash tore a write
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArbitrary(RAFT_LIKE), { minLength: 1, maxLength: BATCHES_MAX }),
        segmentBytesArbitrary,
        fc.nat(),
        planArbitrary,
        async (specs, segmentBytes, crashAt, plan) => {
          const scenario = buildScenario(specs, false);
          const run = await reference(scenario, segmentBytes);
          if (run.log.filter((step) => step.kind === 'create').length > 1) rolled += 1;
          const crash = await crashAndCheck(scenario, segmentBytes, crashAt % (run.steps + 2), plan);
          if (crash.tore) tore += 1;
        },
      ),
      { numRuns: RUNS },
    );
    expect(rolled).toBeGreaterThan(0);
    expect(tore).toBeGreaterThan(0);
  });

  it('a bit flipped anywhere is refused as corruption or gives a state a model allows (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArbitrary(RAFT_LIKE), { minLength: 1, maxLength: BATCHES_MAX }),
        segmentBytesArbitrary,
        fc.record({
          file: fc.nat(),
          offset: fc.nat(),
          bit: fc.nat({ max: 7 }),
          region: fc.constantFrom('file', 'frames', 'lastFrame'),
        }),
        async (specs, segmentBytes, flip) => {
          const scenario = buildScenario(specs, true);
          const fs = new FaultyWalFs();
          const run = await drive(fs, scenario, segmentBytes);
          expect(run.acked).toBe(scenario.batches.length);
          const clean = fs.crash(LOSE_UNSYNCED);
          const paths = [...clean.files.keys()];
          const chosen = flip.file % paths.length;
          const path = paths[chosen];
          const bytes = path === undefined ? undefined : clean.files.get(path);
          assert(path !== undefined && bytes !== undefined, 'the WAL holds a segment');
          const frames = frameSpan(bytes);
          // Where to flip: anywhere in the file, in its frames, or in its last frame.
          const [from, to] =
            frames.end === 0 || flip.region === 'file'
              ? [0, bytes.length]
              : [flip.region === 'frames' ? 0 : frames.lastStart, frames.end];
          if (to === from) return;
          const offset = from + (flip.offset % (to - from));
          let before = 0; // the plan's flip counts bytes across the files in name order
          for (const name of paths.slice(0, chosen)) before += clean.files.get(name)?.length ?? 0;
          const image = fs.crash({ ...LOSE_UNSYNCED, flip: { index: before + offset, bit: flip.bit } });
          expect(image.files.get(path)?.[offset]).toBe((bytes[offset] ?? 0) ^ (1 << flip.bit));
          const inLastFrame = path === paths.at(-1) && offset >= frames.lastStart && offset < frames.end;
          const allowed = [scenario.states.at(-1)];
          if (inLastFrame) allowed.push(scenario.states.at(-2)); // a torn last write, as far as open can tell
          const recovered = openOrCorrupt(image, segmentBytes);
          if (recovered === null) return;
          expect(allowed).toContain(recovered.state);
          await checkWritesAfterRecovery(recovered.fs.crash(KEEP_WRITTEN), segmentBytes);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('a crash while a segment is created or compacted away reopens to the same log (property)', async () => {
    let compactionCrashes = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(stepArbitrary(SNAPSHOT_HEAVY), { minLength: 10, maxLength: BATCHES_MAX }),
        fc.nat(),
        fc.integer({ min: 0, max: 3 }),
        planArbitrary,
        async (specs, pick, delta, plan) => {
          const scenario = buildScenario(specs, true);
          const log = (await reference(scenario, SEGMENT_BYTES_MIN)).log;
          const names = log.filter((step) => step.kind === 'create' || step.kind === 'remove');
          const chosen = names[pick % Math.max(1, names.length)];
          if (chosen?.kind === 'remove') compactionCrashes += 1;
          const freezeAt = chosen === undefined ? null : chosen.step - 1 + delta;
          await crashAndCheck(scenario, SEGMENT_BYTES_MIN, freezeAt, plan);
        },
      ),
      { numRuns: RUNS },
    );
    expect(compactionCrashes).toBeGreaterThan(0);
  });
});

/**
 * Three batches over 8 KiB segments: two entries of about 3 KiB, a snapshot mark covering them
 * (both in segment 1), then one more entry that starts segment 2, whose base covers segment 1.
 */
function rollOverSnapshot(): Scenario {
  const step = { count: 0, back: 0, bytes: 0, hard: false, wait: true };
  return buildScenario(
    [
      { ...step, kind: 'append', count: 2, bytes: COMMAND_BYTES_MAX, hard: true },
      { ...step, kind: 'snapshotKeep', back: 1 },
      { ...step, kind: 'append', count: 1, bytes: COMMAND_BYTES_MAX },
    ],
    true,
  );
}

const SECOND_SEGMENT = `${DIR}/0000000000000002.wal`;

describe('WAL fault regressions', () => {
  it('segments are compacted only once the new segment base record is durable', async () => {
    // Found by the compaction property: roll() deleted segment 1 before segment 2's first frame
    // was synced, and a crash there reopened to an empty log (hard state and snapshot gone).
    const scenario = rollOverSnapshot();
    const log = (await reference(scenario, SEGMENT_BYTES_MIN)).log;
    const write = log.find((step) => step.kind === 'write' && step.path === SECOND_SEGMENT);
    assert(write !== undefined, 'the third batch goes to segment 2');
    const fs = new FaultyWalFs();
    fs.freezeAfter(write.step - 1);
    const run = await drive(fs, scenario, SEGMENT_BYTES_MIN);
    expect(run).toEqual({ issued: 3, acked: 2 });
    const recovered = reopen(fs.crash(LOSE_UNSYNCED), SEGMENT_BYTES_MIN);
    expect(recovered.state).toBe(scenario.states[2]);
  });

  it('a damaged first frame of the oldest segment left, after compaction, is refused as corrupt', async () => {
    // Found by the bit-flip property: the frame looked like a torn tail, was cut off, and the log
    // reopened empty, the segments its base record covered being deleted.
    const scenario = rollOverSnapshot();
    const fs = new FaultyWalFs();
    expect(await drive(fs, scenario, SEGMENT_BYTES_MIN)).toEqual({ issued: 3, acked: 3 });
    const image = fs.crash(LOSE_UNSYNCED);
    expect([...image.files.keys()]).toEqual([SECOND_SEGMENT]);
    expect(reopen(image, SEGMENT_BYTES_MIN).state).toBe(scenario.states[3]);
    const bytes = image.files.get(SECOND_SEGMENT);
    assert(bytes !== undefined, 'segment 2');
    bytes[0] = (bytes[0] ?? 0) ^ 1;
    expect(() => reopen(image, SEGMENT_BYTES_MIN)).toThrow(
      / is corrupt: segment 0000000000000002\.wal at offset 0: the oldest segment left has no valid first frame/,
    );
  });
});
