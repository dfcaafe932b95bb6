import { assert } from '../../src/base/assert.ts';
import type { WalFileSystem } from '../../src/storage/wal/wal-fs.ts';

/**
 * An in-memory WalFileSystem modelling a page cache over a durable disk, for the WAL's fault tests
 * (test/storage/wal-faults.test.ts). Writes land in the cache; `datasync`/`datasyncNow` make the
 * file's data (and size) durable; `syncDir` makes the creations, removals and renames in that
 * directory durable. `crash(plan)` returns the image a restarted machine sees: each unsynced page
 * kept or lost, each unsynced name change kept or lost, the last write optionally torn, a bit
 * optionally flipped. `FaultyWalFs.restart(image)` reopens it.
 *
 * A crash can also be placed at any step (`freezeAfter`): from that step on the machine is dead,
 * operations on the event loop throw and completions of asynchronous ones never arrive.
 */

/** The unit a crash keeps or loses. */
export const PAGE_BYTES = 4096;
/** Steps one faulty file system takes: a sanity bound far above what a test drives. */
const STEPS_MAX = 10_000_000;
/** Files one image holds: a sanity bound. */
const FILES_MAX = 100_000;

export class CrashedError extends Error {
  override readonly name = 'CrashedError';
}

/** What a crash keeps; lists are used in turn (cyclically), an empty one means "lose". */
export interface CrashPlan {
  /** Per unsynced page, in file and page order: whether it reached the disk. */
  readonly keepPages: readonly boolean[];
  /** Per unsynced name change, in order: whether it reached the disk. */
  readonly keepNames: readonly boolean[];
  /** Whether a file size changed since its last sync reached the disk. */
  readonly keepSize: boolean;
  /** Tear the last write (if not yet synced): only its first `tear % length` bytes reach the disk. */
  readonly tear: number | null;
  /** Flip bit `bit` of the byte at `index % total bytes` of the image (files in name order). */
  readonly flip: { readonly index: number; readonly bit: number } | null;
}

/** Keep nothing that was not synced. */
export const LOSE_UNSYNCED: CrashPlan = {
  keepPages: [],
  keepNames: [],
  keepSize: false,
  tear: null,
  flip: null,
};
/** Keep everything written (a clean power cut after the page cache was written back). */
export const KEEP_WRITTEN: CrashPlan = {
  keepPages: [true],
  keepNames: [true],
  keepSize: true,
  tear: null,
  flip: null,
};

/** The durable state a restart sees: file paths and their bytes, and the directories. */
export interface DiskImage {
  readonly files: Map<string, Uint8Array>;
  readonly dirs: Set<string>;
}

interface Inode {
  cache: Uint8Array;
  size: number;
  durable: Uint8Array;
  /** Pages written (or cut off) since they were last made durable. */
  readonly dirty: Set<number>;
}

interface NameChange {
  readonly dir: string;
  readonly apply: (names: Map<string, Inode>) => void;
}

/** One step the file system took, for tests that crash at a chosen kind of step. */
export interface StepRecord {
  readonly step: number;
  readonly kind: string;
  readonly path: string;
}

function dirOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '.' : path.slice(0, slash);
}

/** Cycles through a plan's list of choices. */
class Choices {
  private next = 0;
  private readonly list: readonly boolean[];

  constructor(list: readonly boolean[]) {
    this.list = list;
  }

  take(): boolean {
    if (this.list.length === 0) return false;
    const choice = this.list[this.next % this.list.length] ?? false;
    this.next += 1;
    return choice;
  }
}

export class FaultyWalFs implements WalFileSystem {
  private readonly names = new Map<string, Inode>();
  private readonly durableNames = new Map<string, Inode>();
  private readonly pendingNames: NameChange[] = [];
  private readonly dirs = new Set<string>();
  private readonly handles = new Map<number, Inode>();
  private nextHandle = 1;
  private lastWrite: { inode: Inode; position: number; data: Uint8Array } | null = null;
  private stepLimit = STEPS_MAX;
  /** Steps taken so far (calls that change the disk, and completions of asynchronous ones). */
  steps = 0;
  frozen = false;
  /** Every step, when `record` is on. */
  readonly log: StepRecord[] = [];
  record = false;
  /** Whether the last crash tore a write (a test checks that its plans really do). */
  tore = false;

  /** A file system whose durable and cached state is `image`. */
  static restart(image: DiskImage): FaultyWalFs {
    const fs = new FaultyWalFs();
    for (const dir of image.dirs) fs.dirs.add(dir);
    for (const [path, bytes] of image.files) {
      const inode: Inode = {
        cache: bytes.slice(),
        size: bytes.length,
        durable: bytes.slice(),
        dirty: new Set(),
      };
      fs.names.set(path, inode);
      fs.durableNames.set(path, inode);
    }
    return fs;
  }

