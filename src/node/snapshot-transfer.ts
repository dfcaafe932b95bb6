import { crc32 } from 'node:zlib';
import { assert } from '../base/assert.ts';
import { SNAPSHOT_BYTES_MAX } from '../base/limits.ts';
import type { NodeId, SnapshotMeta } from '../raft/types.ts';
import type { SnapshotChunk, SnapshotWithData } from './interfaces.ts';

/** Chunk bound; the largest snapshot a node accepts is SNAPSHOT_BYTES_MAX (base/limits.ts, shared with backups). */
export const SNAPSHOT_CHUNK_BYTES_MAX = 1024 * 1024;

/** Split a snapshot into bounded chunks addressed from `from` to `to` in `term`. */
export function snapshotChunks(
  snapshot: SnapshotWithData,
  route: { from: NodeId; to: NodeId; term: number },
  chunkBytes: number,
): SnapshotChunk[] {
  assert(chunkBytes >= 1 && chunkBytes <= SNAPSHOT_CHUNK_BYTES_MAX, `chunk size out of range: ${chunkBytes}`);
  const totalBytes = snapshot.data.byteLength;
  const chunks: SnapshotChunk[] = [];
  let offsetBytes = 0;
  do {
    const data = snapshot.data.subarray(offsetBytes, Math.min(totalBytes, offsetBytes + chunkBytes));
    const crc = crc32(data);
    chunks.push({
      type: 'snapshot_chunk',
      ...route,
      snapshot: snapshot.meta,
      offsetBytes,
      totalBytes,
      data,
      format: 'bytes',
      crc,
    });
    offsetBytes += data.byteLength;
  } while (offsetBytes < totalBytes);
  return chunks;
}

function sameMeta(a: SnapshotMeta, b: SnapshotMeta): boolean {
  return a.index === b.index && a.term === b.term;
}

/**
 * Reassembles one snapshot at a time from chunks that may arrive late, twice or out of order. A
 * chunk of another snapshot restarts the assembly; the total size is bounded.
 */
export class SnapshotAssembler {
  private meta: SnapshotMeta | null = null;
  private buffer: Uint8Array | null = null;
  private readonly received = new Set<number>();
  private receivedBytes = 0;

  /** Returns the whole snapshot when this chunk completes it, else null. Oversized snapshots are refused. */
  accept(chunk: SnapshotChunk): SnapshotWithData | null {
    if (chunk.totalBytes > SNAPSHOT_BYTES_MAX || chunk.data.byteLength > SNAPSHOT_CHUNK_BYTES_MAX)
      return null;
    if (chunk.offsetBytes + chunk.data.byteLength > chunk.totalBytes) return null;
    if (
      this.meta === null ||
      !sameMeta(this.meta, chunk.snapshot) ||
      this.buffer?.byteLength !== chunk.totalBytes
    ) {
      this.meta = chunk.snapshot;
      this.buffer = new Uint8Array(chunk.totalBytes);
      this.received.clear();
      this.receivedBytes = 0;
    }
    if (this.received.has(chunk.offsetBytes)) return null;
    this.received.add(chunk.offsetBytes);
    this.buffer.set(chunk.data, chunk.offsetBytes);
    this.receivedBytes += chunk.data.byteLength;
    if (this.receivedBytes < chunk.totalBytes) return null;
    const snapshot: SnapshotWithData = { meta: this.meta, data: this.buffer };
    this.meta = null;
    this.buffer = null;
    this.received.clear();
    this.receivedBytes = 0;
    return snapshot;
  }
}
