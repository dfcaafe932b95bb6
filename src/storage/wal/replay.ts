import { MemoryLogState } from '../memory-log-store.ts';
import { StorageError } from '../errors.ts';
import { EMPTY_HARD_STATE, type Entry, type HardState, type SnapshotMeta } from '../../raft/types.ts';
import {
  FRAME_ALIGN_BYTES,
  FRAME_MAGIC,
  MalformedFrameError,
  readFrame,
  RecordType,
  type WalRecord,
} from './frame.ts';

/** What one segment held, as the writer keeps track of it. */
export interface SegmentInfo {
  readonly number: number;
  readonly name: string;
  /** The snapshot index its base record named (0: none or no frame yet). */
  baseSnapshotIndex: number;
  /** The highest entry index written to it (0: none). */
  maxIndex: number;
}

/** Where a segment's valid frames end, and whether what follows was a torn write to cut off. */
export interface SegmentScan {
  readonly end: number;
  readonly torn: boolean;
  readonly frames: number;
}

const NO_DATA = new Uint8Array(0);

/**
 * Rebuilds the log from the segments' records in order, with the LogStore contract's rules
 * (MemoryLogState): a snapshot mark drops what it covers, an entry replaces the suffix from its
 * index, a hard state replaces the last. Anything the writer could not have written is corruption.
 */
export class WalReplay {
  readonly state = new MemoryLogState();
  private snapshotMeta: SnapshotMeta | null = null;
  private hardState: HardState = EMPTY_HARD_STATE;
  private nextSequence: number | null = null;
  private readonly where: string;

  constructor(where: string) {
    this.where = where;
  }

  get snapshot(): SnapshotMeta | null {
    return this.snapshotMeta;
  }

  get lastHardState(): HardState {
    return this.hardState;
  }

  /** The sequence the next frame written must carry. */
  get sequence(): number {
    return this.nextSequence ?? 1;
  }

  /**
   * Read one segment's frames into the log. Stops at the first place without a valid frame: the
   * end when only zeros follow, a torn write (`torn`) when no valid frame follows; a valid frame
   * after a damaged one means acknowledged data was damaged, and that throws.
   */
  readSegment(segment: SegmentInfo, bytes: Uint8Array): SegmentScan {
    let offset = 0;
    let frames = 0;
    const framesMax = Math.ceil(bytes.length / FRAME_ALIGN_BYTES);
    while (frames < framesMax) {
      let frame;
      try {
        frame = readFrame(bytes, offset);
      } catch (error) {
        if (!(error instanceof MalformedFrameError)) throw error;
        throw this.corrupt(segment, offset, error.message);
      }
      if (frame === null) break;
      if (this.nextSequence !== null && frame.sequence !== this.nextSequence)
        throw this.corrupt(
          segment,
          offset,
          `frame ${frame.sequence} where ${this.nextSequence} was expected`,
        );
      if (frames === 0 && frame.records[0]?.type !== RecordType.SegmentBase)
        throw this.corrupt(segment, offset, 'the first frame does not start with the base record');
      this.nextSequence = frame.sequence + 1;
      for (const record of frame.records) this.apply(segment, offset, record);
      frames += 1;
      offset = frame.end;
    }
    const following = validFrameAfter(bytes, offset);
    if (following !== null)
      throw this.corrupt(
        segment,
        offset,
        `a damaged frame is followed by a valid one at offset ${following}`,
      );
    return { end: offset, torn: !zeroFrom(bytes, offset), frames };
  }

  private apply(segment: SegmentInfo, offset: number, record: WalRecord): void {
    switch (record.type) {
      case RecordType.SegmentBase:
        segment.baseSnapshotIndex = record.snapshot?.index ?? 0;
        // The base repeats what earlier segments said; it matters when they were deleted.
        if (record.snapshot !== null && record.snapshot.index > this.state.snapshotIndex) {
          if (this.state.lastIndex > this.state.snapshotIndex)
            throw this.corrupt(segment, offset, 'a base record moves the snapshot past held entries');
          this.applySnapshot(record.snapshot);
        }
        this.hardState = record.hardState;
        this.state.apply({ snapshot: null, hardState: record.hardState, entries: [] });
        return;
      case RecordType.Snapshot:
        if (record.meta.index <= this.state.snapshotIndex)
          throw this.corrupt(
            segment,
            offset,
            `snapshot ${record.meta.index} does not move past ${this.state.snapshotIndex}`,
          );
        this.applySnapshot(record.meta);
        return;
      case RecordType.HardState:
        this.hardState = record.hardState;
        this.state.apply({ snapshot: null, hardState: record.hardState, entries: [] });
        return;
      default:
        this.applyEntry(segment, offset, record.entry);
    }
  }

  private applySnapshot(meta: SnapshotMeta): void {
    this.snapshotMeta = meta;
    this.state.apply({ snapshot: { meta, data: NO_DATA }, hardState: null, entries: [] });
  }

  private applyEntry(segment: SegmentInfo, offset: number, entry: Entry): void {
    if (entry.index <= this.state.snapshotIndex || entry.index > this.state.lastIndex + 1)
      throw this.corrupt(
        segment,
        offset,
        `entry ${entry.index} does not continue the log (snapshot ${this.state.snapshotIndex}, last ${this.state.lastIndex})`,
      );
    this.state.apply({ snapshot: null, hardState: null, entries: [entry] });
    segment.maxIndex = Math.max(segment.maxIndex, entry.index);
  }

  corrupt(segment: SegmentInfo, offset: number, why: string): StorageError {
    return new StorageError(
      `the Raft log in ${this.where} is corrupt: segment ${segment.name} at offset ${offset}: ${why}. Acknowledged entries may be damaged, so this node does not start; move its data dir aside and let it catch up from the cluster (docs/operations.md, "A corrupt log")`,
    );
  }
}

/** The first aligned offset after `offset` where a valid frame starts, or null. */
function validFrameAfter(bytes: Uint8Array, offset: number): number | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = offset + FRAME_ALIGN_BYTES; at + 4 <= bytes.length; at += FRAME_ALIGN_BYTES) {
    if (view.getUint32(at, true) !== FRAME_MAGIC) continue;
    try {
      if (readFrame(bytes, at) !== null) return at;
    } catch (error) {
      if (!(error instanceof MalformedFrameError)) throw error;
      return at; // it checked out and still made no sense: damage, not a torn write
    }
  }
  return null;
}

function zeroFrom(bytes: Uint8Array, offset: number): boolean {
  for (let at = offset; at < bytes.length; at += 1) if (bytes[at] !== 0) return false;
  return true;
}
