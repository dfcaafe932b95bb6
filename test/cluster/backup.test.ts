import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { decodeBackup, type VerifiedBackup } from '../../src/api/backup-format.ts';
import type { KeyValue } from '../../src/api/types.ts';
import { KvClient } from '../../src/client/index.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import { background } from '../client/aspen-background.ts';
import { runToExit } from './node-runner.ts';
import {
  eventually,
  get,
  post,
  ProcessCluster,
  startFormedCluster,
  type NodeProcess,
} from './process-harness.ts';

/** Eight clients write at once, each at most this many keys, while the backup is saved. */
const WRITERS = 8;
const WRITES_PER_WRITER_MAX = 1_000;
/** Acknowledged writes before the save starts (the rest land while it runs). */
const WRITES_BEFORE_SAVE = 200;
/** Writers keep writing this long after the save ended, so some writes fall after the backup. */
const WRITES_AFTER_SAVE_MS = 300;
const TEST_TIMEOUT_MS = 240_000;
/** Reads of the compared records in flight at once. */
const READS_IN_FLIGHT = 32;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Acked {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
}

function client(endpoints: readonly string[]): KvClient {
  const kv = new KvClient({ endpoints: [...endpoints], timeoutMs: 5_000 });
  cleanups.push(() => {
    kv.close();
  });
  return kv;
}

/** Writers of unique keys until `stopped()`, each write recorded once acknowledged. */
async function startWriters(
  endpoints: readonly string[],
  acked: Acked[],
  stopped: () => boolean,
): Promise<void> {
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, writer) => {
      const kv = client(endpoints);
      for (let n = 0; n < WRITES_PER_WRITER_MAX && !stopped(); n += 1) {
        const key = `w/${writer}/${String(n).padStart(4, '0')}`;
        const value = `value ${writer}-${n}`;
        const { revision } = await kv.put(key, value);
        acked.push({ key, value, revision });
      }
    }),
  );
}

/** Each key's record on the cluster of `kv` (null: absent), READS_IN_FLIGHT at a time. */
async function records(kv: KvClient, keys: readonly string[]): Promise<(KeyValue | null)[]> {
  const found: (KeyValue | null)[] = [];
  for (let start = 0; start < keys.length; start += READS_IN_FLIGHT) {
    const page = await Promise.all(
      keys.slice(start, start + READS_IN_FLIGHT).map(async (key) => {
        const read = await kv.get(key);
        if (read === null) return null;
        const { key: name, value, create_index, mod_index, version, lease_id } = read;
        return { key: name, value, create_index, mod_index, version, lease_id };
      }),
    );
    found.push(...page);
  }
  return found;
}

/** `aspen …` as a real process: its exit code and output. */
async function aspen(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const run = background(args, cleanups);
  const code = await run.exited;
  return { code, ...run.output };
}

/** aspen-node flags of a restore of node `id` into `dataDir` (a port that is never listened on). */
function restoreFlags(file: string, dataDir: string, id = 9): string[] {
  return [
    '--node-id',
    String(id),
    '--restore',
    file,
    '--data-dir',
    dataDir,
    '--port',
    '1',
    '--http-addr',
    '127.0.0.1:1',
  ];
}

describe('--restore flags', () => {
  const base = ['--node-id', '4', '--port', '26004', '--restore', 'cluster.backup'];
  it('takes a file to seed an LMDB data dir from, at an address other nodes can reach', () => {
    expect(parseNodeConfig(base).restore).toBe('cluster.backup');
    expect(parseNodeConfig(['--node-id', '4']).restore).toBeNull();
    for (const [extra, why] of [
      [['--storage', 'memory'], /it needs --storage lmdb/],
      [['--port', '0'], /give a fixed --port, not 0/],
      [['--host', '0.0.0.0', '--insecure'], /give a --host other nodes can reach, not 0.0.0.0/],
      [['--ticket', 'aspenxyz'], /--ticket/],
    ] as const)
      expect(() => parseNodeConfig([...base, ...extra]), extra.join(' ')).toThrow(why);
  });
});

