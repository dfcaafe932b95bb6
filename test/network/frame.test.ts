import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeFrame, FRAME_BYTES_MAX, FrameDecoder } from '../../src/network/frame.ts';
import { FrameTooLargeError } from '../../src/network/errors.ts';

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

describe('length-prefixed frames', () => {
  it('decodes any sequence of frames from any split of the byte stream (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }),
        (payloads, cuts) => {
          const stream = concat(payloads.map(encodeFrame));
          const decoder = new FrameDecoder();
          const frames: Uint8Array[] = [];
          let offset = 0;
          for (let index = 0; offset < stream.byteLength; index += 1) {
            const size = cuts[index % cuts.length] ?? 1;
            frames.push(...decoder.push(stream.subarray(offset, offset + size)));
            offset += size;
          }
          expect(frames.map((frame) => [...frame])).toEqual(payloads.map((payload) => [...payload]));
          expect(decoder.pendingBytes).toBe(0);
        },
      ),
    );
  });

  it('decodes one byte at a time', () => {
    const stream = concat([
      encodeFrame(new Uint8Array([1, 2, 3])),
      encodeFrame(new Uint8Array()),
      encodeFrame(new Uint8Array([9])),
    ]);
    const decoder = new FrameDecoder();
    const frames: number[][] = [];
    for (const byte of stream)
      frames.push(...decoder.push(new Uint8Array([byte])).map((frame) => [...frame]));
    expect(frames).toEqual([[1, 2, 3], [], [9]]);
  });

  it('refuses a header announcing more than the bound, before allocating it', () => {
    const decoder = new FrameDecoder(1024);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, 1025, false);
    expect(() => decoder.push(header)).toThrow(FrameTooLargeError);
    const huge = new Uint8Array(4);
    new DataView(huge.buffer).setUint32(0, 0xffffffff, false);
    expect(() => new FrameDecoder().push(huge)).toThrow(FrameTooLargeError);
    expect(() => encodeFrame(new Uint8Array(FRAME_BYTES_MAX + 1))).toThrow();
  });
});
