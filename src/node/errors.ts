import { AspenError } from '../api/errors.ts';
import type { RaftRejection } from '../raft/errors.ts';

/**
 * Storage that cannot be used or that failed: a data dir of another version, corruption, a lock
 * held by another process, a write the disk refused. The error of the node's storage ports
 * (LogStore, StateMachine); an operating error, not a bug: the node says so in one line and stops
 * (at start: it does not start; running: it fail-stops).
 */
export class StorageError extends Error {
  override readonly name: string = 'StorageError';
}

/** The one mapping from the core's rejections to the API's errors. */
export function toAspenError(rejection: RaftRejection): AspenError {
  switch (rejection.code) {
    case 'not_leader':
      return rejection.leaderId === 0
        ? new AspenError('NO_LEADER', 'no leader is known; an election may be in progress')
        : new AspenError('NOT_LEADER', `node ${rejection.leaderId} is the leader`, {
            leaderId: rejection.leaderId,
          });
    case 'not_initialized':
      return new AspenError('NOT_INITIALIZED', 'the cluster is not initialized: POST /init first');
    case 'already_initialized':
      return new AspenError('ALREADY_INITIALIZED', 'this node is already initialized');
    case 'overloaded':
      return new AspenError('OVERLOADED', `too many ${rejection.what.replace('_', ' ')}; retry later`);
    case 'invalid_config':
      return new AspenError('INVALID_INPUT', rejection.message);
    case 'membership_change_in_progress':
      return new AspenError(
        'MEMBERSHIP_CHANGE_IN_PROGRESS',
        'another membership change is still in progress; retry when it completes',
      );
    case 'learner_not_caught_up':
      return new AspenError(
        'LEARNER_NOT_CAUGHT_UP',
        `learner ${rejection.nodeId} has not caught up (it acknowledged index ${rejection.matchIndex} of ${rejection.requiredIndex}, or not within an election timeout); ` +
          `wait for it to catch up, or remove it with POST /remove-learner`,
      );
  }
}

/** A storage failure as a StorageError (a persist callback may report any error). */
export function asStorageError(cause: unknown): StorageError {
  if (cause instanceof StorageError) return cause;
  return new StorageError(`storage failed: ${cause instanceof Error ? cause.message : String(cause)}`, {
    cause,
  });
}

/**
 * A write whose outcome is unknown: its entry may still be (or have been) applied by another
 * leader, or a snapshot replaced it before it was seen applied.
 */
export function indeterminate(message: string): AspenError {
  return new AspenError('NOT_LEADER', message, { definite: false });
}
