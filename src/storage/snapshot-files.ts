import {
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { copyFile, open as openFile, rm } from 'node:fs/promises';
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
 * The second copy written while receiving: the state machine to be, so installing a received snapshot
 * renames it instead of copying the snapshot file again (removed at the next receive or open).
 */
const RECEIVING_STATE_FILE = 'receiving-state.mdb';
/** Beside `state.mdb`: the copy about to replace it (a crash leaves it behind: removed at open). */
const INSTALLING_SUFFIX = '.installing';
/** Beside `state.mdb`: a second name of the state it replaced, removed off the event loop (and at open). */
const REPLACED_SUFFIX = '.replaced';
/** In `snap/`: a file being deleted off the event loop (a crash leaves it behind: removed at open). */
const DELETING_PREFIX = 'deleting-';

/**
 * Snapshots of the LMDB state machine as files: each a compacted copy of `state.mdb` that LMDB makes
 * off the event loop (mdb_env_copy2 in a worker thread, from one read transaction: a consistent view
 * while applies go on), synced, then named by the applied index it holds. Nothing of the state is
 * materialized in the node's heap to take one; the log may forget what a synced file covers.
 */
export class SnapshotFiles {
  readonly dir: string;
  /** The live state environment's file, which an installed snapshot replaces. */
  private readonly statePath: string;
  /** A copy is being made (one at a time). */
  private taking = false;
  /** The two files a snapshot from the leader is written into: the snapshot file and the state to be (open while receiving). */
  private receiving: { readonly snapshot: number; readonly state: number } | null = null;
  /** A received snapshot whose synced second copy (RECEIVING_STATE_FILE) waits to be installed. */
  private stagedIndex: number | null = null;
  /** Installs that renamed the copy written while receiving (for tests). */
  private receivedCopies = 0;
  /** The copy in progress: close() waits for it (LMDB must not close under mdb_env_copy2). */
  private inFlight: Promise<unknown> = Promise.resolve();
  /**
   * Files being deleted, one after another, off the event loop: unlinking a file of gigabytes frees
   * its extents and drops its cached pages in the call (0.5 s for 1.4 GB here, a second under load),
   * which on the event loop was the longest stall of a node at 5M keys.
   */
  private deleting: Promise<unknown> = Promise.resolve();
  /** Files handed to deleteLater so far (names their trash). */
  private deletions = 0;

  constructor(dataDir: string, statePath: string) {
    this.dir = `${dataDir}/${SNAPSHOT_DIR}`;
    this.statePath = statePath;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    rmSync(`${this.dir}/${RECEIVING_STATE_FILE}`, { force: true });
    removeEnvFile(this.installingPath);
    rmSync(this.replacedPath, { force: true });
    for (const name of readdirSync(this.dir))
      if (name.startsWith(DELETING_PREFIX)) rmSync(`${this.dir}/${name}`, { force: true });
  }

  private get replacedPath(): string {
    return `${this.statePath}${REPLACED_SUFFIX}`;
  }

  /**
   * Delete `path` (and its LMDB lock file): renamed now to a name nothing else uses (a file made
   * at `path` later is not touched), unlinked off the event loop after the deletions before it.
   */
  private deleteLater(path: string): void {
    rmSync(`${path}-lock`, { force: true });
    if (!existsSync(path)) return;
    const trash = `${this.dir}/${DELETING_PREFIX}${this.deletions}.mdb`;
    this.deletions += 1;
    renameSync(path, trash);
    this.deleting = this.deleting.then(() => rm(trash, { force: true })).catch(() => undefined); // left behind: the next open removes it
  }

  get receivedCopiesInstalled(): number {
    return this.receivedCopies;
  }

  private get installingPath(): string {
    return `${this.statePath}${INSTALLING_SUFFIX}`;
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

  /** Resolves once no copy and no deletion is in progress. */
  settled(): Promise<unknown> {
    return Promise.all([this.inFlight, this.deleting]);
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

  /**
   * Start receiving a snapshot of `totalBytes` (an earlier one being received, or received and not
   * yet installed, is dropped). Each piece is written twice: into the snapshot file, and into the
   * state to be, so the install renames rather than copies.
   */
  beginReceive(totalBytes: number): void {
    this.endReceive();
    this.stagedIndex = null;
    const open = (name: string): number => {
      const path = `${this.dir}/${name}`;
      rmSync(path, { force: true });
      const handle = nodeWalFileSystem.open(path, true);
      nodeWalFileSystem.truncate(handle, totalBytes);
      return handle;
    };
    this.receiving = { snapshot: open(RECEIVING_FILE), state: open(RECEIVING_STATE_FILE) };
  }

  /** Write a piece of the snapshot being received at its offset (into both files). */
  writeReceived(offset: number, data: Uint8Array): void {
    assert(this.receiving !== null, 'a snapshot is being received');
    nodeWalFileSystem.write(this.receiving.snapshot, data, offset);
    nodeWalFileSystem.write(this.receiving.state, data, offset);
  }

  /**
   * The snapshot being received is whole: sync both copies (off the event loop), name the first as
   * snapshot file `index`; the second waits for install.
   */
  async finishReceive(index: number): Promise<void> {
    const receiving = this.receiving;
    assert(receiving !== null, 'a snapshot is being received');
    await Promise.all([datasyncHandle(receiving.snapshot), datasyncHandle(receiving.state)]);
    if (this.receiving !== receiving) throw new Error('a newer snapshot replaced the one being received');
    this.endReceive();
    renameSync(`${this.dir}/${RECEIVING_FILE}`, this.path(index));
    nodeWalFileSystem.syncDir(this.dir);
    this.stagedIndex = index;
  }

  private endReceive(): void {
    if (this.receiving === null) return;
    nodeWalFileSystem.close(this.receiving.snapshot);
    nodeWalFileSystem.close(this.receiving.state);
    this.receiving = null;
  }

  /**
   * Put a synced copy of snapshot file `index` beside the state file (`state.mdb.installing`), off
   * the event loop: the copy made while receiving it when there is one (renamed, at once), else a
   * fresh copy of the file. switchState() then puts it in place.
   */
  async stageInstall(index: number): Promise<void> {
    assert(this.has(index), `snapshot file ${index} exists`);
    removeEnvFile(this.installingPath);
    if (this.stagedIndex === index) {
      this.stagedIndex = null;
      renameSync(`${this.dir}/${RECEIVING_STATE_FILE}`, this.installingPath);
      this.receivedCopies += 1;
      return;
    }
    await copyFile(this.path(index), this.installingPath);
    await datasyncFile(this.installingPath);
  }

  /** The same as stageInstall, on this thread (at open, before the node serves). */
  stageInstallNow(index: number): void {
    assert(this.has(index), `snapshot file ${index} exists`);
    removeEnvFile(this.installingPath);
    copyFileSync(this.path(index), this.installingPath);
    syncFileNow(this.installingPath);
  }

  /**
   * Rename the staged copy over the state file (its environment closed) and sync the directory:
   * a crash leaves the old state file or the new one.
   */
  switchState(): void {
    rmSync(`${this.statePath}-lock`, { force: true });
    // The replaced state keeps a second name, so the rename only drops a link and the file's
    // blocks are freed off the event loop (deleteLater), not in the rename.
    const replacing = existsSync(this.statePath);
    if (replacing) {
      rmSync(this.replacedPath, { force: true });
      linkSync(this.statePath, this.replacedPath);
    }
    renameSync(this.installingPath, this.statePath);
    nodeWalFileSystem.syncDir(this.statePath.slice(0, this.statePath.lastIndexOf('/')));
    if (replacing) this.deleteLater(this.replacedPath);
  }

  /**
   * Snapshot `index` is marked: delete the files before it (filesForgottenByMark), and nothing else:
   * a copy in progress keeps its `taking.mdb` too. The next open removes whatever no mark names.
   */
  pruneBefore(index: number): void {
    for (const found of filesForgottenByMark(this.indexes(), index)) this.deleteLater(this.path(found));
    if (this.stagedIndex !== null && this.stagedIndex < index) {
      this.stagedIndex = null; // a received copy the mark passed: never to be installed
      this.deleteLater(`${this.dir}/${RECEIVING_STATE_FILE}`);
    }
  }

  /** At open: delete every snapshot file but `keep` (and a copy or a receipt a crash left behind). */
  prune(keep: number | null): void {
    removeEnvFile(`${this.dir}/${TAKING_FILE}`);
    if (this.receiving === null) rmSync(`${this.dir}/${RECEIVING_FILE}`, { force: true });
    for (const index of this.indexes()) if (index !== keep) removeEnvFile(this.path(index));
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

function datasyncHandle(handle: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    nodeWalFileSystem.datasync(handle, (error) => {
      if (error === null) resolve();
      else reject(error);
    });
  });
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
