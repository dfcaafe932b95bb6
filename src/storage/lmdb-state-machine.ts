import { TransactionFlags } from 'lmdb';
import type { LogCommand } from '../api/types.ts';
import {
  collectScanPage,
  decodeSnapshotState,
  type ApplyOutcome,
  type KvRecord,
  type LeaseRecord,
  type RecordStore,
  type ScanPage,
  type StateMachine,
} from '../node/kv-state-machine.ts';
import { SNAPSHOT_BYTES_MAX } from '../base/limits.ts';
import { applyWithSession, normalizeSession, type StoredOutcome } from '../node/session-apply.ts';
import { SESSIONS_MAX, SessionTable, type Session, type SessionRecord } from '../node/sessions.ts';
import { assert } from '../base/assert.ts';
import type { MembershipConfig } from '../raft/types.ts';
import { isStorageFault, StorageError, storageFailure } from './errors.ts';
import { leaseKeyEntry, leaseKeyEntryAfter, leaseKeyOf, leaseKeysStart } from './lease-keys.ts';
import type { LmdbStorage } from './lmdb-store.ts';
import {
  encodeStateDatabases,
  META_APPLIED,
  META_MEMBERSHIP,
  META_SESSION_TIME,
  stateBytesInUse,
} from './state-databases.ts';

/** How many leases the `leases` database holds (kept with it in each transaction). */
const META_LEASE_COUNT = 'lease_count';

/** lmdb-js's default for transactionSync: commit now and flush. */
const TRANSACTION_SYNC_COMMIT = (TransactionFlags.ABORTABLE |
  TransactionFlags.SYNCHRONOUS_COMMIT) as TransactionFlags;
/** Commit now without waiting for the disk (the log is the durable record). */
const TRANSACTION_NO_SYNC_FLUSH = (TransactionFlags.ABORTABLE |
  TransactionFlags.SYNCHRONOUS_COMMIT |
  TransactionFlags.NO_SYNC_FLUSH) as TransactionFlags;

/**
 * The KV state machine in LMDB: each apply is one transaction that changes the records and the
 * applied index together, so a restart never applies an entry twice. Applies are not flushed one
 * by one: the log is the durable record; after a crash the machine replays from its applied index.
 */
export class LmdbKvStateMachine implements StateMachine {
  private readonly storage: LmdbStorage;
  private batching = false;
  /** The `sessions` database in memory (loaded at open, written back in each apply's transaction). */
  private readonly sessions = new SessionTable<StoredOutcome>();
  appliedIndex: number;
  appliedMembership: MembershipConfig | null;
  /** sizeBytes as last measured, at the applied index it was measured at (-1: not yet). */
  private measured = { index: -1, bytes: 0 };

  constructor(storage: LmdbStorage) {
    this.storage = storage;
    this.appliedIndex = 0;
    this.appliedMembership = null;
    this.reload();
  }

  /** Read what the machine keeps in memory from storage (at open, and after a snapshot file replaced the state). */
  reload(): void {
    this.appliedIndex = (this.storage.stateMeta.get(META_APPLIED) as number | undefined) ?? 0;
    this.appliedMembership =
      (this.storage.stateMeta.get(META_MEMBERSHIP) as MembershipConfig | undefined) ?? null;
    this.loadSessions();
  }

  /** The session table from storage (after open, or after an aborted transaction left memory ahead). */
  private loadSessions(): void {
    const timeMs = (this.storage.stateMeta.get(META_SESSION_TIME) as number | undefined) ?? 0;
    const clients: [string, SessionRecord<StoredOutcome>][] = [];
    for (const { key, value } of this.storage.sessions.getRange({})) {
      assert(clients.length < SESSIONS_MAX, 'stored sessions are bounded');
      clients.push([key, normalizeSession(value)]);
    }
    this.sessions.load(this.appliedIndex, timeMs, clients);
  }

  /** Write the clients the last apply changed or dropped, and the log time (inside its transaction). */
  private storeSessions(): void {
    for (const clientId of this.sessions.takeChanged()) {
      const record = this.sessions.get(clientId);
      if (record === undefined) this.storage.sessions.removeSync(clientId);
      else this.storage.sessions.putSync(clientId, record);
    }
    this.storage.stateMeta.putSync(META_SESSION_TIME, this.sessions.timeMs);
  }

  apply(
    index: number,
    command: LogCommand,
    session: Session | null,
    proposedAtMs: number,
    term: number,
  ): ApplyOutcome {
    this.assertNext(index);
    const store = this.recordStore();
    const proposal = { command, session, proposedAtMs };
    let outcome: ApplyOutcome;
    try {
      outcome = this.inTransaction(() => {
        const result = applyWithSession(this.sessions, store, index, proposal, term);
        this.storeSessions();
        this.storage.stateMeta.putSync(META_APPLIED, index);
        return result;
      });
    } catch (error) {
      if (!this.batching) this.loadSessions(); // the transaction was aborted: the table is the stored one
      throw error;
    }
    this.appliedIndex = index;
    return outcome;
  }

