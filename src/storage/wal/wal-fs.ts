import {
  closeSync,
  fdatasync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  write,
  writeSync,
} from 'node:fs';

/**
 * The few file operations the WAL uses, so that tests can put a file layer under it that tears
 * writes, flips bits and loses unsynced pages (test/storage/wal-faults.test.ts). Writes are
 * positional; nothing is durable before `datasync` (file data) or `syncDir` (names in a directory).
 */
export interface WalFileSystem {
  mkdir(dir: string): void;
  /** File names in `dir` (not paths). */
  list(dir: string): string[];
  readFile(path: string): Uint8Array;
  /** Open for writing; `create` fails when the file exists. Returns a handle. */
  open(path: string, create: boolean): number;
  /** Write all of `data` at `position` (into the page cache: not yet durable). */
  write(handle: number, data: Uint8Array, position: number): void;
  /** The same, off the event loop (preallocation). */
  writeAsync(handle: number, data: Uint8Array, position: number, done: (error: Error | null) => void): void;
  /** Make the file's data durable (fdatasync), off the event loop. */
  datasync(handle: number, done: (error: Error | null) => void): void;
  datasyncNow(handle: number): void;
  truncate(handle: number, length: number): void;
  close(handle: number): void;
  rename(from: string, to: string): void;
  remove(path: string): void;
  /** Make the names in `dir` durable (fsync of the directory). */
  syncDir(dir: string): void;
}

/** The real file system (node:fs). */
export const nodeWalFileSystem: WalFileSystem = {
  mkdir: (dir) => {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  },
  list: (dir) => readdirSync(dir),
  readFile: (path) => readFileSync(path),
  open: (path, create) => openSync(path, create ? 'wx' : 'r+', 0o600),
  write: (handle, data, position) => {
    let written = 0;
    let rounds = 0;
    while (written < data.length) {
      rounds += 1;
      if (rounds > WRITE_ROUNDS_MAX) throw new Error(`short writes: ${written} of ${data.length} bytes`);
      written += writeSync(handle, data, written, data.length - written, position + written);
    }
  },
  writeAsync: (handle, data, position, done) => {
    write(handle, data, 0, data.length, position, (error, written) => {
      if (error !== null) done(error);
      else if (written !== data.length) done(new Error(`short write: ${written} of ${data.length} bytes`));
      else done(null);
    });
  },
  datasync: (handle, done) => {
    fdatasync(handle, (error) => {
      done(error);
    });
  },
  datasyncNow: (handle) => {
    fdatasyncSync(handle);
  },
  truncate: (handle, length) => {
    ftruncateSync(handle, length);
  },
  close: (handle) => {
    closeSync(handle);
  },
  rename: (from, to) => {
    renameSync(from, to);
  },
  remove: (path) => {
    rmSync(path, { recursive: true, force: true });
  },
  syncDir: (dir) => {
    const handle = openSync(dir, 'r');
    try {
      fsyncSync(handle);
    } finally {
      closeSync(handle);
    }
  },
};

/** A write the kernel cuts short this many times in a row is reported as failed. */
const WRITE_ROUNDS_MAX = 64;
