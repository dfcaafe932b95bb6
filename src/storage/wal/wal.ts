import { assert } from '../../base/assert.ts';
import { StorageError } from '../errors.ts';
import type { Entry, HardState, PersistedState, SnapshotMeta } from '../../raft/types.ts';
import {
  encodeFrame,
  entryRecord,
  FRAME_PAYLOAD_BYTES_MAX,
  recordBytes,
  recordConfig,
  RecordType,
  type WalRecord,
} from './frame.ts';
import { WalReplay, type SegmentInfo } from './replay.ts';
import { nodeWalFileSystem, type WalFileSystem } from './wal-fs.ts';

/** A segment is closed once it holds this much; a batch bigger than a segment gets one to itself. */
export const WAL_SEGMENT_BYTES = 64 * 1024 * 1024;
/** Zeros are written (and synced) this far ahead of the writer, so a sync is data only, no metadata. */
export const WAL_PREALLOCATE_AHEAD_BYTES = 4 * 1024 * 1024;
/** One preallocation step. */
export const WAL_PREALLOCATE_CHUNK_BYTES = 1024 * 1024;
/** Batches waiting for the one in flight. */
export const WAL_QUEUE_MAX = 4_096;
/** Segment files a data dir may hold: a sanity bound for the reader. */
export const WAL_SEGMENTS_MAX = 100_000;

const SEGMENT_NAME = /^([0-9a-f]{16})\.wal$/;
const ZEROS = Buffer.alloc(WAL_PREALLOCATE_CHUNK_BYTES);

export interface WalBatch {
  readonly snapshot: SnapshotMeta | null;
  readonly entries: readonly Entry[];
  readonly hardState: HardState | null;
}

export interface WalOptions {
  readonly fs?: WalFileSystem;
  readonly segmentBytes?: number;
}

/** What opening found: the WAL, ready to append, and the log it holds. */
export interface WalOpened {
  readonly wal: Wal;
  readonly persisted: PersistedState;
}

interface Pending {
  readonly batch: WalBatch;
  readonly done: (error: Error | null) => void;
}

interface OpenSegment {
  readonly info: SegmentInfo;
  readonly handle: number;
  writePos: number;
  /** Bytes from 0 known to be written (zeros or frames) and synced. */
  zeroedEnd: number;
}

function segmentName(number: number): string {
  return `${number.toString(16).padStart(16, '0')}.wal`;
}

/**
 * The Raft log as an append-only write-ahead log: segment files of aligned, CRC-checked frames,
 * one write and one fdatasync per batch (the node's group commit), zeros preallocated ahead of the
 * writer. Opening replays the segments into the log, cuts off a torn last write, and refuses
 * damage anywhere before it. Segments wholly below a later segment's snapshot are deleted.
 */
export class Wal {
  private readonly dir: string;
  private readonly fs: WalFileSystem;
  private readonly segmentBytes: number;
  private readonly segments: SegmentInfo[];
  private current: OpenSegment | null;
  private sequence: number;
  private snapshot: SnapshotMeta | null;
  private hardState: HardState;
  private readonly queue: Pending[] = [];
  private busy = false;
  private extending = false;
  private extendFrom = 0;
  /** A segment was started: compact once its first frame (its base record) is durable. */
  private compactPending = false;
  private failure: Error | null = null;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  private constructor(dir: string, options: WalOptions, replay: WalReplay, segments: SegmentInfo[]) {
    this.dir = dir;
    this.fs = options.fs ?? nodeWalFileSystem;
    this.segmentBytes = options.segmentBytes ?? WAL_SEGMENT_BYTES;
    this.segments = segments;
    this.current = null;
    this.sequence = replay.sequence;
    this.snapshot = replay.snapshot;
    this.hardState = replay.lastHardState;
  }

