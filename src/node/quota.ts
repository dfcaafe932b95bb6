import { AspenError } from '../api/errors.ts';
import type { LogCommand } from '../api/types.ts';

/**
 * Whether a command may add data to the state machine: Set, SetMulti, CompareAndSwap, a lease grant,
 * and a Transaction with a Set in either branch. Deletes (Delete, DeleteMulti, CompareAndDelete, a
 * Transaction of Deletes, Gets and Scans) and lease revokes only free space, so they always pass.
 */
export function mayAddData(command: LogCommand): boolean {
  if ('Transaction' in command) {
    const { success, failure } = command.Transaction;
    return success.some((op) => 'Set' in op) || failure.some((op) => 'Set' in op);
  }
  return 'Set' in command || 'SetMulti' in command || 'CompareAndSwap' in command || 'LeaseGrant' in command;
}

/**
 * The leader's admission check (before proposing: nothing is written, so the refusal is definite):
 * QUOTA_EXCEEDED when the state machine holds `sizeBytes`, at or past `quotaBytes`, and `command`
 * may add data. Null when the command may go on.
 */
export function quotaRefusal(command: LogCommand, sizeBytes: number, quotaBytes: number): AspenError | null {
  if (sizeBytes < quotaBytes || !mayAddData(command)) return null;
  return new AspenError(
    'QUOTA_EXCEEDED',
    `the state machine holds ${sizeBytes} bytes, at its quota of ${quotaBytes} (--quota-backend-bytes): ` +
      'delete keys, or raise the quota',
  );
}
