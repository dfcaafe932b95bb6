import { statfsSync } from 'node:fs';
import { constants } from 'node:os';

import { StorageError } from '../node/errors.ts';

export { StorageError };

/** Another process holds the data directory (its lock file): this one does not start. */
export class DataDirInUseError extends StorageError {
  override readonly name: string = 'DataDirInUseError';
}

/**
 * Below this much free space a failed write is reported as a full disk: LMDB turns a short write
 * on a full file system into EIO as often as into ENOSPC (measured on a full tmpfs).
 */
export const DISK_FULL_FREE_BYTES_MAX = 16 * 1024 * 1024;

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** The errno name of an error from Node (string code) or from LMDB (numeric code), if it has one. */
function errnoName(error: unknown): string | null {
  if (!(error instanceof Error) || !('code' in error)) return null;
  const code = error.code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  if (typeof code === 'number') return ERRNO_NAMES.get(code) ?? `LMDB ${code}`;
  return null;
}

/** Free bytes for an unprivileged writer on the file system of `path`, or null when unknown. */
function freeBytes(path: string): number | null {
  try {
    const stats = statfsSync(path);
    return stats.bavail * stats.bsize;
  } catch {
    return null;
  }
}

export function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0]?.trim() ?? '';
}

/** Whether an error came from LMDB or the file system (it carries an errno or an LMDB code). */
export function isStorageFault(error: unknown): boolean {
  return errnoName(error) !== null;
}

/**
 * One line for a failed write in `dataDir`: "storage failed: no space left on device (ENOSPC; 0
 * bytes free) in DIR while writing the log", or the error and its errno.
 */
export function storageFailure(cause: unknown, dataDir: string, doing: string): StorageError {
  const name = errnoName(cause);
  const free = freeBytes(dataDir);
  const detail = firstLine(cause);
  const full = name === 'ENOSPC' || (name === 'EIO' && free !== null && free < DISK_FULL_FREE_BYTES_MAX);
  const reason = full
    ? `no space left on device (ENOSPC; ${free ?? 'unknown'} bytes free; ${detail})`
    : `${detail}${name === null ? '' : ` (${name})`}`;
  return new StorageError(`storage failed: ${reason} in ${dataDir} while ${doing}`, { cause });
}
