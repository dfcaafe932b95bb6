import { crc32 } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { assert } from '../../base/assert.ts';
import type { Entry, HardState, MembershipConfig, SnapshotMeta } from '../../raft/types.ts';

/**
 * One WAL frame: the unit that is written and checked as a whole. A frame starts at a multiple of
 * FRAME_ALIGN_BYTES (so no synced sector is ever written again, and a reader can look for frames
 * past a damaged one) and is laid out as
 *
 *   magic u32 | payload length u32 | CRC-32 u32 | zero u32 | frame sequence f64 | payload
 *
 * The CRC covers the length, the sequence and the payload. The payload is a list of records:
 * a snapshot mark, a segment's base state, entries and a hard state (see RecordType).
 */
export const FRAME_MAGIC = 0x4c415741; // "AWAL" little-endian
export const FRAME_HEADER_BYTES = 24;
export const FRAME_ALIGN_BYTES = 512;
/** Largest payload of one frame; a bigger batch is split into several (entries never are). */
export const FRAME_PAYLOAD_BYTES_MAX = 8 * 1024 * 1024;
/** Records in one frame: a sanity bound for the reader, far above what a batch holds. */
const FRAME_RECORDS_MAX = 1_000_000;
/** Largest encoded configuration (CLUSTER_NODES_MAX members with addresses fit easily). */
const CONFIG_BYTES_MAX = 1024 * 1024;

const EMPTY_SNAPSHOT: SnapshotMeta = {
  index: 0,
  term: 0,
  config: { voters: [], votersOutgoing: [], learners: [] },
};
const EMPTY_CONFIG_BYTES = pack(EMPTY_SNAPSHOT.config);

export const RecordType = {
  /** A snapshot was kept: entries it covers go (all of them when the log does not continue it). */
  Snapshot: 1,
  /** A segment's first record: the snapshot and hard state in force when it was started. */
  SegmentBase: 2,
  Blank: 3,
  Command: 4,
  Config: 5,
  HardState: 6,
} as const;
type Types = typeof RecordType;

export type WalRecord =
  | { readonly type: Types['Snapshot']; readonly meta: SnapshotMeta }
  | {
      readonly type: Types['SegmentBase'];
      readonly snapshot: SnapshotMeta | null;
      readonly hardState: HardState;
    }
  | { readonly type: Types['Blank'] | Types['Command'] | Types['Config']; readonly entry: Entry }
  | { readonly type: Types['HardState']; readonly hardState: HardState };

