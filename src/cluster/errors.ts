/**
 * The cluster layer's errors: what stops a node from starting or running, each an operating error
 * reported in one line (a broken invariant is not one of them: it crashes with its stack).
 * `StorageError` is the storage layer's; it is re-exported here so that the binaries and the
 * HTTP-free callers reach storage failures through the cluster layer only.
 */
export { DataDirInUseError, StorageError, firstLine } from '../storage/errors.ts';

/** Bad configuration (flags, environment, config file): one line, exit code 2. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** --help or --version was asked for and printed: not an error for the process. */
  readonly helpShown: boolean;

  constructor(message: string, helpShown = false) {
    super(message);
    this.helpShown = helpShown;
  }
}

/** A start refused for an operating reason (a port in use, an address not on this machine): one line. */
export class StartError extends Error {
  override readonly name = 'StartError';
}

/** A cluster ticket that is not one (bad prefix, version, checksum or contents). */
export class TicketError extends Error {
  override readonly name = 'TicketError';
}

/** A gossip announcement that is malformed, stale or not signed with the cluster's key: dropped. */
export class AnnouncementError extends Error {
  override readonly name = 'AnnouncementError';
}
