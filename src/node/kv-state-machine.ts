import { Packr } from 'msgpackr';
import { SCAN_PAGE_BYTES_MAX, utf8Length } from '../api/limits.ts';
import type { Compare, CompareTarget, LogCommand, TxnOp, WriteCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { TXN_COMPARES_MAX, TXN_OPS_MAX, TXN_RESULT_BYTES_MAX, TXN_SCAN_LIMIT_MAX } from '../base/limits.ts';
import type { MembershipConfig } from '../raft/types.ts';
import {
  applyLeaseCommand,
  attachRefusal,
  EntryWrites,
  leasesWithKeys,
  refused,
  snapshotLeases,
  type SnapshotLease,
} from './lease-apply.ts';
import { applyWithSession, normalizeSession, type CommandKind, type StoredOutcome } from './session-apply.ts';
import { SessionTable, type Session, type SessionRecord } from './sessions.ts';

const snapshotPackr = new Packr({ useRecords: false, moreTypes: false });

/** A stored value with etcd-style revisions: Raft index of creation and of the last change, and a per-key version. */
export interface KvRecord {
  readonly value: string;
  readonly createIndex: number;
  readonly modIndex: number;
  readonly version: number;
  /** The lease the key is attached to; 0: none. */
  readonly leaseId: number;
}

/** What one op of a Transaction branch did, in op order. */
export type TxnOpOutcome =
  | { readonly kind: 'set'; readonly key: string }
  | { readonly kind: 'delete'; readonly key: string; readonly deleted: boolean }
  | { readonly kind: 'get'; readonly key: string; readonly record: KvRecord | null }
  | {
      readonly kind: 'scan';
      readonly records: readonly (readonly [string, KvRecord])[];
      /** More records match than the op's limit returned. */
      readonly more: boolean;
    };

/** What applying one command did. */
export interface ApplyOutcome {
  readonly index: number;
  /** Delete and DeleteMulti: whether each key existed (in command order); CompareAndDelete: [true] when it deleted. */
  readonly deleted: readonly boolean[];
  /**
   * False when a CompareAndSwap or CompareAndDelete found another value (nothing was written), or a
   * Transaction's compares did not all hold (its `failure` branch ran). True for every other command.
   */
  readonly succeeded: boolean;
  /** A CompareAndSwap or CompareAndDelete that failed: the record it found (null: absent). */
  readonly current?: KvRecord | null;
  /** A Transaction: one outcome per op of the branch that ran. */
  readonly results?: readonly TxnOpOutcome[];
  /**
   * A Transaction whose Get and Scan results would exceed TXN_RESULT_BYTES_MAX: its branch was
   * undone, nothing is written (the entry is still a revision), and no results are returned.
   */
  readonly resultsTooLarge?: true;
  /** A retried session sequence: not applied again; this is the first apply's outcome (its index). */
  readonly duplicate?: true;
  /** A session sequence whose outcome the table no longer holds: nothing was applied. */
  readonly sessionExpired?: true;
  /**
   * A session sequence first used for another kind of command (`kind`, the client's error): nothing
   * was applied, and the first call's outcome is not the answer to this one.
   */
  readonly sessionReused?: {
    readonly clientId: string;
    readonly sequence: number;
    readonly kind: CommandKind;
  };
  /** Stored in a session table only: the results exceeded SESSION_RESULT_BYTES_MAX and were dropped. */
  readonly resultsDiscarded?: true;
  /**
   * Every key the entry changed, in the order it changed them: what watchers see of this revision.
   * Absent or empty: nothing changed. Never kept in a session table (a duplicate changes nothing).
   */
  readonly changes?: readonly KvChange[];
  /** A LeaseGrant that took effect: the lease it made. */
  readonly lease?: { readonly id: number; readonly ttlSeconds: number };
  /** A LeaseRevoke that took effect (by request or expiry): the lease and how many keys went with it. */
  readonly revoked?: { readonly id: number; readonly keys: number };
  /** A lease command, or a Set naming a lease, that was refused at apply: nothing was written. */
  readonly leaseRefusal?: LeaseRefusal;
}

/** One key's change in an entry: the record after it (null: deleted) and before it (null: absent). */
export interface KvChange {
  readonly key: string;
  readonly record: KvRecord | null;
  readonly prev: KvRecord | null;
}

/**
 * Why a lease command or a Set with a lease did nothing: the lease does not exist (never granted,
 * revoked, or expired), a grant named an id in use, the cluster or the lease is full, or an expiry
 * revoke was proposed in another term than its entry's (a deposed leader's: ignored).
 */
export interface LeaseRefusal {
  readonly kind: 'not_found' | 'exists' | 'too_many_leases' | 'too_many_keys' | 'stale_expiry';
  readonly leaseId: number;
}

/** A lease as the state machine holds it (its deadline lives only in the leader's Lessor). */
export interface LeaseRecord {
  readonly ttlSeconds: number;
  /** The index of the entry that granted it. */
  readonly grantedIndex: number;
  /** Keys attached to it now (at most LEASE_KEYS_MAX). */
  readonly keyCount: number;
}

/** The replicated state machine: a deterministic function of the applied log prefix. */
export interface StateMachine {
  readonly appliedIndex: number;
  /**
   * How many bytes the state takes now (LMDB: the pages its databases hold; memory: an estimate of
   * its records). The leader refuses writes that may add data once it reaches the quota
   * (--quota-backend-bytes); it falls again when keys are deleted.
   */
  readonly sizeBytes: number;
  /**
   * Apply a command entry; with a client session, a retried sequence is answered from the session
   * table instead (see session-apply.ts). `proposedAtMs` is the leader's proposal time (log time);
   * `term` is the term the entry was appended in (an expiry revoke counts only in its own term).
   * All are required: a default term would silently refuse every expiry revoke.
   */
  apply(
    index: number,
    command: LogCommand,
    session: Session | null,
    proposedAtMs: number,
    term: number,
  ): ApplyOutcome;
  /**
   * Blank and configuration entries advance the applied index without touching data; a
   * configuration is recorded as the membership in effect at `index`.
   */
  applyNoop(index: number, config?: MembershipConfig): void;
  /**
   * Run several applies as one unit of storage work (one LMDB transaction for all the entries of a
   * Ready). Not nested; `run` must not answer clients (an exception inside aborts the whole unit).
   */
  batch(run: () => void): void;
  /** The membership applied last (null before any configuration entry). */
  readonly appliedMembership: MembershipConfig | null;
  get(key: string): KvRecord | undefined;
  /**
   * Up to `limit` records whose key starts with `prefix`, in key order, after `afterKey` (exclusive),
   * and at most SCAN_PAGE_BYTES_MAX of keys and values (at least one record).
   */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage;
  /** The whole state after `appliedIndex`, as bytes. */
  snapshot(): Uint8Array;
  /** Replace the whole state with a snapshot taken at `index` (with the membership in effect there). */
  restore(data: Uint8Array, index: number, config: MembershipConfig): void;
  /** The lease `id`, if it exists. */
  lease(id: number): LeaseRecord | undefined;
  /** Up to `limit` leases with ids above `afterId`, by id. */
  leases(afterId: number, limit: number): [number, LeaseRecord][];
  /**
   * Up to `limit` keys attached to lease `id` after `afterKey` (exclusive; null: from the first), in
   * key order (UTF-8 byte order, compareUtf8). None for an unknown lease.
   */
  leaseKeys(id: number, afterKey: string | null, limit: number): string[];
  /** How many leases exist (at most LEASES_MAX). */
  readonly leaseCount: number;
}

export interface ScanPage {
  readonly records: readonly (readonly [string, KvRecord])[];
  /** More records match after the last one returned. */
  readonly more: boolean;
}

/**
 * One scan page from records in key order starting at the page's first candidate: it ends at the
 * first key outside `prefix`, after `limit` records, or before the record that would take the page
 * past SCAN_PAGE_BYTES_MAX (a page always holds at least one record; one record is far below it).
 */
export function collectScanPage(
  ordered: Iterable<readonly [string, KvRecord]>,
  prefix: string,
  limit: number,
): ScanPage {
  const records: (readonly [string, KvRecord])[] = [];
  let bytes = 0;
  for (const entry of ordered) {
    const [key, record] = entry;
    if (!key.startsWith(prefix)) break;
    const size = utf8Length(key) + utf8Length(record.value);
    if (records.length === limit || (records.length > 0 && bytes + size > SCAN_PAGE_BYTES_MAX))
      return { records, more: true };
    records.push(entry);
    bytes += size;
  }
  return { records, more: false };
}

/**
 * Where records and leases live: Maps in memory, LMDB databases inside a write transaction. Plain
 * storage: lease-apply.ts keeps a lease's key count and its keys in step with the records.
 */
export interface RecordStore {
  get(key: string): KvRecord | undefined;
  set(key: string, record: KvRecord): void;
  delete(key: string): boolean;
  /** As StateMachine.scan, and it sees every earlier write of the command being applied. */
  scan(prefix: string, afterKey: string | null, limit: number): ScanPage;
  getLease(id: number): LeaseRecord | undefined;
  putLease(id: number, lease: LeaseRecord): void;
  removeLease(id: number): void;
  leaseCount(): number;
  /** As StateMachine.leaseKeys. */
  leaseKeys(id: number, afterKey: string | null, limit: number): string[];
  addLeaseKey(id: number, key: string): void;
  removeLeaseKey(id: number, key: string): void;
}

/**
 * UTF-8 byte order (the order LMDB keeps keys in, and the order of value compares), without
 * encoding: it is UTF-16 order except that surrogates (code points past U+FFFF) sort after U+E000–U+FFFF.
 */
export function compareUtf8(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i += 1) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return utf8Rank(x) - utf8Rank(y);
  }
  return a.length - b.length;
}

