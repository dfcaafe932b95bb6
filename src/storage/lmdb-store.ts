import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { machineBootId } from './boot-id.ts';
import { SnapshotFiles } from './snapshot-files.ts';
import { appliedIndexOf, openStateDatabases, type StateDatabases } from './state-databases.ts';
import type { LogStore, PersistBatch, Snapshot, SnapshotFileSource } from '../node/interfaces.ts';
import {
  decodeSnapshot,
  encodeSnapshot,
  normalizeRecord,
  type KvRecord,
  type LeaseRecord,
} from '../node/kv-state-machine.ts';
import type { StoredOutcome } from '../node/session-apply.ts';
import type { SessionRecord } from '../node/sessions.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { LMDB_MAP_SIZE_BYTES } from '../base/limits.ts';
import { DataDirLock } from './data-dir-lock.ts';
import { Wal, type WalOpened, type WalOptions } from './wal/wal.ts';
import { nodeWalFileSystem } from './wal/wal-fs.ts';
import { entriesKeptBy } from './memory-log-store.ts';
import { firstLine, isStorageFault, StorageError, storageFailure } from './errors.ts';
import {
  EMPTY_HARD_STATE,
  type Entry,
  type HardState,
  type PersistedState,
  type SnapshotMeta,
} from '../raft/types.ts';

/**
 * On-disk format of this release. 3: records carry a lease id; 4: the state machine holds the
 * client session table (its own database, and a `sessions` field in snapshots); 5: it holds leases
 * (the `leases` and `lease_keys` databases, a `leases` field in snapshots); 6: the Raft log and hard
 * state live in the write-ahead log `<data-dir>/wal/` (src/storage/wal/), no longer in LMDB. A
 * format-2 to -5 data dir is migrated in place at open; any other version is refused, never guessed at.
 */
export const STORAGE_FORMAT_VERSION = 6;
/** Format 5: the log and hard state in LMDB's `log` and `meta` databases (copied into the WAL at open). */
export const STORAGE_FORMAT_LMDB_LOG = 5;
/** The oldest format this release migrates from (records without lease ids). */
export const STORAGE_FORMAT_MIGRATED_FROM = 2;
/**
 * Format 3 has no session table: the empty table is the right one (its snapshots read as empty
 * too), so the migration only records the new format.
 */
export const STORAGE_FORMAT_WITHOUT_SESSIONS = 3;
/** Format 4 has no leases: none is the right state (its snapshots read as none too). */
export const STORAGE_FORMAT_WITHOUT_LEASES = 4;
/** The Raft log's directory in a data dir (format 6). */
export const WAL_DIR = 'wal';
/** The format-5 migration copies the log into the WAL in batches of at most this many entries… */
const MIGRATION_CHUNK_ENTRIES = 4_096;
/** …and about this many bytes. */
const MIGRATION_CHUNK_BYTES = 32 * 1024 * 1024;
/** Records rewritten by a migration: a sanity bound far above what a snapshot can hold. */
const MIGRATION_RECORDS_MAX = 100_000_000;

// The state machine lives in its own file; it is still importable from here.

const META_FORMAT = 'format';
const META_HARD_STATE = 'hard_state';
const META_SNAPSHOT = 'snapshot';
/** In the log environment: false while the state machine may hold unsynced writes. */
const META_STATE_CLEAN = 'state_clean';
/** In the log environment: the boot of the machine the state machine was last opened in. */
const META_STATE_BOOT = 'state_boot';
/** In the data dir after a storage failure: the state machine is rebuilt at the next open. */
const STATE_DISTRUSTED_FILE = 'state.distrusted';
const SNAPSHOT_DATA = 'data';

export interface LmdbOpenOptions {
  readonly wal?: WalOptions;
  /** The machine's boot (tests pretend a reboot); default machineBootId(). */
  readonly bootId?: string | null;
}

/** Events of the durability pipeline, for tests that prove nothing is acknowledged before its flush. */
export type DurabilityEvent = {
  readonly kind: 'committed' | 'flushed';
  readonly batch: number;
  readonly lastIndex: number;
};

/**
 * One LMDB environment per node (`<data-dir>/aspen.mdb`) with named databases: `log` (entries by
 * index), `meta` (format version, hard state, snapshot metadata, applied index), `snapshot`
 * (the newest snapshot's bytes), `kv` (the state machine) and `nodes` (the node registry).
 */
