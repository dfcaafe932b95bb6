import { lockKeyLease } from '../api/lock-validation.ts';
import type { LogCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { ApplyOutcome, KvChange } from '../node/kv-state-machine.ts';
import { SimViolation } from './checkers.ts';
import { PROCLAIMED_VALUE_PREFIX } from './lock-clients.ts';
import { ObserveChecker } from './observe-checker.ts';

/** The prefix of the keys the lock clients' fenced writes set (`fenced/<name>`). */
export const FENCED_KEY_PREFIX = 'fenced/';
/** Grants the checker follows at once per name (the lock clients hold far fewer). */
export const GRANTS_PER_NAME_MAX = 1_000;
/** Owners per name remembered for late answers (the oldest is forgotten first; runs have far fewer). */
export const OWNERS_PER_NAME_MAX = 100_000;

/** One queue key of a name: the key, its create index (a key written again keeps its identity), its value. */
export interface QueueKey {
  readonly key: string;
  readonly token: number;
  readonly value: string;
}

/** What the committed history says about one lock name. */
interface NameState {
  /** Whether the name is an election's (its owner's value is observed, its leader proclaims). */
  readonly election: boolean;
  /** Live queue keys: key → create index and value. */
  readonly live: Map<string, { readonly token: number; readonly value: string }>;
  /** `key#token` → virtual time its key became the owner (the lowest create index), first apply. */
  readonly ownerSince: Map<string, number>;
  /** The owner after the last entry processed (null: none). */
  owner: QueueKey | null;
  /** Granted keys not yet deleted, `key#token` → the client that was granted it. */
  readonly granted: Map<string, number>;
}

/**
 * The promises of locks (issue 16), from the committed history (the first apply of each index on
 * any node, in index order) and the grants the lock clients were answered:
 *  (1) the successive owners of a name (its queue key with the lowest create index) have strictly
 *      increasing tokens, and every grant is one of them: its key, with the token as its create
 *      index, had become the owner before the answer arrived;
 *  (2) no two clients hold grants of one name with overlapping validity: a grant is valid from its
 *      answer until its key is deleted (unlocked, or its lease ended), so at the later of two
 *      answers at least one of the two keys must already be deleted;
 *  (3) every fenced write that took effect (a Transaction comparing the lock key's `create_index`
 *      with the token, setting `fenced/<name>` to `<client>:<token>`) carried the token of the
 *      owner at its index, and so did every proclaim that took effect (an election's leader key
 *      set to `p:<client>:<token>` under a compare of its create index).
 * An election is a lock whose owner is the leader: (1) and (2) hold for its elected answers, and its
 * observers are held to the leader at each revision by the ObserveChecker.
 * A violation is kept (the grants arrive in promise continuations, outside the run's try) and
 * thrown by the simulation after the event that caused it.
 */
export class LockChecker {
  private readonly names = new Map<string, NameState>();
  private readonly allNames: readonly string[];
  private processedIndex = 0;
  readonly observations: ObserveChecker;
  failure: SimViolation | null = null;
  grants = 0;
  fencedWrites = 0;
  proclaims = 0;

  constructor(lockNames: readonly string[], electionNames: readonly string[]) {
    this.allNames = [...lockNames, ...electionNames];
    for (const name of this.allNames) {
      const election = electionNames.includes(name);
      this.names.set(name, {
        election,
        live: new Map(),
        ownerSince: new Map(),
        owner: null,
        granted: new Map(),
      });
    }
    this.observations = new ObserveChecker(
      electionNames,
      () => this.processedIndex,
      (message) => {
        this.fail(message);
      },
    );
  }

  /** Every apply of every node; only the first apply of an index counts (the others must agree). */
  onApplied(index: number, command: LogCommand | null, outcome: ApplyOutcome | null, nowMs: number): void {
    if (index <= this.processedIndex) return;
    this.processedIndex = index;
    if (command !== null && outcome !== null) this.checkFencedWrite(index, command, outcome);
    this.applyChanges(index, outcome?.changes ?? [], nowMs);
  }

  /** A lock call answered: `client` holds `key` with `token` (its create index) from `nowMs`. */
  onGranted(client: number, name: string, key: string, token: number, nowMs: number): void {
    const state = this.names.get(name);
    assert(state !== undefined, `lock name ${name} is checked`);
    this.grants += 1;
    const id = `${key}#${token}`;
    const since = state.ownerSince.get(id);
    if (since === undefined || since > nowMs) {
      this.fail(
        `client ${client} was granted ${name} (key ${key}, token ${token}) at ${nowMs} ms, but that key never was its owner`,
      );
      return;
    }
    // Already deleted: a late answer, valid nowhere (what the fencing token is for).
    if (state.live.get(key)?.token !== token) return;
    for (const [other, holder] of state.granted) {
      if (other !== id)
        this.fail(
          `client ${client} was granted ${name} (key ${key}, token ${token}) at ${nowMs} ms while client ${holder} still held ${other}`,
        );
    }
    if (state.granted.size < GRANTS_PER_NAME_MAX) state.granted.set(id, client);
  }

  private checkFencedWrite(index: number, command: LogCommand, outcome: ApplyOutcome): void {
    if (!('Transaction' in command) || outcome.duplicate === true || !outcome.succeeded) return;
    const set = command.Transaction.success[0];
    const compare = command.Transaction.compare[0];
    if (set === undefined || !('Set' in set)) return;
    let name: string;
    let token: number;
    if (set.Set.key.startsWith(FENCED_KEY_PREFIX)) {
      name = set.Set.key.slice(FENCED_KEY_PREFIX.length);
      token = Number(set.Set.value.split(':')[1]);
      this.fencedWrites += 1;
    } else if (set.Set.value.startsWith(PROCLAIMED_VALUE_PREFIX) && this.nameOf(set.Set.key) !== null) {
      // A proclaim names no token a client could get wrong: its compare is its key's create index.
      name = this.nameOf(set.Set.key) ?? '';
      token = Number(compare?.value);
      this.proclaims += 1;
    } else return;
    assert(compare?.target === 'create_index', 'a fenced write or a proclaim compares a create index');
    const owner = this.names.get(name)?.owner ?? null;
    if (owner?.key !== compare.key || owner.token !== token || compare.value !== token)
      this.fail(
        `fenced write at index ${index} (${set.Set.value}, compare ${compare.key} = ${String(compare.value)}) took effect ` +
          `while the owner of ${name} was ${owner === null ? 'nobody' : `${owner.key} (token ${owner.token})`}`,
      );
  }

  private applyChanges(index: number, changes: readonly KvChange[], nowMs: number): void {
    const touched = new Map<string, NameState>();
    // bounded: one entry's changes
    for (const change of changes) {
      const name = this.nameOf(change.key);
      const state = name === null ? undefined : this.names.get(name);
      if (name === null || state === undefined) continue;
      touched.set(name, state);
      if (change.record !== null) {
        state.live.set(change.key, { token: change.record.createIndex, value: change.record.value });
        continue;
      }
      const token = state.live.get(change.key)?.token;
      state.live.delete(change.key);
      if (token !== undefined) state.granted.delete(`${change.key}#${token}`);
    }
    for (const [name, state] of touched) this.updateOwner(name, state, index, nowMs);
  }

  private updateOwner(name: string, state: NameState, index: number, nowMs: number): void {
    let owner: QueueKey | null = null;
    // bounded: at most LOCK_WAITERS_MAX live keys per name
    for (const [key, { token, value }] of state.live)
      if (owner === null || token < owner.token) owner = { key, token, value };
    const previous = state.owner;
    state.owner = owner;
    const sameKey = previous?.key === owner?.key && previous?.token === owner?.token;
    if (state.election && !(sameKey && previous?.value === owner?.value))
      this.observations.onLeader(name, index, owner);
    if (owner === null || sameKey) return;
    if (previous !== null && owner.token <= previous.token)
      this.fail(`owner token went from ${previous.token} (${previous.key}) to ${owner.token} (${owner.key})`);
    const oldest = state.ownerSince.keys().next();
    if (state.ownerSince.size >= OWNERS_PER_NAME_MAX && oldest.done !== true)
      state.ownerSince.delete(oldest.value);
    state.ownerSince.set(`${owner.key}#${owner.token}`, nowMs);
  }

  private nameOf(key: string): string | null {
    // bounded: the run's lock names (at most a few)
    for (const name of this.allNames) if (lockKeyLease(key, name) !== null) return name;
    return null;
  }

  private fail(message: string): void {
    this.failure ??= new SimViolation('safety', message);
  }
}
