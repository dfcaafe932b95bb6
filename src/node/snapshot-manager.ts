import { assert } from '../base/assert.ts';
import { crc32 } from 'node:zlib';
import type { InstallSnapshot, NodeId, Ready, SnapshotMeta } from '../raft/types.ts';
import type { Clock, Snapshot, SnapshotChunk, SnapshotFileSource } from './interfaces.ts';
import { SNAPSHOT_CHUNK_BYTES_MAX, SnapshotAssembler, snapshotChunks } from './snapshot-transfer.ts';

/** Take a snapshot (and compact the log) once this many entries were applied since the last one… */
export const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT = 10_000;
/**
 * …or once the entries applied since then carry this many bytes: the log the core keeps in memory
 * is bounded by bytes as well as by entries (a snapshot file costs a copy off the event loop).
 */
export const SNAPSHOT_THRESHOLD_BYTES_DEFAULT = 64 * 1024 * 1024;
/** Chunks of a snapshot file sent to one follower per turn: bounds a turn's reads. */
export const SNAPSHOT_SEND_CHUNKS_PER_TURN = 4;
/** A follower's snapshot waits while this many frames wait to leave for it (bounds the memory queued). */
export const SNAPSHOT_SEND_BACKLOG_FRAMES_MAX = 8;
/** How long a snapshot send waits for the transport to drain before it looks again. */
export const SNAPSHOT_SEND_WAIT_MS = 2;
/** Pieces a snapshot file being received may come in (1 TiB in chunks of 1 MiB). */
export const SNAPSHOT_RECEIVE_CHUNKS_MAX = 1 << 20;

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
  /** Receiving a snapshot file failed (storage): the node fail-stops. */
  readonly failed: (error: unknown) => void;
  /** A snapshot file from the leader arrived whole and synced: step this into the core. */
  readonly received: (message: InstallSnapshot) => void;
  readonly isStopped: () => boolean;
  /** Frames waiting to leave for a follower (Transport.backlog). */
  readonly backlog: (to: NodeId) => number;
}

/** A snapshot file going to one follower, a few chunks per turn. */
interface FileSend {
  readonly index: number;
  readonly route: { readonly from: NodeId; readonly to: NodeId; readonly term: number };
  readonly meta: SnapshotMeta;
  readonly totalBytes: number;
  offsetBytes: number;
  readonly transmit: (chunk: SnapshotChunk) => void;
}

/** A snapshot file coming from the leader, written at its offsets as the chunks arrive. */
interface FileReceipt {
  readonly meta: SnapshotMeta;
  readonly totalBytes: number;
  readonly offsets: Set<number>;
  receivedBytes: number;
  /** Whole: being synced and named. */
  finishing: boolean;
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
  private received: Snapshot | null = null;
  /** A local snapshot is being written. */
  private writing = false;
  /** Snapshot files being sent, by follower. */
  private readonly sends = new Map<NodeId, FileSend>();
  private pumpScheduled = false;
  /** The snapshot file being received. */
  private receipt: FileReceipt | null = null;

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

  /**
   * A chunk from the leader; returns the message to step into the core once the snapshot is whole
   * (a snapshot file is first synced: its message comes later through `received`). A chunk whose
   * CRC does not match is dropped (the leader sends the snapshot again).
   */
  acceptChunk(chunk: SnapshotChunk): InstallSnapshot | null {
    if (chunk.to !== this.options.nodeId) return null;
    if (chunk.crc !== null && crc32(chunk.data) !== chunk.crc) return null;
    if (chunk.format === 'file') {
      this.acceptFileChunk(chunk);
      return null;
    }
    const snapshot = this.assembler.accept(chunk);
    if (snapshot === null) return null;
    this.received = snapshot;
    return installMessage(chunk);
  }

