import { LEASE_ID_MAX } from '../base/limits.ts';
import { assert } from '../base/assert.ts';

/**
 * Keys of the `lease_keys` database: the lease id as 8 big-endian bytes, then the key's UTF-8 bytes.
 * LMDB compares them bytewise, so one lease's keys are contiguous and in UTF-8 byte order: the order
 * of compareUtf8 and of the memory machine. lmdb's default ordered-binary encoding is neither
 * lossless nor in that order: a string of 64 or more UTF-16 units holding U+0000–U+0004 is written
 * unescaped and reads back altered (so a revoke would look for keys that do not exist).
 */
const ID_BYTES = 8;

/** Where the keys of lease `id` start (and, for `id + 1` up to LEASE_ID_MAX + 1, end). */
export function leaseKeysStart(id: number): Buffer {
  assert(Number.isInteger(id) && id >= 0 && id <= LEASE_ID_MAX + 1, `lease id ${id}`);
  const bytes = Buffer.alloc(ID_BYTES);
  bytes.writeBigUInt64BE(BigInt(id));
  return bytes;
}

/** The entry of `key` on lease `id`. */
export function leaseKeyEntry(id: number, key: string): Buffer {
  return Buffer.concat([leaseKeysStart(id), Buffer.from(key, 'utf8')]);
}

/** The first entry after `key` on lease `id`: `key` then U+0000 (a 0 byte), the next key in byte order. */
export function leaseKeyEntryAfter(id: number, key: string): Buffer {
  return Buffer.concat([leaseKeyEntry(id, key), Buffer.of(0)]);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The key of an entry (its lease id is the range it was read from). */
export function leaseKeyOf(entry: Uint8Array): string {
  assert(entry.byteLength > ID_BYTES, `a lease key entry has ${entry.byteLength} bytes`);
  return strictUtf8.decode(entry.subarray(ID_BYTES));
}
