import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { open, TransactionFlags, type Database, type RootDatabase } from 'lmdb';
import type { WriteCommand } from '../api/types.ts';
import type { LogStore, PersistBatch, Snapshot } from '../node/interfaces.ts';
import {
  applyCommand,
  collectScanPage,
  decodeSnapshot,
  encodeSnapshot,
  type ApplyOutcome,
  type KvRecord,
  type RecordStore,
  type ScanPage,
  type StateMachine,
} from '../node/kv-state-machine.ts';
import { SNAPSHOT_BYTES_MAX } from '../node/snapshot-transfer.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { DataDirLock } from './data-dir-lock.ts';
import { firstLine, isStorageFault, StorageError, storageFailure } from './errors.ts';
import {
  EMPTY_HARD_STATE,
  type Entry,
  type HardState,
  type MembershipConfig,
  type PersistedState,
  type SnapshotMeta,
} from '../raft/types.ts';

/** On-disk format of this release; a data dir of another version is refused, never guessed at. */
export const STORAGE_FORMAT_VERSION = 2;
/** LMDB map size: the most a data dir may grow to (virtual address space, not preallocated). */
export const LMDB_MAP_SIZE_BYTES = 16 * 1024 * 1024 * 1024;
/** Per-record size estimate beyond key and value, for the snapshot size bound. */
const SNAPSHOT_RECORD_OVERHEAD_BYTES = 32;
/** Entries removed per truncation or compaction pass are bounded by the log itself; this caps one pass. */
export const LOG_REMOVE_PER_BATCH_MAX = 10_000_000;

export { StorageError };

