import { AspenError, type CurrentRecord } from '../api/errors.ts';
import type {
  KeyValue,
  LeaseGrantResult,
  LeaseRevokeResult,
  TxnOpResult,
  WriteCommand,
  WriteResult,
} from '../api/types.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { LEASE_KEYS_MAX, LEASES_MAX, TXN_RESULT_BYTES_MAX } from '../base/limits.ts';
import type { KvRecord, LeaseRefusal, TxnOpOutcome } from './kv-state-machine.ts';
import type { WriteApplied } from './raft-node.ts';

/** How applied writes and stored records are shown through the API (the control client's answers). */

/** A stored record as the API shows it (`lease_id` 0: on no lease). */
export function keyValue(key: string, record: KvRecord): KeyValue {
  return {
    key,
    value: record.value,
    create_index: record.createIndex,
    mod_index: record.modIndex,
    version: record.version,
    lease_id: record.leaseId,
  };
}

function currentRecord(record: KvRecord | null): CurrentRecord | null {
  if (record === null) return null;
  return {
    value: record.value,
    create_index: record.createIndex,
    mod_index: record.modIndex,
    version: record.version,
    lease_id: record.leaseId,
  };
}

/**
 * A command refused at apply for a lease reason, as the API error: nothing was written (definite).
 * `stale_expiry` answers only the lessor's own expiry revokes (a deposed leader's, ignored).
 */
export function leaseRefusalError(refusal: LeaseRefusal): AspenError {
  const id = refusal.leaseId;
  switch (refusal.kind) {
    case 'not_found':
      return new AspenError('LEASE_NOT_FOUND', `lease ${id} not found (expired or revoked?)`);
    case 'exists':
      return new AspenError(
        'LEASE_EXISTS',
        `lease ${id} already exists: grant another id, or 0 to get a free one`,
      );
    case 'too_many_leases':
      return new AspenError(
        'TOO_MANY_LEASES',
        `the cluster holds ${LEASES_MAX} leases, the limit: revoke leases no longer used`,
      );
    case 'too_many_keys':
      return new AspenError(
        'TOO_MANY_LEASE_KEYS',
        `lease ${id} carries ${LEASE_KEYS_MAX} keys, the limit: put further keys on another lease`,
      );
    case 'stale_expiry':
      return new AspenError(
        'NOT_LEADER',
        `the expiry of lease ${id} was proposed by a leader since deposed; it was ignored`,
      );
  }
}

function txnOpResult(outcome: TxnOpOutcome): TxnOpResult {
  switch (outcome.kind) {
    case 'set':
      return { Set: { key: outcome.key } };
    case 'delete':
      return { Delete: { key: outcome.key, deleted: outcome.deleted } };
    case 'get':
      return { Get: outcome.record === null ? null : keyValue(outcome.key, outcome.record) };
    case 'scan':
      return {
        Scan: {
          entries: outcome.records.map(([key, record]) => keyValue(key, record)),
          is_truncated: outcome.more,
        },
      };
  }
}

/**
 * The revision an applied write answers with: its entry's index, or for a retried session sequence
 * the index of the entry that applied it first (the retry answers exactly as the first time). A
 * sequence whose outcome the session table no longer holds is SESSION_EXPIRED: nothing was applied
 * by this entry, but whether the first attempt was applied is unknown (definite: false). A sequence
 * the client used first for another kind of request is INVALID_INPUT (nothing applied, definite).
 */
export function appliedRevision(applied: WriteApplied): number {
  const { index, outcome } = applied;
  if (outcome.sessionReused !== undefined) {
    const { clientId, sequence, kind } = outcome.sessionReused;
    throw new AspenError(
      'INVALID_INPUT',
      `sequence ${sequence} of client ${clientId} was already used for another request (${kind}); ` +
        'nothing was applied: give each request a new sequence, and a retry the same request',
    );
  }
  if (outcome.sessionExpired === true) {
    throw new AspenError(
      'SESSION_EXPIRED',
      'the session no longer holds this sequence: it was applied earlier or its session expired ' +
        '(read the keys to find out; retry with a new sequence)',
      { definite: false },
    );
  }
  if (outcome.duplicate === true) {
    assert(outcome.index < index, 'a retried sequence answers with an earlier entry');
    return outcome.index;
  }
  assert(outcome.index === index, 'an outcome belongs to its entry');
  return index;
}

