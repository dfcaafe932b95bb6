import { assert } from '../base/assert.ts';
import type { InstallSnapshot, NodeId, Ready } from '../raft/types.ts';
import type { Clock, Snapshot, SnapshotChunk, SnapshotFileSource, SnapshotWithData } from './interfaces.ts';
import { SNAPSHOT_CHUNK_BYTES_MAX, SnapshotAssembler, snapshotChunks } from './snapshot-transfer.ts';

/** Take a snapshot (and compact the log) once this many entries were applied since the last one… */
export const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT = 10_000;
/**
 * …or once the entries applied since then carry this many bytes: the log the core keeps in memory
 * is bounded by bytes as well as by entries (a snapshot file costs a copy off the event loop).
 */
export const SNAPSHOT_THRESHOLD_BYTES_DEFAULT = 64 * 1024 * 1024;
/** A snapshot file encoded for followers is kept this long after it was last sent, then let go. */
export const SNAPSHOT_SEND_CACHE_MS = 30_000;

export interface SnapshotManagerOptions {
  readonly nodeId: NodeId;
  readonly clock: Clock;
  /** The durable snapshot the node starts from, if any. */
  readonly snapshot: Snapshot | null;
  readonly thresholdEntries: number | undefined;
  readonly thresholdBytes: number | undefined;
  readonly chunkBytes: number | undefined;
  /** Snapshots kept as files by the machine (LMDB); absent: snapshots are bytes. */
  readonly files: SnapshotFileSource | undefined;
  /** Encoding a snapshot file failed (storage): the node fail-stops. */
  readonly failed: (error: unknown) => void;
}

/** Bytes of a snapshot file encoded for followers (kept a while: several may need it). */
interface Encoded {
  readonly index: number;
  data: Uint8Array | null;
  /** Followers waiting for the bytes (by node id: one InstallSnapshot each, the newest). */
  readonly waiting: Map<NodeId, InstallSnapshot>;
  lastUsedMs: number;
}

/**
 * The node's snapshots: the newest one it holds (sent in chunks to followers that need compacted
 * entries), the one being received from the leader, and the lock held while a local snapshot is
 * being written (the node then steps nothing, and starts no Ready).
 */
export class SnapshotManager {
  private readonly options: SnapshotManagerOptions;
  private readonly thresholdEntries: number;
  private readonly thresholdBytes: number;
  private readonly chunkBytes: number;
  private readonly assembler = new SnapshotAssembler();
  /** The newest snapshot this node holds. */
  private latestSnapshot: Snapshot | null;
  /** Bytes of the entries applied since the latest snapshot (estimated by their data). */
  private appliedBytes = 0;
  /** A snapshot fully received from the leader, waiting for the core to accept it. */
  private received: SnapshotWithData | null = null;
  /** A local snapshot is being written. */
  private writing = false;
  /** The latest snapshot file as bytes for followers (being encoded while data is null). */
  private encoded: Encoded | null = null;

