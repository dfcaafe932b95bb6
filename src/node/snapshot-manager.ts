import { assert } from '../base/assert.ts';
import type { InstallSnapshot, NodeId, Ready } from '../raft/types.ts';
import type { Snapshot, SnapshotChunk } from './interfaces.ts';
import { SNAPSHOT_CHUNK_BYTES_MAX, SnapshotAssembler, snapshotChunks } from './snapshot-transfer.ts';

/** Take a snapshot (and compact the log) once this many entries were applied since the last one. */
export const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT = 10_000;

export interface SnapshotManagerOptions {
  readonly nodeId: NodeId;
  /** The durable snapshot the node starts from, if any. */
  readonly snapshot: Snapshot | null;
  readonly thresholdEntries: number | undefined;
  readonly chunkBytes: number | undefined;
}

/**
 * The node's snapshots: the newest one it holds (sent in chunks to followers that need compacted
 * entries), the one being received from the leader, and the lock held while a local snapshot is
 * being written (the node then steps nothing, and starts no Ready).
 */
export class SnapshotManager {
  private readonly nodeId: NodeId;
  private readonly thresholdEntries: number;
  private readonly chunkBytes: number;
  private readonly assembler = new SnapshotAssembler();
  /** The newest snapshot this node holds. */
  private latestSnapshot: Snapshot | null;
  /** A snapshot fully received from the leader, waiting for the core to accept it. */
  private received: Snapshot | null = null;
  /** A local snapshot is being written. */
  private writing = false;

  constructor(options: SnapshotManagerOptions) {
    this.nodeId = options.nodeId;
    this.thresholdEntries = options.thresholdEntries ?? SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT;
    this.chunkBytes = options.chunkBytes ?? SNAPSHOT_CHUNK_BYTES_MAX;
    assert(this.thresholdEntries >= 1, 'snapshot threshold is at least one entry');
    assert(
      this.chunkBytes >= 1 && this.chunkBytes <= SNAPSHOT_CHUNK_BYTES_MAX,
      'snapshot chunk size in range',
    );
    this.latestSnapshot = options.snapshot;
  }

  get latest(): Snapshot | null {
    return this.latestSnapshot;
  }

  /** A local snapshot is being written: the lock the node checks before it steps the core. */
  get busy(): boolean {
    return this.writing;
  }

  /** Is a snapshot due, with `appliedIndex` applied? */
  due(appliedIndex: number): boolean {
    return appliedIndex - (this.latestSnapshot?.meta.index ?? 0) >= this.thresholdEntries;
  }

  /** Take the lock to write `snapshot`, the new latest one. */
  beginWrite(snapshot: Snapshot): void {
    assert(!this.writing, 'one snapshot write at a time');
    this.latestSnapshot = snapshot;
    this.writing = true;
  }

  endWrite(): void {
    assert(this.writing, 'endWrite after beginWrite');
    this.writing = false;
  }

  /** A chunk from the leader; returns the message to step into the core once the snapshot is whole. */
  acceptChunk(chunk: SnapshotChunk): InstallSnapshot | null {
    if (chunk.to !== this.nodeId) return null;
    const snapshot = this.assembler.accept(chunk);
    if (snapshot === null) return null;
    this.received = snapshot;
    return { type: 'snapshot', from: chunk.from, to: chunk.to, term: chunk.term, snapshot: snapshot.meta };
  }

  /** The received snapshot data the core accepted in `ready`, if it accepted one. */
  acceptedIn(ready: Ready): Snapshot | null {
    if (ready.snapshot === null) return null;
    const received = this.received;
    assert(received !== null, 'the core accepts only a snapshot the node received');
    assert(
      received.meta.index === ready.snapshot.index && received.meta.term === ready.snapshot.term,
      'accepted snapshot is the received one',
    );
    this.received = null;
    return received;
  }

  /** The state machine now holds `snapshot`. */
  installed(snapshot: Snapshot): void {
    this.latestSnapshot = snapshot;
  }

  /** The chunks that carry the core's InstallSnapshot `message` (always of the snapshot this node holds). */
  chunksFor(message: InstallSnapshot): SnapshotChunk[] {
    const snapshot = this.latestSnapshot;
    assert(
      snapshot !== null && snapshot.meta.index === message.snapshot.index,
      'the core sends the snapshot the node holds',
    );
    const route = { from: message.from, to: message.to, term: message.term };
    return snapshotChunks(snapshot, route, this.chunkBytes);
  }
}
