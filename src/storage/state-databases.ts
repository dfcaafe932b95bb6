import { open, type Database, type RootDatabase } from 'lmdb';
import { LEASES_MAX, LMDB_MAP_SIZE_BYTES } from '../base/limits.ts';
import { assert } from '../base/assert.ts';
import { encodeSnapshot, type KvRecord, type LeaseRecord } from '../node/kv-state-machine.ts';
import { outcomeBytes, type StoredOutcome } from '../node/session-apply.ts';
import { SESSIONS_MAX, type SessionRecord } from '../node/sessions.ts';

/** In the state environment: the applied index and the membership applied with it. */
export const META_APPLIED = 'applied';
export const META_MEMBERSHIP = 'membership';
/** The session table's log time (its clients are in the `sessions` database). */
export const META_SESSION_TIME = 'session_time';

/** The state machine's environment (`state.mdb`, or a snapshot file copied from it) and its databases. */
export interface StateDatabases {
  readonly env: RootDatabase;
  readonly kv: Database<KvRecord, string>;
  readonly meta: Database<unknown, string>;
  /** Client sessions of exactly-once writes: one record per client id (format 4). */
  readonly sessions: Database<SessionRecord<StoredOutcome>, string>;
  /** Leases by id (format 5). */
  readonly leases: Database<LeaseRecord, number>;
  /**
   * The keys of each lease: leaseKeyEntry(id, key) → true, by lease then by the key's UTF-8 bytes
   * (format 5; binary keys, see lease-keys.ts).
   */
  readonly leaseKeys: Database<true, Buffer>;
}

/**
 * Open a state environment. Written without fsync (`noSync`): the live machine is made durable by
 * snapshot files (snapshot-files.ts), each a consistent copy synced before the log forgets what it covers.
 */
export function openStateDatabases(path: string, readOnly = false): StateDatabases {
  const env = open({ path, mapSize: LMDB_MAP_SIZE_BYTES, compression: false, noSync: true, readOnly });
  return {
    env,
    kv: env.openDB<KvRecord, string>({ name: 'kv' }),
    meta: env.openDB<unknown, string>({ name: 'meta' }),
    sessions: env.openDB<SessionRecord<StoredOutcome>, string>({ name: 'sessions' }),
    leases: env.openDB<LeaseRecord, number>({ name: 'leases' }),
    leaseKeys: env.openDB<true, Buffer>({ name: 'lease_keys', keyEncoding: 'binary' }),
  };
}

/** The applied index a state environment holds (0: nothing applied). */
export function appliedIndexOf(state: StateDatabases): number {
  return (state.meta.get(META_APPLIED) as number | undefined) ?? 0;
}

/** What lmdb-js's getStats() reports of one database's B-tree (among other fields). */
interface TreeStats {
  readonly pageSize: number;
  readonly treeBranchPageCount: number;
  readonly treeLeafPageCount: number;
  readonly overflowPages: number;
}

/**
 * The bytes of the pages the state's databases hold now (each tree's branch, leaf and overflow
 * pages; O(1) per database, no scan). Unlike the file's high-water mark (lastPageNumber), which
 * never falls, this falls when keys are deleted: LMDB frees their pages and later writes reuse them.
 */
export function stateBytesInUse(state: StateDatabases): number {
  let pages = 0;
  let pageSize = 0;
  for (const database of [state.env, state.kv, state.meta, state.sessions, state.leases, state.leaseKeys]) {
    const stats = database.getStats() as TreeStats;
    pages += stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages;
    pageSize = stats.pageSize;
  }
  return pages * pageSize;
}

/**
 * The state as snapshot bytes (encodeSnapshot), read from one read transaction: a consistent view
 * even while writes land. Materialized whole: `recordsBytesMax` bounds it (past it: `tooLarge`).
 */
export function encodeStateDatabases(
  state: StateDatabases,
  recordsBytesMax: number,
  tooLarge: (bytes: number) => Error,
): { readonly index: number; readonly data: Uint8Array } {
  const transaction = state.env.useReadTransaction();
  try {
    const index = (state.meta.get(META_APPLIED, { transaction }) as number | undefined) ?? 0;
    let bytes = 0;
    const count = (size: number): void => {
      bytes += size + SNAPSHOT_RECORD_OVERHEAD_BYTES;
      if (bytes > recordsBytesMax) throw tooLarge(recordsBytesMax);
    };
    const records: [string, KvRecord][] = [];
    for (const { key, value } of state.kv.getRange({ transaction })) {
      count(key.length + value.value.length);
      records.push([key, value]);
    }
    const timeMs = (state.meta.get(META_SESSION_TIME, { transaction }) as number | undefined) ?? 0;
    const clients: [string, SessionRecord<StoredOutcome>][] = [];
    for (const { key, value } of state.sessions.getRange({ transaction })) {
      assert(clients.length < SESSIONS_MAX, 'stored sessions are bounded');
      for (const [, outcome] of value.results) count(outcomeBytes(outcome));
      clients.push([key, value]);
    }
    const leases: [number, LeaseRecord][] = [];
    for (const { key, value } of state.leases.getRange({ transaction })) {
      assert(leases.length < LEASES_MAX, 'stored leases are bounded');
      count(0);
      leases.push([key, value]);
    }
    return { index, data: encodeSnapshot(index, records, { timeMs, clients }, leases) };
  } finally {
    transaction.done();
  }
}

/** Per-record size estimate beyond key and value, for the snapshot size bound. */
const SNAPSHOT_RECORD_OVERHEAD_BYTES = 32;
