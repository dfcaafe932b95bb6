import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { readBackupFile, verifyBackupFile } from '../../src/api/backup-file.ts';
import {
  BACKUP_CHECKSUM_BYTES,
  BACKUP_HEADER_BYTES,
  BackupFormatError,
  BackupVerifier,
  backupChunks,
  backupPieces,
  decodeBackup,
  encodeBackup,
  type BackupHeader,
} from '../../src/api/backup-format.ts';
import { SNAPSHOT_BYTES_MAX } from '../../src/base/limits.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'aspen-backup-format-'));
  dirs.push(dir);
  return dir;
}

const positive = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const header = fc.record({
  index: positive,
  term: positive,
  nodeId: positive,
  createdAtMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});
const state = fc.uint8Array({ maxLength: 300 });

const sample: Omit<BackupHeader, 'stateBytes'> = {
  index: 1234,
  term: 7,
  nodeId: 3,
  createdAtMs: 1_700_000_000_000,
};
const sampleData = new TextEncoder().encode('the state machine, as a snapshot encodes it');

/** The error a whole file in memory is refused with, or null when it is accepted. */
function refusal(bytes: Uint8Array): BackupFormatError | null {
  try {
    decodeBackup(bytes);
    return null;
  } catch (error) {
    if (error instanceof BackupFormatError) return error;
    throw error;
  }
}

/** Feed `bytes` to a verifier in pieces cut at `cuts`. */
function verifyInPieces(bytes: Uint8Array, cuts: readonly number[]) {
  const verifier = new BackupVerifier();
  const points = [...new Set([0, ...cuts.map((cut) => cut % (bytes.length + 1)), bytes.length])].sort(
    (a, b) => a - b,
  );
  for (let at = 1; at < points.length; at += 1) verifier.push(bytes.subarray(points[at - 1], points[at]));
  return verifier.finish();
}

