import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { copyFile, open as openFile } from 'node:fs/promises';
import { assert, assertIndex } from '../base/assert.ts';
import { filesForgottenByMark } from './snapshot-retention.ts';
import { nodeWalFileSystem } from './wal/wal-fs.ts';
import {
  appliedIndexOf,
  encodeStateDatabases,
  openStateDatabases,
  type StateDatabases,
} from './state-databases.ts';

/** Snapshot files live in `<data-dir>/snap/`, one per snapshot: `<index, 20 digits>.mdb`. */
export const SNAPSHOT_DIR = 'snap';
const INDEX_DIGITS = 20;
const SNAPSHOT_FILE = /^(\d{20})\.mdb$/;
/** A copy being made (a crash leaves it behind: removed at the next copy or open). */
const TAKING_FILE = 'taking.mdb';
/** A snapshot being received from a leader (a crash leaves it behind: removed at the next receive or open). */
const RECEIVING_FILE = 'receiving.mdb';

/**
 * Snapshots of the LMDB state machine as files: each a compacted copy of `state.mdb` that LMDB makes
 * off the event loop (mdb_env_copy2 in a worker thread, from one read transaction: a consistent view
 * while applies go on), synced, then named by the applied index it holds. Nothing of the state is
 * materialized in the node's heap to take one; the log may forget what a synced file covers.
 */
export class SnapshotFiles {
  readonly dir: string;
  /** A copy is being made (one at a time). */
  private taking = false;
  /** The file a snapshot from the leader is written into (open while receiving). */
  private receiving: number | null = null;
  /** The copy in progress: close() waits for it (LMDB must not close under mdb_env_copy2). */
  private inFlight: Promise<unknown> = Promise.resolve();

