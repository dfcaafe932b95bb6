import { utf8Length } from '../api/limits.ts';
import type { LogCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { applyCommand, txnResultSize, type ApplyOutcome, type RecordStore } from './kv-state-machine.ts';
import { SESSION_RESULT_BYTES_MAX, SessionTable, type Session, type SessionRecord } from './sessions.ts';

/** What one log entry carries: the command, the client session (if any), the leader's proposal time. */
export interface Proposal {
  readonly command: LogCommand;
  readonly session: Session | null;
  readonly proposedAtMs: number;
}

/**
 * A session's stored outcome: what the first apply returned (without its `changes`: a retry changes
 * nothing), or that its results were too large to keep.
 */
export type StoredOutcome = ApplyOutcome;

/**
 * Apply one command through the session table: a retried sequence is not applied again and gets
 * the stored outcome (marked duplicate); a sequence the table can no longer answer for gets
 * `sessionExpired` (nothing applied). Log time advances with every command entry. `term` is the
 * entry's term (see applyCommand).
 */
export function applyWithSession(
  table: SessionTable<StoredOutcome>,
  store: RecordStore,
  index: number,
  proposal: Proposal,
  term: number,
): ApplyOutcome {
  assert(Number.isSafeInteger(term) && term >= 1, `an entry's term is a positive integer, got ${term}`);
  table.advance(index, proposal.proposedAtMs);
  const session = proposal.session;
  if (session === null) return applyCommand(store, index, proposal.command, term);
  const check = table.check(session);
  if (check.kind === 'duplicate') {
    if (check.outcome.resultsDiscarded === true) return expired(index);
    return { ...check.outcome, duplicate: true };
  }
  if (check.kind === 'expired') return expired(index);
  const outcome = applyCommand(store, index, proposal.command, term);
  table.record(session, storedOutcome(outcome));
  return outcome;
}

function expired(index: number): ApplyOutcome {
  return { index, deleted: [], succeeded: false, sessionExpired: true };
}

/**
 * The outcome as the table keeps it: whole when its keys and values (results of every op, the
 * record a failed compare found) fit SESSION_RESULT_BYTES_MAX, else without them (its retry is
 * answered SESSION_EXPIRED), so the table stays within SESSION_TABLE_BYTES_MAX.
 */
function storedOutcome(outcome: ApplyOutcome): StoredOutcome {
  assert(outcome.duplicate === undefined && outcome.sessionExpired === undefined, 'a fresh outcome');
  if (outcomeBytes(outcome) <= SESSION_RESULT_BYTES_MAX) return normalizeOutcome(outcome);
  return { index: outcome.index, deleted: [], succeeded: outcome.succeeded, resultsDiscarded: true };
}

/** Key and value bytes an outcome carries (bounded by TXN_OPS_MAX results, BATCH_KEYS_MAX flags). */
export function outcomeBytes(outcome: ApplyOutcome): number {
  let bytes = outcome.deleted.length;
  if (outcome.current !== undefined && outcome.current !== null) bytes += utf8Length(outcome.current.value);
  for (const result of outcome.results ?? []) {
    bytes += txnResultSize(result);
    if (result.kind === 'set' || result.kind === 'delete') bytes += utf8Length(result.key);
  }
  return bytes;
}

/**
 * A stored outcome with its fields in one order (equal tables give equal snapshot bytes); never
 * its `changes`.
 */
export function normalizeOutcome(stored: unknown): StoredOutcome {
  assert(typeof stored === 'object' && stored !== null, 'a stored outcome is an object');
  const o = stored as ApplyOutcome;
  assert(Number.isSafeInteger(o.index) && Array.isArray(o.deleted), 'a stored outcome has an index');
  return {
    index: o.index,
    deleted: o.deleted,
    succeeded: o.succeeded,
    ...(o.current === undefined ? {} : { current: o.current }),
    ...(o.results === undefined ? {} : { results: o.results }),
    ...(o.resultsTooLarge === undefined ? {} : { resultsTooLarge: o.resultsTooLarge }),
    ...(o.resultsDiscarded === undefined ? {} : { resultsDiscarded: o.resultsDiscarded }),
    ...(o.lease === undefined ? {} : { lease: { id: o.lease.id, ttlSeconds: o.lease.ttlSeconds } }),
    ...(o.revoked === undefined ? {} : { revoked: { id: o.revoked.id, keys: o.revoked.keys } }),
    ...(o.leaseRefusal === undefined
      ? {}
      : { leaseRefusal: { kind: o.leaseRefusal.kind, leaseId: o.leaseRefusal.leaseId } }),
  };
}

/** A stored session record with its fields in one order. */
export function normalizeSession(stored: unknown): SessionRecord<StoredOutcome> {
  assert(typeof stored === 'object' && stored !== null, 'a stored session is an object');
  const s = stored as SessionRecord<unknown>;
  assert(
    [s.highest, s.lastUsedMs, s.lastUsedIndex].every((n) => Number.isSafeInteger(n) && n >= 0),
    'a stored session has integer counters',
  );
  return {
    highest: s.highest,
    lastUsedMs: s.lastUsedMs,
    lastUsedIndex: s.lastUsedIndex,
    results: s.results.map(([sequence, outcome]): [number, StoredOutcome] => [
      sequence,
      normalizeOutcome(outcome),
    ]),
  };
}