export class LmdbStorage {
  readonly env: RootDatabase;
  readonly log: Database<Entry, number>;
  readonly meta: Database<unknown, string>;
  readonly snapshots: Database<Uint8Array, string>;
  readonly nodes: Database<unknown, number>;
  /**
   * The state machine lives in its own environment (`state.mdb`, format 2), written without fsync:
   * the per-transaction no-sync flag was not honoured (strace: one fdatasync per apply, on the event
   * loop). Without syncs LMDB keeps its integrity through a process crash (the page cache keeps every
   * commit) but not through an operating-system crash. So the machine is trusted after a clean close
   * or a crash within the same boot of the machine (`/proc/sys/kernel/random/boot_id`); otherwise it
   * is rebuilt from the newest snapshot file (a synced copy, snapshot-files.ts) or snapshot bytes,
   * and the log after it.
   */
  private stateDbs: StateDatabases;
  /** Snapshot files (`<data-dir>/snap/`). */
  readonly snapshotFiles: SnapshotFiles;
  private readonly statePath: string;
  /** The state machine was discarded at open (not closed cleanly, and the machine rebooted since). */
  readonly stateRebuilt: boolean;
  readonly dataDir: string;
  private readonly lock: DataDirLock;
  private closed = false;
  private walOpened: WalOpened | null = null;
  private walAtOpenReleased = false;
  private readonly walOptions: WalOptions;

  private constructor(env: RootDatabase, dataDir: string, lock: DataDirLock, options: LmdbOpenOptions) {
    assert(lock.held && lock.dataDir === dataDir, 'the data dir is locked before it is opened');
    this.env = env;
    this.dataDir = dataDir;
    this.lock = lock;
    this.walOptions = options.wal ?? {};
    const bootId = options.bootId === undefined ? machineBootId() : options.bootId;
    this.log = env.openDB<Entry, number>({ name: 'log' });
    this.meta = env.openDB<unknown, string>({ name: 'meta' });
    this.snapshots = env.openDB<Uint8Array, string>({ name: 'snapshot', encoding: 'binary' });
    this.nodes = env.openDB<unknown, number>({ name: 'nodes' });
    this.statePath = `${dataDir}/state.mdb`;
    this.snapshotFiles = new SnapshotFiles(dataDir, this.statePath);
    const distrusted = `${dataDir}/${STATE_DISTRUSTED_FILE}`;
    const trusted =
      !existsSync(distrusted) &&
      (this.meta.get(META_STATE_CLEAN) === true ||
        (bootId !== null && this.meta.get(META_STATE_BOOT) === bootId));
    this.stateRebuilt = !trusted && existsSync(this.statePath);
    if (this.stateRebuilt) {
      rmSync(this.statePath, { force: true });
      rmSync(`${this.statePath}-lock`, { force: true });
    }
    // Whatever is rebuilt from here is a prefix of the log applied in atomic commits: trusted again.
    rmSync(distrusted, { force: true });
    this.stateDbs = openStateDatabases(this.statePath);
    try {
      // Synced before the first apply can touch the machine.
      this.env.transactionSync(() => {
        void this.meta.put(META_STATE_CLEAN, false);
        void this.meta.put(META_STATE_BOOT, bootId);
      });
    } catch (error) {
      void this.stateDbs.env.close();
      throw error;
    }
  }

  /** The state machine's environment and databases (replaced when a snapshot file is restored). */
  get state(): StateDatabases {
    return this.stateDbs;
  }

  get stateEnv(): RootDatabase {
    return this.stateDbs.env;
  }

  get kv(): Database<KvRecord, string> {
    return this.stateDbs.kv;
  }

  get stateMeta(): Database<unknown, string> {
    return this.stateDbs.meta;
  }

  get sessions(): Database<SessionRecord<StoredOutcome>, string> {
    return this.stateDbs.sessions;
  }

  get leases(): Database<LeaseRecord, number> {
    return this.stateDbs.leases;
  }

  get leaseKeys(): Database<true, Buffer> {
    return this.stateDbs.leaseKeys;
  }