  /** Open (or create) the WAL in `dir` and read it back. */
  static open(dir: string, options: WalOptions = {}): WalOpened {
    const fs = options.fs ?? nodeWalFileSystem;
    fs.mkdir(dir);
    const segments = listSegments(fs, dir);
    const replay = new WalReplay(dir);
    let tail: { end: number; size: number; torn: boolean } | null = null;
    for (const [position, segment] of segments.entries()) {
      const bytes = fs.readFile(`${dir}/${segment.name}`);
      const scan = replay.readSegment(segment, bytes);
      const last = position === segments.length - 1;
      if (scan.torn && !last)
        throw replay.corrupt(segment, scan.end, 'damaged bytes end a segment that is not the last');
      // Segments before this one were deleted once its first frame was synced: without it, no
      // torn write explains the loss (a new segment is never the oldest before that sync).
      if (scan.frames === 0 && position === 0 && segment.number > 1)
        throw replay.corrupt(segment, 0, 'the oldest segment left has no valid first frame');
      if (last) tail = { end: scan.end, size: bytes.length, torn: scan.torn };
    }
    const wal = new Wal(dir, options, replay, segments);
    const lastSegment = segments.at(-1);
    if (lastSegment !== undefined && tail !== null) wal.reopenTail(lastSegment, tail);
    return { wal, persisted: replay.state.load().persisted };
  }

  private reopenTail(info: SegmentInfo, tail: { end: number; size: number; torn: boolean }): void {
    const handle = this.fs.open(`${this.dir}/${info.name}`, false);
    if (tail.torn) {
      // Cut the torn write off (it was never acknowledged); zeros are written ahead again.
      this.fs.truncate(handle, tail.end);
      this.fs.datasyncNow(handle);
    }
    this.current = { info, handle, writePos: tail.end, zeroedEnd: tail.torn ? tail.end : tail.size };
  }

  /** Append a batch; `done` once it is durable (or with the error that stops the node). */
  append(batch: WalBatch, done: (error: Error | null) => void): void {
    // A node stopping may still finish a snapshot write after the data dir closed: that batch was
    // never acknowledged, and the node no longer listens for its answer.
    const failure = this.closed ? new StorageError(`the log in ${this.dir} is closed`) : this.failure;
    if (failure !== null) {
      done(failure);
      return;
    }
    assert(this.queue.length < WAL_QUEUE_MAX, `WAL queue over ${WAL_QUEUE_MAX} batches`);
    this.queue.push({ batch, done });
    this.pump();
  }

  /** Append and sync on this thread (migration, restore): throws on failure. */
  appendNow(batch: WalBatch): void {
    assert(!this.busy && !this.extending && this.queue.length === 0, 'appendNow with writes in flight');
    const segment = this.writeUnlessWaiting(batch);
    assert(segment !== null, 'appendNow never waits');
    this.fs.datasyncNow(segment.handle);
    const error = this.compactIfRolled();
    if (error !== null) throw error;
  }