function utf8Rank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  return unit >= 0xe000 ? unit - 0x800 : unit;
}

/** A scan page over a Map: sorts the matching keys on every call (fine at control-plane sizes). */
export function scanMap(
  map: ReadonlyMap<string, KvRecord>,
  prefix: string,
  afterKey: string | null,
  limit: number,
): ScanPage {
  const keys = [...map.keys()]
    .filter((key) => key.startsWith(prefix) && (afterKey === null || compareUtf8(key, afterKey) > 0))
    .sort(compareUtf8);
  function* ordered(): Generator<[string, KvRecord]> {
    for (const key of keys) {
      const record = map.get(key);
      assert(record !== undefined, 'scanned key exists');
      yield [key, record];
    }
  }
  return collectScanPage(ordered(), prefix, limit);
}

/** The in-memory state: records, leases, and each lease's keys. */
export interface MemoryState {
  readonly records: Map<string, KvRecord>;
  readonly leases: Map<number, LeaseRecord>;
  readonly leaseKeys: Map<number, Set<string>>;
}

export function emptyMemoryState(): MemoryState {
  return { records: new Map(), leases: new Map(), leaseKeys: new Map() };
}

/** Maps as a RecordStore. */
export function mapRecordStore(state: MemoryState): RecordStore {
  const { records, leases, leaseKeys } = state;
  return {
    get: (key) => records.get(key),
    set: (key, record) => {
      records.set(key, record);
    },
    delete: (key) => records.delete(key),
    scan: (prefix, afterKey, limit) => scanMap(records, prefix, afterKey, limit),
    getLease: (id) => leases.get(id),
    putLease: (id, lease) => {
      leases.set(id, lease);
    },
    removeLease: (id) => {
      leases.delete(id);
      leaseKeys.delete(id);
    },
    leaseCount: () => leases.size,
    leaseKeys: (id, afterKey, limit) =>
      [...(leaseKeys.get(id) ?? [])]
        .filter((key) => afterKey === null || compareUtf8(key, afterKey) > 0)
        .sort(compareUtf8)
        .slice(0, limit),
    addLeaseKey: (id, key) => {
      const keys = leaseKeys.get(id) ?? new Set<string>();
      keys.add(key);
      leaseKeys.set(id, keys);
    },
    removeLeaseKey: (id, key) => {
      leaseKeys.get(id)?.delete(key);
    },
  };
}