  /** The machine dies before its step number `steps` (counted from the first). */
  freezeAfter(steps: number): void {
    assert(Number.isSafeInteger(steps) && steps >= 0, `freeze after ${steps} steps`);
    this.stepLimit = steps;
  }

  /** Take a step: false when the machine is dead (now or already). */
  private step(kind: string, path: string): boolean {
    if (this.frozen) return false;
    if (this.steps >= this.stepLimit) {
      this.frozen = true;
      return false;
    }
    this.steps += 1;
    assert(this.steps <= STEPS_MAX, `over ${STEPS_MAX} steps`);
    if (this.record) this.log.push({ step: this.steps, kind, path });
    return true;
  }

  private stepOrThrow(kind: string, path: string): void {
    if (!this.step(kind, path)) throw new CrashedError(`the machine crashed before ${kind} ${path}`);
  }

  private inode(handle: number): Inode {
    const inode = this.handles.get(handle);
    assert(inode !== undefined, `unknown handle ${handle}`);
    return inode;
  }

  private pathOf(inode: Inode): string {
    for (const [path, held] of this.names) if (held === inode) return path;
    return '(removed)';
  }

  mkdir(dir: string): void {
    this.dirs.add(dir); // durable at once: the tests' directories exist before they start
  }

  list(dir: string): string[] {
    const found: string[] = [];
    for (const path of this.names.keys()) if (dirOf(path) === dir) found.push(path.slice(dir.length + 1));
    return found;
  }

  readFile(path: string): Uint8Array {
    const inode = this.names.get(path);
    if (inode === undefined) throw new Error(`ENOENT: ${path}`);
    return inode.cache.slice(0, inode.size);
  }

  open(path: string, create: boolean): number {
    let inode = this.names.get(path);
    if (create) {
      if (inode !== undefined) throw new Error(`EEXIST: ${path}`);
      this.stepOrThrow('create', path);
      const created: Inode = {
        cache: new Uint8Array(0),
        size: 0,
        durable: new Uint8Array(0),
        dirty: new Set(),
      };
      inode = created;
      this.names.set(path, created);
      this.pendingNames.push({ dir: dirOf(path), apply: (names) => names.set(path, created) });
    }
    if (inode === undefined) throw new Error(`ENOENT: ${path}`);
    const handle = this.nextHandle;
    this.nextHandle += 1;
    this.handles.set(handle, inode);
    return handle;
  }

  write(handle: number, data: Uint8Array, position: number): void {
    const inode = this.inode(handle);
    this.stepOrThrow('write', this.pathOf(inode));
    this.applyWrite(inode, data, position);
  }

  writeAsync(handle: number, data: Uint8Array, position: number, done: (error: Error | null) => void): void {
    const inode = this.inode(handle);
    const copy = data.slice();
    if (!this.step('writeAsync', this.pathOf(inode))) return;
    // Applied when it completes, as the thread pool would: a writer that overlaps it is caught.
    setImmediate(() => {
      if (!this.step('writeAsync done', this.pathOf(inode))) return;
      this.applyWrite(inode, copy, position);
      done(null);
    });
  }

  private applyWrite(inode: Inode, data: Uint8Array, position: number): void {
    const end = position + data.length;
    if (end > inode.cache.length) {
      const grown = new Uint8Array(Math.max(end, inode.cache.length * 2));
      grown.set(inode.cache.subarray(0, inode.size));
      inode.cache = grown;
    }
    inode.cache.set(data, position);
    inode.size = Math.max(inode.size, end);
    for (let page = Math.floor(position / PAGE_BYTES); page * PAGE_BYTES < end; page += 1)
      inode.dirty.add(page);
    this.lastWrite = { inode, position, data: data.slice() };
  }

  datasync(handle: number, done: (error: Error | null) => void): void {
    const inode = this.inode(handle);
    if (!this.step('datasync', this.pathOf(inode))) return;
    const pages = [...inode.dirty];
    const size = inode.size;
    // What was written before the call is durable when the callback runs, not before.
    setImmediate(() => {
      if (!this.step('datasync done', this.pathOf(inode))) return;
      flush(inode, pages, size);
      done(null);
    });
  }

  datasyncNow(handle: number): void {
    const inode = this.inode(handle);
    this.stepOrThrow('datasyncNow', this.pathOf(inode));
    flush(inode, [...inode.dirty], inode.size);
  }

  truncate(handle: number, length: number): void {
    const inode = this.inode(handle);
    this.stepOrThrow('truncate', this.pathOf(inode));
    const end = Math.max(inode.size, length);
    for (let page = Math.floor(length / PAGE_BYTES); page * PAGE_BYTES < end; page += 1)
      inode.dirty.add(page);
    if (length < inode.size) inode.cache.fill(0, length, inode.size);
    else this.applyWrite(inode, new Uint8Array(length - inode.size), inode.size);
    inode.size = length;
  }