const META_FORMAT = 'format';
const META_HARD_STATE = 'hard_state';
const META_SNAPSHOT = 'snapshot';
const META_APPLIED = 'applied';
const META_MEMBERSHIP = 'membership';
/** In the log environment: false while the state machine may hold unsynced writes. */
const META_STATE_CLEAN = 'state_clean';
const SNAPSHOT_DATA = 'data';

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
   * The state machine lives in its own environment (format 2), opened without fsync: the per-
   * transaction no-sync flag was not honoured (strace: one fdatasync per apply, on the event loop).
   * Without syncs LMDB promises neither durability nor integrity after a crash, so the machine is
   * trusted only after a clean close (which syncs it and records that in the synced log
   * environment); after any other stop it is discarded and rebuilt from the durable snapshot and
   * the log (RaftNode restores the snapshot and the core replays the committed entries after it).
   */
  readonly stateEnv: RootDatabase;
  readonly kv: Database<KvRecord, string>;
  readonly stateMeta: Database<unknown, string>;
  private readonly statePath: string;
  /** The state machine was discarded at open (the last stop was not a clean close). */
  readonly stateRebuilt: boolean;
  readonly dataDir: string;
  private readonly lock: DataDirLock;
  private closed = false;

  private constructor(env: RootDatabase, dataDir: string, lock: DataDirLock) {
    assert(lock.held && lock.dataDir === dataDir, 'the data dir is locked before it is opened');
    this.env = env;
    this.dataDir = dataDir;
    this.lock = lock;
    this.log = env.openDB<Entry, number>({ name: 'log' });
    this.meta = env.openDB<unknown, string>({ name: 'meta' });
    this.snapshots = env.openDB<Uint8Array, string>({ name: 'snapshot', encoding: 'binary' });
    this.nodes = env.openDB<unknown, number>({ name: 'nodes' });
    this.statePath = `${dataDir}/state.mdb`;
    this.stateRebuilt = this.meta.get(META_STATE_CLEAN) !== true && existsSync(this.statePath);
    if (this.stateRebuilt) {
      rmSync(this.statePath, { force: true });
      rmSync(`${this.statePath}-lock`, { force: true });
    }
    this.stateEnv = open({
      path: this.statePath,
      mapSize: LMDB_MAP_SIZE_BYTES,
      compression: false,
      noSync: true,
    });
    this.kv = this.stateEnv.openDB<KvRecord, string>({ name: 'kv' });
    this.stateMeta = this.stateEnv.openDB<unknown, string>({ name: 'meta' });
    try {
      this.meta.putSync(META_STATE_CLEAN, false); // synced before the first apply can touch the machine
    } catch (error) {
      void this.stateEnv.close();
      throw error;
    }
  }

  /**
   * Open (or create) the data dir, locked to this process first (a second process gets
   * DataDirInUseError naming the holder, before anything in the directory is opened or deleted);
   * refuses a different format version with a clear message.
   */
  static open(dataDir: string): LmdbStorage {
    try {
      mkdirSync(dataDir, { recursive: true });
    } catch (error) {
      throw new StorageError(`cannot create data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    const lock = DataDirLock.acquire(dataDir);
    try {
      return LmdbStorage.openLocked(dataDir, lock);
    } catch (error) {
      lock.release();
      throw error;
    }
  }

  private static openLocked(dataDir: string, lock: DataDirLock): LmdbStorage {
    let env: RootDatabase;
    try {
      env = open({ path: `${dataDir}/aspen.mdb`, mapSize: LMDB_MAP_SIZE_BYTES, compression: false });
    } catch (error) {
      throw new StorageError(`cannot open data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    // The format is checked before anything in the directory is touched.
    const format = env.openDB<unknown, string>({ name: 'meta' }).get(META_FORMAT);
    if (format !== undefined && format !== STORAGE_FORMAT_VERSION) {
      void env.close();
      throw new StorageError(
        `data dir ${dataDir} has storage format ${JSON.stringify(format)}; this release reads format ${STORAGE_FORMAT_VERSION} (there is no migration yet: move the directory aside to start this node empty, and let it catch up from the cluster)`,
      );
    }
    let storage: LmdbStorage;
    try {
      storage = new LmdbStorage(env, dataDir, lock);
      if (format === undefined) storage.meta.putSync(META_FORMAT, STORAGE_FORMAT_VERSION);
    } catch (error) {
      if (error instanceof AssertionError) throw error;
      void env.close();
      throw new StorageError(`cannot open data dir ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    return storage;
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
   * After a storage failure: close without marking the state machine clean, so the next start
   * rebuilds it from the snapshot and the log; wait at most CLOSE_AFTER_FAILURE_WAIT_MS (lmdb-js
   * does not settle close() after a failed commit), then let go of the data dir.
   */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_AFTER_FAILURE_WAIT_MS);
    });
    const closing = Promise.allSettled([
      Promise.resolve().then(() => this.stateEnv.close()),
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
 * The durable Raft log: one LMDB transaction per Ready batch (group commit), acknowledged only
 * after `env.flushed` — lmdb-js resolves a transaction when it is committed (visible), which is not
 * yet on disk with its default overlapping sync.
 */
export class LmdbLogStore implements LogStore {
  private readonly storage: LmdbStorage;
  private batches = 0;
  /** Test hook: sees each batch committed, then flushed. */
  onDurabilityEvent: ((event: DurabilityEvent) => void) | null = null;

  constructor(storage: LmdbStorage) {
    this.storage = storage;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    this.batches += 1;
    const batchNumber = this.batches;
    const lastIndex = batch.entries.at(-1)?.index ?? 0;
    const storage = this.storage;
    storage.env
      .transaction(() => {
        if (batch.snapshot !== null) this.writeSnapshot(batch.snapshot);
        const first = batch.entries[0];
        if (first !== undefined) this.removeFrom(first.index);
        for (const entry of batch.entries) void storage.log.put(entry.index, entry);
        if (batch.hardState !== null) void storage.meta.put(META_HARD_STATE, batch.hardState);
      })
      .then(() => {
        this.onDurabilityEvent?.({ kind: 'committed', batch: batchNumber, lastIndex });
        return storage.env.flushed;
      })
      .then(
        () => {
          this.onDurabilityEvent?.({ kind: 'flushed', batch: batchNumber, lastIndex });
          done(null);
        },
        (error: unknown) => {
          this.failed(error, done);
        },
      );
  }

  /**
   * A batch that did not reach the disk: find the cause and report it as one StorageError. lmdb-js
   * rejects a failed asynchronous commit with "Commit failed" and puts the cause (ENOSPC, EIO) in
   * the promise `commitError`; it also leaves its own commit promise for the batch rejected with no
   * handler (the process would die of an unhandled rejection), which is handled here.
   */
  private failed(error: unknown, done: (error: Error | null) => void): void {
    const storage = this.storage;
    void storage.env.committed.then(undefined, () => undefined);
    const commitError: unknown = error instanceof Error && 'commitError' in error ? error.commitError : null;
    if (!(commitError instanceof Promise)) {
      done(storageFailure(error, storage.dataDir, 'writing the log'));
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
      done(storageFailure(cause, storage.dataDir, 'writing the log'));
    });
  }

  /** Keep the snapshot; drop the entries it covers (all of them when the log does not continue it). */
  private writeSnapshot(snapshot: Snapshot): void {
    const meta = snapshot.meta;
    const covered = this.storage.log.get(meta.index);
    const keep = covered !== undefined && covered.term === meta.term;
    this.removeRange(0, keep ? meta.index + 1 : Number.MAX_SAFE_INTEGER);
    void this.storage.meta.put(META_SNAPSHOT, meta);
    void this.storage.snapshots.put(SNAPSHOT_DATA, snapshot.data);
  }

  private removeFrom(index: number): void {
    this.removeRange(index, Number.MAX_SAFE_INTEGER);
  }

  private removeRange(start: number, end: number): void {
    let removed = 0;
    for (const key of this.storage.log.getKeys({ start, end })) {
      assert(removed < LOG_REMOVE_PER_BATCH_MAX, 'log removal bound');
      void this.storage.log.remove(key);
      removed += 1;
    }
  }

  /** What a restarting node needs: hard state, snapshot (with data), and the entries after it. */
  load(): { persisted: PersistedState; snapshot: Snapshot | null } {
    const storage = this.storage;
    const hardState = (storage.meta.get(META_HARD_STATE) as HardState | undefined) ?? EMPTY_HARD_STATE;
    const meta = (storage.meta.get(META_SNAPSHOT) as SnapshotMeta | undefined) ?? null;
    const data = storage.snapshots.get(SNAPSHOT_DATA);
    if (meta !== null && data === undefined)
      throw new StorageError('data dir is corrupt: snapshot metadata without snapshot data');
    const entries: Entry[] = [];
    let expected = (meta?.index ?? 0) + 1;
    for (const { key, value } of storage.log.getRange({ start: expected })) {
      if (key !== expected || value.index !== key)
        throw new StorageError(`data dir is corrupt: log entry ${key} where ${expected} was expected`);
      entries.push(value);
      expected += 1;
    }
    const snapshot = meta === null || data === undefined ? null : { meta, data };
    return { persisted: { hardState, snapshot: meta, entries }, snapshot };
  }
}

/**
 * The KV state machine in LMDB: each apply is one transaction that changes the records and the
 * applied index together, so a restart never applies an entry twice. Applies are not flushed one
 * by one: the log is the durable record; after a crash the machine replays from its applied index.
 */
export class LmdbKvStateMachine implements StateMachine {
  private readonly storage: LmdbStorage;
  private batching = false;
  appliedIndex: number;
  appliedMembership: MembershipConfig | null;

  constructor(storage: LmdbStorage) {
    this.storage = storage;
    this.appliedIndex = (storage.stateMeta.get(META_APPLIED) as number | undefined) ?? 0;
    this.appliedMembership = (storage.stateMeta.get(META_MEMBERSHIP) as MembershipConfig | undefined) ?? null;
  }

  apply(index: number, command: WriteCommand): ApplyOutcome {
    this.assertNext(index);
    const kv = this.storage.kv;
    const store: RecordStore = {
      get: (key) => kv.get(key),
      set: (key, record) => {
        kv.putSync(key, record);
      },
      delete: (key) => kv.removeSync(key),
    };
    const outcome = this.inTransaction(() => {
      const result = applyCommand(store, index, command);
      this.storage.stateMeta.putSync(META_APPLIED, index);
      return result;
    });
    this.appliedIndex = index;
    return outcome;
  }

  /** The applied index and, for a configuration entry, the membership change together in one transaction. */
  applyNoop(index: number, config?: MembershipConfig): void {
    this.assertNext(index);
    this.inTransaction(() => {
      this.storage.stateMeta.putSync(META_APPLIED, index);
      if (config !== undefined) this.storage.stateMeta.putSync(META_MEMBERSHIP, config);
    });
    this.appliedIndex = index;
    if (config !== undefined) this.appliedMembership = config;
  }

  /**
   * One transaction for every apply inside `run` (a transaction per entry was the top LMDB frame of
   * all three nodes' profiles under 64 clients). The applied index moves with the records, so a
   * crash keeps all of the batch or none of it.
   */
  batch(run: () => void): void {
    assert(!this.batching, 'state machine batches do not nest');
    const appliedBefore = this.appliedIndex;
    const membershipBefore = this.appliedMembership;
    this.batching = true;
    try {
      this.write('applying to the state machine', run);
    } catch (error) {
      this.appliedIndex = appliedBefore; // the transaction was aborted: nothing of it is stored
      this.appliedMembership = membershipBefore;
      throw error;
    } finally {
      this.batching = false;
    }
  }

  private inTransaction<T>(run: () => T): T {
    return this.batching ? run() : this.write('applying to the state machine', run);
  }

  /**
   * One transaction of the machine. A failure of LMDB or of the disk (ENOSPC, EIO) becomes one
   * StorageError, which fail-stops the node; anything else (a broken assertion) stays what it is.
   */
  private write<T>(doing: string, run: () => T, flags = TRANSACTION_NO_SYNC_FLUSH): T {
    try {
      return this.storage.stateEnv.transactionSync(run, flags);
    } catch (error) {
      throw isStorageFault(error) ? storageFailure(error, this.storage.dataDir, doing) : error;
    }
  }

  get(key: string): KvRecord | undefined {
    return this.storage.kv.get(key);
  }

  /** An ordered range read from the first key after `afterKey` (or the prefix) while keys keep the prefix. */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage {
    const start = afterKey !== null && afterKey >= prefix ? `${afterKey}\u0000` : prefix;
    return collectScanPage(
      this.storage.kv.getRange({ start }).map(({ key, value }): [string, KvRecord] => [key, value]),
      prefix,
      limit,
    );
  }

  /**
   * The state at the applied index, read from one LMDB read transaction (a consistent view even if
   * writes land meanwhile), bounded by SNAPSHOT_BYTES_MAX. The node sends it in bounded chunks.
   */
  snapshot(): Uint8Array {
    const transaction = this.storage.stateEnv.useReadTransaction();
    try {
      const appliedIndex =
        (this.storage.stateMeta.get(META_APPLIED, { transaction }) as number | undefined) ?? 0;
      assert(
        appliedIndex === this.appliedIndex,
        `read transaction sees applied ${appliedIndex}, machine ${this.appliedIndex}`,
      );
      const records: [string, KvRecord][] = [];
      let bytes = 0;
      for (const { key, value } of this.storage.kv.getRange({ transaction })) {
        bytes += key.length + value.value.length + SNAPSHOT_RECORD_OVERHEAD_BYTES;
        if (bytes > SNAPSHOT_BYTES_MAX)
          throw new StorageError(`state machine exceeds the snapshot bound of ${SNAPSHOT_BYTES_MAX} bytes`);
        records.push([key, value]);
      }
      return encodeSnapshot(appliedIndex, records);
    } finally {
      transaction.done();
    }
  }

  /** Replace records, applied index and membership in one transaction: a crash leaves the old state or the new. */
  restore(data: Uint8Array, index: number, config: MembershipConfig): void {
    const records = decodeSnapshot(data, index);
    this.write(
      'restoring a snapshot into the state machine',
      () => {
        for (const key of this.storage.kv.getKeys({})) this.storage.kv.removeSync(key);
        for (const [key, record] of records) this.storage.kv.putSync(key, record);
        this.storage.stateMeta.putSync(META_APPLIED, index);
        this.storage.stateMeta.putSync(META_MEMBERSHIP, config);
      },
      TRANSACTION_SYNC_COMMIT,
    );
    this.appliedIndex = index;
    this.appliedMembership = config;
  }

  private assertNext(index: number): void {
    assert(index === this.appliedIndex + 1, `apply out of order: ${index} after ${this.appliedIndex}`);
  }
}

/** lmdb-js's default for transactionSync: commit now and flush. */
const TRANSACTION_SYNC_COMMIT = (TransactionFlags.ABORTABLE |
  TransactionFlags.SYNCHRONOUS_COMMIT) as TransactionFlags;
/** Commit now without waiting for the disk (the log is the durable record). */
const TRANSACTION_NO_SYNC_FLUSH = (TransactionFlags.ABORTABLE |
  TransactionFlags.SYNCHRONOUS_COMMIT |
  TransactionFlags.NO_SYNC_FLUSH) as TransactionFlags;
