import { closeSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { assert } from '../base/assert.ts';
import { DataDirInUseError, firstLine, StorageError } from './errors.ts';

/**
 * The lock file: an empty SQLite database that the holder keeps in an exclusive transaction. SQLite
 * takes that as a POSIX fcntl write lock, which the kernel drops when the process ends in any way
 * (SIGKILL and power cut included), so a crashed node restarts at once. docs/decisions.md says why
 * this and not a pid file or a socket.
 */
export const LOCK_FILE = 'LOCK';
/** Beside it, the holder's pid, for the message a second process prints (the lock itself cannot be read). */
export const LOCK_PID_FILE = 'LOCK.pid';
/** Largest pid file read: a pid and a newline. */
const PID_FILE_BYTES_MAX = 32;
/** SQLite's "database is locked": another connection holds the exclusive lock. */
const SQLITE_BUSY = 5;

/**
 * node:sqlite, loaded when a lock is first taken: the module needs Node 22.13 or later, and an older
 * runtime must still run everything that takes no lock (--storage memory, the CLI).
 */
function loadSqlite(): typeof import('node:sqlite') {
  let sqlite: typeof import('node:sqlite') | undefined;
  try {
    sqlite = process.getBuiltinModule('node:sqlite');
  } catch {
    sqlite = undefined;
  }
  if (sqlite === undefined) {
    throw new StorageError(
      `this Node.js (${process.version}) has no node:sqlite for the data directory lock: run Node 22.13 or later (npm scripts and npx run the pinned Node 24)`,
    );
  }
  return sqlite;
}

function isBusy(error: unknown): boolean {
  return error instanceof Error && 'errcode' in error && error.errcode === SQLITE_BUSY;
}

/** The pid the holder recorded, or null (not written yet, or removed as it let go). */
function recordedPid(dataDir: string): number | null {
  let descriptor: number;
  try {
    descriptor = openSync(join(dataDir, LOCK_PID_FILE), 'r');
  } catch {
    return null;
  }
  try {
    const buffer = Buffer.alloc(PID_FILE_BYTES_MAX);
    const text = buffer
      .subarray(0, readSync(descriptor, buffer, 0, PID_FILE_BYTES_MAX, 0))
      .toString('utf8')
      .trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : null;
  } finally {
    closeSync(descriptor);
  }
}

/**
 * One process per data directory. Take it before anything in the directory is read, created or
 * deleted; release it after everything is closed. Never open the LOCK file any other way in the
 * holding process: closing any descriptor of a file drops the process's fcntl locks on it.
 */
export class DataDirLock {
  readonly dataDir: string;
  private database: DatabaseSync | null;

  private constructor(dataDir: string, database: DatabaseSync) {
    this.dataDir = dataDir;
    this.database = database;
  }

  /** Lock `dataDir` (it must exist), or throw DataDirInUseError naming the holder's pid. */
  static acquire(dataDir: string): DataDirLock {
    const sqlite = loadSqlite();
    let database: DatabaseSync;
    try {
      database = new sqlite.DatabaseSync(join(dataDir, LOCK_FILE), { timeout: 0 });
    } catch (error) {
      throw new StorageError(`cannot lock data directory ${dataDir}: ${firstLine(error)}`, { cause: error });
    }
    try {
      database.exec('PRAGMA locking_mode = EXCLUSIVE');
      database.exec('BEGIN EXCLUSIVE');
    } catch (error) {
      database.close();
      if (!isBusy(error))
        throw new StorageError(`cannot lock data directory ${dataDir}: ${firstLine(error)}`, {
          cause: error,
        });
      const pid = recordedPid(dataDir);
      const holder = pid === null ? 'another process (its pid is not recorded yet)' : `pid ${pid}`;
      throw new DataDirInUseError(
        `data directory in use by ${holder}: ${dataDir} belongs to a running node (stop it first, or give this one another --data-dir)`,
      );
    }
    const lock = new DataDirLock(dataDir, database);
    try {
      const path = join(dataDir, LOCK_PID_FILE);
      writeFileSync(`${path}.tmp`, `${process.pid}\n`);
      renameSync(`${path}.tmp`, path); // a reader sees the old pid or the new one, never half of one
    } catch (error) {
      lock.release();
      throw new StorageError(`cannot record the lock holder in ${dataDir}: ${firstLine(error)}`, {
        cause: error,
      });
    }
    return lock;
  }

  get held(): boolean {
    return this.database !== null;
  }

  /** Let go (idempotent): the pid file first, then the lock. */
  release(): void {
    const database = this.database;
    if (database === null) return;
    this.database = null;
    try {
      rmSync(join(this.dataDir, LOCK_PID_FILE), { force: true });
    } finally {
      database.close();
    }
    assert(!database.isOpen, 'the lock database is closed');
  }
}