describe('the backup file format', () => {
  it('round-trips header and state machine, whole or in pieces of any size', () => {
    fc.assert(
      fc.property(header, state, fc.array(fc.nat(), { maxLength: 8 }), (given, data, cuts) => {
        const bytes = encodeBackup(given, data);
        expect(bytes.length).toBe(BACKUP_HEADER_BYTES + data.length + BACKUP_CHECKSUM_BYTES);
        const { backup, data: decoded } = decodeBackup(bytes);
        expect(backup).toMatchObject({ ...given, stateBytes: data.length, totalBytes: bytes.length });
        expect(Buffer.from(decoded).equals(Buffer.from(data))).toBe(true);
        expect(verifyInPieces(bytes, cuts)).toEqual(backup);
        const chunked = Buffer.concat([...backupChunks(backupPieces(given, data), 7)]);
        expect(chunked.equals(Buffer.from(bytes))).toBe(true);
      }),
    );
  });

  it('starts with ASPENBAK and format 1, and ends with the SHA-256 of the rest', async () => {
    const bytes = encodeBackup(sample, sampleData);
    expect(Buffer.from(bytes.subarray(0, 8)).toString('latin1')).toBe('ASPENBAK');
    expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(8)).toBe(1);
    const { createHash } = await import('node:crypto');
    const digest = createHash('sha256').update(bytes.subarray(0, -32)).digest('hex');
    expect(Buffer.from(bytes.subarray(-32)).toString('hex')).toBe(digest);
    expect(decodeBackup(bytes).backup.sha256).toBe(digest);
  });

  it('refuses every single-byte corruption, at every offset', () => {
    const bytes = encodeBackup(sample, sampleData);
    for (let offset = 0; offset < bytes.length; offset += 1) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const damaged = Uint8Array.from(bytes);
        damaged[offset] = (damaged[offset] ?? 0) ^ flip;
        expect(refusal(damaged), `offset ${offset} ^ ${flip}`).not.toBeNull();
        expect(() => verifyInPieces(damaged, [offset, offset + 1]), `offset ${offset}`).toThrow(
          BackupFormatError,
        );
      }
    }
    fc.assert(
      fc.property(header, state, fc.nat(), fc.integer({ min: 1, max: 255 }), (given, data, at, flip) => {
        const damaged = Uint8Array.from(encodeBackup(given, data));
        const offset = at % damaged.length;
        damaged[offset] = (damaged[offset] ?? 0) ^ flip;
        expect(refusal(damaged)).not.toBeNull();
      }),
    );
  });

  it('refuses every truncation, and anything after the checksum', () => {
    const bytes = encodeBackup(sample, sampleData);
    for (let length = 0; length < bytes.length; length += 1) {
      const error = refusal(bytes.subarray(0, length));
      expect(error?.message, `length ${length}`).toMatch(/truncated/);
    }
    expect(refusal(Buffer.concat([bytes, Uint8Array.of(0)]))?.message).toMatch(/goes on after its checksum/);
    fc.assert(
      fc.property(header, state, fc.nat(), (given, data, cut) => {
        const whole = encodeBackup(given, data);
        expect(refusal(whole.subarray(0, cut % whole.length))).not.toBeNull();
      }),
    );
  });

  it('says in one line what is wrong: not a backup, another format, a damaged length, a bad checksum', () => {
    const bytes = encodeBackup(sample, sampleData);
    const changed = (offset: number, value: number): Uint8Array => {
      const copy = Uint8Array.from(bytes);
      copy[offset] = value;
      return copy;
    };
    expect(refusal(changed(0, 0x42))?.message).toBe(
      'it is not an Aspen backup (it does not start with ASPENBAK)',
    );
    expect(refusal(changed(11, 2))?.message).toBe('it is backup format 2; this release reads format 1');
    // The state machine's length (offset 28) past the snapshot bound, or past the file's end.
    expect(refusal(changed(31, 0xff))?.message).toMatch(/^its header is damaged: .* over the bound of/);
    expect(refusal(changed(34, 0xff))?.message).toMatch(/^it is truncated: \d+ of the \d+ bytes its header/);
    expect(refusal(changed(60, bytes[60] === 0 ? 1 : 0))?.message).toBe(
      'it is damaged: its SHA-256 checksum does not match its contents',
    );
    for (const error of [refusal(changed(0, 0)), refusal(bytes.subarray(0, 10))])
      expect(error?.message).not.toContain('\n');
  });

  it('bounds the state machine by the snapshot bound', () => {
    const head = Uint8Array.from(encodeBackup(sample, new Uint8Array(0)).subarray(0, BACKUP_HEADER_BYTES));
    new DataView(head.buffer).setBigUint64(28, BigInt(SNAPSHOT_BYTES_MAX + 1));
    expect(() => {
      new BackupVerifier().push(head);
    }).toThrow(/over the bound of 1073741824/);
  });
});

describe('backup files', () => {
  it('verifies a file in pieces and reads it whole; a truncated, damaged, missing or non-file path is refused', async () => {
    const dir = tempDir();
    const data = new Uint8Array(3 * 1024 * 1024 + 5).map((_, at) => at % 251);
    const bytes = encodeBackup(sample, data);
    const good = join(dir, 'good.backup');
    writeFileSync(good, bytes);
    const verified = await verifyBackupFile(good);
    expect(verified).toMatchObject({ ...sample, stateBytes: data.length, totalBytes: bytes.length });
    expect(Buffer.from(readBackupFile(good).data).equals(Buffer.from(data))).toBe(true);

    const truncated = join(dir, 'truncated.backup');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 1));
    await expect(verifyBackupFile(truncated)).rejects.toThrow(/^it is truncated/);
    expect(() => readBackupFile(truncated)).toThrow(/^it is truncated/);
    const damaged = join(dir, 'damaged.backup');
    const copy = Uint8Array.from(bytes);
    copy[2 * 1024 * 1024] = (copy[2 * 1024 * 1024] ?? 0) ^ 1;
    writeFileSync(damaged, copy);
    await expect(verifyBackupFile(damaged)).rejects.toThrow(/checksum does not match/);
    await expect(verifyBackupFile(join(dir, 'missing'))).rejects.toThrow(/cannot be read \(ENOENT\)/);
    mkdirSync(join(dir, 'a-dir'));
    await expect(verifyBackupFile(join(dir, 'a-dir'))).rejects.toThrow(/not a regular file/);
  });
});
