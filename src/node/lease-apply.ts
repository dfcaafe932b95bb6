import type { LeaseCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { LEASE_ID_MAX, LEASE_KEYS_MAX, LEASE_TTL_SECONDS_MAX, LEASES_MAX } from '../base/limits.ts';
import type {
  ApplyOutcome,
  KvChange,
  KvRecord,
  LeaseRecord,
  LeaseRefusal,
  RecordStore,
} from './kv-state-machine.ts';

/**
 * Leases in the state machine, shared by every store: the only code that writes a record (so a
 * lease's keys, its key count and the entry's `changes` always follow the records, undo included),
 * and the LeaseGrant and LeaseRevoke commands.
 */

/**
 * The writes of one entry at `index`: each put and delete goes through here and is listed in
 * `changes`, in order (a delete of an absent key changes nothing and is not listed).
 */
export class EntryWrites {
  readonly changes: KvChange[] = [];
  private readonly store: RecordStore;
  private readonly index: number;

  constructor(store: RecordStore, index: number) {
    this.store = store;
    this.index = index;
  }

  /** Set with revisions (mod_index = index, version + 1, create_index on creation) on lease `leaseId` (0: none). */
  set(key: string, value: string, leaseId: number): void {
    const prev = this.store.get(key);
    const record: KvRecord = {
      value,
      createIndex: prev?.createIndex ?? this.index,
      modIndex: this.index,
      version: (prev?.version ?? 0) + 1,
      leaseId,
    };
    writeRecord(this.store, key, prev, record);
    this.changes.push({ key, record, prev: prev ?? null });
  }

  /** Delete a key; whether it existed. */
  delete(key: string): boolean {
    const prev = this.store.get(key);
    if (prev === undefined) return false;
    writeRecord(this.store, key, prev, undefined);
    this.changes.push({ key, record: null, prev });
    return true;
  }

  /**
   * Put back the records as they were before this entry's writes (each key once, in the order first
   * written): undone in reverse, so every lease stays within LEASE_KEYS_MAX at each step. Nothing
   * remains changed.
   */
  undo(before: ReadonlyMap<string, KvRecord | undefined>): void {
    for (const [key, record] of [...before].reverse())
      writeRecord(this.store, key, this.store.get(key), record);
    this.changes.length = 0;
  }

  /** The `changes` field of the entry's outcome (absent when nothing changed). */
  outcomeChanges(): { changes?: readonly KvChange[] } {
    return this.changes.length === 0 ? {} : { changes: this.changes };
  }
}

/**
 * The one place records are written: replaces `prev` (the key's record now) by `next` (undefined:
 * delete), detaching the key from its old lease and attaching it to its new one.
 */
export function writeRecord(
  store: RecordStore,
  key: string,
  prev: KvRecord | undefined,
  next: KvRecord | undefined,
): void {
  const from = prev?.leaseId ?? 0;
  const to = next?.leaseId ?? 0;
  if (from !== to && from !== 0) {
    const lease = store.getLease(from);
    assert(lease !== undefined && lease.keyCount > 0, `key ${key} detaches from existing lease ${from}`);
    store.putLease(from, { ...lease, keyCount: lease.keyCount - 1 });
    store.removeLeaseKey(from, key);
  }
  if (next === undefined) store.delete(key);
  else store.set(key, next);
  if (from !== to && to !== 0) {
    const lease = store.getLease(to);
    assert(lease !== undefined, `key ${key} attaches to existing lease ${to}`);
    assert(lease.keyCount < LEASE_KEYS_MAX, `lease ${to} has room for key ${key}`);
    store.putLease(to, { ...lease, keyCount: lease.keyCount + 1 });
    store.addLeaseKey(to, key);
  }
}

/**
 * Why a Set of `key` on lease `leaseId` (0: none) must not be written: the lease does not exist, or
 * it holds LEASE_KEYS_MAX keys and `key` is not one of them. Null: it may be written.
 */
export function attachRefusal(store: RecordStore, key: string, leaseId: number): LeaseRefusal | null {
  if (leaseId === 0) return null;
  assert(Number.isSafeInteger(leaseId) && leaseId > 0 && leaseId <= LEASE_ID_MAX, `lease id ${leaseId}`);
  const lease = store.getLease(leaseId);
  if (lease === undefined) return { kind: 'not_found', leaseId };
  if (store.get(key)?.leaseId === leaseId) return null;
  return lease.keyCount < LEASE_KEYS_MAX ? null : { kind: 'too_many_keys', leaseId };
}

/** A command refused for a lease reason: nothing written. */
export function refused(index: number, refusal: LeaseRefusal): ApplyOutcome {
  return { index, deleted: [], succeeded: false, leaseRefusal: refusal };
}

/** LeaseGrant or LeaseRevoke at `index`, an entry of term `term`. */
export function applyLeaseCommand(
  store: RecordStore,
  index: number,
  command: LeaseCommand,
  term: number,
): ApplyOutcome {
  if ('LeaseGrant' in command) return applyGrant(store, index, command.LeaseGrant);
  const { lease_id: id, expired_in_term: expiredInTerm } = command.LeaseRevoke;
  assert(Number.isSafeInteger(id) && id > 0 && id <= LEASE_ID_MAX, `revoked lease id ${id}`);
  if (expiredInTerm !== undefined && expiredInTerm !== term)
    return refused(index, { kind: 'stale_expiry', leaseId: id });
  const lease = store.getLease(id);
  if (lease === undefined) return refused(index, { kind: 'not_found', leaseId: id });
  const keys = store.leaseKeys(id, null, LEASE_KEYS_MAX);
  assert(keys.length === lease.keyCount, `lease ${id} lists ${keys.length} of ${lease.keyCount} keys`);
  const writes = new EntryWrites(store, index);
  for (const key of keys) assert(writes.delete(key), `a key of lease ${id} exists`);
  assert(store.getLease(id)?.keyCount === 0, `lease ${id} has no keys left`);
  store.removeLease(id);
  return {
    index,
    deleted: [],
    succeeded: true,
    ...writes.outcomeChanges(),
    revoked: { id, keys: keys.length },
  };
}

type GrantBody = Extract<LeaseCommand, { LeaseGrant: unknown }>['LeaseGrant'];

/** A grant: the named id if free, or (id 0) the smallest free id from the entry's index up. */
function applyGrant(store: RecordStore, index: number, body: GrantBody): ApplyOutcome {
  const { lease_id: requested, ttl_seconds: ttlSeconds } = body;
  assert(
    Number.isSafeInteger(ttlSeconds) && ttlSeconds >= 1 && ttlSeconds <= LEASE_TTL_SECONDS_MAX,
    `lease ttl ${ttlSeconds}`,
  );
  assert(
    Number.isSafeInteger(requested) && requested >= 0 && requested <= LEASE_ID_MAX,
    `granted lease id ${requested}`,
  );
  if (requested !== 0 && store.getLease(requested) !== undefined)
    return refused(index, { kind: 'exists', leaseId: requested });
  if (store.leaseCount() >= LEASES_MAX)
    return refused(index, { kind: 'too_many_leases', leaseId: requested });
  const id = requested === 0 ? freeLeaseId(store, index) : requested;
  store.putLease(id, { ttlSeconds, grantedIndex: index, keyCount: 0 });
  return { index, deleted: [], succeeded: true, lease: { id, ttlSeconds } };
}

/** The smallest id ≥ `from` no lease has: fewer than LEASES_MAX exist, so one of the next LEASES_MAX is free. */
function freeLeaseId(store: RecordStore, from: number): number {
  for (let id = from; id < from + LEASES_MAX; id += 1) {
    assert(id <= LEASE_ID_MAX, `lease id ${id} within LEASE_ID_MAX`);
    if (store.getLease(id) === undefined) return id;
  }
  throw new Error(`no free lease id among ${LEASES_MAX} from ${from} with fewer than ${LEASES_MAX} leases`);
}

/** A lease as a snapshot holds it: its key count is rebuilt from the records. */
export interface SnapshotLease {
  readonly ttlSeconds: number;
  readonly grantedIndex: number;
}

/** Snapshot leases sorted by id, each with its fields in one order (equal states give equal bytes). */
export function snapshotLeases(
  leases: Iterable<readonly [number, SnapshotLease]>,
): (readonly [number, SnapshotLease])[] {
  return [...leases]
    .map(([id, lease]): [number, SnapshotLease] => [id, normalizeLease(id, lease)])
    .sort((a, b) => a[0] - b[0]);
}

function normalizeLease(id: number, stored: unknown): SnapshotLease {
  assert(Number.isSafeInteger(id) && id > 0 && id <= LEASE_ID_MAX, `snapshot lease id ${id}`);
  assert(typeof stored === 'object' && stored !== null, 'a stored lease is an object');
  const { ttlSeconds, grantedIndex } = stored as Partial<Record<keyof SnapshotLease, unknown>>;
  assert(
    Number.isSafeInteger(ttlSeconds) && (ttlSeconds as number) >= 1 && Number.isSafeInteger(grantedIndex),
    `snapshot lease ${id} has a ttl and a grant index`,
  );
  return { ttlSeconds: ttlSeconds as number, grantedIndex: grantedIndex as number };
}

/**
 * The leases of a snapshot with their key counts, from the records' lease ids (every lease id a
 * record carries is a lease of the snapshot, within LEASE_KEYS_MAX keys; at most LEASES_MAX leases).
 */
export function leasesWithKeys(
  leases: readonly (readonly [number, SnapshotLease])[],
  records: readonly (readonly [string, KvRecord])[],
): [number, LeaseRecord][] {
  assert(leases.length <= LEASES_MAX, `${leases.length} leases in a snapshot`);
  const counts = new Map<number, number>(leases.map(([id]) => [id, 0]));
  assert(counts.size === leases.length, 'snapshot lease ids are distinct');
  for (const [key, record] of records) {
    if (record.leaseId === 0) continue;
    const count = counts.get(record.leaseId);
    assert(count !== undefined, `key ${key} is on lease ${record.leaseId} of the snapshot`);
    assert(count < LEASE_KEYS_MAX, `lease ${record.leaseId} within LEASE_KEYS_MAX keys`);
    counts.set(record.leaseId, count + 1);
  }
  return leases.map(([id, lease]): [number, LeaseRecord] => [
    id,
    { ...lease, keyCount: counts.get(id) ?? 0 },
  ]);
}
