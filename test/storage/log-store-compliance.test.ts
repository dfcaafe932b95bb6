import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { LogStore, PersistBatch, Snapshot } from '../../src/node/interfaces.ts';
import type { Entry, PersistedState } from '../../src/raft/types.ts';
import { WalLogStore, LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { MemoryLogState, MemoryLogStore } from '../../src/storage/memory-log-store.ts';
import { FRAME_ALIGN_BYTES } from '../../src/storage/wal/frame.ts';
import type { WalOptions } from '../../src/storage/wal/wal.ts';

/** A store under test and how to get it back as a restarted node would (reopened from disk for LMDB). */
interface Subject {
  store: LogStore;
  reopen(): Promise<{ persisted: PersistedState; snapshot: Snapshot | null }>;
  close(): Promise<void>;
  /** WAL segment files now (stores with a WAL). */
  walSegments?: () => number;
}

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

/** One aligned frame per WAL segment: every batch after the first starts a segment (and compacts). */
const TINY_SEGMENT_BYTES = FRAME_ALIGN_BYTES;
/** Batches of the long-run test. */
const ROUNDS = 24;

/** A new data dir, removed after the file's tests. */
function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-store-'));
  directories.push(directory);
  return directory;
}

function onDisk(wal: WalOptions): Subject {
  const directory = dataDir();
  let storage = LmdbStorage.open(directory, { wal });
  const subject: Subject = {
    store: new WalLogStore(storage),
    reopen: async () => {
      await storage.close();
      storage = LmdbStorage.open(directory, { wal });
      const reopened = new WalLogStore(storage);
      subject.store = reopened;
      return reopened.load();
    },
    close: () => storage.close(),
    walSegments: () => storage.wal.segmentCount,
  };
  return subject;
}

const factories: Record<string, () => Subject> = {
  memory: () => {
    const store = new MemoryLogStore();
    return { store, reopen: () => Promise.resolve(store.load()), close: () => Promise.resolve() };
  },
  lmdb: () => onDisk({}),
  'lmdb, WAL of tiny segments': () => onDisk({ segmentBytes: TINY_SEGMENT_BYTES }),
};

const blank = (index: number, term: number): Entry => ({ kind: 'blank', index, term });
const command = (index: number, term: number, text: string): Entry => ({
  kind: 'command',
  index,
  term,
  data: new TextEncoder().encode(text),
});
const config = { voters: [1, 2, 3], votersOutgoing: [], learners: [4] };
const snapshotAt = (index: number, term: number): Snapshot => ({
  meta: { index, term, config },
  data: new Uint8Array([1, 2, index]),
});

/** LMDB hands back Buffers (a Uint8Array subclass): compare bytes, not classes. */
function plain(entries: readonly Entry[]): unknown[] {
  return entries.map((entry) => (entry.kind === 'command' ? { ...entry, data: [...entry.data] } : entry));
}

function persist(store: LogStore, batch: Partial<PersistBatch>): Promise<void> {
  return new Promise((resolve, reject) => {
    store.persist({ snapshot: null, hardState: null, entries: [], ...batch }, (error) => {
      if (error === null) resolve();
      else reject(error);
    });
  });
}