  /**
   * The snapshot files as the node's port: copies of the live machine, sent and received as they
   * are; `reloaded` is told once an installed file is the machine's state.
   */
  snapshotFileSource(reloaded: () => void): SnapshotFileSource {
    const files = this.snapshotFiles;
    return {
      take: () => files.take(this.state),
      size: (index) => files.size(index),
      read: (index, offset, length) => files.read(index, offset, length),
      beginReceive: (_index, totalBytes) => {
        files.beginReceive(totalBytes);
      },
      writeReceived: (offset, data) => {
        files.writeReceived(offset, data);
      },
      finishReceive: (index) => files.finishReceive(index),
      install: async (index) => {
        await this.installSnapshotFile(index);
        reloaded();
      },
    };
  }

  /**
   * Make `state.mdb` a copy of snapshot file `index`: staged beside it off the event loop (the second
   * copy written while receiving it, else a fresh copy), then the live environment closed, the copy
   * renamed over it and opened (the only moment the machine is closed). A crash before the rename leaves the old state: the log's mark then
   * names the file, and the next open restores it (load()).
   */
  private async installSnapshotFile(index: number): Promise<void> {
    await this.snapshotFiles.stageInstall(index);
    await this.snapshotFiles.settled(); // no copy of the old environment in flight
    await this.stateDbs.env.close();
    this.snapshotFiles.switchState();
    this.stateDbs = openStateDatabases(this.statePath);
  }

  /**
   * Snapshot `index` (a file) is marked in the WAL: the older snapshot files go, and snapshot bytes
   * LMDB holds from before it (a received snapshot) are cleared.
   */
  forgetSnapshotsBefore(index: number, done: (error: Error | null) => void): void {
    this.snapshotFiles.pruneBefore(index);
    const bytesMeta = (this.meta.get(META_SNAPSHOT) as SnapshotMeta | undefined) ?? null;
    if (bytesMeta === null || bytesMeta.index > index) {
      done(null);
      return;
    }
    this.env
      .transaction(() => {
        void this.meta.remove(META_SNAPSHOT);
        void this.snapshots.remove(SNAPSHOT_DATA);
      })
      .then(
        () => {
          done(null);
        },
        (error: unknown) => {
          done(storageFailure(error, this.dataDir, 'clearing an older snapshot'));
        },
      );
  }

  /**
   * The WAL names snapshot `index` kept as a file and the state machine is behind it (it was
   * discarded at open): replace it by a copy of that file. Before the node reads the machine.
   */
  restoreStateFromFile(index: number): void {
    assert(!this.walAtOpenReleased, 'the state is restored at open, before any append');
    void this.stateDbs.env.close();
    this.snapshotFiles.stageInstallNow(index);
    this.snapshotFiles.switchState();
    this.stateDbs = openStateDatabases(this.statePath);
  }