  constructor(options: SnapshotManagerOptions) {
    this.options = options;
    this.thresholdEntries = options.thresholdEntries ?? SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT;
    this.thresholdBytes = options.thresholdBytes ?? SNAPSHOT_THRESHOLD_BYTES_DEFAULT;
    this.chunkBytes = options.chunkBytes ?? SNAPSHOT_CHUNK_BYTES_MAX;
    assert(this.thresholdEntries >= 1, 'snapshot threshold is at least one entry');
    assert(this.thresholdBytes >= 1, 'snapshot byte threshold is at least one byte');
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

  /** Entries carrying `bytes` were applied (counted toward the byte threshold). */
  appliedEntries(bytes: number): void {
    this.appliedBytes += bytes;
  }

  /** Is a snapshot due, with `appliedIndex` applied? */
  due(appliedIndex: number): boolean {
    const since = appliedIndex - (this.latestSnapshot?.meta.index ?? 0);
    return since >= this.thresholdEntries || (since > 0 && this.appliedBytes >= this.thresholdBytes);
  }

  /** Take the lock to write `snapshot`, the new latest one. */
  beginWrite(snapshot: Snapshot): void {
    assert(!this.writing, 'one snapshot write at a time');
    this.replaceLatest(snapshot);
    this.writing = true;
  }

  endWrite(): void {
    assert(this.writing, 'endWrite after beginWrite');
    this.writing = false;
  }

  /** A chunk from the leader; returns the message to step into the core once the snapshot is whole. */
  acceptChunk(chunk: SnapshotChunk): InstallSnapshot | null {
    if (chunk.to !== this.options.nodeId) return null;
    const snapshot = this.assembler.accept(chunk);
    if (snapshot === null) return null;
    this.received = snapshot;
    return { type: 'snapshot', from: chunk.from, to: chunk.to, term: chunk.term, snapshot: snapshot.meta };
  }

  /** The received snapshot data the core accepted in `ready`, if it accepted one. */
  acceptedIn(ready: Ready): SnapshotWithData | null {
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
    this.replaceLatest(snapshot);
  }

  private replaceLatest(snapshot: Snapshot): void {
    this.latestSnapshot = snapshot;
    this.appliedBytes = 0;
    if (this.encoded !== null && this.encoded.index !== snapshot.meta.index) this.encoded = null;
  }

  /**
   * Send the core's InstallSnapshot `message` (always of the snapshot this node holds) in chunks. A
   * snapshot file is encoded first, off the event loop; the chunks leave once its bytes are there.
   */
  send(message: InstallSnapshot, transmit: (chunk: SnapshotChunk) => void): void {
    const snapshot = this.latestSnapshot;
    assert(
      snapshot !== null && snapshot.meta.index === message.snapshot.index,
      'the core sends the snapshot the node holds',
    );
    const route = { from: message.from, to: message.to, term: message.term };
    if (snapshot.data !== null) {
      for (const chunk of snapshotChunks(
        { meta: snapshot.meta, data: snapshot.data },
        route,
        this.chunkBytes,
      ))
        transmit(chunk);
      return;
    }
    const encoded = this.encodedFor(snapshot.meta.index, transmit);
    encoded.lastUsedMs = this.options.clock.nowMs();
    if (encoded.data === null) {
      encoded.waiting.set(message.to, message);
      return;
    }
    const withData = { meta: snapshot.meta, data: encoded.data };
    for (const chunk of snapshotChunks(withData, route, this.chunkBytes)) transmit(chunk);
  }

  /** The bytes of snapshot file `index`, or their encoding started (once per snapshot). */
  private encodedFor(index: number, transmit: (chunk: SnapshotChunk) => void): Encoded {
    if (this.encoded?.index === index) return this.encoded;
    const files = this.options.files;
    assert(files !== undefined, 'a snapshot without bytes is a file');
    const encoded: Encoded = {
      index,
      data: null,
      waiting: new Map(),
      lastUsedMs: this.options.clock.nowMs(),
    };
    this.encoded = encoded;
    files.encode(index).then(
      (data) => {
        if (this.encoded !== encoded) return; // a newer snapshot replaced it meanwhile
        encoded.data = data;
        for (const message of encoded.waiting.values()) this.send(message, transmit);
        encoded.waiting.clear();
        this.scheduleRelease(encoded);
      },
      (error: unknown) => {
        if (this.encoded === encoded) this.encoded = null;
        this.options.failed(error);
      },
    );
    return encoded;
  }

  /** Let the encoded bytes go once no follower asked for them for SNAPSHOT_SEND_CACHE_MS. */
  private scheduleRelease(encoded: Encoded): void {
    this.options.clock.setTimer(SNAPSHOT_SEND_CACHE_MS, () => {
      if (this.encoded !== encoded) return;
      if (this.options.clock.nowMs() - encoded.lastUsedMs >= SNAPSHOT_SEND_CACHE_MS) this.encoded = null;
      else this.scheduleRelease(encoded);
    });
  }
}
