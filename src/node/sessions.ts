import { CLIENT_ID_PATTERN } from '../api/limits.ts';
import type { ClientSession } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { SNAPSHOT_BYTES_MAX } from '../base/limits.ts';

/**
 * Client sessions for exactly-once writes (Raft thesis §6.3): per client, the highest sequence
 * applied and the outcomes of its recent sequences, so a retried write is answered from the table
 * instead of being applied twice. Pure and deterministic: it changes only on apply, and its clock
 * is log time (the leader's proposal times, never a local clock), so every replica holds the same table.
 */

/** Clients remembered at once; past it the least recently used is forgotten. */
export const SESSIONS_MAX = 4_096;
/** Outcomes kept per client (its most recent sequences). */
export const SESSION_RESULTS_MAX = 8;
/** A client idle longer than this, in log time, is forgotten. */
export const SESSION_IDLE_MS = 60 * 60 * 1000;
/** Idle sessions dropped per apply at most (expiry is lazy and bounded). */
export const SESSION_EXPIRE_PER_APPLY_MAX = 4;
/**
 * Key and value bytes an outcome may carry (Get and Scan results, keys of its writes, the record a
 * failed compare found) and still be stored whole; past it the retry answers SESSION_EXPIRED.
 * 16 KiB, not the 64 KiB first planned: 4,096 clients × 8 outcomes × 64 KiB is 2 GiB, twice the
 * largest snapshot a node accepts; at 16 KiB the whole table stays within half of it.
 */
export const SESSION_RESULT_BYTES_MAX = 16 * 1024;
/** The most the stored outcomes of a full table can hold. */
export const SESSION_TABLE_BYTES_MAX = SESSIONS_MAX * SESSION_RESULTS_MAX * SESSION_RESULT_BYTES_MAX;
assert(SESSION_TABLE_BYTES_MAX <= SNAPSHOT_BYTES_MAX / 2, 'a full session table fits half a snapshot');
/** The session a proposal carries (validated by the API: validateSession). */
export type Session = ClientSession;

/**
 * One client's state: `results` holds [sequence, outcome] pairs, oldest first. `lastUsedIndex` is
 * the log index of its last use (one entry uses at most one client, so it orders clients strictly:
 * the LRU order survives a snapshot, which lists clients by id).
 */
export interface SessionRecord<T> {
  readonly highest: number;
  readonly lastUsedMs: number;
  readonly lastUsedIndex: number;
  readonly results: readonly (readonly [number, T])[];
}

/** What the table says about a session before its command is applied. */
export type SessionCheck<T> =
  | { readonly kind: 'apply' }
  | { readonly kind: 'duplicate'; readonly outcome: T }
  | { readonly kind: 'expired' };

export function isValidSession(session: Session): boolean {
  return (
    CLIENT_ID_PATTERN.test(session.clientId) &&
    Number.isSafeInteger(session.sequence) &&
    session.sequence >= 1
  );
}

/**
 * The table, as a Map in least-recently-used order (a client is re-inserted when used, so the
 * first key is the one to evict). `T` is the stored outcome; the state machine decides its shape.
 */
export class SessionTable<T> {
  private readonly clients = new Map<string, SessionRecord<T>>();
  /** Clients changed or dropped since the last `takeChanged` (what a store must write). */
  private readonly changed = new Set<string>();
  private logTimeMs = 0;
  private index = 0;

  get size(): number {
    return this.clients.size;
  }

  /** The log time: the highest proposal time applied so far. */
  get timeMs(): number {
    return this.logTimeMs;
  }

  /** Before applying entry `index`: advance log time (never backwards), drop a bounded number of idle clients. */
  advance(index: number, proposedAtMs: number): void {
    assert(Number.isSafeInteger(proposedAtMs) && proposedAtMs >= 0, `proposal time ${proposedAtMs}`);
    assert(index > this.index, `session table at ${this.index}, applying ${index}`);
    this.index = index;
    this.logTimeMs = Math.max(this.logTimeMs, proposedAtMs);
    let dropped = 0;
    for (const [clientId, record] of this.clients) {
      if (dropped === SESSION_EXPIRE_PER_APPLY_MAX) break;
      // LRU order is also last-use order: the first client not idle ends the sweep.
      if (this.logTimeMs - record.lastUsedMs <= SESSION_IDLE_MS) break;
      this.clients.delete(clientId);
      this.changed.add(clientId);
      dropped += 1;
    }
  }

  /** Whether `session` is new (apply it), a retry of a stored outcome, or too old to tell. */
  check(session: Session): SessionCheck<T> {
    assert(isValidSession(session), `an invalid session reached the state machine: ${session.clientId}`);
    const record = this.clients.get(session.clientId);
    if (record === undefined) return session.sequence === 1 ? { kind: 'apply' } : { kind: 'expired' };
    if (session.sequence > record.highest) return { kind: 'apply' };
    for (const [sequence, outcome] of record.results) {
      if (sequence === session.sequence) {
        this.touch(session.clientId, { ...record, lastUsedMs: this.logTimeMs, lastUsedIndex: this.index });
        return { kind: 'duplicate', outcome };
      }
    }
    return { kind: 'expired' };
  }

  /** Remember the outcome of a sequence just applied (higher than the client's highest). */
  record(session: Session, outcome: T): void {
    const previous = this.clients.get(session.clientId);
    assert(previous === undefined || session.sequence > previous.highest, 'sequences are applied in order');
    const results = [...(previous?.results ?? []), [session.sequence, outcome] as const];
    if (results.length > SESSION_RESULTS_MAX) results.shift();
    const record = {
      highest: session.sequence,
      lastUsedMs: this.logTimeMs,
      lastUsedIndex: this.index,
      results,
    };
    this.touch(session.clientId, record);
    if (this.clients.size > SESSIONS_MAX) {
      const oldest = this.clients.keys().next();
      assert(oldest.done !== true, 'a full table has a first client');
      this.clients.delete(oldest.value);
      this.changed.add(oldest.value);
    }
    assert(this.clients.size <= SESSIONS_MAX, 'the session table is bounded');
  }

  /** Every client, sorted by id (snapshot order, independent of use order). */
  entries(): [string, SessionRecord<T>][] {
    return [...this.clients.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  get(clientId: string): SessionRecord<T> | undefined {
    return this.clients.get(clientId);
  }

  /** The clients changed (present) or dropped (absent) since the last call, in id order. */
  takeChanged(): string[] {
    const ids = [...this.changed].sort();
    this.changed.clear();
    return ids;
  }

  /** Replace the table (from a snapshot or storage) at applied `index`, in any order of clients. */
  load(index: number, timeMs: number, entries: Iterable<readonly [string, SessionRecord<T>]>): void {
    const sorted = [...entries].sort((a, b) => a[1].lastUsedIndex - b[1].lastUsedIndex);
    assert(sorted.length <= SESSIONS_MAX, `${sorted.length} stored sessions`);
    this.clients.clear();
    this.changed.clear();
    this.index = index;
    this.logTimeMs = timeMs;
    for (const [clientId, record] of sorted) this.clients.set(clientId, record);
  }

  private touch(clientId: string, record: SessionRecord<T>): void {
    this.clients.delete(clientId);
    this.clients.set(clientId, record);
    this.changed.add(clientId);
  }
}
