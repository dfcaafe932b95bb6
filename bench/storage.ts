/**
 * Storage benchmark: durable appends per second through WalLogStore (one WAL write and one fdatasync per batch,
 * acknowledged after the sync) for batches of 1, 16 and 256 entries of 128-byte values,
 * against a baseline of one write + fdatasync per entry on a plain file on the same disk.
 * Every loop is bounded by count and time.
 */
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptOptions } from '../src/base/script-args.ts';
import type { LogStore, PersistBatch } from '../src/node/interfaces.ts';
import type { Entry } from '../src/raft/types.ts';
import { WalLogStore, LmdbStorage } from '../src/storage/lmdb-store.ts';

const VALUE_BYTES = 128;
const BATCH_SIZES = [1, 16, 256] as const;
const USAGE = `usage: npm run bench:storage -- [--seconds S] [--dir DIR]
  --seconds S   each run's length (default 3)
  --dir DIR     where the temporary stores go (default: the system temp dir; pick the disk to measure)
`;
const values = scriptOptions('bench:storage', USAGE, {
  seconds: { type: 'string', default: '3' },
  dir: { type: 'string' },
});
const durationMs = Number(values.seconds) * 1000;
const ENTRIES_MAX = 2_000_000;
const baseDir = values.dir ?? tmpdir();

function persist(store: LogStore, batch: PersistBatch): Promise<void> {
  return new Promise((resolve, reject) => {
    store.persist(batch, (error) => {
      if (error === null) resolve();
      else reject(error);
    });
  });
}

async function walAppends(
  batchSize: number,
): Promise<{ entriesPerSecond: number; batchesPerSecond: number }> {
  const directory = mkdtempSync(join(baseDir, 'aspen-bench-'));
  const storage = LmdbStorage.open(directory);
  const store = new WalLogStore(storage);
  const data = new Uint8Array(VALUE_BYTES).fill(7);
  let index = 0;
  let batches = 0;
  const started = performance.now();
  while (performance.now() - started < durationMs && index < ENTRIES_MAX) {
    const entries: Entry[] = [];
    for (let count = 0; count < batchSize; count += 1) {
      index += 1;
      entries.push({ kind: 'command', term: 1, index, data });
    }
    await persist(store, { snapshot: null, hardState: { term: 1, vote: 1, commit: index }, entries });
    batches += 1;
  }
  const seconds = (performance.now() - started) / 1000;
  await storage.close();
  rmSync(directory, { recursive: true, force: true });
  return { entriesPerSecond: Math.round(index / seconds), batchesPerSecond: Math.round(batches / seconds) };
}

function fsyncBaseline(): { writesPerSecond: number } {
  const directory = mkdtempSync(join(baseDir, 'aspen-bench-'));
  const fd = openSync(join(directory, 'baseline.log'), 'a');
  const record = Buffer.alloc(VALUE_BYTES + 16, 7);
  let writes = 0;
  const started = performance.now();
  while (performance.now() - started < durationMs && writes < ENTRIES_MAX) {
    writeSync(fd, record);
    fdatasyncSync(fd);
    writes += 1;
  }
  const seconds = (performance.now() - started) / 1000;
  closeSync(fd);
  rmSync(directory, { recursive: true, force: true });
  return { writesPerSecond: Math.round(writes / seconds) };
}

const baseline = fsyncBaseline();
process.stdout.write(
  `${JSON.stringify({ bench: 'fsync-per-write baseline', valueBytes: VALUE_BYTES, ...baseline })}\n`,
);
for (const batchSize of BATCH_SIZES) {
  const result = await walAppends(batchSize);
  const ratio = (result.batchesPerSecond / baseline.writesPerSecond).toFixed(2);
  process.stdout.write(
    `${JSON.stringify({ bench: 'wal durable appends', batchSize, valueBytes: VALUE_BYTES, ...result, syncsVsBaseline: Number(ratio) })}\n`,
  );
}
