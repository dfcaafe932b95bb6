import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Tmpfs } from '../storage/tmpfs.ts';
import { get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

/** The data dir's file system, how much one write adds, and writes in flight while it fills. */
const TMPFS_BYTES = 6 * 1024 * 1024;
const VALUE_BYTES = 24 * 1024;
const WRITERS = 4;
/** The disk is full long before this many writes. */
const WRITES_MAX = 2_000;
const EXIT_WAIT_MS = 30_000;

const cluster = new ProcessCluster();
const mounts: Tmpfs[] = [];
afterAll(() => {
  cluster.cleanup();
  for (const mount of mounts) mount.cleanup();
});

async function tryWrite(node: NodeProcess, key: string, value: string): Promise<boolean | null> {
  try {
    return (await post(`${node.http}/write`, { command: { Set: { key, value } } })).status === 200;
  } catch {
    return null; // the node is gone
  }
}

function exitOf(node: NodeProcess): Promise<number | null> {
  if (node.child.exitCode !== null) return Promise.resolve(node.child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`node ${node.id} did not stop within ${EXIT_WAIT_MS} ms:\n${node.log.join('\n')}`));
    }, EXIT_WAIT_MS);
    node.child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('aspen-node on a full disk', () => {
  it('stops with one line and code 1; after the disk grows, the restart rebuilds and every acknowledged write is there', async () => {
    const tmpfs = new Tmpfs(TMPFS_BYTES);
    mounts.push(tmpfs);
    const dataDir = join(tmpfs.path, 'node-1');
    let node = await cluster.start(1, { dataDir });
    expect((await post(`${node.http}/init`, { initial_members: [cluster.member(node)] })).status).toBe(200);
    const value = 'x'.repeat(VALUE_BYTES);
    const acknowledged: string[] = [];
    let next = 0;
    let gone = false;
    const writer = async (): Promise<void> => {
      while (!gone && next < WRITES_MAX) {
        const key = `k${next}`;
        next += 1;
        const written = await tryWrite(node, key, value);
        if (written === true) acknowledged.push(key);
        if (written === null) gone = true;
      }
    };
    const exited = exitOf(node);
    await Promise.all(Array.from({ length: WRITERS }, writer));
    expect(await exited).toBe(1);
    expect(acknowledged.length).toBeGreaterThan(10);
    const stopLine = new RegExp(
      `^aspen-node: node 1 stopped: storage failed: no space left on device \\(ENOSPC; \\d+ bytes free; [^)]*\\) in ${dataDir} while (writing the log|applying to the state machine)$`,
    );
    expect(node.log.at(-1)).toMatch(stopLine);
    expect(node.log.filter((line) => line.includes('stopped:'))).toHaveLength(1);
    expect(
      node.log.filter(
        (line) => /^\s+at /.test(line) || line.includes('Unhandled') || line.includes('Commit failed'),
      ),
    ).toEqual([]);

    tmpfs.grow(TMPFS_BYTES * 8);
    // The node may or may not rebuild its state machine (it could not record the failure on a full
    // disk, and LMDB's aborted commit left the state as it was): either way every write is there.
    node = await cluster.start(1, { dataDir });
    for (let attempt = 0; attempt < 200 && (await get(`${node.http}/leader`)).json.leader !== 1; attempt += 1)
      await new Promise((resolve) => setTimeout(resolve, 50));
    for (const key of acknowledged) {
      const { status, json } = await get(`${node.http}/read?key=${key}`);
      expect({ key, status, same: json.value === value }).toEqual({ key, status: 200, same: true });
    }
    expect(await tryWrite(node, 'after', 'the disk grew')).toBe(true);
  }, 120_000);
});