describe('backup and restore with real processes', () => {
  it(
    'a backup saved while 8 clients write holds every write acknowledged before it began, with its revisions; restored into a new one-node cluster it takes writes and grows with add-learner',
    async () => {
      const { nodes, follower } = await startFormedCluster(cluster, { lmdb: true });
      const endpoints = nodes.map((node) => node.http);
      const acked: Acked[] = [];
      let stopped = false;
      const writers = startWriters(endpoints, acked, () => stopped);
      await eventually(() => acked.length >= WRITES_BEFORE_SAVE, 60_000);

      // The save starts now: everything acknowledged so far must be in the backup. It asks a follower.
      const before = [...acked];
      const dir = cluster.tempDir();
      const file = join(dir, 'cluster.backup');
      const saved = await aspen(['--endpoints', follower.http, 'backup', 'save', file]);
      expect(saved.code, saved.stderr).toBe(0);
      expect(saved.stdout).toMatch(
        /^saved .*cluster\.backup: revision \d+ \(snapshot index \d+, term \d+\), \d+ bytes, taken by node \d+ at .*, sha256 [0-9a-f]{64}\n$/,
      );
      expect(readdirSync(dir)).toEqual(['cluster.backup']);
      await new Promise((resolve) => setTimeout(resolve, WRITES_AFTER_SAVE_MS));
      stopped = true;
      await writers;
      const { backup } = decodeBackup(readFileSync(file));
      expect(backup.nodeId).toBe(follower.id);
      expect(acked.some((write) => write.revision > backup.index)).toBe(true); // writes went on during the save
      const status = await aspen(['backup', 'status', file]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain(`intact Aspen backup (format 1): revision ${backup.index} `);

      const restored = await restoreAndCheck(file, backup, before, acked, endpoints);
      await restartAndGrow(file, restored, backup);
    },
    TEST_TIMEOUT_MS,
  );

  it('refuses a truncated or damaged file and a data dir that is not empty: one line, exit 2, nothing written', async () => {
    const dir = cluster.tempDir();
    const single = await cluster.start(5, { dataDir: cluster.tempDir() });
    expect((await post(`${single.http}/init`, { initial_members: [cluster.member(single)] })).status).toBe(
      200,
    );
    const kv = client([single.http]);
    await kv.put('k', 'v');
    const { bytes } = await kv.backup();
    const truncated = join(dir, 'truncated.backup');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 10));
    const damaged = join(dir, 'damaged.backup');
    const copy = Uint8Array.from(bytes);
    copy[60] = (copy[60] ?? 0) ^ 0x10;
    writeFileSync(damaged, copy);
    const good = join(dir, 'good.backup');
    writeFileSync(good, bytes);

    for (const [file, why] of [
      [truncated, /it is truncated: \d+ of the \d+ bytes its header announces$/],
      [damaged, /it is damaged: its SHA-256 checksum does not match its contents$/],
      [join(dir, 'missing.backup'), /it cannot be read \(ENOENT\)$/],
    ] as const) {
      const target = join(dir, `restored-${file.length}-${Math.random().toString(16).slice(2)}`);
      const run = await runToExit(restoreFlags(file, target));
      expect(run.code, run.lines.join('\n')).toBe(2);
      expect(run.lines).toHaveLength(1);
      expect(run.lines[0]).toMatch(/^aspen-node: --restore .* refused: /);
      expect(run.lines[0]).toMatch(why);
      expect(existsSync(target)).toBe(false);
    }
    const notEmpty = cluster.tempDir();
    writeFileSync(join(notEmpty, 'stray'), 'x');
    const refused = await runToExit(restoreFlags(good, notEmpty));
    expect(refused.code).toBe(2);
    expect(refused.lines).toEqual([
      expect.stringMatching(
        /^aspen-node: --restore refused: the data dir .* is not empty \(it holds stray\); restore into a new, empty directory/,
      ),
    ]);
    expect(readdirSync(notEmpty)).toEqual(['stray']);

    const status = await aspen(['backup', 'status', damaged]);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(
      /^aspen: BAD_BACKUP: .*damaged\.backup: it is damaged: its SHA-256 checksum does not match its contents\n$/,
    );
  });
});

interface Restored {
  readonly kv: KvClient;
  readonly node: NodeProcess;
  readonly dataDir: string;
  readonly cookie: string;
}

/** Restore into node 7 (new data dir, its own cookie), and compare every write with the source's record. */
async function restoreAndCheck(
  file: string,
  backup: VerifiedBackup,
  before: readonly Acked[],
  acked: readonly Acked[],
  endpoints: readonly string[],
): Promise<Restored> {
  const cookie = `restored-${Math.random().toString(16).slice(2, 10)}`;
  const dataDir = join(cluster.tempDir(), 'node-7');
  const node = await cluster.start(7, { dataDir, cookie, flags: ['--restore', file] });
  expect(node.log.join('\n')).toMatch(new RegExp(`restore: seeded .* revision ${backup.index} `));
  await eventually(async () => (await get(`${node.http}/leader`)).json.leader === 7, 30_000);
  const state = (await get(`${node.http}/state`)).json;
  expect(state).toMatchObject({ members: [7], learners: [], leader: 7 });

  const kv = client([node.http]);
  const source = client(endpoints);
  const keys = acked.map((write) => write.key);
  const [mine, theirs] = [await records(kv, keys), await records(source, keys)];
  for (const [at, write] of acked.entries()) {
    const record = mine[at];
    if (write.revision > backup.index) {
      expect(record, write.key).toBeNull(); // written after the backup's revision
      continue;
    }
    expect(record, write.key).toEqual(theirs[at]);
    expect(record).toMatchObject({
      value: write.value,
      mod_index: write.revision,
      create_index: write.revision,
      version: 1,
    });
  }
  expect(before.every((write) => write.revision <= backup.index)).toBe(true);
  // Revisions continue after the backup's.
  const next = await kv.put('after-restore', 'yes');
  expect(next.revision).toBeGreaterThan(backup.index);
  return { kv, node, dataDir, cookie };
}

/**
 * Node 7 killed and started again without --restore reopens its data; --restore on its data dir is
 * refused; a node added with add-learner catches up.
 */
async function restartAndGrow(file: string, restored: Restored, backup: VerifiedBackup): Promise<void> {
  await cluster.kill(restored.node);
  const reopened = await cluster.start(7, { dataDir: restored.dataDir, cookie: restored.cookie });
  await eventually(async () => (await get(`${reopened.http}/leader`)).json.leader === 7, 30_000);
  await expect(restored.kv.read('after-restore')).resolves.toMatchObject({ value: 'yes' });
  const again = await runToExit(restoreFlags(file, restored.dataDir, 7));
  expect(again.code).toBe(2);
  expect(again.lines.join('\n')).toMatch(/--restore refused: the data dir .* is not empty \(it holds /);

  const learner = await cluster.start(8, { cookie: restored.cookie });
  const added = await post(`${reopened.http}/add-learner`, {
    learner: { id: 8, addr: 'node-8', raft_addr: learner.raftAddr },
  });
  expect(added.status, JSON.stringify(added.json)).toBe(200);
  const written = await restored.kv.put('after-learner', 'yes');
  expect(written.revision).toBeGreaterThan(backup.index);
  await eventually(
    async () => ((await get(`${learner.http}/metrics`)).json.last_applied as number) >= written.revision,
    30_000,
  );
}