  close(handle: number): void {
    this.handles.delete(handle);
  }

  rename(from: string, to: string): void {
    const inode = this.names.get(from);
    if (inode === undefined) throw new Error(`ENOENT: ${from}`);
    this.stepOrThrow('rename', to);
    this.names.delete(from);
    this.names.set(to, inode);
    this.pendingNames.push({
      dir: dirOf(to),
      apply: (names) => {
        if (names.get(from) !== inode) return; // its creation did not reach the disk
        names.delete(from);
        names.set(to, inode);
      },
    });
  }

  remove(path: string): void {
    this.stepOrThrow('remove', path);
    if (!this.names.delete(path)) return;
    this.pendingNames.push({ dir: dirOf(path), apply: (names) => names.delete(path) });
  }

  syncDir(dir: string): void {
    this.stepOrThrow('syncDir', dir);
    const kept: NameChange[] = [];
    for (const change of this.pendingNames.splice(0)) {
      if (change.dir === dir) change.apply(this.durableNames);
      else kept.push(change);
    }
    this.pendingNames.push(...kept);
  }

  /** The machine dies now: what the disk holds under `plan`. */
  crash(plan: CrashPlan): DiskImage {
    this.frozen = true;
    const names = new Map(this.durableNames);
    const keepNames = new Choices(plan.keepNames);
    for (const change of this.pendingNames) if (keepNames.take()) change.apply(names);
    const keepPages = new Choices(plan.keepPages);
    const files = new Map<string, Uint8Array>();
    const sorted = [...names.keys()].sort();
    assert(sorted.length <= FILES_MAX, `over ${FILES_MAX} files`);
    for (const path of sorted) {
      const inode = names.get(path);
      assert(inode !== undefined, 'named inode');
      files.set(path, this.crashedBytes(inode, keepPages, plan));
    }
    if (plan.flip !== null) flipBit(files, plan.flip.index, plan.flip.bit);
    return { files, dirs: new Set(this.dirs) };
  }

  /** One file after a crash: durable bytes, kept pages, the size if kept, the torn last write. */
  private crashedBytes(inode: Inode, keepPages: Choices, plan: CrashPlan): Uint8Array {
    const image = new Uint8Array(Math.max(inode.durable.length, inode.size));
    image.set(inode.durable);
    let keptEnd = 0;
    for (const page of [...inode.dirty].sort((a, b) => a - b)) {
      if (!keepPages.take()) continue;
      const start = page * PAGE_BYTES;
      const end = Math.min(start + PAGE_BYTES, image.length);
      image.fill(0, start, end);
      if (start < inode.size) image.set(inode.cache.subarray(start, Math.min(end, inode.size)), start);
      keptEnd = Math.max(keptEnd, Math.min(end, inode.size));
    }
    let length = inode.durable.length;
    if (plan.keepSize) length = inode.size;
    else if (keptEnd > length) length = keptEnd;
    const last = this.lastWrite;
    if (
      plan.tear !== null &&
      last?.inode === inode &&
      last.data.length > 0 &&
      unsynced(inode, last.position, last.data.length)
    ) {
      this.tore = true;
      const kept = plan.tear % last.data.length;
      const before = new Uint8Array(last.data.length);
      before.set(inode.durable.subarray(last.position, last.position + last.data.length));
      image.set(last.data.subarray(0, kept), last.position);
      image.set(before.subarray(kept), last.position + kept);
      length = Math.max(length, last.position + kept);
    }
    return image.slice(0, length);
  }
}

/** Make pages (as the file held them at the sync call) and the size durable. */
function flush(inode: Inode, pages: readonly number[], size: number): void {
  const durable = new Uint8Array(size);
  durable.set(inode.durable.subarray(0, Math.min(size, inode.durable.length)));
  for (const page of pages) {
    const start = page * PAGE_BYTES;
    if (start >= size) continue;
    const end = Math.min(start + PAGE_BYTES, size);
    durable.fill(0, start, end);
    durable.set(inode.cache.subarray(start, Math.min(end, inode.size)), start);
    if (end === start + PAGE_BYTES || inode.size <= size) inode.dirty.delete(page);
  }
  inode.durable = durable;
}

function unsynced(inode: Inode, position: number, length: number): boolean {
  for (let page = Math.floor(position / PAGE_BYTES); page * PAGE_BYTES < position + length; page += 1)
    if (inode.dirty.has(page)) return true;
  return false;
}

function flipBit(files: Map<string, Uint8Array>, index: number, bit: number): void {
  let total = 0;
  for (const bytes of files.values()) total += bytes.length;
  if (total === 0) return;
  let at = index % total;
  for (const bytes of files.values()) {
    if (at < bytes.length) {
      bytes[at] = (bytes[at] ?? 0) ^ (1 << (bit % 8));
      return;
    }
    at -= bytes.length;
  }
}