  constructor(dataDir: string) {
    this.dir = `${dataDir}/${SNAPSHOT_DIR}`;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  path(index: number): string {
    assertIndex(index, 'snapshot index');
    return `${this.dir}/${String(index).padStart(INDEX_DIGITS, '0')}.mdb`;
  }

  has(index: number): boolean {
    return index > 0 && existsSync(this.path(index));
  }

  /** Indexes of the snapshot files present, ascending (bounded by the directory listing). */
  indexes(): number[] {
    const found: number[] = [];
    for (const name of readdirSync(this.dir)) {
      const match = SNAPSHOT_FILE.exec(name);
      if (match?.[1] !== undefined) found.push(Number(match[1]));
    }
    return found.sort((a, b) => a - b);
  }

  /**
   * Copy the state environment as it is now (off the event loop), sync the copy and its name, and
   * return the applied index it holds. One copy at a time.
   */
  take(state: StateDatabases): Promise<number> {
    assert(!this.taking, 'one snapshot copy at a time');
    this.taking = true;
    const copy = this.copy(state).finally(() => {
      this.taking = false;
    });
    this.inFlight = copy.catch(() => undefined);
    return copy;
  }

  /** Resolves once no copy is in progress. */
  settled(): Promise<unknown> {
    return this.inFlight;
  }

  private async copy(state: StateDatabases): Promise<number> {
    const taking = `${this.dir}/${TAKING_FILE}`;
    removeEnvFile(taking);
    await state.env.backup(taking, true);
    const copy = openStateDatabases(taking, true);
    let index: number;
    try {
      index = appliedIndexOf(copy);
    } finally {
      await copy.env.close();
    }
    await datasyncFile(taking);
    removeEnvFile(taking, true);
    if (index > 0) {
      renameSync(taking, this.path(index));
      nodeWalFileSystem.syncDir(this.dir);
    } else removeEnvFile(taking);
    return index;
  }

  size(index: number): number {
    return statSync(this.path(index)).size;
  }

  /** Up to `length` bytes of snapshot file `index` from `offset` (one positional read). */
  read(index: number, offset: number, length: number): Uint8Array {
    const handle = openSync(this.path(index), 'r');
    try {
      const buffer = Buffer.alloc(length);
      const read = readSync(handle, buffer, 0, length, offset);
      return buffer.subarray(0, read);
    } finally {
      closeSync(handle);
    }
  }

  /** Start receiving a snapshot of `totalBytes` (an earlier one being received is dropped). */
  beginReceive(totalBytes: number): void {
    this.endReceive();
    const path = `${this.dir}/${RECEIVING_FILE}`;
    rmSync(path, { force: true });
    this.receiving = nodeWalFileSystem.open(path, true);
    nodeWalFileSystem.truncate(this.receiving, totalBytes);
  }

  /** Write a piece of the snapshot being received at its offset. */
  writeReceived(offset: number, data: Uint8Array): void {
    assert(this.receiving !== null, 'a snapshot is being received');
    nodeWalFileSystem.write(this.receiving, data, offset);
  }

  /** The snapshot being received is whole: sync it (off the event loop) and name it as file `index`. */
  async finishReceive(index: number): Promise<void> {
    const handle = this.receiving;
    assert(handle !== null, 'a snapshot is being received');
    await new Promise<void>((resolve, reject) => {
      nodeWalFileSystem.datasync(handle, (error) => {
        if (error === null) resolve();
        else reject(error);
      });
    });
    if (this.receiving !== handle) throw new Error('a newer snapshot replaced the one being received');
    this.endReceive();
    renameSync(`${this.dir}/${RECEIVING_FILE}`, this.path(index));
    nodeWalFileSystem.syncDir(this.dir);
  }

  private endReceive(): void {
    if (this.receiving === null) return;
    nodeWalFileSystem.close(this.receiving);
    this.receiving = null;
  }

  /**
   * Copy snapshot file `index` to `target` off the event loop and sync it (the state file to be:
   * the snapshot file stays, the durable snapshot the log names).
   */
  async copyOut(index: number, target: string): Promise<void> {
    rmSync(target, { force: true });
    await copyFile(this.path(index), target);
    await datasyncFile(target);
  }

  /**
   * Snapshot `index` is marked: delete the files before it (filesForgottenByMark), and nothing else:
   * a copy in progress keeps its `taking.mdb` too. The next open removes whatever no mark names.
   */
  pruneBefore(index: number): void {
    for (const found of filesForgottenByMark(this.indexes(), index)) removeEnvFile(this.path(found));
  }

  /** At open: delete every snapshot file but `keep` (and a copy or a receipt a crash left behind). */
  prune(keep: number | null): void {
    removeEnvFile(`${this.dir}/${TAKING_FILE}`);
    if (this.receiving === null) rmSync(`${this.dir}/${RECEIVING_FILE}`, { force: true });
    for (const index of this.indexes()) if (index !== keep) removeEnvFile(this.path(index));
  }

  /**
   * Make `statePath` a copy of the snapshot file at `index` (the state environment must be closed):
   * copied beside it, synced, renamed over it, the directory synced. A crash leaves the old file or the copy.
   */
  restoreInto(index: number, statePath: string): void {
    assert(this.has(index), `snapshot file ${index} exists`);
    const staging = `${statePath}.restoring`;
    rmSync(staging, { force: true });
    copyFileSync(this.path(index), staging);
    syncFileNow(staging);
    rmSync(`${statePath}-lock`, { force: true });
    renameSync(staging, statePath);
    nodeWalFileSystem.syncDir(statePath.slice(0, statePath.lastIndexOf('/')));
  }

  /**
   * The snapshot file at `index` as snapshot bytes, encoded now on this thread (at start, to rebuild
   * the watch history); null when the file is larger than `fileBytesMax`.
   */
  encodeNow(index: number, fileBytesMax: number): Uint8Array | null {
    const path = this.path(index);
    if (statSync(path).size > fileBytesMax) return null;
    const state = openStateDatabases(path, true);
    try {
      const tooLarge = (max: number): Error => new Error(`snapshot ${index} exceeds ${max} bytes`);
      return encodeStateDatabases(state, fileBytesMax, tooLarge).data;
    } finally {
      void state.env.close();
    }
  }
}

/** An LMDB file and its lock file (`lockOnly`: the lock file alone). */
function removeEnvFile(path: string, lockOnly = false): void {
  if (!lockOnly) rmSync(path, { force: true });
  rmSync(`${path}-lock`, { force: true });
}

async function datasyncFile(path: string): Promise<void> {
  const handle = await openFile(path, 'r+');
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

function syncFileNow(path: string): void {
  const handle = nodeWalFileSystem.open(path, false);
  try {
    nodeWalFileSystem.datasyncNow(handle);
  } finally {
    nodeWalFileSystem.close(handle);
  }
}
