import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeSnapshotState } from '../../src/node/kv-state-machine.ts';
import { SNAPSHOT_BYTES_MAX } from '../../src/base/limits.ts';
import { LmdbStorage, WalLogStore } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { SNAPSHOT_DIR } from '../../src/storage/snapshot-files.ts';
import { applyPlain } from '../support/apply.ts';
import { startLmdbNode, untilLeader } from './lmdb-nodes.ts';
import type { RaftNode } from '../../src/node/raft-node.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-snapfiles-'));
  directories.push(directory);
  return directory;
}

const CONFIG = { voters: [1], votersOutgoing: [], learners: [] };

function write(node: RaftNode, key: string, value: string): Promise<boolean> {
  return new Promise((resolve) => {
    node.write({ Set: { key, value } }, (outcome) => {
      resolve(outcome.ok);
    });
  });
}

describe('snapshot files', () => {
  it('a copy holds the applied index it is named by, and encodes to the bytes the machine reads', async () => {
    const storage = LmdbStorage.open(dataDir());
    const machine = new LmdbKvStateMachine(storage);
    machine.applyNoop(1, CONFIG);
    for (let index = 2; index <= 40; index += 1)
      applyPlain(machine, index, { Set: { key: `k${index % 9}`, value: `v${index}` } });
    const copying = storage.snapshotFiles.take(storage.state);
    // Applies go on while LMDB copies (off the event loop): the copy is one consistent view.
    for (let index = 41; index <= 60; index += 1)
      applyPlain(machine, index, { Set: { key: `k${index % 9}`, value: `v${index}` } });
    const index = await copying;
    expect(index).toBeGreaterThanOrEqual(40);
    expect(index).toBeLessThanOrEqual(60);
    expect(storage.snapshotFiles.indexes()).toEqual([index]);
    // The file as bytes (what the watch history decodes at start) is the machine's state at `index`.
    const bytes = storage.snapshotFiles.encodeNow(index, SNAPSHOT_BYTES_MAX);
    expect(bytes).not.toBeNull();
    const state = decodeSnapshotState(bytes ?? new Uint8Array(), index); // asserts the bytes are at `index`
    if (index === 60) expect(Buffer.from(bytes ?? [])).toEqual(Buffer.from(machine.snapshot()));
    for (const [, record] of state.records) expect(record.modIndex).toBeLessThanOrEqual(index);
    expect(storage.snapshotFiles.encodeNow(index, 10)).toBeNull(); // the file is larger than 10 bytes
    // Read back piece by piece (as it is sent), it is the file.
    const size = storage.snapshotFiles.size(index);
    const pieces: Uint8Array[] = [];
    for (let offset = 0; offset < size; offset += 4096)
      pieces.push(storage.snapshotFiles.read(index, offset, Math.min(4096, size - offset)));
    expect(Buffer.concat(pieces)).toEqual(readFileSync(storage.snapshotFiles.path(index)));
    storage.snapshotFiles.prune(null);
    expect(storage.snapshotFiles.indexes()).toEqual([]);
    await storage.close();
  });

  it('a node keeps one snapshot file, no snapshot bytes, and after a reboot rebuilds its machine from the file', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    let node = startLmdbNode(storage);
    await new Promise((resolve) => {
      node.init(CONFIG, resolve);
    });
    await untilLeader(node);
    for (let index = 0; index < 80; index += 1)
      expect(await write(node, `k${index % 7}`, `v${index}`)).toBe(true);
    for (let wait = 0; wait < 400 && (node.status().snapshot?.index ?? 0) < 50; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 5));
    const snapshotIndex = node.status().snapshot?.index ?? 0;
    expect(snapshotIndex).toBeGreaterThanOrEqual(50);
    // A newer copy may be named already with its mark not yet written (at most one, and a copy being made).
    expect(readdirSync(join(directory, SNAPSHOT_DIR)).length).toBeLessThanOrEqual(3);
    expect(storage.snapshotFiles.has(snapshotIndex)).toBe(true);
    expect(storage.snapshots.get('data')).toBeUndefined(); // nothing of the state in the log environment
    const before = [...storage.kv.getRange({})].map(({ key, value }) => [key, value]);
    const appliedBefore = node.stateMachine.appliedIndex;
    node.stop();
    await storage.close();

    // Same boot, unclean stop: trusted as it is. Another boot: rebuilt from the file and the log.
    storage = LmdbStorage.open(directory, { bootId: 'after-a-reboot' });
    expect(storage.stateRebuilt).toBe(false); // closed cleanly above
    await storage.close();
    storage = LmdbStorage.open(directory);
    await storage.abandon(); // as a crash: never marked clean

    storage = LmdbStorage.open(directory, { bootId: 'after-a-reboot' });
    expect(storage.stateRebuilt).toBe(true);
    const logStore = new WalLogStore(storage);
    node = startLmdbNode(storage, logStore);
    expect(node.stateMachine.appliedIndex).toBeGreaterThanOrEqual(snapshotIndex); // the file, before any replay
    const marked = node.status().snapshot?.index ?? 0;
    expect(marked).toBeGreaterThanOrEqual(snapshotIndex);
    expect(storage.snapshotFiles.indexes()).toEqual([marked]); // the WAL's; any other went at open
    await untilLeader(node);
    for (let wait = 0; wait < 400 && node.stateMachine.appliedIndex <= appliedBefore; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 5));
    expect([...storage.kv.getRange({})].map(({ key, value }) => [key, value])).toEqual(before);
    node.stop();
    await storage.close();
  });

  it('a copy left by a crash before its mark is removed at open', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    const machine = new LmdbKvStateMachine(storage);
    machine.applyNoop(1, CONFIG);
    const index = await storage.snapshotFiles.take(storage.state);
    expect(index).toBe(1);
    await storage.close();
    storage = LmdbStorage.open(directory);
    new WalLogStore(storage).load(); // the WAL names no snapshot
    expect(storage.snapshotFiles.indexes()).toEqual([]);
    expect(existsSync(join(directory, SNAPSHOT_DIR, 'taking.mdb'))).toBe(false);
    await storage.close();
  });
});