/** Up to `limit` leases with ids above `afterId`, by id (sorts on every call: at most LEASES_MAX). */
export function leasesAfter(
  leases: ReadonlyMap<number, LeaseRecord>,
  afterId: number,
  limit: number,
): [number, LeaseRecord][] {
  return [...leases.entries()]
    .filter(([id]) => id > afterId)
    .sort((a, b) => a[0] - b[0])
    .slice(0, limit);
}

/**
 * The KV and lease semantics, shared by every state machine: each command is one revision,
 * `index`; `term` is its entry's term (an expiry revoke of another term is refused).
 */
export function applyCommand(
  store: RecordStore,
  index: number,
  command: LogCommand,
  term: number,
): ApplyOutcome {
  if ('LeaseGrant' in command || 'LeaseRevoke' in command)
    return applyLeaseCommand(store, index, command, term);
  const writes = new EntryWrites(store, index);
  const deleted: boolean[] = [];
  if ('Set' in command) {
    const { key, value, lease_id: leaseId = 0 } = command.Set;
    const refusal = attachRefusal(store, key, leaseId);
    if (refusal !== null) return refused(index, refusal);
    writes.set(key, value, leaseId);
  } else if ('SetMulti' in command) {
    for (const [key, value] of command.SetMulti.pairs) writes.set(key, value, 0);
  } else if ('Delete' in command) {
    deleted.push(writes.delete(command.Delete.key));
  } else if ('DeleteMulti' in command) {
    for (const key of command.DeleteMulti.keys) deleted.push(writes.delete(key));
  } else if ('CompareAndSwap' in command) {
    return applyCompareAndSwap(writes, store, index, command.CompareAndSwap);
  } else if ('CompareAndDelete' in command) {
    return applyCompareAndDelete(writes, store, index, command.CompareAndDelete);
  } else {
    return applyTransaction(writes, store, index, command.Transaction);
  }
  return { index, deleted, succeeded: true, ...writes.outcomeChanges() };
}