/**
 * An outcome that does not fit the call it answers. A fresh one is a broken invariant (thrown). A
 * retry's is the client's error, refused: a session table written before the kind of each stored
 * outcome was kept answers a sequence reused for another kind of call with the first call's outcome.
 */
function misfit(applied: WriteApplied, expected: string): AspenError {
  if (applied.outcome.duplicate !== true) throw new AssertionError(expected);
  return new AspenError(
    'INVALID_INPUT',
    `this sequence was already used for another request (its stored outcome does not fit: ${expected}); ` +
      'nothing was applied: give each request a new sequence, and a retry the same request',
  );
}

/**
 * What an applied write answers: its log index as `log_index` and `revision`; a Transaction adds
 * `succeeded` and the results of the branch that ran; a CompareAndSwap or CompareAndDelete whose
 * compare failed (nothing written) is the 409 COMPARE_FAILED error with the record it found; a Set
 * (or a transaction's Set) refused for its lease is LEASE_NOT_FOUND or TOO_MANY_LEASE_KEYS.
 */
export function writeResult(command: WriteCommand, applied: WriteApplied): WriteResult {
  const index = appliedRevision(applied);
  const { outcome } = applied;
  if (outcome.leaseRefusal !== undefined) throw leaseRefusalError(outcome.leaseRefusal);
  const base = { command, log_index: index, revision: index };
  if ('Transaction' in command) {
    if (outcome.resultsTooLarge === true) {
      throw new AspenError(
        'BATCH_TOO_LARGE',
        `the transaction's Get and Scan results exceed ${TXN_RESULT_BYTES_MAX} bytes; nothing was written ` +
          `(revision ${index} changed nothing): read fewer or smaller keys, or give Scans a limit`,
      );
    }
    if (outcome.results === undefined) throw misfit(applied, 'a transaction has results');
    return { ...base, succeeded: outcome.succeeded, results: outcome.results.map(txnOpResult) };
  }
  if (outcome.succeeded) return base;
  let key: string;
  if ('CompareAndSwap' in command) key = command.CompareAndSwap.key;
  else if ('CompareAndDelete' in command) key = command.CompareAndDelete.key;
  else throw misfit(applied, `only a compare can fail: ${Object.keys(command).join()}`);
  if (outcome.current === undefined) throw misfit(applied, 'a failed compare tells what it found');
  throw AspenError.compareFailed(key, currentRecord(outcome.current));
}

/** What an applied LeaseGrant answers: the lease (its id chosen by the cluster when 0 was asked). */
export function leaseGrantResult(applied: WriteApplied): LeaseGrantResult {
  const index = appliedRevision(applied);
  const { outcome } = applied;
  if (outcome.leaseRefusal !== undefined) throw leaseRefusalError(outcome.leaseRefusal);
  if (outcome.lease === undefined) throw misfit(applied, 'a grant that was not refused made a lease');
  return { lease_id: outcome.lease.id, ttl_seconds: outcome.lease.ttlSeconds, log_index: index };
}

/** What an applied LeaseRevoke answers (its keys were deleted by the same entry). */
export function leaseRevokeResult(applied: WriteApplied): LeaseRevokeResult {
  const index = appliedRevision(applied);
  const { outcome } = applied;
  if (outcome.leaseRefusal !== undefined) throw leaseRefusalError(outcome.leaseRefusal);
  if (outcome.revoked === undefined) throw misfit(applied, 'a revoke that was not refused revoked a lease');
  return { lease_id: outcome.revoked.id, revoked: true, log_index: index };
}