  /** The machine's databases as a RecordStore (used inside a write transaction). */
  private recordStore(): RecordStore {
    const { kv, leases, leaseKeys, stateMeta } = this.storage;
    return {
      get: (key) => kv.get(key),
      set: (key, record) => {
        kv.putSync(key, record);
      },
      delete: (key) => kv.removeSync(key),
      scan: (prefix, afterKey, limit) => this.scan(prefix, afterKey, limit),
      getLease: (id) => leases.get(id),
      putLease: (id, lease) => {
        if (leases.get(id) === undefined) stateMeta.putSync(META_LEASE_COUNT, this.leaseCount + 1);
        leases.putSync(id, lease);
      },
      removeLease: (id) => {
        if (leases.removeSync(id)) stateMeta.putSync(META_LEASE_COUNT, this.leaseCount - 1);
      },
      leaseCount: () => this.leaseCount,
      leaseKeys: (id, afterKey, limit) => this.leaseKeys(id, afterKey, limit),
      addLeaseKey: (id, key) => {
        leaseKeys.putSync(leaseKeyEntry(id, key), true);
      },
      removeLeaseKey: (id, key) => {
        leaseKeys.removeSync(leaseKeyEntry(id, key));
      },
    };
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
      this.loadSessions();
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

  /**
   * The bytes the state's pages take in state.mdb (stateBytesInUse), measured once per applied
   * index: the leader asks on every write, and the state changes only when an entry is applied.
   * Read outside any write transaction (handleWrite), so it measures committed state.
   */
  get sizeBytes(): number {
    if (this.measured.index !== this.appliedIndex)
      this.measured = { index: this.appliedIndex, bytes: stateBytesInUse(this.storage.state) };
    return this.measured.bytes;
  }

  get(key: string): KvRecord | undefined {
    return this.storage.kv.get(key);
  }

  /**
   * An ordered range read from the first key after `afterKey` (or the prefix) while keys keep the
   * prefix. Inside an apply it runs in the write transaction, so it sees that command's earlier writes.
   */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage {
    const start = afterKey !== null && afterKey >= prefix ? `${afterKey}\u0000` : prefix;
    return collectScanPage(
      this.storage.kv.getRange({ start }).map(({ key, value }): [string, KvRecord] => [key, value]),
      prefix,
      limit,
    );
  }

  lease(id: number): LeaseRecord | undefined {
    return this.storage.leases.get(id);
  }

  leases(afterId: number, limit: number): [number, LeaseRecord][] {
    const range = this.storage.leases.getRange({ start: afterId + 1, limit });
    return [...range].map(({ key, value }): [number, LeaseRecord] => [key, value]);
  }

  /** Entries sort by lease then by the key's UTF-8 bytes (compareUtf8 order): one range read. */
  leaseKeys(id: number, afterKey: string | null, limit: number): string[] {
    const range = this.storage.leaseKeys.getKeys({
      start: afterKey === null ? leaseKeysStart(id) : leaseKeyEntryAfter(id, afterKey),
      end: leaseKeysStart(id + 1),
      limit,
    });
    return [...range.map(leaseKeyOf)]; // decoded as read: lmdb may reuse a key's buffer
  }

  get leaseCount(): number {
    return (this.storage.stateMeta.get(META_LEASE_COUNT) as number | undefined) ?? 0;
  }

  /**
   * The state at the applied index, read from one LMDB read transaction (a consistent view even if
   * writes land meanwhile), bounded by SNAPSHOT_BYTES_MAX: what a backup holds. The node's own
   * snapshots are files (snapshot-files.ts), never this.
   */
  snapshot(): Uint8Array {
    const { index, data } = encodeStateDatabases(
      this.storage.state,
      SNAPSHOT_BYTES_MAX,
      (max) => new StorageError(`state machine exceeds the snapshot bound of ${max} bytes`),
    );
    assert(
      index === this.appliedIndex,
      `read transaction sees applied ${index}, machine ${this.appliedIndex}`,
    );
    return data;
  }

  /**
   * Replace records, sessions, leases, applied index and membership in one transaction: a crash
   * leaves the old state or the new. Each lease's keys are rebuilt from the records' lease ids.
   */
  restore(data: Uint8Array, index: number, config: MembershipConfig): void {
    const { records, sessions, leases } = decodeSnapshotState(data, index);
    const { kv, leaseKeys, stateMeta } = this.storage;
    this.write(
      'restoring a snapshot into the state machine',
      () => {
        for (const key of kv.getKeys({})) kv.removeSync(key);
        for (const [key, record] of records) kv.putSync(key, record);
        for (const key of this.storage.sessions.getKeys({})) this.storage.sessions.removeSync(key);
        for (const [key, session] of sessions.clients) this.storage.sessions.putSync(key, session);
        for (const id of this.storage.leases.getKeys({})) this.storage.leases.removeSync(id);
        for (const [id, lease] of leases) this.storage.leases.putSync(id, lease);
        for (const key of leaseKeys.getKeys({})) leaseKeys.removeSync(key);
        for (const [key, record] of records)
          if (record.leaseId !== 0) leaseKeys.putSync(leaseKeyEntry(record.leaseId, key), true);
        stateMeta.putSync(META_LEASE_COUNT, leases.length);
        stateMeta.putSync(META_SESSION_TIME, sessions.timeMs);
        stateMeta.putSync(META_APPLIED, index);
        stateMeta.putSync(META_MEMBERSHIP, config);
      },
      TRANSACTION_SYNC_COMMIT,
    );
    this.appliedIndex = index;
    this.appliedMembership = config;
    this.sessions.load(index, sessions.timeMs, sessions.clients);
  }

  private assertNext(index: number): void {
    assert(index === this.appliedIndex + 1, `apply out of order: ${index} after ${this.appliedIndex}`);
  }
}