type CommandBody<K extends string> =
  Extract<WriteCommand, Record<K, unknown>> extends Record<K, infer B> ? B : never;

/** expected null: succeeds iff the key is absent; else iff present with exactly that value. */
function applyCompareAndSwap(
  writes: EntryWrites,
  store: RecordStore,
  index: number,
  body: CommandBody<'CompareAndSwap'>,
): ApplyOutcome {
  const current = store.get(body.key);
  const holds = body.expected === null ? current === undefined : current?.value === body.expected;
  if (!holds) return { index, deleted: [], succeeded: false, current: current ?? null };
  writes.set(body.key, body.new_value, 0);
  return { index, deleted: [], succeeded: true, ...writes.outcomeChanges() };
}

/** Succeeds iff the key is present with exactly that value, and deletes it. */
function applyCompareAndDelete(
  writes: EntryWrites,
  store: RecordStore,
  index: number,
  body: CommandBody<'CompareAndDelete'>,
): ApplyOutcome {
  const current = store.get(body.key);
  if (current?.value !== body.expected) {
    return { index, deleted: [], succeeded: false, current: current ?? null };
  }
  const removed = writes.delete(body.key);
  assert(removed, 'a key found present is deleted');
  return { index, deleted: [true], succeeded: true, ...writes.outcomeChanges() };
}

/**
 * All compares against the state before any op; then the branch they choose, op by op, each op
 * seeing the earlier ones. The bounds validation guarantees are asserted before anything is written.
 * A Set refused for its lease, or results past TXN_RESULT_BYTES_MAX, undo the whole branch.
 */
function applyTransaction(
  writes: EntryWrites,
  store: RecordStore,
  index: number,
  body: CommandBody<'Transaction'>,
): ApplyOutcome {
  assert(body.compare.length <= TXN_COMPARES_MAX, `${body.compare.length} compares in a transaction`);
  assertBranch(body.success);
  assertBranch(body.failure);
  // Every compare is evaluated (and its shape asserted), not only up to the first that fails.
  const holds = body.compare.map((compare) => compareHolds(store.get(compare.key), compare));
  const succeeded = holds.every(Boolean);
  const branch = succeeded ? body.success : body.failure;
  const results: TxnOpOutcome[] = [];
  // Each key is written at most once per branch (asserted above), so its record before the branch
  // is enough to undo the branch.
  const before = new Map<string, KvRecord | undefined>();
  let resultBytes = 0;
  for (const op of branch) {
    if ('Set' in op || 'Delete' in op) {
      const key = 'Set' in op ? op.Set.key : op.Delete.key;
      before.set(key, store.get(key));
    }
    const result = applyTxnOp(writes, store, op);
    if ('leaseId' in result) {
      writes.undo(before);
      return { index, deleted: [], succeeded, leaseRefusal: result };
    }
    resultBytes += txnResultSize(result);
    results.push(result);
    if (resultBytes > TXN_RESULT_BYTES_MAX) {
      writes.undo(before);
      return { index, deleted: [], succeeded, resultsTooLarge: true };
    }
  }
  return { index, deleted: [], succeeded, results, ...writes.outcomeChanges() };
}

