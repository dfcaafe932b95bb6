import { createHash, type Hash } from 'node:crypto';
import { assert } from '../base/assert.ts';
import { SNAPSHOT_BYTES_MAX } from '../base/limits.ts';

/**
 * The backup file (GET /backup, `aspen backup save`, `aspen-node --restore`; docs/decisions.md):
 *
 *   offset  bytes  field (integers big-endian, unsigned)
 *   0       8      magic "ASPENBAK"
 *   8       4      format version (BACKUP_FORMAT_VERSION)
 *   12      8      snapshot index (the revision the backup holds)
 *   20      8      snapshot term
 *   28      8      state machine byte length L (at most SNAPSHOT_BYTES_MAX)
 *   36      8      created at, milliseconds since the epoch
 *   44      8      id of the node that took it
 *   52      L      the state machine: a snapshot's bytes, exactly as nodes send them to each other
 *   52 + L  32     SHA-256 of every byte before it
 */
export const BACKUP_MAGIC = 'ASPENBAK';
export const BACKUP_FORMAT_VERSION = 1;
export const BACKUP_HEADER_BYTES = 52;
export const BACKUP_CHECKSUM_BYTES = 32;
/** The largest backup file: a header, the largest snapshot, a checksum. */
export const BACKUP_BYTES_MAX = BACKUP_HEADER_BYTES + SNAPSHOT_BYTES_MAX + BACKUP_CHECKSUM_BYTES;
/** Pieces a backup is streamed and read in. */
export const BACKUP_CHUNK_BYTES = 1024 * 1024;

const MAGIC_BYTES = new TextEncoder().encode(BACKUP_MAGIC);
const OFFSET_VERSION = 8;
const OFFSET_INDEX = 12;
const OFFSET_TERM = 20;
const OFFSET_STATE_BYTES = 28;
const OFFSET_CREATED_AT = 36;
const OFFSET_NODE_ID = 44;

/** What a backup's header says. */
export interface BackupHeader {
  /** The snapshot's index: the state machine holds every entry up to it (the revision). */
  readonly index: number;
  readonly term: number;
  /** Bytes of the state machine after the header. */
  readonly stateBytes: number;
  readonly createdAtMs: number;
  /** The node that took it. */
  readonly nodeId: number;
}

/** A backup whose checksum held: its header, size and SHA-256 (hex). */
export interface VerifiedBackup extends BackupHeader {
  readonly formatVersion: number;
  readonly totalBytes: number;
  readonly sha256: string;
}

/** A file (or stream) that is not a whole, intact backup; the message says what is wrong, in one line. */
export class BackupFormatError extends Error {
  override readonly name = 'BackupFormatError';
}

/** The three pieces of a backup: header, state machine, checksum (nothing copied from `data`). */
export interface BackupPieces {
  readonly head: Uint8Array;
  readonly data: Uint8Array;
  readonly checksum: Uint8Array;
}

function checkHeader(header: BackupHeader): string | null {
  const positive = (value: number): boolean => Number.isSafeInteger(value) && value >= 1;
  if (!positive(header.index)) return `its snapshot index ${header.index} is not a positive integer`;
  if (!positive(header.term)) return `its snapshot term ${header.term} is not a positive integer`;
  if (!positive(header.nodeId)) return `its node id ${header.nodeId} is not a positive integer`;
  if (!Number.isSafeInteger(header.createdAtMs) || header.createdAtMs < 0)
    return `its creation time ${header.createdAtMs} is not a time`;
  if (!Number.isSafeInteger(header.stateBytes) || header.stateBytes < 0)
    return `its state machine length ${header.stateBytes} is not a length`;
  if (header.stateBytes > SNAPSHOT_BYTES_MAX)
    return `its state machine is ${header.stateBytes} bytes, over the bound of ${SNAPSHOT_BYTES_MAX}`;
  return null;
}

export function encodeBackupHeader(header: BackupHeader): Uint8Array {
  const problem = checkHeader(header);
  assert(problem === null, `a backup header to write: ${problem ?? ''}`);
  const head = new Uint8Array(BACKUP_HEADER_BYTES);
  const view = new DataView(head.buffer);
  head.set(MAGIC_BYTES, 0);
  view.setUint32(OFFSET_VERSION, BACKUP_FORMAT_VERSION);
  view.setBigUint64(OFFSET_INDEX, BigInt(header.index));
  view.setBigUint64(OFFSET_TERM, BigInt(header.term));
  view.setBigUint64(OFFSET_STATE_BYTES, BigInt(header.stateBytes));
  view.setBigUint64(OFFSET_CREATED_AT, BigInt(header.createdAtMs));
  view.setBigUint64(OFFSET_NODE_ID, BigInt(header.nodeId));
  return head;
}

/** A backup of the state machine `data` (a snapshot's bytes at `header.index`), as three pieces. */
export function backupPieces(header: Omit<BackupHeader, 'stateBytes'>, data: Uint8Array): BackupPieces {
  const head = encodeBackupHeader({ ...header, stateBytes: data.byteLength });
  const checksum = createHash('sha256').update(head).update(data).digest();
  return { head, data, checksum: new Uint8Array(checksum) };
}

/** The pieces in chunks of at most `chunkBytes`, in file order (for a stream with backpressure). */
export function* backupChunks(pieces: BackupPieces, chunkBytes = BACKUP_CHUNK_BYTES): Generator<Uint8Array> {
  assert(chunkBytes >= 1 && chunkBytes <= BACKUP_CHUNK_BYTES, `backup chunk size ${chunkBytes}`);
  yield pieces.head;
  for (let offset = 0; offset < pieces.data.byteLength; offset += chunkBytes)
    yield pieces.data.subarray(offset, Math.min(pieces.data.byteLength, offset + chunkBytes));
  yield pieces.checksum;
}

