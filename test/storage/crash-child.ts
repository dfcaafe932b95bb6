/**
 * Crash-test target: one RaftNode on LMDB in the data dir given as argv[2]. It prints every
 * stored key as `KEY <key> <value>` and then `READY`; afterwards each stdin line `W <key> <value>`
 * is written and acknowledged with `ACK <key>` once committed. The parent kills it with SIGKILL.
 */
import { createInterface } from 'node:readline';
import { WalLogStore, LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { startLmdbNode } from './lmdb-nodes.ts';

const dataDir = process.argv[2];
if (dataDir === undefined) throw new Error('usage: crash-child <data-dir>');
const bootId = process.env.CRASH_BOOT_ID ?? '';
const storage = LmdbStorage.open(dataDir, bootId === '' ? {} : { bootId });
const node = startLmdbNode(storage, new WalLogStore(storage), {
  seed: Number(process.env.CRASH_SEED ?? 1),
  snapshotThresholdEntries: Number(process.env.CRASH_SNAPSHOT_EVERY ?? 50),
});
const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function whenLeader(then: () => void): void {
  if (node.status().role === 'leader') then();
  else
    setTimeout(() => {
      whenLeader(then);
    }, 5);
}

node.init({ voters: [1], votersOutgoing: [], learners: [] }, () => {
  whenLeader(() => {
    // A read confirms leadership and that everything committed before it is applied.
    node.read('__probe__', () => {
      for (const { key, value } of storage.kv.getRange({})) out(`KEY ${key} ${value.value}`);
      out('READY');
      createInterface({ input: process.stdin }).on('line', (line) => {
        const [verb, key, value] = line.split(' ');
        if (verb !== 'W' || key === undefined || value === undefined) return;
        node.write({ Set: { key, value } }, (outcome) => {
          if (outcome.ok) out(`ACK ${key}`);
        });
      });
    });
  });
});