/** Key and value bytes a Get or Scan result carries (writes carry none). */
export function txnResultSize(result: TxnOpOutcome): number {
  if (result.kind === 'get')
    return result.record === null ? 0 : utf8Length(result.key) + utf8Length(result.record.value);
  if (result.kind !== 'scan') return 0;
  let bytes = 0;
  for (const [key, record] of result.records) bytes += utf8Length(key) + utf8Length(record.value);
  return bytes;
}

/** At most TXN_OPS_MAX ops, no key written twice, Scan limits positive integers, prefixes well-formed. */
function assertBranch(ops: readonly TxnOp[]): void {
  assert(ops.length <= TXN_OPS_MAX, `${ops.length} ops in a transaction branch`);
  const written = new Set<string>();
  for (const op of ops) {
    if ('Scan' in op) {
      const limit = op.Scan.limit;
      assert(limit === undefined || (Number.isSafeInteger(limit) && limit >= 1), `scan limit ${limit}`);
      assert(op.Scan.prefix.isWellFormed(), 'a scan prefix is well-formed Unicode');
      continue;
    }
    if ('Get' in op) continue;
    const key = 'Set' in op ? op.Set.key : op.Delete.key;
    assert(!written.has(key), `key written twice in one transaction branch: ${key}`);
    written.add(key);
  }
}

/** One op of a branch, or why its Set may not be written (its lease). */
function applyTxnOp(writes: EntryWrites, store: RecordStore, op: TxnOp): TxnOpOutcome | LeaseRefusal {
  if ('Set' in op) {
    const { key, value, lease_id: leaseId = 0 } = op.Set;
    const refusal = attachRefusal(store, key, leaseId);
    if (refusal !== null) return refusal;
    writes.set(key, value, leaseId);
    return { kind: 'set', key };
  }
  if ('Delete' in op) return { kind: 'delete', key: op.Delete.key, deleted: writes.delete(op.Delete.key) };
  if ('Get' in op) return { kind: 'get', key: op.Get.key, record: store.get(op.Get.key) ?? null };
  const limit = Math.min(op.Scan.limit ?? TXN_SCAN_LIMIT_MAX, TXN_SCAN_LIMIT_MAX);
  const page = store.scan(op.Scan.prefix, null, limit);
  return { kind: 'scan', records: page.records, more: page.more };
}

/** A record's numeric compare target (an absent key has 0 everywhere). */
function numericTarget(record: KvRecord | undefined, target: Exclude<CompareTarget, 'value'>): number {
  if (record === undefined) return 0;
  if (target === 'version') return record.version;
  if (target === 'create_index') return record.createIndex;
  if (target === 'mod_index') return record.modIndex;
  return record.leaseId;
}

/** Whether one compare holds; a value compare on an absent key is false whatever its op. */
export function compareHolds(record: KvRecord | undefined, compare: Compare): boolean {
  let order: number;
  if (compare.target === 'value') {
    assert(typeof compare.value === 'string', 'a value compare carries a string');
    if (record === undefined) return false;
    order = Math.sign(compareUtf8(record.value, compare.value));
  } else {
    assert(
      Number.isSafeInteger(compare.value) && (compare.value as number) >= 0,
      `a ${compare.target} compare carries a non-negative integer`,
    );
    order = Math.sign(numericTarget(record, compare.target) - (compare.value as number));
  }
  if (compare.op === 'equal') return order === 0;
  if (compare.op === 'not_equal') return order !== 0;
  if (compare.op === 'greater') return order > 0;
  return order < 0;
}