/** A whole backup file in memory. */
export function encodeBackup(header: Omit<BackupHeader, 'stateBytes'>, data: Uint8Array): Uint8Array {
  const pieces = backupPieces(header, data);
  return Buffer.concat([pieces.head, pieces.data, pieces.checksum]);
}

function parseHeader(head: Uint8Array): BackupHeader {
  if (!head.subarray(0, MAGIC_BYTES.length).every((byte, at) => byte === MAGIC_BYTES[at]))
    throw new BackupFormatError(`it is not an Aspen backup (it does not start with ${BACKUP_MAGIC})`);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const version = view.getUint32(OFFSET_VERSION);
  if (version !== BACKUP_FORMAT_VERSION)
    throw new BackupFormatError(
      `it is backup format ${version}; this release reads format ${BACKUP_FORMAT_VERSION}`,
    );
  const integer = (offset: number): number => {
    const value = view.getBigUint64(offset);
    return value > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(value);
  };
  const header: BackupHeader = {
    index: integer(OFFSET_INDEX),
    term: integer(OFFSET_TERM),
    stateBytes: integer(OFFSET_STATE_BYTES),
    createdAtMs: integer(OFFSET_CREATED_AT),
    nodeId: integer(OFFSET_NODE_ID),
  };
  const problem = checkHeader(header);
  if (problem !== null) throw new BackupFormatError(`its header is damaged: ${problem}`);
  return header;
}

/**
 * Checks a backup read in pieces of any size, keeping none of it: the header as soon as it is
 * whole, then the length the header announces, then the checksum over everything before it. Any
 * flaw throws a BackupFormatError; `finish` once the input ended.
 */
export class BackupVerifier {
  private readonly hash: Hash = createHash('sha256');
  private readonly head = new Uint8Array(BACKUP_HEADER_BYTES);
  private readonly checksum = new Uint8Array(BACKUP_CHECKSUM_BYTES);
  private header: BackupHeader | null = null;
  /** Bytes taken so far. */
  private received = 0;

  get receivedBytes(): number {
    return this.received;
  }

  /** The whole file's length, once the header is known. */
  get expectedBytes(): number | null {
    return this.header === null ? null : BACKUP_HEADER_BYTES + this.header.stateBytes + BACKUP_CHECKSUM_BYTES;
  }

  /** Take the next piece: the header's bytes, then the state machine's, then the checksum's. */
  push(chunk: Uint8Array): void {
    let rest = chunk;
    if (this.received < BACKUP_HEADER_BYTES) {
      const taken = rest.subarray(0, BACKUP_HEADER_BYTES - this.received);
      this.head.set(taken, this.received);
      this.hash.update(taken);
      this.received += taken.byteLength;
      rest = rest.subarray(taken.byteLength);
      if (this.received === BACKUP_HEADER_BYTES) this.header = parseHeader(this.head);
    }
    if (this.header === null || rest.byteLength === 0) return;
    const stateEnd = BACKUP_HEADER_BYTES + this.header.stateBytes;
    const state = rest.subarray(0, Math.max(0, stateEnd - this.received));
    this.hash.update(state);
    this.received += state.byteLength;
    rest = rest.subarray(state.byteLength);
    if (rest.byteLength === 0) return;
    const checksumTaken = rest.subarray(0, Math.max(0, stateEnd + BACKUP_CHECKSUM_BYTES - this.received));
    this.checksum.set(checksumTaken, this.received - stateEnd);
    this.received += checksumTaken.byteLength;
    if (rest.byteLength > checksumTaken.byteLength)
      throw new BackupFormatError(
        `it goes on after its checksum (more than the ${this.expectedBytes ?? 0} bytes its header announces): damaged, or not one backup`,
      );
  }

  /** The input ended: the verified backup, or a BackupFormatError (truncated, damaged). */
  finish(): VerifiedBackup {
    const expected = this.expectedBytes;
    if (this.header === null || expected === null)
      throw new BackupFormatError(
        `it is truncated: ${this.received} bytes, shorter than a backup's ${BACKUP_HEADER_BYTES}-byte header`,
      );
    if (this.received < expected)
      throw new BackupFormatError(
        `it is truncated: ${this.received} of the ${expected} bytes its header announces`,
      );
    const digest = this.hash.digest();
    if (!digest.equals(this.checksum))
      throw new BackupFormatError('it is damaged: its SHA-256 checksum does not match its contents');
    return {
      ...this.header,
      formatVersion: BACKUP_FORMAT_VERSION,
      totalBytes: expected,
      sha256: digest.toString('hex'),
    };
  }
}

/** A whole backup file in memory, verified: its header and its state machine (a view into `bytes`). */
export function decodeBackup(bytes: Uint8Array): { backup: VerifiedBackup; data: Uint8Array } {
  if (bytes.byteLength > BACKUP_BYTES_MAX)
    throw new BackupFormatError(`it is ${bytes.byteLength} bytes, over the bound of ${BACKUP_BYTES_MAX}`);
  const verifier = new BackupVerifier();
  verifier.push(bytes);
  const backup = verifier.finish();
  const data = bytes.subarray(BACKUP_HEADER_BYTES, BACKUP_HEADER_BYTES + backup.stateBytes);
  return { backup, data };
}
