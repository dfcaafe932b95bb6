import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeWireMessage, encodeWireMessage, WireFormatError } from '../../src/network/codec.ts';
import { config, plain, samples } from './samples.ts';

describe('wire codec', () => {
  it('round-trips every message type', () => {
    for (const message of samples) expect(plain(decodeWireMessage(encodeWireMessage(message)))).toEqual(plain(message));
  });

  it('refuses malformed messages with WireFormatError (never a crash)', () => {
    const packr = new Packr({ useRecords: false });
    const bad: unknown[] = [
      null, 42, 'text', [], {},
      { type: 'append', from: 1, to: 2, term: 3, prevLogIndex: 0, prevLogTerm: 0, commitIndex: 0, entries: 'nope' },
      { type: 'append', from: 1, to: 2, term: 3, prevLogIndex: 0, prevLogTerm: 0, commitIndex: 0, entries: [{ kind: 'weird', term: 1, index: 1 }] },
      { type: 'vote', from: 0, to: 2, term: 3, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
      { type: 'vote', from: 1, to: 2, term: -1, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
      { type: 'heartbeat', from: 1, to: 2, term: 2 ** 60, commitIndex: 0, readRound: 0 },
      { type: 'snapshot', from: 1, to: 2, term: 3, snapshot: { index: 4, term: 1, config: { voters: [], votersOutgoing: [], learners: [] } } },
      { type: 'snapshot_chunk', from: 1, to: 2, term: 3, snapshot: { index: 4, term: 1, config }, offsetBytes: 2, totalBytes: 3, data: new Uint8Array(5) },
      { type: 'mystery', from: 1, to: 2, term: 3 },
      { type: 'client_request', from: 2, to: 1, term: 0, requestId: 1, operation: { kind: 'write', command: { Set: { key: 'k'.repeat(2_000), value: 'v' } } } },
      { type: 'client_request', from: 2, to: 1, term: 0, requestId: 1, operation: { kind: 'drop-table' } },
      { type: 'client_response', from: 1, to: 2, term: 0, requestId: 1, error: { code: 5 } },
    ];
    for (const value of bad) expect(() => decodeWireMessage(packr.pack(value))).toThrow(WireFormatError);
    expect(() => decodeWireMessage(new Uint8Array([0xc1]))).toThrow(WireFormatError);
  });

  it('never throws anything but WireFormatError on random bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (payload) => {
        try {
          decodeWireMessage(payload);
        } catch (error) {
          return error instanceof WireFormatError;
        }
        return true;
      }),
      { numRuns: 2_000 },
    );
  });
});