interface SnapshotBody {
  readonly appliedIndex: number;
  readonly records: readonly (readonly [string, KvRecord])[];
  /** Absent in snapshots from before sessions: an empty table. */
  readonly sessions?: SessionsSnapshot;
  /** Absent in snapshots from before leases (storage format 4 and older): none. */
  readonly leases?: readonly (readonly [number, SnapshotLease])[];
}

/** Everything a snapshot holds but the applied index; each lease with its key count. */
export interface SnapshotState {
  readonly records: readonly (readonly [string, KvRecord])[];
  readonly sessions: SessionsSnapshot;
  readonly leases: readonly (readonly [number, LeaseRecord])[];
}

/** The session table in a snapshot: log time and every client, sorted by id. */
export interface SessionsSnapshot {
  readonly timeMs: number;
  readonly clients: readonly (readonly [string, SessionRecord<StoredOutcome>])[];
}

export const EMPTY_SESSIONS: SessionsSnapshot = { timeMs: 0, clients: [] };

/** A session table as a snapshot holds it. */
export function sessionsSnapshot(table: SessionTable<StoredOutcome>): SessionsSnapshot {
  return { timeMs: table.timeMs, clients: table.entries() };
}

/**
 * A record with its fields in one order (msgpack keeps the order of an object's fields, so equal
 * states give equal bytes whichever machine wrote them); a record of storage format 2, from before
 * lease ids, gets lease id 0. Asserts the shape (snapshots come from the cluster's own nodes).
 */
export function normalizeRecord(stored: unknown): KvRecord {
  assert(typeof stored === 'object' && stored !== null, 'a stored record is an object');
  const { value, createIndex, modIndex, version, leaseId } = stored as Partial<
    Record<keyof KvRecord, unknown>
  >;
  const counters = [createIndex, modIndex, version, leaseId ?? 0];
  assert(typeof value === 'string', 'a stored record has a string value');
  assert(
    counters.every((counter) => Number.isSafeInteger(counter) && (counter as number) >= 0),
    'a stored record has non-negative integer revisions and lease id',
  );
  const [create, mod, ver, lease] = counters as number[];
  return { value, createIndex: create ?? 0, modIndex: mod ?? 0, version: ver ?? 0, leaseId: lease ?? 0 };
}

/**
 * Snapshot bytes: the applied index, every record sorted by key, the session table and the leases
 * sorted by id (so equal states give equal bytes). A lease's key count is not kept: restore counts
 * the records on it.
 */
export function encodeSnapshot(
  appliedIndex: number,
  records: Iterable<readonly [string, KvRecord]>,
  sessions: SessionsSnapshot = EMPTY_SESSIONS,
  leases: Iterable<readonly [number, SnapshotLease]> = [],
): Uint8Array {
  const sorted = [...records]
    .sort((a, b) => compareUtf8(a[0], b[0]))
    .map(([key, record]): [string, KvRecord] => [key, normalizeRecord(record)]);
  const clients = [...sessions.clients]
    .sort((a, b) => compareUtf8(a[0], b[0]))
    .map(([id, session]): [string, SessionRecord<StoredOutcome>] => [id, normalizeSession(session)]);
  const body: SnapshotBody = {
    appliedIndex,
    records: sorted,
    sessions: { timeMs: sessions.timeMs, clients },
    leases: snapshotLeases(leases),
  };
  return snapshotPackr.pack(body);
}

/** The records of snapshot bytes (of this format or of format 2, whose records have no lease id). */
export function decodeSnapshot(data: Uint8Array, index: number): readonly (readonly [string, KvRecord])[] {
  return decodeSnapshotState(data, index).records;
}

/**
 * Records, session table and leases of snapshot bytes (a snapshot from before sessions has an empty
 * table, one from before leases has none); each lease's key count is counted from the records.
 */
export function decodeSnapshotState(data: Uint8Array, index: number): SnapshotState {
  const body = snapshotPackr.unpack(data) as SnapshotBody;
  assert(body.appliedIndex === index, `snapshot data is at ${body.appliedIndex}, metadata says ${index}`);
  const records = body.records.map(([key, record]): [string, KvRecord] => [key, normalizeRecord(record)]);
  const stored = body.sessions ?? EMPTY_SESSIONS;
  assert(Number.isSafeInteger(stored.timeMs) && stored.timeMs >= 0, 'snapshot log time');
  const clients = stored.clients.map(([id, session]): [string, SessionRecord<StoredOutcome>] => [
    id,
    normalizeSession(session),
  ]);
  const leases = leasesWithKeys(snapshotLeases(body.leases ?? []), records);
  return { records, sessions: { timeMs: stored.timeMs, clients }, leases };
}