  /**
   * Open (or create) the data dir, locked to this process first (a second process gets
   * DataDirInUseError naming the holder, before anything in the directory is opened or deleted);
   * refuses a different format version with a clear message.
   */
  static open(dataDir: string, options: LmdbOpenOptions = {}): LmdbStorage {
    try {
      mkdirSync(dataDir, { recursive: true });
    } catch (error) {
      throw new StorageError(`cannot create data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    const lock = DataDirLock.acquire(dataDir);
    try {
      return LmdbStorage.openLocked(dataDir, lock, options);
    } catch (error) {
      lock.release();
      throw error;
    }
  }

  private static openLocked(dataDir: string, lock: DataDirLock, options: LmdbOpenOptions): LmdbStorage {
    let env: RootDatabase;
    try {
      env = open({ path: `${dataDir}/aspen.mdb`, mapSize: LMDB_MAP_SIZE_BYTES, compression: false });
    } catch (error) {
      throw new StorageError(`cannot open data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    // The format is checked before anything in the directory is touched.
    const format = env.openDB<unknown, string>({ name: 'meta' }).get(META_FORMAT);
    const known = [
      undefined,
      STORAGE_FORMAT_VERSION,
      STORAGE_FORMAT_MIGRATED_FROM,
      STORAGE_FORMAT_WITHOUT_SESSIONS,
      STORAGE_FORMAT_WITHOUT_LEASES,
      STORAGE_FORMAT_LMDB_LOG,
    ];
    if (!known.includes(format as number | undefined)) {
      void env.close();
      throw new StorageError(
        `data dir ${dataDir} has storage format ${JSON.stringify(format)}; this release reads format ${STORAGE_FORMAT_VERSION} and migrates formats ${STORAGE_FORMAT_MIGRATED_FROM} to ${STORAGE_FORMAT_LMDB_LOG} (move the directory aside to start this node empty, and let it catch up from the cluster)`,
      );
    }
    if (format === STORAGE_FORMAT_VERSION && !existsSync(`${dataDir}/${WAL_DIR}`)) {
      void env.close();
      throw new StorageError(
        `data dir ${dataDir} has lost its Raft log (${WAL_DIR}/ is missing): move the directory aside to start this node empty, and let it catch up from the cluster`,
      );
    }
    let storage: LmdbStorage;
    try {
      storage = new LmdbStorage(env, dataDir, lock, options);
    } catch (error) {
      void env.close();
      throw new StorageError(`cannot open data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    try {
      storage.migrate(format);
      storage.openWal();
    } catch (error) {
      if (error instanceof AssertionError) throw error;
      storage.closeAfterFailedOpen();
      if (error instanceof StorageError) throw error;
      throw new StorageError(`cannot open data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    return storage;
  }

  /** Bring an older format up to this release's, one step after another (each step idempotent). */
  private migrate(format: unknown): void {
    if (format === STORAGE_FORMAT_MIGRATED_FROM) this.migrateFromFormat2();
    if (format === undefined) {
      this.meta.putSync(META_FORMAT, STORAGE_FORMAT_VERSION); // a new data dir: nothing to copy
      return;
    }
    if (format !== STORAGE_FORMAT_VERSION) this.migrateLogToWal();
    if (this.log.getKeysCount({ limit: 1 }) > 0) this.log.clearSync(); // a crash stopped the last migration here
  }

  /**
   * Format 5 → 6: the log and hard state are copied from LMDB into a WAL written beside it
   * (`wal.migrating/`, synced), which is then renamed into place; then the new format is recorded
   * (synced) and LMDB's copy cleared. A crash before the format is recorded leaves format 5 and the
   * next open copies again; after it, the WAL is the log.
   */
  private migrateLogToWal(): void {
    const target = `${this.dataDir}/${WAL_DIR}`;
    const staging = `${this.dataDir}/${WAL_DIR}.migrating`;
    rmSync(staging, { recursive: true, force: true });
    rmSync(target, { recursive: true, force: true });
    const { wal } = Wal.open(staging);
    const hardState = (this.meta.get(META_HARD_STATE) as HardState | undefined) ?? EMPTY_HARD_STATE;
    let snapshot = (this.meta.get(META_SNAPSHOT) as SnapshotMeta | undefined) ?? null;
    let chunk: Entry[] = [];
    let chunkBytes = 0;
    let expected = (snapshot?.index ?? 0) + 1;
    for (const { key, value } of this.log.getRange({ start: expected })) {
      if (key !== expected || value.index !== key)
        throw new StorageError(`data dir is corrupt: log entry ${key} where ${expected} was expected`);
      expected += 1;
      chunk.push(value);
      chunkBytes += value.kind === 'command' ? value.data.length : 64;
      if (chunk.length < MIGRATION_CHUNK_ENTRIES && chunkBytes < MIGRATION_CHUNK_BYTES) continue;
      wal.appendNow({ snapshot, entries: chunk, hardState: null });
      snapshot = null;
      chunk = [];
      chunkBytes = 0;
    }
    wal.appendNow({ snapshot, entries: chunk, hardState });
    wal.closeNow();
    renameSync(staging, target);
    nodeWalFileSystem.syncDir(this.dataDir);
    this.env.transactionSync(() => {
      void this.meta.remove(META_HARD_STATE);
      void this.meta.put(META_FORMAT, STORAGE_FORMAT_VERSION);
    });
    this.log.clearSync();
  }

  private openWal(): void {
    this.walOpened = Wal.open(`${this.dataDir}/${WAL_DIR}`, this.walOptions);
  }

  /** The Raft log (opened with the data dir). */
  get wal(): Wal {
    assert(this.walOpened !== null, 'the WAL is opened with the data dir');
    return this.walOpened.wal;
  }

  /** What the WAL held when the data dir was opened (until the first append lets it go). */
  get walAtOpen(): WalOpened {
    assert(this.walOpened !== null, 'the WAL is opened with the data dir');
    assert(
      !this.walAtOpenReleased,
      'the log as opened is gone once the node appended: load() before persist',
    );
    return this.walOpened;
  }

  /**
   * A snapshot LMDB holds beyond the WAL's last mark (a crash between the two writes): write the
   * mark the crash lost, synced, and read the log as opened with it.
   */
  markSnapshotInWal(meta: SnapshotMeta, entries: readonly Entry[]): void {
    assert(
      this.walOpened !== null && !this.walAtOpenReleased,
      'the mark is written at load, before any append',
    );
    this.walOpened.wal.appendNow({ snapshot: meta, entries: [], hardState: null });
    const persisted = { ...this.walOpened.persisted, snapshot: meta, entries };
    this.walOpened = { ...this.walOpened, persisted };
  }

  /** The core holds the log from here on: the copy read at open is not kept alive beside it. */
  releaseWalAtOpen(): void {
    if (this.walAtOpenReleased || this.walOpened === null) return;
    this.walAtOpenReleased = true;
    this.walOpened = { ...this.walOpened, persisted: { hardState: EMPTY_HARD_STATE, entries: [] } };
  }

  private closeAfterFailedOpen(): void {
    this.walOpened?.wal.abandon();
    void this.stateEnv.close();
    void this.env.close();
  }

  /**
   * Format 2 → 5 (then 6, see migrateLogToWal): every record gains lease id 0, in the state machine and in the stored snapshot
   * (the session table starts empty, as from format 3, and there are no leases, as from format 4).
   * The state machine first (not synced: it is already marked unclean, so a crash before the clean
   * close discards it and rebuilds it from the snapshot and the log, whose commands did not change);
   * then the snapshot and the format together in one synced transaction of the log environment. A
   * crash before that leaves format 2, and the next open migrates again (it is idempotent).
   */
  private migrateFromFormat2(): void {
    this.stateEnv.transactionSync(() => {
      let count = 0;
      for (const { key, value } of this.kv.getRange({})) {
        count += 1;
        assert(count <= MIGRATION_RECORDS_MAX, 'migration record bound');
        this.kv.putSync(key, normalizeRecord(value));
      }
    });
    const snapshotMeta = (this.meta.get(META_SNAPSHOT) as SnapshotMeta | undefined) ?? null;
    const snapshotData = this.snapshots.get(SNAPSHOT_DATA);
    this.env.transactionSync(() => {
      if (snapshotMeta !== null && snapshotData !== undefined) {
        const records = decodeSnapshot(snapshotData, snapshotMeta.index);
        this.snapshots.putSync(SNAPSHOT_DATA, encodeSnapshot(snapshotMeta.index, records));
      }
      this.meta.putSync(META_FORMAT, STORAGE_FORMAT_LMDB_LOG);
    });
  }

  /**
   * The node registry (the seed's metadata store): record that `node` was seen now, keeping the
   * first time it was seen. Advisory metadata, not Raft state.
   */
  recordNode(node: { readonly id: number; readonly addrs: readonly string[] }, nowMs: number): NodeRecord {
    assert(Number.isSafeInteger(node.id) && node.id >= 1, `node id ${node.id}`);
    assert(node.addrs.length <= NODE_ADDRESSES_MAX, `at most ${NODE_ADDRESSES_MAX} addresses per node`);
    const previous = this.nodes.get(node.id) as NodeRecord | undefined;
    const record: NodeRecord = {
      id: node.id,
      addrs: [...node.addrs],
      firstSeenMs: previous?.firstSeenMs ?? nowMs,
      lastSeenMs: nowMs,
    };
    this.nodes.putSync(node.id, record);
    return record;
  }

  listNodes(): NodeRecord[] {
    const records: NodeRecord[] = [];
    for (const { value } of this.nodes.getRange({})) records.push(value as NodeRecord);
    return records;
  }

  /**
   * Close both environments (the state machine synced first, then marked clean in the synced log
   * environment), then let go of the data dir. Once; a second call does nothing.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.walOpened?.wal.close();
      await this.snapshotFiles.settled();
      await Promise.all([this.env.flushed, this.stateEnv.flushed]);
      await this.stateEnv.close();
      const descriptor = openSync(this.statePath, 'r+');
      try {
        fsyncSync(descriptor);
      } finally {
        closeSync(descriptor);
      }
      this.meta.putSync(META_STATE_CLEAN, true);
      await this.env.close();
    } catch (error) {
      // The environments may still be open: keep the lock (the process is about to stop anyway).
      throw isStorageFault(error) ? storageFailure(error, this.dataDir, 'closing the data dir') : error;
    }
    this.lock.release();
  }

  /**
   * After a storage failure the state machine is rebuilt at the next start, even on the same boot:
   * a marker file says so (not an LMDB write: on a full disk lmdb-js may abort the process). Best
   * effort: if even that fails, the state is trusted as LMDB left it (a failed commit changes nothing).
   */
  private distrustState(): void {
    try {
      writeFileSync(`${this.dataDir}/${STATE_DISTRUSTED_FILE}`, '');
    } catch (error) {
      if (error instanceof AssertionError) throw error;
    }
  }

  /**
   * After a storage failure: close without marking the state machine clean, so the next start
   * rebuilds it from the snapshot and the log; wait at most CLOSE_AFTER_FAILURE_WAIT_MS (lmdb-js
   * does not settle close() after a failed commit), then let go of the data dir.
   */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.walOpened?.wal.abandon();
    this.distrustState();
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_AFTER_FAILURE_WAIT_MS);
    });
    const closing = Promise.allSettled([
      this.snapshotFiles.settled().then(() => this.stateEnv.close()),
      Promise.resolve().then(() => this.env.close()),
    ]).then(() => true);
    const closed = await Promise.race([closing, waited.then(() => false)]);
    clearTimeout(timer);
    // Let go of the data dir only once LMDB has closed it; otherwise the process ends holding it.
    if (closed) this.lock.release();
  }
}

