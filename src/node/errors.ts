/**
 * Errors of the node layer and its ports.
 *
 * Storage that cannot be used or that failed: a data dir of another version, corruption, a lock
 * held by another process, a write the disk refused. The LogStore and StateMachine ports throw or
 * report it; an operating error, not a bug: the node says so in one line and stops (at start: it
 * does not start; running: it fail-stops).
 */
export class StorageError extends Error {
  override readonly name: string = 'StorageError';
}