/** A record's estimated size in memory: its key and value as UTF-16 (2 bytes per code unit). */
function recordBytes(key: string, record: KvRecord): number {
  return 2 * (key.length + record.value.length);
}

/** The in-memory KV state machine (the simulator's and `--storage memory`'s). */
export class MemoryKvStateMachine implements StateMachine {
  private readonly state = emptyMemoryState();
  private readonly store = this.countingStore(mapRecordStore(this.state));
  /** Estimated bytes of the records (recordBytes of each), kept as they are written and deleted. */
  private recordsBytes = 0;
  private readonly sessions = new SessionTable<StoredOutcome>();
  appliedIndex = 0;
  appliedMembership: MembershipConfig | null = null;

  apply(
    index: number,
    command: LogCommand,
    session: Session | null,
    proposedAtMs: number,
    term: number,
  ): ApplyOutcome {
    this.advanceTo(index);
    const proposal = { command, session, proposedAtMs };
    const outcome = applyWithSession(this.sessions, this.store, index, proposal, term);
    this.sessions.takeChanged(); // nothing to write back: the table is the store
    return outcome;
  }

  applyNoop(index: number, config?: MembershipConfig): void {
    this.advanceTo(index);
    if (config !== undefined) this.appliedMembership = config;
  }

  batch(run: () => void): void {
    run();
  }

  get(key: string): KvRecord | undefined {
    return this.state.records.get(key);
  }

  get size(): number {
    return this.state.records.size;
  }

  /** An estimate: 2 bytes per UTF-16 code unit of every key and value (leases and sessions not counted). */
  get sizeBytes(): number {
    return this.recordsBytes;
  }

  /** `store` with every record written or deleted counted in recordsBytes. */
  private countingStore(store: RecordStore): RecordStore {
    const records = this.state.records;
    return {
      ...store,
      set: (key, record) => {
        const before = records.get(key);
        if (before !== undefined) this.recordsBytes -= recordBytes(key, before);
        store.set(key, record);
        this.recordsBytes += recordBytes(key, record);
      },
      delete: (key) => {
        const before = records.get(key);
        if (before !== undefined) this.recordsBytes -= recordBytes(key, before);
        return store.delete(key);
      },
    };
  }

  scan(prefix: string, afterKey: string | null, limit: number): ScanPage {
    return scanMap(this.state.records, prefix, afterKey, limit);
  }

  lease(id: number): LeaseRecord | undefined {
    return this.state.leases.get(id);
  }

  leases(afterId: number, limit: number): [number, LeaseRecord][] {
    return leasesAfter(this.state.leases, afterId, limit);
  }

  leaseKeys(id: number, afterKey: string | null, limit: number): string[] {
    return this.store.leaseKeys(id, afterKey, limit);
  }

  get leaseCount(): number {
    return this.state.leases.size;
  }

  snapshot(): Uint8Array {
    const { records, leases } = this.state;
    return encodeSnapshot(this.appliedIndex, records.entries(), sessionsSnapshot(this.sessions), leases);
  }

  restore(data: Uint8Array, index: number, config: MembershipConfig): void {
    const { records, sessions, leases } = decodeSnapshotState(data, index);
    this.state.records.clear();
    this.state.leases.clear();
    this.state.leaseKeys.clear();
    this.recordsBytes = 0;
    for (const [key, record] of records) {
      this.state.records.set(key, record);
      this.recordsBytes += recordBytes(key, record);
    }
    for (const [id, lease] of leases) this.state.leases.set(id, lease);
    for (const [key, record] of records)
      if (record.leaseId !== 0) this.store.addLeaseKey(record.leaseId, key);
    this.sessions.load(index, sessions.timeMs, sessions.clients);
    this.appliedIndex = index;
    this.appliedMembership = config;
  }

  private advanceTo(index: number): void {
    assert(index === this.appliedIndex + 1, `apply out of order: ${index} after ${this.appliedIndex}`);
    this.appliedIndex = index;
  }
}