/** The frame's bytes padded to the alignment. */
export function alignUp(bytes: number): number {
  return Math.ceil(bytes / FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES;
}

function configBytes(config: MembershipConfig): Uint8Array {
  const bytes = pack(config);
  assert(bytes.length <= CONFIG_BYTES_MAX, `configuration of ${bytes.length} bytes`);
  return bytes;
}

/** Bytes of one record in a payload; `config` holds the packed configuration when it has one. */
export function recordBytes(record: WalRecord, config: Uint8Array | null): number {
  switch (record.type) {
    case RecordType.Snapshot:
      return 1 + 16 + 4 + (config?.length ?? 0);
    case RecordType.SegmentBase:
      return 1 + 1 + 16 + 4 + (config?.length ?? 0) + 24;
    case RecordType.HardState:
      return 1 + 24;
    default:
      if (record.entry.kind === 'command') return 1 + 16 + 4 + record.entry.data.length;
      if (record.entry.kind === 'config') return 1 + 16 + 4 + (config?.length ?? 0);
      return 1 + 16;
  }
}

/** The configuration a record carries, packed (null: none). */
export function recordConfig(record: WalRecord): Uint8Array | null {
  if (record.type === RecordType.Snapshot) return configBytes(record.meta.config);
  if (record.type === RecordType.SegmentBase)
    return record.snapshot === null ? EMPTY_CONFIG_BYTES : configBytes(record.snapshot.config);
  if (record.type === RecordType.HardState) return null;
  return record.entry.kind === 'config' ? configBytes(record.entry.config) : null;
}

export function entryRecord(entry: Entry): WalRecord {
  const type =
    entry.kind === 'blank'
      ? RecordType.Blank
      : entry.kind === 'command'
        ? RecordType.Command
        : RecordType.Config;
  return { type, entry };
}

/** Encode records as one aligned frame with sequence `sequence`. */
export function encodeFrame(sequence: number, records: readonly WalRecord[]): Buffer {
  const configs = records.map(recordConfig);
  let payloadBytes = 8;
  for (const [position, record] of records.entries())
    payloadBytes += recordBytes(record, configs[position] ?? null);
  assert(payloadBytes <= FRAME_PAYLOAD_BYTES_MAX, `WAL frame payload of ${payloadBytes} bytes`);
  const frame = Buffer.alloc(alignUp(FRAME_HEADER_BYTES - 8 + payloadBytes));
  frame.writeUInt32LE(FRAME_MAGIC, 0);
  frame.writeUInt32LE(payloadBytes - 8, 4);
  frame.writeDoubleLE(sequence, 16);
  let offset = FRAME_HEADER_BYTES;
  for (const [position, record] of records.entries())
    offset = writeRecord(frame, offset, record, configs[position] ?? null);
  assert(offset === FRAME_HEADER_BYTES - 8 + payloadBytes, 'WAL frame size');
  frame.writeUInt32LE(frameChecksum(frame, 0, payloadBytes - 8), 8);
  return frame;
}

/** CRC-32 over the length field, the sequence and the payload of the frame at `offset`. */
export function frameChecksum(bytes: Uint8Array, offset: number, payloadBytes: number): number {
  const length = crc32(bytes.subarray(offset + 4, offset + 8));
  return crc32(bytes.subarray(offset + 16, offset + FRAME_HEADER_BYTES + payloadBytes), length);
}

function writeMeta(frame: Buffer, offset: number, meta: SnapshotMeta, config: Uint8Array | null): number {
  assert(config !== null, 'a snapshot record carries its configuration');
  frame.writeDoubleLE(meta.index, offset);
  frame.writeDoubleLE(meta.term, offset + 8);
  frame.writeUInt32LE(config.length, offset + 16);
  frame.set(config, offset + 20);
  return offset + 20 + config.length;
}

function writeHardState(frame: Buffer, offset: number, hardState: HardState): number {
  frame.writeDoubleLE(hardState.term, offset);
  frame.writeDoubleLE(hardState.vote, offset + 8);
  frame.writeDoubleLE(hardState.commit, offset + 16);
  return offset + 24;
}

function writeRecord(frame: Buffer, start: number, record: WalRecord, config: Uint8Array | null): number {
  frame.writeUInt8(record.type, start);
  const offset = start + 1;
  switch (record.type) {
    case RecordType.Snapshot:
      return writeMeta(frame, offset, record.meta, config);
    case RecordType.SegmentBase: {
      frame.writeUInt8(record.snapshot === null ? 0 : 1, offset);
      const after = writeMeta(frame, offset + 1, record.snapshot ?? EMPTY_SNAPSHOT, config);
      return writeHardState(frame, after, record.hardState);
    }
    case RecordType.HardState:
      return writeHardState(frame, offset, record.hardState);
    default: {
      const entry = record.entry;
      frame.writeDoubleLE(entry.term, offset);
      frame.writeDoubleLE(entry.index, offset + 8);
      if (entry.kind === 'blank') return offset + 16;
      const body = entry.kind === 'command' ? entry.data : config;
      assert(body !== null, 'a config entry carries its configuration');
      frame.writeUInt32LE(body.length, offset + 16);
      frame.set(body, offset + 20);
      return offset + 20 + body.length;
    }
  }
}

/** A frame at `offset` that checks out: its sequence, its records and where the next may start. */
export interface DecodedFrame {
  readonly sequence: number;
  readonly records: WalRecord[];
  readonly end: number;
}

/**
 * The frame at `offset` if its magic, length and checksum hold (null otherwise). A frame that
 * checks out but does not parse is corruption no torn write explains: it throws.
 */
export function readFrame(bytes: Uint8Array, offset: number): DecodedFrame | null {
  if (offset + FRAME_HEADER_BYTES > bytes.length) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(offset, true) !== FRAME_MAGIC) return null;
  const payloadBytes = view.getUint32(offset + 4, true);
  if (payloadBytes + 8 > FRAME_PAYLOAD_BYTES_MAX) return null;
  if (offset + FRAME_HEADER_BYTES + payloadBytes > bytes.length) return null;
  if (view.getUint32(offset + 8, true) !== frameChecksum(bytes, offset, payloadBytes)) return null;
  const sequence = view.getFloat64(offset + 16, true);
  const end = offset + FRAME_HEADER_BYTES + payloadBytes;
  const records = parseRecords(bytes, view, offset + FRAME_HEADER_BYTES, end);
  return { sequence, records, end: alignUp(end) };
}