/** How long a failed commit's report waits for lmdb-js to name the cause (it is settled by then in practice). */
const COMMIT_ERROR_WAIT_MS = 1_000;
/** How long abandon() waits for LMDB to close after a storage failure. */
export const CLOSE_AFTER_FAILURE_WAIT_MS = 1_000;

/** Addresses kept per node in the registry. */
export const NODE_ADDRESSES_MAX = 16;

export interface NodeRecord {
  readonly id: number;
  readonly addrs: readonly string[];
  readonly firstSeenMs: number;
  readonly lastSeenMs: number;
}

/**
 * The durable Raft log: the WAL (one write and one fdatasync per Ready batch: group commit) for
 * entries and hard state; a kept snapshot's bytes go to LMDB first (synced), then its mark into the
 * WAL, so the snapshot LMDB holds is never older than the one the WAL names.
 */
export class WalLogStore implements LogStore {
  private readonly storage: LmdbStorage;
  private batches = 0;
  /** Test hook: sees each batch written (not yet durable), then flushed (durable). */
  onDurabilityEvent: ((event: DurabilityEvent) => void) | null = null;

  constructor(storage: LmdbStorage) {
    this.storage = storage;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    this.storage.releaseWalAtOpen();
    const snapshot = batch.snapshot;
    if (snapshot === null) {
      this.append(batch, done);
      return;
    }
    const storage = this.storage;
    const data = snapshot.data;
    if (data === null) {
      // A snapshot file, synced before it was named: its mark, then the older snapshots go.
      const index = snapshot.meta.index;
      assert(storage.snapshotFiles.has(index), `snapshot file ${index} exists before its mark`);
      this.append(batch, (error) => {
        if (error === null) storage.forgetSnapshotsBefore(index, done);
        else done(error);
      });
      return;
    }
    storage.env
      .transaction(() => {
        void storage.meta.put(META_SNAPSHOT, snapshot.meta);
        void storage.snapshots.put(SNAPSHOT_DATA, data);
      })
      .then(() => storage.env.flushed)
      .then(
        () => {
          this.append(batch, done);
        },
        (error: unknown) => {
          this.failed(error, done);
        },
      );
  }

