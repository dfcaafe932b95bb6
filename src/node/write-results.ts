import { AspenError, type CurrentRecord } from '../api/errors.ts';
import type { KeyValue, TxnOpResult, WriteCommand, WriteResult } from '../api/types.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { TXN_RESULT_BYTES_MAX } from '../base/limits.ts';
import type { KvRecord, TxnOpOutcome } from './kv-state-machine.ts';
import type { WriteApplied } from './raft-node.ts';

/** How applied writes and stored records are shown through the API (the control client's answers). */

/** A stored record as the API shows it. `lease_id` is 0 until leases exist (issue 15). */
export function keyValue(key: string, record: KvRecord): KeyValue {
  return {
    key,
    value: record.value,
    create_index: record.createIndex,
    mod_index: record.modIndex,
    version: record.version,
    lease_id: 0,
  };
}

function currentRecord(record: KvRecord | null): CurrentRecord | null {
  if (record === null) return null;
  return {
    value: record.value,
    create_index: record.createIndex,
    mod_index: record.modIndex,
    version: record.version,
    lease_id: 0,
  };
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
 * What an applied write answers: its log index as `log_index` and `revision`; a Transaction adds
 * `succeeded` and the results of the branch that ran; a CompareAndSwap or CompareAndDelete whose
 * compare failed (nothing written) is the 409 COMPARE_FAILED error with the record it found.
 */
export function writeResult(command: WriteCommand, applied: WriteApplied): WriteResult {
  const { index, outcome } = applied;
  assert(outcome.index === index, 'an outcome belongs to its entry');
  const base = { command, log_index: index, revision: index };
  if ('Transaction' in command) {
    if (outcome.resultsTooLarge === true) {
      throw new AspenError(
        'BATCH_TOO_LARGE',
        `the transaction's Get and Scan results exceed ${TXN_RESULT_BYTES_MAX} bytes; nothing was written ` +
          `(revision ${index} changed nothing): read fewer or smaller keys, or give Scans a limit`,
      );
    }
    assert(outcome.results !== undefined, 'a transaction has results');
    return { ...base, succeeded: outcome.succeeded, results: outcome.results.map(txnOpResult) };
  }
  if (outcome.succeeded) return base;
  let key: string;
  if ('CompareAndSwap' in command) key = command.CompareAndSwap.key;
  else if ('CompareAndDelete' in command) key = command.CompareAndDelete.key;
  else throw new AssertionError(`only a compare can fail: ${Object.keys(command).join()}`);
  assert(outcome.current !== undefined, 'a failed compare tells what it found');
  throw AspenError.compareFailed(key, currentRecord(outcome.current));
}
