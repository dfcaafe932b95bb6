import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { assert, assertIndex } from '../base/assert.ts';
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
/** How long encoding a snapshot file into bytes (for a follower) may take in its worker thread. */
export const SNAPSHOT_ENCODE_TIMEOUT_MS = 120_000;

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

  /** Delete every snapshot file but `keep` (and a copy an interrupted take left behind). */
  prune(keep: number | null): void {
    removeEnvFile(`${this.dir}/${TAKING_FILE}`);
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

  /**
   * The snapshot file at `index` as snapshot bytes (encodeSnapshot, what nodes send each other),
   * encoded in a worker thread so the event loop never waits for it; at most `bytesMax` of records.
   */
  encode(index: number, bytesMax: number): Promise<Uint8Array> {
    const path = this.path(index);
    const worker = new Worker(new URL(`./snapshot-encode-worker.${WORKER_EXTENSION}`, import.meta.url), {
      workerData: { path, index, bytesMax },
    });
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        void worker.terminate();
        reject(new Error(`encoding snapshot ${index} took longer than ${SNAPSHOT_ENCODE_TIMEOUT_MS} ms`));
      }, SNAPSHOT_ENCODE_TIMEOUT_MS);
      worker.once('message', (message: { data?: Uint8Array; error?: string }) => {
        clearTimeout(timer);
        void worker.terminate();
        if (message.data !== undefined) resolve(message.data);
        else reject(new Error(message.error ?? 'the snapshot encoder sent nothing'));
      });
      worker.once('error', (error: Error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }
}

/** The worker runs from source (.ts, Node strips the types) or from the build (.js). */
const WORKER_EXTENSION = import.meta.url.endsWith('.ts') ? 'ts' : 'js';

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
