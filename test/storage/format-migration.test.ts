import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Packr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeSnapshotState, encodeSnapshot, type KvRecord } from '../../src/node/kv-state-machine.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import type { Entry, HardState } from '../../src/raft/types.ts';
import { Wal } from '../../src/storage/wal/wal.ts';
import {
  LmdbStorage,
  STORAGE_FORMAT_LMDB_LOG,
  WAL_DIR,
  WalLogStore,
  STORAGE_FORMAT_MIGRATED_FROM,
  STORAGE_FORMAT_VERSION,
  STORAGE_FORMAT_WITHOUT_LEASES,
  STORAGE_FORMAT_WITHOUT_SESSIONS,
} from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { applyPlain } from '../support/apply.ts';
import { startLmdbNode, untilLeader } from './lmdb-nodes.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-migrate-'));
  directories.push(directory);
  return directory;
}

async function write(node: RaftNode, key: string, value: string): Promise<void> {
  const outcome = await new Promise<{ ok: boolean }>((resolve) => {
    node.write({ Set: { key, value } }, resolve);
  });
  expect(outcome.ok).toBe(true);
}

const KEYS = 7;

/** A node that wrote 60 entries (compacted at least once), closed cleanly: its records and applied index. */
async function populated(directory: string): Promise<{ records: [string, KvRecord][]; applied: number }> {
  const storage = LmdbStorage.open(directory);
  // Formats 2 to 5 kept snapshots as bytes in LMDB (snapshot files came with format 6).
  const node = startLmdbNode(storage, undefined, { snapshotBytes: true });
  await new Promise((resolve) => {
    node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
  });
  await untilLeader(node);
  for (let index = 0; index < 60; index += 1) await write(node, `k${index % KEYS}`, `v${index}`);
  const records = [...storage.kv.getRange({})].map(({ key, value }): [string, KvRecord] => [key, value]);
  const applied = node.stateMachine.appliedIndex;
  expect(node.status().snapshot?.index ?? 0).toBeGreaterThanOrEqual(25);
  node.stop();
  await storage.close();
  return { records, applied };
}

const strip = (record: KvRecord): Omit<KvRecord, 'leaseId'> => ({
  value: record.value,
  createIndex: record.createIndex,
  modIndex: record.modIndex,
  version: record.version,
});

/**
 * Put a closed data dir's log back where formats 2 to 5 kept it: entries in LMDB's `log` database,
 * the hard state in `meta`, no WAL. Returns what the WAL held.
 */
async function logBackIntoLmdb(directory: string): Promise<{ entries: number; hardState: HardState }> {
  const { wal, persisted } = Wal.open(join(directory, WAL_DIR));
  wal.closeNow();
  const env = open({ path: join(directory, 'aspen.mdb'), compression: false });
  const log = env.openDB<Entry, number>({ name: 'log' });
  const meta = env.openDB<unknown, string>({ name: 'meta' });
  await env.transaction(() => {
    for (const entry of persisted.entries) void log.put(entry.index, entry);
    void meta.put('hard_state', persisted.hardState);
  });
  await env.close();
  rmSync(join(directory, WAL_DIR), { recursive: true });
  return { entries: persisted.entries.length, hardState: persisted.hardState };
}

/**
 * Turn a closed data dir into what format 2 wrote: records (in the state machine and the stored
 * snapshot) without a lease id, format 2 in the meta; `clean` false: as after a crash.
 */
async function downgradeToFormat2(directory: string, clean: boolean): Promise<void> {
  await logBackIntoLmdb(directory);
  const state = open({ path: join(directory, 'state.mdb'), compression: false });
  const kv = state.openDB<unknown, string>({ name: 'kv' });
  for (const { key, value } of [...kv.getRange({})]) kv.putSync(key, strip(value as KvRecord));
  expect(Object.keys(kv.get('k0') as object)).not.toContain('leaseId');
  await state.close();
  const env = open({ path: join(directory, 'aspen.mdb'), compression: false });
  const meta = env.openDB<unknown, string>({ name: 'meta' });
  const snapshots = env.openDB<Uint8Array, string>({ name: 'snapshot', encoding: 'binary' });
  const packr = new Packr({ useRecords: false, moreTypes: false });
  const data = snapshots.get('data');
  if (data === undefined) throw new Error('the populated dir has a snapshot');
  const body = packr.unpack(data) as { appliedIndex: number; records: [string, KvRecord][] };
  const old = { ...body, records: body.records.map(([key, record]) => [key, strip(record)]) };
  snapshots.putSync('data', packr.pack(old));
  meta.putSync('format', STORAGE_FORMAT_MIGRATED_FROM);
  if (!clean) meta.putSync('state_clean', false);
  await env.close();
}