/** Thrown for bytes that passed their checksum and still make no sense. */
export class MalformedFrameError extends Error {
  override readonly name = 'MalformedFrameError';
}

function parseRecords(bytes: Uint8Array, view: DataView, start: number, end: number): WalRecord[] {
  const reader = new RecordReader(bytes, view, start, end);
  const records: WalRecord[] = [];
  while (reader.offset < end) {
    if (records.length >= FRAME_RECORDS_MAX) throw new MalformedFrameError('too many records in a frame');
    records.push(reader.record());
  }
  return records;
}

class RecordReader {
  offset: number;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;
  private readonly end: number;

  constructor(bytes: Uint8Array, view: DataView, start: number, end: number) {
    this.bytes = bytes;
    this.view = view;
    this.offset = start;
    this.end = end;
  }

  private need(count: number): void {
    if (this.offset + count > this.end) throw new MalformedFrameError('record runs past its frame');
  }

  private number(): number {
    this.need(8);
    const value = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    if (!Number.isSafeInteger(value) || value < 0) throw new MalformedFrameError(`bad number ${value}`);
    return value;
  }

  private body(): Uint8Array {
    this.need(4);
    const length = this.view.getUint32(this.offset, true);
    this.offset += 4;
    this.need(length);
    const body = this.bytes.slice(this.offset, this.offset + length); // a copy: the file buffer goes
    this.offset += length;
    return body;
  }

  private config(): MembershipConfig {
    const body = this.body();
    let config: unknown;
    try {
      config = unpack(body);
    } catch (error) {
      throw new MalformedFrameError(`configuration does not decode: ${String(error)}`);
    }
    if (typeof config !== 'object' || config === null || !Array.isArray((config as MembershipConfig).voters))
      throw new MalformedFrameError('configuration is not one');
    return config as MembershipConfig;
  }

  private meta(): SnapshotMeta {
    const index = this.number();
    const term = this.number();
    return { index, term, config: this.config() };
  }

  private hardState(): HardState {
    const term = this.number();
    const vote = this.number();
    return { term, vote, commit: this.number() };
  }

  record(): WalRecord {
    this.need(1);
    const type = this.view.getUint8(this.offset);
    this.offset += 1;
    switch (type) {
      case RecordType.Snapshot:
        return { type, meta: this.meta() };
      case RecordType.SegmentBase: {
        this.need(1);
        const present = this.view.getUint8(this.offset) === 1;
        this.offset += 1;
        const meta = this.meta();
        return { type, snapshot: present ? meta : null, hardState: this.hardState() };
      }
      case RecordType.HardState:
        return { type, hardState: this.hardState() };
      case RecordType.Blank:
      case RecordType.Command:
      case RecordType.Config: {
        const term = this.number();
        const index = this.number();
        if (index < 1) throw new MalformedFrameError('entry index 0');
        if (type === RecordType.Blank) return { type, entry: { kind: 'blank', term, index } };
        if (type === RecordType.Command)
          return { type, entry: { kind: 'command', term, index, data: this.body() } };
        return { type, entry: { kind: 'config', term, index, config: this.config() } };
      }
      default:
        throw new MalformedFrameError(`unknown record type ${type}`);
    }
  }
}
