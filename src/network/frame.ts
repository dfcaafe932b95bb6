import { assert } from '../base/assert.ts';
import { FrameTooLargeError } from './errors.ts';

/**
 * Length-prefixed frames for the Raft stream: a 4-byte big-endian length, then that many bytes.
 * Bound: an append carries at most 4 MiB of entries; a snapshot chunk at most 1 MiB.
 */
export const FRAME_HEADER_BYTES = 4;
export const FRAME_BYTES_MAX = 5 * 1024 * 1024;

export function encodeFrame(payload: Uint8Array): Uint8Array {
  assert(
    payload.byteLength <= FRAME_BYTES_MAX,
    `frame of ${payload.byteLength} bytes exceeds ${FRAME_BYTES_MAX}`,
  );
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength);
  new DataView(frame.buffer).setUint32(0, payload.byteLength, false);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/**
 * A byte-level state machine that turns arbitrary chunks into frames: it never buffers more than
 * one header and one bounded body, and refuses a header announcing more than FRAME_BYTES_MAX.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  private body: Uint8Array | null = null;
  private bodyFilled = 0;
  private readonly frameBytesMax: number;

  constructor(frameBytesMax = FRAME_BYTES_MAX) {
    assert(frameBytesMax >= 1 && frameBytesMax <= FRAME_BYTES_MAX, 'frame bound in range');
    this.frameBytesMax = frameBytesMax;
  }

  /** Feed bytes; returns every frame they complete. Throws FrameTooLargeError on an oversized header. */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (this.body === null) {
        const take = Math.min(FRAME_HEADER_BYTES - this.headerFilled, chunk.byteLength - offset);
        this.header.set(chunk.subarray(offset, offset + take), this.headerFilled);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < FRAME_HEADER_BYTES) break;
        const length = new DataView(this.header.buffer).getUint32(0, false);
        if (length > this.frameBytesMax)
          throw new FrameTooLargeError(`frame of ${length} bytes exceeds ${this.frameBytesMax}`);
        this.body = new Uint8Array(length);
        this.bodyFilled = 0;
        this.headerFilled = 0;
      }
      const take = Math.min(this.body.byteLength - this.bodyFilled, chunk.byteLength - offset);
      this.body.set(chunk.subarray(offset, offset + take), this.bodyFilled);
      this.bodyFilled += take;
      offset += take;
      if (this.bodyFilled === this.body.byteLength) {
        frames.push(this.body);
        this.body = null;
      }
    }
    return frames;
  }

  /** Bytes of a frame still incomplete (0 between frames). */
  get pendingBytes(): number {
    return this.body === null ? this.headerFilled : FRAME_HEADER_BYTES + this.bodyFilled;
  }
}
