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

/** Which call a log entry carries: its command's variant name. */
export type CommandKind = LogCommand extends infer C ? (C extends unknown ? keyof C : never) : never;

/** Every command kind (a Record, so the compiler checks that the list is complete and exact). */
const COMMAND_KINDS: Readonly<Record<CommandKind, true>> = {
  Set: true,
  SetMulti: true,
  Delete: true,
  DeleteMulti: true,
  CompareAndSwap: true,
  CompareAndDelete: true,
  Transaction: true,
  LeaseGrant: true,
  LeaseRevoke: true,
};

function isCommandKind(kind: unknown): kind is CommandKind {
  return typeof kind === 'string' && Object.hasOwn(COMMAND_KINDS, kind);
}

/** The variant name of a command (commands reach the log validated: exactly one variant). */
export function commandKind(command: LogCommand): CommandKind {
  const names = Object.keys(command);
  const kind = names[0];
  assert(names.length === 1 && isCommandKind(kind), `a command has one known variant: ${names.join()}`);
  return kind;
}

/**
 * A session's stored outcome: what the first apply returned (without its `changes`: a retry changes
 * nothing), or that its results were too large to keep; with the kind of command it answered, so a
 * retry of the sequence with another kind of command is refused rather than answered with an
 * outcome of another shape. Tables written before kinds were kept (storage format 5) have none: such
 * an outcome answers any retry of its sequence, as it did then.
 */
export type StoredOutcome = ApplyOutcome & { readonly commandKind?: CommandKind };

/**
 * Apply one command through the session table: a retried sequence is not applied again and gets
 * the stored outcome (marked duplicate); a sequence the table can no longer answer for gets
 * `sessionExpired`, and one used first for another kind of command `sessionReused` (nothing
 * applied in either case). Log time advances with every command entry. `term` is the entry's term
 * (see applyCommand).
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
  const kind = commandKind(proposal.command);
  if (check.kind === 'duplicate') {
    const { commandKind: firstKind, ...first } = check.outcome;
    if (firstKind !== undefined && firstKind !== kind) return reused(index, session, firstKind);
    if (first.resultsDiscarded === true) return expired(index);
    return { ...first, duplicate: true };
  }
  if (check.kind === 'expired') return expired(index);
  const outcome = applyCommand(store, index, proposal.command, term);
  table.record(session, storedOutcome(outcome, kind));
  return outcome;
}

/** A retry whose sequence answered another kind of command first: nothing applied (the API's 400). */
function reused(index: number, session: Session, kind: CommandKind): ApplyOutcome {
  const { clientId, sequence } = session;
  return { index, deleted: [], succeeded: false, sessionReused: { clientId, sequence, kind } };
}

function expired(index: number): ApplyOutcome {
  return { index, deleted: [], succeeded: false, sessionExpired: true };
}

/**
 * The outcome as the table keeps it: whole when its keys and values (results of every op, the
 * record a failed compare found) fit SESSION_RESULT_BYTES_MAX, else without them (its retry is
 * answered SESSION_EXPIRED), so the table stays within SESSION_TABLE_BYTES_MAX.
 */
function storedOutcome(outcome: ApplyOutcome, kind: CommandKind): StoredOutcome {
  assert(outcome.duplicate === undefined && outcome.sessionExpired === undefined, 'a fresh outcome');
  assert(outcome.sessionReused === undefined, 'a fresh outcome');
  if (outcomeBytes(outcome) <= SESSION_RESULT_BYTES_MAX)
    return normalizeOutcome({ ...outcome, commandKind: kind });
  const { index, succeeded } = outcome;
  return { index, deleted: [], succeeded, resultsDiscarded: true, commandKind: kind };
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
 * its `changes`. No `commandKind`: an outcome stored before kinds were kept.
 */
export function normalizeOutcome(stored: unknown): StoredOutcome {
  assert(typeof stored === 'object' && stored !== null, 'a stored outcome is an object');
  const o = stored as StoredOutcome;
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
    ...(o.commandKind === undefined ? {} : { commandKind: checkedKind(o.commandKind) }),
  };
}

function checkedKind(kind: unknown): CommandKind {
  assert(isCommandKind(kind), 'a stored outcome names a known command kind');
  return kind;
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
