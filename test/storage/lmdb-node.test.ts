import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/node/local-runtime.ts';
import { encodeCommand } from '../../src/node/codec.ts';
import { encodeSnapshot, MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { RaftNode, type Outcome, type WriteApplied } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import {
  WalLogStore,
  LmdbStorage,
  STORAGE_FORMAT_VERSION,
  type DurabilityEvent,
} from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { StorageError } from '../../src/storage/errors.ts';
import { applyPlain } from '../support/apply.ts';
import { startLmdbNode, untilLeader } from './lmdb-nodes.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-lmdb-'));
  directories.push(directory);
  return directory;
}

function write(node: RaftNode, key: string, value: string): Promise<Outcome<WriteApplied>> {
  return new Promise((resolve) => {
    node.write({ Set: { key, value } }, resolve);
  });
}

describe('RaftNode on LMDB', () => {
  it('a single-node leader acknowledges a write only after the batch holding it is flushed', async () => {
    const storage = LmdbStorage.open(dataDir());
    const logStore = new WalLogStore(storage);
    const events: string[] = [];
    let lastFlushed = 0;
    let flushedIndex = 0;
    logStore.onDurabilityEvent = (event: DurabilityEvent) => {
      events.push(`${event.kind}#${event.batch}`);
      if (event.kind === 'flushed') {
        lastFlushed = event.batch;
        flushedIndex = Math.max(flushedIndex, event.lastIndex);
      }
    };
    const node = startLmdbNode(storage, logStore);
    await new Promise((resolve) => {
      node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
    });
    await untilLeader(node);
    const acknowledgedAfterFlush: boolean[] = [];
    // The write callback runs synchronously inside the node's Ready cycle: check the flush there.
    const writes = Array.from(
      { length: 40 },
      (_, index) =>
        new Promise<void>((resolve) => {
          node.write({ Set: { key: `k${index}`, value: `v${index}` } }, (outcome) => {
            acknowledgedAfterFlush.push(outcome.ok && outcome.value.index <= flushedIndex);
            resolve();
          });
        }),
    );
    await Promise.all(writes);
    expect(acknowledgedAfterFlush.every(Boolean)).toBe(true);
    // Every batch is committed before it is flushed, in order.
    for (let batch = 1; batch <= lastFlushed; batch += 1) {
      expect(events.indexOf(`committed#${batch}`)).toBeLessThan(events.indexOf(`flushed#${batch}`));
    }
    node.stop();
    await storage.close();
  });

  it('a follower acknowledges appended entries only after they are flushed (the lmdb-js trap)', async () => {
    const storage = LmdbStorage.open(dataDir());
    const logStore = new WalLogStore(storage);
    let flushedIndex = 0;
    logStore.onDurabilityEvent = (event: DurabilityEvent) => {
      if (event.kind === 'flushed') flushedIndex = Math.max(flushedIndex, event.lastIndex);
    };
    const acknowledgements: { index: number; flushedIndex: number }[] = [];
    const { persisted } = logStore.load();
    const follower = new RaftNode({
      config: defaultRaftConfig(2),
      prng: new SeededPrng(2),
      persisted,
      logStore,
      stateMachine: new LmdbKvStateMachine(storage),
      clock: systemClock,
      tickMs: 50,
      transport: {
        send: (message) => {
          // Runs synchronously when the node sends: compare with what is on disk right now.
          if (message.type === 'append_response' && message.success)
            acknowledgements.push({ index: message.index, flushedIndex });
        },
      },
    });
    follower.start();
    const config = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };
    const data = new TextEncoder().encode('x');
    let last = 0;
    for (let round = 0; round < 20; round += 1) {
      const entries =
        round === 0
          ? [{ kind: 'config' as const, term: 1, index: 1, config }]
          : Array.from({ length: 5 }, (_, offset) => ({
              kind: 'command' as const,
              term: 2,
              index: last + offset + 1,
              data,
            }));
      follower.deliver({
        type: 'append',
        from: 1,
        to: 2,
        term: 2,
        prevLogIndex: last,
        prevLogTerm: last === 0 ? 0 : last === 1 ? 1 : 2,
        entries,
        commitIndex: 0,
      });
      last += entries.length;
      for (let wait = 0; wait < 200 && (acknowledgements.at(-1)?.index ?? 0) < last; wait += 1)
        await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(acknowledgements.length).toBeGreaterThanOrEqual(20);
    for (const ack of acknowledgements) expect(ack.index).toBeLessThanOrEqual(ack.flushedIndex);
    follower.stop();
    await storage.close();
  });

  it('does not sync a batch that only moves the commit index, and restarts from the applied index when that was lost', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    let logStore = new WalLogStore(storage);
    let flushes = 0;
    logStore.onDurabilityEvent = (event: DurabilityEvent) => {
      if (event.kind === 'flushed') flushes += 1;
    };
    const options = {
      config: defaultRaftConfig(2),
      prng: new SeededPrng(2),
      clock: systemClock,
      tickMs: 50,
      transport: { send: () => undefined },
    };
    let follower = new RaftNode({
      ...options,
      persisted: logStore.load().persisted,
      logStore,
      stateMachine: new LmdbKvStateMachine(storage),
    });
    follower.start();
    const config = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };
    const entries = [
      { kind: 'config' as const, term: 1, index: 1, config },
      ...Array.from({ length: 5 }, (_, offset) => ({
        kind: 'command' as const,
        term: 1,
        index: offset + 2,
        data: encodeCommand({ Set: { key: `k${offset}`, value: 'v' } }),
      })),
    ];
    follower.deliver({
      type: 'append',
      from: 1,
      to: 2,
      term: 1,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries,
      commitIndex: 0,
    });
    for (let wait = 0; wait < 500 && flushes === 0; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 2));
    expect(flushes).toBe(1);
    // The leader's next heartbeat carries only a commit index: applied without any synced write.
    follower.deliver({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 6, readRound: 0 });
    for (let wait = 0; wait < 500 && follower.stateMachine.appliedIndex < 6; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 2));
    expect(follower.stateMachine.appliedIndex).toBe(6);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(flushes).toBe(1);
    follower.stop();
    await storage.close();
    storage = LmdbStorage.open(directory);
    logStore = new WalLogStore(storage);
    const { persisted } = logStore.load();
    expect(persisted.hardState.commit).toBe(0); // never synced
    follower = new RaftNode({
      ...options,
      persisted,
      logStore,
      stateMachine: new LmdbKvStateMachine(storage),
    });
    expect(follower.status().commitIndex).toBe(6); // what the state machine applied was committed
    follower.start();
    const snapshot = await new Promise<Outcome<unknown>>((resolve) => {
      follower.triggerSnapshot(resolve);
    });
    expect(snapshot.ok).toBe(true);
    follower.stop();
    await storage.close();
  });

  it('restarts with term, vote, log, snapshot and state machine intact, never applying twice', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    let node = startLmdbNode(storage, new WalLogStore(storage));
    await new Promise((resolve) => {
      node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
    });
    await untilLeader(node);
    for (let index = 0; index < 60; index += 1)
      expect((await write(node, `k${index % 7}`, `v${index}`)).ok).toBe(true);
    const before = node.status();
    const versionBefore = node.stateMachine.get('k6')?.version;
    node.stop();
    await storage.close();
    storage = LmdbStorage.open(directory);
    node = startLmdbNode(storage, new WalLogStore(storage));
    expect(node.status().term).toBe(before.term);
    expect(node.status().snapshot?.index ?? 0).toBeGreaterThanOrEqual(25); // compacted at least once
    await untilLeader(node);
    expect(node.stateMachine.get('k6')?.version).toBe(versionBefore); // no entry applied twice
    expect(node.stateMachine.appliedMembership).toEqual({ voters: [1], votersOutgoing: [], learners: [] });
    expect(node.stateMachine.get('k4')?.value).toBe('v53');
    node.stop();
    await storage.close();
  });

  it('discards a state machine that was not closed cleanly (even a corrupted one) and rebuilds it from snapshot and log', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    expect(storage.stateRebuilt).toBe(false);
    let node = startLmdbNode(storage, new WalLogStore(storage));
    await new Promise((resolve) => {
      node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
    });
    await untilLeader(node);
    for (let index = 0; index < 60; index += 1)
      expect((await write(node, `k${index % 7}`, `v${index}`)).ok).toBe(true);
    const before = {
      k4: node.stateMachine.get('k4'),
      k6: node.stateMachine.get('k6'),
      applied: node.stateMachine.appliedIndex,
    };
    node.stop();
    await storage.close();
    // As after a power loss: the marker says the machine may hold unsynced writes, and its file is garbage.
    const raw = open({ path: join(directory, 'aspen.mdb'), compression: false });
    raw.openDB<unknown, string>({ name: 'meta' }).putSync('state_clean', false);
    await raw.close();
    writeFileSync(join(directory, 'state.mdb'), Buffer.alloc(64 * 1024, 0xab));
    storage = LmdbStorage.open(directory, { bootId: 'after-a-reboot' });
    expect(storage.stateRebuilt).toBe(true);
    node = startLmdbNode(storage, new WalLogStore(storage));
    expect(node.status().snapshot?.index ?? 0).toBeGreaterThanOrEqual(25); // rebuilt from a snapshot, then the log
    await untilLeader(node);
    for (let wait = 0; wait < 500 && node.stateMachine.appliedIndex < before.applied; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 2));
    expect(node.stateMachine.get('k4')).toEqual(before.k4); // same value, version and indexes
    expect(node.stateMachine.get('k6')).toEqual(before.k6);
    node.stop();
    await storage.close();
    storage = LmdbStorage.open(directory); // a clean close is trusted
    expect(storage.stateRebuilt).toBe(false);
    await storage.close();
  });

  it('a crash between storing a received snapshot and installing it recovers the snapshot state on restart', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    const machine = new LmdbKvStateMachine(storage);
    machine.applyNoop(1, { voters: [1], votersOutgoing: [], learners: [] });
    applyPlain(machine, 2, { Set: { key: 'old', value: 'state' } });
    const logStore = new WalLogStore(storage);
    await new Promise((resolve) => {
      logStore.persist(
        {
          snapshot: null,
          hardState: { term: 1, vote: 1, commit: 2 },
          entries: [
            { kind: 'config', term: 1, index: 1, config: { voters: [1], votersOutgoing: [], learners: [] } },
            { kind: 'blank', term: 1, index: 2 },
          ],
        },
        resolve,
      );
    });
    // The leader's snapshot at 10 is stored (one transaction) and the process dies before the state machine takes it.
    const config = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };
    const data = encodeSnapshot(10, [
      ['new', { value: 'snapshot', createIndex: 9, modIndex: 10, version: 2, leaseId: 0 }],
    ]);
    await new Promise((resolve) => {
      logStore.persist(
        {
          snapshot: { meta: { index: 10, term: 2, config }, data },
          hardState: { term: 2, vote: 0, commit: 10 },
          entries: [],
        },
        resolve,
      );
    });
    await storage.close();
    storage = LmdbStorage.open(directory);
    const reopened = new WalLogStore(storage);
    const { persisted, snapshot } = reopened.load();
    expect(persisted.entries).toEqual([]);
    const node = new RaftNode({
      config: defaultRaftConfig(1),
      prng: new SeededPrng(1),
      persisted,
      snapshot,
      logStore: reopened,
      stateMachine: new LmdbKvStateMachine(storage),
      transport: { send: () => undefined },
      clock: systemClock,
      tickMs: 50,
    });
    expect(node.stateMachine.appliedIndex).toBe(10);
    expect(node.stateMachine.get('new')?.value).toBe('snapshot');
    expect(node.stateMachine.get('old')).toBeUndefined();
    expect(node.stateMachine.appliedMembership).toEqual(config);
    expect(node.status().commitIndex).toBe(10);
    node.stop();
    await storage.close();
  });

  it('applies a batch of entries in one transaction: all of it survives a reopen, an aborted batch leaves nothing', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    let machine = new LmdbKvStateMachine(storage);
    machine.batch(() => {
      for (let index = 1; index <= 3; index += 1)
        applyPlain(machine, index, { Set: { key: `k${index}`, value: `v${index}` } });
    });
    expect(machine.appliedIndex).toBe(3);
    expect(() => {
      machine.batch(() => {
        applyPlain(machine, 4, { Set: { key: 'k4', value: 'v4' } });
        throw new Error('disk on fire');
      });
    }).toThrow('disk on fire');
    expect(machine.appliedIndex).toBe(3);
    expect(machine.get('k4')).toBeUndefined();
    await storage.close();
    storage = LmdbStorage.open(directory);
    machine = new LmdbKvStateMachine(storage);
    expect(machine.appliedIndex).toBe(3);
    expect([1, 2, 3, 4].map((index) => machine.get(`k${index}`)?.value)).toEqual([
      'v1',
      'v2',
      'v3',
      undefined,
    ]);
    await storage.close();
  });

  it('scans in key order by prefix, after a key, bounded, the same as the memory state machine', () => {
    const storage = LmdbStorage.open(dataDir());
    const machines = [new LmdbKvStateMachine(storage), new MemoryKvStateMachine()];
    for (const machine of machines) {
      applyPlain(machine, 1, {
        SetMulti: {
          pairs: [
            ['b/2', '2'],
            ['a', 'x'],
            ['b/1', '1'],
            ['b/3', '3'],
            ['c', 'y'],
          ],
        },
      });
      const first = machine.scan('b/', null, 2);
      expect(first.records.map(([key]) => key)).toEqual(['b/1', 'b/2']);
      expect(first.more).toBe(true);
      const rest = machine.scan('b/', 'b/2', 2);
      expect(rest.records.map(([key]) => key)).toEqual(['b/3']);
      expect(rest.more).toBe(false);
      expect(machine.scan('', null, 10).records.map(([key]) => key)).toEqual(['a', 'b/1', 'b/2', 'b/3', 'c']);
    }
    void storage.close();
  });

  it('keeps a node registry with first and last seen times across a reopen', async () => {
    const directory = dataDir();
    let storage = LmdbStorage.open(directory);
    storage.recordNode({ id: 2, addrs: ['/ip4/127.0.0.1/tcp/26002'] }, 1_000);
    storage.recordNode({ id: 2, addrs: ['/ip4/127.0.0.1/udp/26002/quic-v1'] }, 5_000);
    storage.recordNode({ id: 3, addrs: [] }, 2_000);
    await storage.close();
    storage = LmdbStorage.open(directory);
    expect(storage.listNodes()).toEqual([
      { id: 2, addrs: ['/ip4/127.0.0.1/udp/26002/quic-v1'], firstSeenMs: 1_000, lastSeenMs: 5_000 },
      { id: 3, addrs: [], firstSeenMs: 2_000, lastSeenMs: 2_000 },
    ]);
    await storage.close();
  });

  it('refuses a data dir of another format version with a clear error', async () => {
    const directory = dataDir();
    const storage = LmdbStorage.open(directory);
    storage.meta.putSync('format', 999);
    await storage.close();
    expect(() => LmdbStorage.open(directory)).toThrow(StorageError);
    expect(() => LmdbStorage.open(directory)).toThrow(
      new RegExp(`format 999; this release reads format ${STORAGE_FORMAT_VERSION}`),
    );
  });
});