  /** Write the next batch if none is in flight, then sync it. */
  private pump(): void {
    const pending = this.queue[0];
    if (this.busy || pending === undefined || this.failure !== null) return;
    let segment: OpenSegment | null;
    try {
      segment = this.writeUnlessWaiting(pending.batch);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (segment === null) return; // waiting for preallocation; it calls pump again
    this.busy = true;
    this.fs.datasync(segment.handle, (syncError) => {
      this.busy = false;
      const error = syncError ?? this.compactIfRolled();
      if (error !== null) {
        this.fail(error);
        return;
      }
      this.queue.shift();
      pending.done(null);
      this.preallocate();
      this.pump();
      this.notifyIdle();
    });
  }

  private fail(error: unknown): void {
    this.failure = error instanceof Error ? error : new Error(String(error));
    const waiting = this.queue.splice(0);
    for (const pending of waiting) pending.done(this.failure);
    this.notifyIdle();
  }

  /**
   * Write the batch's frames into the current segment, rolling to a new one first when it would
   * overflow; null: it must wait for the preallocation in flight (the writer never writes where
   * zeros are being written, nor closes a segment under one).
   */
  private writeUnlessWaiting(batch: WalBatch): OpenSegment | null {
    let segment = this.current;
    let frames = segment === null ? [] : this.frames(batch, segment.writePos === 0);
    if (
      segment === null ||
      (segment.writePos > 0 && segment.writePos + totalBytes(frames) > this.segmentBytes)
    ) {
      if (this.extending) return null;
      segment = this.roll();
      frames = this.frames(batch, true);
    } else if (this.extending && segment.writePos + totalBytes(frames) > this.extendFrom) {
      return null;
    }
    for (const frame of frames) {
      this.fs.write(segment.handle, frame, segment.writePos);
      segment.writePos += frame.length;
    }
    this.sequence += frames.length;
    if (batch.snapshot !== null) this.snapshot = batch.snapshot;
    if (batch.hardState !== null) this.hardState = batch.hardState;
    const lastIndex = batch.entries.at(-1)?.index;
    if (lastIndex !== undefined) segment.info.maxIndex = Math.max(segment.info.maxIndex, lastIndex);
    return segment;
  }

  /** The batch as frames: [base] snapshot mark, entries, hard state, split at the payload bound. */
  private frames(batch: WalBatch, base: boolean): Buffer[] {
    const records: WalRecord[] = [];
    if (base)
      records.push({ type: RecordType.SegmentBase, snapshot: this.snapshot, hardState: this.hardState });
    if (batch.snapshot !== null) records.push({ type: RecordType.Snapshot, meta: batch.snapshot });
    for (const entry of batch.entries) records.push(entryRecord(entry));
    if (batch.hardState !== null) records.push({ type: RecordType.HardState, hardState: batch.hardState });
    const frames: Buffer[] = [];
    let start = 0;
    let payload = 8;
    for (const [position, record] of records.entries()) {
      const size = recordBytes(record, recordConfig(record));
      assert(size + 8 <= FRAME_PAYLOAD_BYTES_MAX, `a WAL record of ${size} bytes`);
      if (payload + size > FRAME_PAYLOAD_BYTES_MAX) {
        frames.push(encodeFrame(this.sequence + frames.length, records.slice(start, position)));
        start = position;
        payload = 8;
      }
      payload += size;
    }
    frames.push(encodeFrame(this.sequence + frames.length, records.slice(start)));
    return frames;
  }

  /** Start the next segment: created and its name made durable (compaction follows its first sync). */
  private roll(): OpenSegment {
    const previous = this.current;
    if (previous !== null) this.fs.close(previous.handle);
    const number = (this.segments.at(-1)?.number ?? 0) + 1;
    const info: SegmentInfo = {
      number,
      name: segmentName(number),
      baseSnapshotIndex: this.snapshot?.index ?? 0,
      maxIndex: 0,
    };
    const handle = this.fs.open(`${this.dir}/${info.name}`, true);
    this.segments.push(info);
    this.fs.syncDir(this.dir);
    this.current = { info, handle, writePos: 0, zeroedEnd: 0 };
    this.compactPending = true;
    return this.current;
  }

  /**
   * Compact after a roll, once the new segment's first frame is synced: before that its base record
   * is not on disk, and a crash after deleting the segments it covers would lose the log.
   */
  private compactIfRolled(): Error | null {
    if (!this.compactPending) return null;
    this.compactPending = false;
    try {
      this.compact();
      return null;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  /**
   * Delete the oldest segments whose entries all lie at or below the snapshot the next kept
   * segment's base names: reading from that segment gives the same log as reading all of them.
   */
  private compact(): void {
    let maxIndex = 0;
    let deletable = 0;
    for (let position = 0; position + 1 < this.segments.length; position += 1) {
      const segment = this.segments[position];
      const next = this.segments[position + 1];
      assert(segment !== undefined && next !== undefined, 'segment list');
      maxIndex = Math.max(maxIndex, segment.maxIndex);
      if (maxIndex <= next.baseSnapshotIndex) deletable = position + 1;
    }
    if (deletable === 0) return;
    // Newest first, each made durable: a crash leaves all of them or a gap, which open() completes.
    for (const segment of this.segments.splice(0, deletable).reverse()) {
      this.fs.remove(`${this.dir}/${segment.name}`);
      this.fs.syncDir(this.dir);
    }
  }

  /** Write zeros (and sync them) ahead of the writer, one chunk at a time, off the event loop. */
  private preallocate(): void {
    const segment = this.current;
    if (this.extending || segment === null || this.failure !== null || this.closed) return;
    const target = Math.min(segment.writePos + WAL_PREALLOCATE_AHEAD_BYTES, this.segmentBytes);
    const from = Math.max(segment.zeroedEnd, segment.writePos);
    if (from >= target) return;
    const to = Math.min(from + WAL_PREALLOCATE_CHUNK_BYTES, this.segmentBytes);
    this.extending = true;
    this.extendFrom = from;
    const finish = (done: boolean): void => {
      this.extending = false;
      if (done && this.current === segment) segment.zeroedEnd = to;
      this.pump();
      if (done) this.preallocate();
      this.notifyIdle();
    };
    this.fs.writeAsync(segment.handle, ZEROS.subarray(0, to - from), from, (error) => {
      // A failed preallocation is not a failed write: the next write says whether the disk is full.
      if (error !== null) {
        finish(false);
        return;
      }
      this.fs.datasync(segment.handle, (syncError) => {
        finish(syncError === null);
      });
    });
  }

  private notifyIdle(): void {
    if (this.busy || this.extending) return;
    const waiters = this.idleWaiters.splice(0);
    for (const waiter of waiters) waiter();
  }

  /** Wait for the batch and the preallocation in flight, then close the segment. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.busy || this.extending)
      await new Promise<void>((resolve) => {
        this.idleWaiters.push(resolve);
      });
    if (this.current !== null) this.fs.close(this.current.handle);
    this.current = null;
  }

  /** Close with nothing in flight (after appendNow). */
  closeNow(): void {
    assert(!this.busy && !this.extending && this.queue.length === 0, 'closeNow with writes in flight');
    this.closed = true;
    if (this.current !== null) this.fs.close(this.current.handle);
    this.current = null;
  }

  /** After a storage failure: close without waiting. */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    const current = this.current;
    this.current = null;
    if (current === null) return;
    try {
      this.fs.close(current.handle);
    } catch {
      // the process is stopping after a storage failure; the handle goes with it
    }
  }

  /** Segment files now (for tests and status). */
  get segmentCount(): number {
    return this.segments.length;
  }
}

function totalBytes(frames: readonly Buffer[]): number {
  let bytes = 0;
  for (const frame of frames) bytes += frame.length;
  return bytes;
}

/**
 * The segment files in order. A gap in their numbers is a compaction a crash interrupted (the
 * oldest are deleted first): the ones before the gap are deleted now.
 */
function listSegments(fs: WalFileSystem, dir: string): SegmentInfo[] {
  const found: SegmentInfo[] = [];
  for (const name of fs.list(dir)) {
    const match = SEGMENT_NAME.exec(name);
    if (match?.[1] === undefined) {
      if (name.endsWith('.tmp')) fs.remove(`${dir}/${name}`);
      continue;
    }
    found.push({ number: Number.parseInt(match[1], 16), name, baseSnapshotIndex: 0, maxIndex: 0 });
    if (found.length > WAL_SEGMENTS_MAX)
      throw new StorageError(`${dir} holds more than ${WAL_SEGMENTS_MAX} WAL segments`);
  }
  found.sort((a, b) => a.number - b.number);
  let start = 0;
  for (let position = 1; position < found.length; position += 1) {
    const segment = found[position];
    const previous = found[position - 1];
    if (segment !== undefined && previous !== undefined && segment.number !== previous.number + 1)
      start = position;
  }
  for (const segment of found.slice(0, start)) fs.remove(`${dir}/${segment.name}`);
  return found.slice(start);
}