/** Turn a closed data dir into an older format whose snapshots lack `field` (which this format writes). */
async function downgrade(directory: string, field: 'sessions' | 'leases', format: number): Promise<void> {
  await logBackIntoLmdb(directory);
  const env = open({ path: join(directory, 'aspen.mdb'), compression: false });
  const snapshots = env.openDB<Uint8Array, string>({ name: 'snapshot', encoding: 'binary' });
  const packr = new Packr({ useRecords: false, moreTypes: false });
  const body = packr.unpack(snapshots.get('data') as Uint8Array) as Record<string, unknown>;
  expect(body[field]).toBeDefined();
  const older = Object.fromEntries(Object.entries(body).filter(([name]) => name !== field));
  snapshots.putSync('data', packr.pack(older));
  env.openDB<unknown, string>({ name: 'meta' }).putSync('format', format);
  await env.close();
}

describe('storage format migration', () => {
  it.each([
    ['after a clean close (records rewritten in place)', true],
    ['after an unclean stop (state machine rebuilt from the migrated snapshot and the log)', false],
  ])('migrates a format-2 data dir %s', async (_case, clean) => {
    const directory = dataDir();
    const before = await populated(directory);
    expect(before.records).toHaveLength(KEYS);
    expect(before.records.every(([, record]) => record.leaseId === 0)).toBe(true);
    await downgradeToFormat2(directory, clean);

    // An unclean stop counts when the machine rebooted since (the state machine may be torn).
    const storage = LmdbStorage.open(directory, { bootId: clean ? null : 'after-a-reboot' });
    expect(storage.stateRebuilt).toBe(!clean);
    expect(storage.meta.get('format')).toBe(STORAGE_FORMAT_VERSION);
    const migratedSnapshot = new Packr({ useRecords: false, moreTypes: false }).unpack(
      storage.snapshots.get('data') as Uint8Array,
    ) as { records: [string, KvRecord][] };
    expect(migratedSnapshot.records.every(([, record]) => record.leaseId === 0)).toBe(true);
    const node = startLmdbNode(storage);
    await untilLeader(node);
    for (let wait = 0; wait < 400 && node.stateMachine.appliedIndex <= before.applied; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 5));
    expect(node.stateMachine.appliedIndex).toBeGreaterThan(before.applied); // replayed, and the new term's entry
    const after = [...storage.kv.getRange({})].map(({ key, value }): [string, KvRecord] => [key, value]);
    expect(after).toEqual(before.records);
    const state = decodeSnapshotState(node.stateMachine.snapshot(), node.stateMachine.appliedIndex);
    expect(state.sessions.clients).toEqual([]);
    expect(node.stateMachine.snapshot()).toEqual(
      encodeSnapshot(node.stateMachine.appliedIndex, before.records, state.sessions),
    );
    await write(node, 'k0', 'later');
    expect(node.stateMachine.get('k0')).toMatchObject({ value: 'later', leaseId: 0 });
    node.stop();
    await storage.close();
    const again = LmdbStorage.open(directory); // the current format now: opens as it is
    expect(again.stateRebuilt).toBe(false);
    expect(again.kv.get('k0')).toMatchObject({ value: 'later', leaseId: 0 });
    await again.close();
  });

  it('migrates a format-3 data dir (no session table): an empty table, then sessions that survive a reopen', async () => {
    const directory = dataDir();
    const before = await populated(directory);
    await downgrade(directory, 'sessions', STORAGE_FORMAT_WITHOUT_SESSIONS);

    const storage = LmdbStorage.open(directory);
    expect(storage.meta.get('format')).toBe(STORAGE_FORMAT_VERSION);
    const node = startLmdbNode(storage);
    await untilLeader(node);
    const session = { clientId: 'migrated', sequence: 1 };
    const applied = async () =>
      new Promise<{ ok: boolean; value?: { index: number; outcome: { index: number } } }>((resolve) => {
        node.write({ Set: { key: 'once', value: 'v' } }, resolve, session);
      });
    const first = await applied();
    expect(first.ok).toBe(true);
    expect(node.stateMachine.appliedIndex).toBeGreaterThan(before.applied);
    node.stop();
    await storage.close();

    const reopened = LmdbStorage.open(directory);
    expect(reopened.sessions.get('migrated')).toMatchObject({ highest: 1 });
    const restarted = startLmdbNode(reopened);
    await untilLeader(restarted);
    const retry = await new Promise<{ ok: boolean; value?: { index: number; outcome: { index: number } } }>(
      (resolve) => {
        restarted.write({ Set: { key: 'once', value: 'v' } }, resolve, session);
      },
    );
    expect(retry.value?.outcome).toMatchObject({ index: first.value?.index, duplicate: true });
    expect(restarted.stateMachine.get('once')?.version).toBe(1);
    restarted.stop();
    await reopened.close();
  });

  it('migrates a format-4 data dir (no leases): none, then leases that survive a reopen', async () => {
    const directory = dataDir();
    const before = await populated(directory);
    await downgrade(directory, 'leases', STORAGE_FORMAT_WITHOUT_LEASES);

    const storage = LmdbStorage.open(directory);
    expect(storage.meta.get('format')).toBe(STORAGE_FORMAT_VERSION);
    const snapshotMeta = storage.meta.get('snapshot') as { index: number };
    const stored = decodeSnapshotState(storage.snapshots.get('data') as Uint8Array, snapshotMeta.index);
    expect(stored.leases).toEqual([]);
    const migrated = new LmdbKvStateMachine(storage);
    expect(migrated.appliedIndex).toBe(before.applied);
    expect(migrated.leaseCount).toBe(0);
    const index = before.applied;
    applyPlain(migrated, index + 1, { LeaseGrant: { lease_id: 0, ttl_seconds: 60 } });
    applyPlain(migrated, index + 2, { Set: { key: 'on-lease', value: 'v', lease_id: index + 1 } });
    await storage.close();

    const reopened = LmdbStorage.open(directory);
    const machine = new LmdbKvStateMachine(reopened);
    expect(machine.lease(index + 1)).toEqual({ ttlSeconds: 60, grantedIndex: index + 1, keyCount: 1 });
    expect(machine.leaseKeys(index + 1, null, 10)).toEqual(['on-lease']);
    expect(decodeSnapshotState(machine.snapshot(), machine.appliedIndex).leases).toHaveLength(1);
    await reopened.close();
  });

  it('migrates a format-5 data dir (log in LMDB) into the WAL, also after a crash in the middle', async () => {
    const directory = dataDir();
    const before = await populated(directory);
    const moved = await logBackIntoLmdb(directory);
    expect(moved.entries).toBeGreaterThan(0);
    const env = open({ path: join(directory, 'aspen.mdb'), compression: false });
    env.openDB<unknown, string>({ name: 'meta' }).putSync('format', STORAGE_FORMAT_LMDB_LOG);
    await env.close();
    // A crash in an earlier attempt: a half-written staging WAL and even a renamed one are redone.
    mkdirSync(join(directory, `${WAL_DIR}.migrating`));
    writeFileSync(join(directory, `${WAL_DIR}.migrating`, '0000000000000001.wal'), 'torn');
    mkdirSync(join(directory, WAL_DIR));

    const storage = LmdbStorage.open(directory);
    expect(storage.meta.get('format')).toBe(STORAGE_FORMAT_VERSION);
    expect(storage.meta.get('hard_state')).toBeUndefined();
    expect(storage.log.getKeysCount()).toBe(0);
    expect(existsSync(join(directory, `${WAL_DIR}.migrating`))).toBe(false);
    const { persisted } = new WalLogStore(storage).load();
    expect(persisted.entries).toHaveLength(moved.entries);
    expect(persisted.hardState).toEqual(moved.hardState);
    const node = startLmdbNode(storage);
    await untilLeader(node);
    for (let wait = 0; wait < 400 && node.stateMachine.appliedIndex <= before.applied; wait += 1)
      await new Promise((resolve) => setTimeout(resolve, 5));
    await write(node, 'k1', 'after the WAL');
    node.stop();
    await storage.close();
    const again = LmdbStorage.open(directory);
    expect(again.kv.get('k1')).toMatchObject({ value: 'after the WAL' });
    expect(new WalLogStore(again).load().persisted.entries.length).toBeGreaterThan(moved.entries);
    await again.close();
  });

  it('refuses a format-6 data dir whose WAL is gone', async () => {
    const directory = dataDir();
    await populated(directory);
    rmSync(join(directory, WAL_DIR), { recursive: true });
    expect(() => LmdbStorage.open(directory)).toThrow(/has lost its Raft log \(wal\/ is missing\)/);
  });
});