/** One compliance suite for every LogStore implementation (as js-libp2p does for transports). */
for (const [name, create] of Object.entries(factories)) {
  describe(`LogStore compliance: ${name}`, () => {
    it('keeps entries and hard state across a restart', async () => {
      const subject = create();
      await persist(subject.store, {
        hardState: { term: 2, vote: 1, commit: 2 },
        entries: [blank(1, 1), command(2, 2, 'a'), command(3, 2, 'b')],
      });
      const { persisted, snapshot } = await subject.reopen();
      expect(persisted.hardState).toEqual({ term: 2, vote: 1, commit: 2 });
      expect(plain(persisted.entries)).toEqual(plain([blank(1, 1), command(2, 2, 'a'), command(3, 2, 'b')]));
      expect(snapshot).toBeNull();
      await subject.close();
    });

    it('replaces a conflicting suffix', async () => {
      const subject = create();
      await persist(subject.store, { entries: [blank(1, 1), blank(2, 1), blank(3, 1), blank(4, 1)] });
      await persist(subject.store, { entries: [command(3, 2, 'new')] });
      expect(plain((await subject.reopen()).persisted.entries)).toEqual(
        plain([blank(1, 1), blank(2, 1), command(3, 2, 'new')]),
      );
      await subject.close();
    });

    it('a snapshot drops the entries it covers and keeps the suffix that continues it', async () => {
      const subject = create();
      await persist(subject.store, { entries: [blank(1, 1), blank(2, 1), blank(3, 2), blank(4, 2)] });
      await persist(subject.store, { snapshot: snapshotAt(3, 2) });
      const { persisted, snapshot } = await subject.reopen();
      expect(persisted.snapshot).toEqual({ index: 3, term: 2, config });
      expect([...(snapshot?.data ?? [])]).toEqual([1, 2, 3]);
      expect(persisted.entries).toEqual([blank(4, 2)]);
      await subject.close();
    });

    it('a received snapshot that the log does not continue replaces the whole log', async () => {
      const subject = create();
      await persist(subject.store, { entries: [blank(1, 1), blank(2, 1)] });
      await persist(subject.store, {
        snapshot: snapshotAt(7, 3),
        hardState: { term: 3, vote: 0, commit: 7 },
        entries: [blank(8, 3)],
      });
      const { persisted } = await subject.reopen();
      expect(persisted.snapshot?.index).toBe(7);
      expect(persisted.entries).toEqual([blank(8, 3)]);
      expect(persisted.hardState.commit).toBe(7);
      await subject.close();
    });

    it('keeps the log through many batches, snapshots, replaced suffixes and restarts', async () => {
      const subject = create();
      const model = new MemoryLogState();
      for (let round = 1; round <= ROUNDS; round += 1) {
        const last = model.lastIndex;
        // A snapshot of the whole log, alone: the next segments' bases cover every earlier one.
        const snapshot = round % 3 === 0 && last > model.snapshotIndex;
        const replace = !snapshot && round % 4 === 0 && last > model.snapshotIndex;
        const first = replace ? last : last + 1;
        const batch: PersistBatch = {
          snapshot: snapshot ? snapshotAt(last, model.termAt(last)) : null,
          hardState: { term: round, vote: 1, commit: last },
          entries: snapshot ? [] : [command(first, round, `a${round}`), blank(first + 1, round)],
        };
        await persist(subject.store, batch);
        model.apply(batch);
        if (round % 5 === 0) await subject.reopen();
      }
      const { persisted } = await subject.reopen();
      const expected = model.load().persisted;
      expect(persisted.hardState).toEqual(expected.hardState);
      expect(persisted.snapshot).toEqual(expected.snapshot);
      expect(plain(persisted.entries)).toEqual(plain(expected.entries));
      // Segments wholly below a later base were deleted (each batch has its own in the tiny WAL).
      if (subject.walSegments !== undefined) expect(subject.walSegments()).toBeLessThan(ROUNDS / 2);
      await subject.close();
    });
  });
}

describe('WalLogStore: a crash between the snapshot (LMDB) and its mark (WAL)', () => {
  it('applies the snapshot at the next start, and entries appended after it survive the one after', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    await persist(new WalLogStore(storage), {
      hardState: { term: 1, vote: 1, commit: 2 },
      entries: [blank(1, 1), blank(2, 1), blank(3, 1), blank(4, 1)],
    });
    // A received snapshot at (3, term 2) the log does not continue: its bytes reached LMDB (synced),
    // then the process died before the WAL's mark was written.
    const received = snapshotAt(3, 2);
    storage.meta.putSync('snapshot', received.meta);
    storage.snapshots.putSync('data', received.data ?? new Uint8Array());
    await storage.close();

    storage = LmdbStorage.open(directory);
    let store = new WalLogStore(storage);
    const first = store.load();
    expect(first.persisted.snapshot?.index).toBe(3);
    expect(first.persisted.entries).toEqual([]); // dropped: the log did not continue the snapshot
    await persist(store, { hardState: { term: 2, vote: 0, commit: 5 }, entries: [blank(4, 2), blank(5, 2)] });
    await storage.close();

    storage = LmdbStorage.open(directory);
    store = new WalLogStore(storage);
    const second = store.load();
    expect(second.persisted.snapshot?.index).toBe(3);
    expect(second.persisted.entries).toEqual([blank(4, 2), blank(5, 2)]);
    expect(second.persisted.hardState).toEqual({ term: 2, vote: 0, commit: 5 });
    await storage.close();
  });
});

describe('WalLogStore after the data dir closed', () => {
  it('answers a late batch (a snapshot write finishing during shutdown) with a StorageError, never a throw', async () => {
    const directory = dataDir();
    const storage = LmdbStorage.open(directory);
    const store = new WalLogStore(storage);
    await persist(store, { entries: [blank(1, 1)] });
    expect(statSync(join(directory, 'wal')).mode & 0o777).toBe(0o700); // the log is nobody else's to read
    await storage.close();
    const answer = await new Promise<Error | null>((resolve) => {
      store.persist({ snapshot: null, hardState: null, entries: [blank(2, 1)] }, resolve);
    });
    expect(answer?.message).toMatch(/the log in .* is closed/);
  });
});
