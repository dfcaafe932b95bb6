import { readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import {
  BACKUP_BYTES_MAX,
  BACKUP_CHUNK_BYTES,
  BackupFormatError,
  BackupVerifier,
  decodeBackup,
  type VerifiedBackup,
} from './backup-format.ts';

/** A file error as a BackupFormatError of one line (its code: ENOENT, EACCES, EISDIR). */
function unreadable(error: unknown): BackupFormatError {
  const code = error instanceof Error && 'code' in error ? String(error.code) : '';
  const text = error instanceof Error ? error.message : String(error);
  return new BackupFormatError(`it cannot be read (${code === '' ? text : code})`);
}

/** Its size, if `path` is a regular file no larger than the largest backup. */
function checkedSize(path: string): number {
  let size: number;
  let regular: boolean;
  try {
    const stats = statSync(path);
    size = stats.size;
    regular = stats.isFile();
  } catch (error) {
    throw unreadable(error);
  }
  if (!regular) throw new BackupFormatError('it is not a regular file');
  if (size > BACKUP_BYTES_MAX)
    throw new BackupFormatError(`it is ${size} bytes, over the largest backup's ${BACKUP_BYTES_MAX}`);
  return size;
}

/**
 * Check the backup file at `path` offline, reading it in BACKUP_CHUNK_BYTES pieces (nothing of it
 * kept): its header and checksum, or a BackupFormatError saying what is wrong.
 */
export async function verifyBackupFile(path: string): Promise<VerifiedBackup> {
  const size = checkedSize(path);
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw unreadable(error);
  }
  try {
    const verifier = new BackupVerifier();
    const buffer = Buffer.alloc(BACKUP_CHUNK_BYTES);
    // Bounded by the size checked above; a file that grows meanwhile is caught by the verifier.
    for (let offset = 0; offset < size;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      if (bytesRead === 0) break;
      verifier.push(buffer.subarray(0, bytesRead));
      offset += bytesRead;
    }
    return verifier.finish();
  } finally {
    await handle.close();
  }
}

/** The backup file at `path`, whole and verified (for a restore, which installs all of it). */
export function readBackupFile(path: string): ReturnType<typeof decodeBackup> {
  checkedSize(path);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw unreadable(error);
  }
  return decodeBackup(bytes);
}