  /** A piece of a snapshot file: written at its offset; once all are there, synced and stepped. */
  private acceptFileChunk(chunk: SnapshotChunk): void {
    const files = this.options.files;
    if (files === undefined) return; // a machine in memory installs snapshot bytes only
    let receipt = this.receipt;
    if (
      receipt === null ||
      receipt.meta.index !== chunk.snapshot.index ||
      receipt.meta.term !== chunk.snapshot.term ||
      receipt.totalBytes !== chunk.totalBytes
    ) {
      files.beginReceive(chunk.snapshot.index, chunk.totalBytes);
      receipt = {
        meta: chunk.snapshot,
        totalBytes: chunk.totalBytes,
        offsets: new Set(),
        receivedBytes: 0,
        finishing: false,
      };
      this.receipt = receipt;
    }
    if (receipt.finishing || receipt.offsets.has(chunk.offsetBytes)) return;
    if (receipt.offsets.size >= SNAPSHOT_RECEIVE_CHUNKS_MAX) return;
    files.writeReceived(chunk.offsetBytes, chunk.data);
    receipt.offsets.add(chunk.offsetBytes);
    receipt.receivedBytes += chunk.data.byteLength;
    if (receipt.receivedBytes < receipt.totalBytes) return;
    receipt.finishing = true;
    const whole = receipt;
    files.finishReceive(whole.meta.index).then(
      () => {
        if (this.receipt !== whole || this.options.isStopped()) return;
        this.receipt = null;
        this.received = { meta: whole.meta, data: null };
        this.options.received(installMessage(chunk));
      },
      (error: unknown) => {
        if (this.receipt === whole) this.options.failed(error);
      },
    );
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
    // Its mark lets the older files go (pruneBefore) while `latest` still names one until the
    // install ends: a send still pumping chunks of it (this node led before) must not read it then.
    if (received.data === null) this.sends.clear();
    return received;
  }

  /** The state machine now holds `snapshot`. */
  installed(snapshot: Snapshot): void {
    this.replaceLatest(snapshot);
  }

  private replaceLatest(snapshot: Snapshot): void {
    this.latestSnapshot = snapshot;
    this.appliedBytes = 0;
  }

  /**
   * Send the core's InstallSnapshot `message` (always of the snapshot this node holds) in chunks: its
   * bytes at once, or a snapshot file as it is, SNAPSHOT_SEND_CHUNKS_PER_TURN chunks per turn (a
   * send to the same follower replaces the one in progress).
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
    const files = this.options.files;
    assert(files !== undefined, 'a snapshot without bytes is a file');
    const index = snapshot.meta.index;
    // The core sends again after a while; a send still in progress goes on (restarting it would
    // never finish a file that takes longer than that to send).
    if (this.sends.get(message.to)?.index === index) return;
    const totalBytes = files.size(index);
    this.sends.set(message.to, { index, route, meta: snapshot.meta, totalBytes, offsetBytes: 0, transmit });
    this.schedulePump(0);
  }

  private schedulePump(delayMs: number): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    this.options.clock.setTimer(delayMs, () => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** A few chunks of each snapshot file in flight; a send of an older snapshot than the latest stops. */
  private pump(): void {
    const files = this.options.files;
    if (files === undefined || this.options.isStopped()) {
      this.sends.clear();
      return;
    }
    let waiting = false;
    for (const [to, send] of this.sends) {
      if (send.index !== this.latestSnapshot?.meta.index) {
        this.sends.delete(to); // the file may be gone: the core sends the newer one
        continue;
      }
      if (this.options.backlog(to) >= SNAPSHOT_SEND_BACKLOG_FRAMES_MAX) {
        waiting = true;
        continue;
      }
      for (
        let sent = 0;
        sent < SNAPSHOT_SEND_CHUNKS_PER_TURN && send.offsetBytes < send.totalBytes;
        sent += 1
      ) {
        const length = Math.min(this.chunkBytes, send.totalBytes - send.offsetBytes);
        const data = files.read(send.index, send.offsetBytes, length);
        assert(
          data.byteLength === length,
          `snapshot file ${send.index} is shorter than ${send.totalBytes} bytes`,
        );
        send.transmit({
          type: 'snapshot_chunk',
          ...send.route,
          snapshot: send.meta,
          offsetBytes: send.offsetBytes,
          totalBytes: send.totalBytes,
          data,
          format: 'file',
          crc: crc32(data),
        });
        send.offsetBytes += length;
      }
      if (send.offsetBytes >= send.totalBytes) this.sends.delete(to);
    }
    if (this.sends.size > 0) this.schedulePump(waiting ? SNAPSHOT_SEND_WAIT_MS : 0);
  }
}

function installMessage(chunk: SnapshotChunk): InstallSnapshot {
  return { type: 'snapshot', from: chunk.from, to: chunk.to, term: chunk.term, snapshot: chunk.snapshot };
}