  private append(batch: PersistBatch, done: (error: Error | null) => void): void {
    this.batches += 1;
    const batchNumber = this.batches;
    const lastIndex = batch.entries.at(-1)?.index ?? 0;
    const storage = this.storage;
    storage.wal.append(
      { snapshot: batch.snapshot?.meta ?? null, entries: batch.entries, hardState: batch.hardState },
      (error) => {
        if (error !== null) {
          done(storageFailure(error, storage.dataDir, 'writing the log'));
          return;
        }
        this.onDurabilityEvent?.({ kind: 'flushed', batch: batchNumber, lastIndex });
        done(null);
      },
    );
    this.onDurabilityEvent?.({ kind: 'committed', batch: batchNumber, lastIndex });
  }

  /**
   * A snapshot that did not reach the disk: find the cause and report it as one StorageError. lmdb-js
   * rejects a failed asynchronous commit with "Commit failed" and puts the cause (ENOSPC, EIO) in
   * the promise `commitError`; it also leaves its own commit promise for the batch rejected with no
   * handler (the process would die of an unhandled rejection), which is handled here.
   */
  private failed(error: unknown, done: (error: Error | null) => void): void {
    const storage = this.storage;
    void storage.env.committed.then(undefined, () => undefined);
    const commitError: unknown = error instanceof Error && 'commitError' in error ? error.commitError : null;
    if (!(commitError instanceof Promise)) {
      done(storageFailure(error, storage.dataDir, 'writing a snapshot'));
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<unknown>((resolve) => {
      timer = setTimeout(() => {
        resolve(error);
      }, COMMIT_ERROR_WAIT_MS);
    });
    void Promise.race([
      commitError.then(
        () => error,
        (cause: unknown) => cause,
      ),
      waited,
    ]).then((cause) => {
      clearTimeout(timer);
      done(storageFailure(cause, storage.dataDir, 'writing a snapshot'));
    });
  }

  /**
   * What a restarting node needs: hard state, snapshot, and the entries after it, as the data dir
   * held them when it was opened (so only before the first persist). The snapshot the WAL names is
   * a file (data null; a state machine behind it is replaced by a copy of it first) or bytes in
   * LMDB; bytes LMDB holds beyond the WAL's mark (a crash between the two writes) are applied as
   * the mark would have.
   */
  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    const storage = this.storage;
    const fromWal = storage.walAtOpen.persisted;
    const marked = fromWal.snapshot ?? null;
    const bytesMeta = (storage.meta.get(META_SNAPSHOT) as SnapshotMeta | undefined) ?? null;
    const files = storage.snapshotFiles;
    if (marked !== null && files.has(marked.index) && (bytesMeta?.index ?? 0) <= marked.index) {
      files.prune(marked.index);
      if (appliedIndexOf(storage.state) < marked.index) storage.restoreStateFromFile(marked.index);
      return { persisted: fromWal, snapshot: { meta: marked, data: null } };
    }
    files.prune(null); // none is named by the WAL: copies a crash left before their marks
    return this.loadSnapshotBytes(fromWal, marked, bytesMeta);
  }

