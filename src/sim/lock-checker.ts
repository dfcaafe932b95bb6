import { lockKeyLease } from '../api/lock-validation.ts';
import type { LogCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { ApplyOutcome, KvChange } from '../node/kv-state-machine.ts';
import { SimViolation } from './checkers.ts';

/** The prefix of the keys the lock clients' fenced writes set (`fenced/<name>`). */
export const FENCED_KEY_PREFIX = 'fenced/';
/** Grants the checker follows at once per name (the lock clients hold far fewer). */
export const GRANTS_PER_NAME_MAX = 1_000;
/** Owners per name remembered for late answers (the oldest is forgotten first; runs have far fewer). */
export const OWNERS_PER_NAME_MAX = 100_000;

/** One queue key of a name: the key and its create index (a key written again keeps its identity). */
interface QueueKey {
  readonly key: string;
  readonly token: number;
}

/** What the committed history says about one lock name. */
interface NameState {
  /** Live queue keys: key → create index. */
  readonly live: Map<string, number>;
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
 *      owner at its index.
 * A violation is kept (the grants arrive in promise continuations, outside the run's try) and
 * thrown by the simulation after the event that caused it.
 */
export class LockChecker {
  private readonly names = new Map<string, NameState>();
  private readonly lockNames: readonly string[];
  private processedIndex = 0;
  failure: SimViolation | null = null;
  grants = 0;
  fencedWrites = 0;

  constructor(lockNames: readonly string[]) {
    this.lockNames = lockNames;
    for (const name of lockNames)
      this.names.set(name, { live: new Map(), ownerSince: new Map(), owner: null, granted: new Map() });
  }

  /** Every apply of every node; only the first apply of an index counts (the others must agree). */
  onApplied(index: number, command: LogCommand | null, outcome: ApplyOutcome | null, nowMs: number): void {
    if (index <= this.processedIndex) return;
    this.processedIndex = index;
    if (command !== null && outcome !== null) this.checkFencedWrite(index, command, outcome);
    this.applyChanges(outcome?.changes ?? [], nowMs);
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
    if (state.live.get(key) !== token) return;
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
    if (set === undefined || !('Set' in set) || !set.Set.key.startsWith(FENCED_KEY_PREFIX)) return;
    assert(compare?.target === 'create_index', 'a fenced write compares a create index');
    const name = set.Set.key.slice(FENCED_KEY_PREFIX.length);
    const owner = this.names.get(name)?.owner ?? null;
    this.fencedWrites += 1;
    const token = Number(set.Set.value.split(':')[1]);
    if (owner?.key !== compare.key || owner.token !== token || compare.value !== token)
      this.fail(
        `fenced write at index ${index} (${set.Set.value}, compare ${compare.key} = ${String(compare.value)}) took effect ` +
          `while the owner of ${name} was ${owner === null ? 'nobody' : `${owner.key} (token ${owner.token})`}`,
      );
  }

  private applyChanges(changes: readonly KvChange[], nowMs: number): void {
    const touched = new Set<NameState>();
    // bounded: one entry's changes
    for (const change of changes) {
      const name = this.nameOf(change.key);
      const state = name === null ? undefined : this.names.get(name);
      if (state === undefined) continue;
      touched.add(state);
      if (change.record !== null) {
        state.live.set(change.key, change.record.createIndex);
        continue;
      }
      const token = state.live.get(change.key);
      state.live.delete(change.key);
      if (token !== undefined) state.granted.delete(`${change.key}#${token}`);
    }
    for (const state of touched) this.updateOwner(state, nowMs);
  }

  private updateOwner(state: NameState, nowMs: number): void {
    let owner: QueueKey | null = null;
    // bounded: at most LOCK_WAITERS_MAX live keys per name
    for (const [key, token] of state.live) if (owner === null || token < owner.token) owner = { key, token };
    const previous = state.owner;
    state.owner = owner;
    if (owner === null || (previous?.key === owner.key && previous.token === owner.token)) return;
    if (previous !== null && owner.token <= previous.token)
      this.fail(`owner token went from ${previous.token} (${previous.key}) to ${owner.token} (${owner.key})`);
    const oldest = state.ownerSince.keys().next();
    if (state.ownerSince.size >= OWNERS_PER_NAME_MAX && oldest.done !== true)
      state.ownerSince.delete(oldest.value);
    state.ownerSince.set(`${owner.key}#${owner.token}`, nowMs);
  }

  private nameOf(key: string): string | null {
    // bounded: the run's lock names (at most a few)
    for (const name of this.lockNames) if (lockKeyLease(key, name) !== null) return name;
    return null;
  }

  private fail(message: string): void {
    this.failure ??= new SimViolation('safety', message);
  }
}