  private loadSnapshotBytes(
    fromWal: PersistedState,
    marked: SnapshotMeta | null,
    meta: SnapshotMeta | null,
  ): { persisted: PersistedState; snapshot: Snapshot | null } {
    const storage = this.storage;
    const data = storage.snapshots.get(SNAPSHOT_DATA);
    if (meta !== null && data === undefined)
      throw new StorageError('data dir is corrupt: snapshot metadata without snapshot data');
    if (meta === null || data === undefined) {
      if (marked !== null)
        throw new StorageError(
          `data dir is corrupt: the log names snapshot ${marked.index}, and none is stored`,
        );
      return { persisted: fromWal, snapshot: null };
    }
    if (marked !== null && meta.index < marked.index)
      throw new StorageError(
        `data dir is corrupt: the stored snapshot (${meta.index}) is older than the one the log names (${marked.index})`,
      );
    let entries = fromWal.entries;
    if (marked === null || meta.index > marked.index) {
      entries = entriesKeptBy(entries, meta);
      // The mark goes into the WAL now: entries appended from here on must replay after it, or the
      // next start would apply this snapshot again after them and drop them.
      storage.markSnapshotInWal(meta, entries);
    }
    return { persisted: { ...fromWal, snapshot: meta, entries }, snapshot: { meta, data } };
  }
}
