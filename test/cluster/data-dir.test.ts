import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runToExit } from './node-runner.ts';
import { freePort, get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

async function readValue(node: NodeProcess, key: string): Promise<unknown> {
  return (await get(`${node.http}/read?key=${key}`)).json.value;
}

describe('one aspen-node per data directory', () => {
  it("a second aspen-node on a live data dir exits 1 naming the first one's pid; the first keeps serving its data", async () => {
    const dataDir = cluster.tempDir();
    let first = await cluster.start(1, { dataDir });
    expect((await post(`${first.http}/init`, { initial_members: [cluster.member(first)] })).status).toBe(200);
    expect(
      (await post(`${first.http}/write`, { command: { Set: { key: 'k', value: 'before' } } })).status,
    ).toBe(200);
    const state = statSync(join(dataDir, 'state.mdb'));
    const key = statSync(join(dataDir, 'node.key'));

    const second = await runToExit([
      '--node-id',
      '1',
      '--port',
      String(await freePort()),
      '--http-addr',
      `127.0.0.1:${await freePort()}`,
      '--cookie',
      cluster.cookie,
      '--data-dir',
      dataDir,
      '--disable-mdns',
      '--disable-gossip',
    ]);
    expect(second.code).toBe(1);
    expect(second.lines).toEqual([
      `aspen-node: cannot start node 1: data directory in use by pid ${first.child.pid ?? 0}: ${dataDir} belongs to a running node (stop it first, or give this one another --data-dir)`,
    ]);

    // The live store was not deleted or replaced, and the first node still reads and writes.
    expect(statSync(join(dataDir, 'state.mdb')).ino).toBe(state.ino);
    expect(statSync(join(dataDir, 'node.key')).mtimeMs).toBe(key.mtimeMs);
    expect(await readValue(first, 'k')).toBe('before');
    expect(
      (await post(`${first.http}/write`, { command: { Set: { key: 'k', value: 'after' } } })).status,
    ).toBe(200);

    // A clean stop is recorded as one: the restart trusts its state machine.
    const exited = new Promise((resolvePromise) => {
      first.child.once('exit', resolvePromise);
    });
    first.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    first = await cluster.start(1, { dataDir });
    expect(first.log.some((line) => line.includes('not clean'))).toBe(false);
    await waitForLeader(first);
    expect(await readValue(first, 'k')).toBe('after');

    // SIGKILL leaves no lock behind: the restart right after works, and (same boot of the machine)
    // trusts the state machine as the killed process left it instead of rebuilding it.
    await cluster.kill(first);
    first = await cluster.start(1, { dataDir });
    expect(first.log.some((line) => line.includes('the last stop was not clean'))).toBe(false);
    await waitForLeader(first);
    expect(await readValue(first, 'k')).toBe('after');
  }, 90_000);
});

async function waitForLeader(node: NodeProcess): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    if ((await get(`${node.http}/leader`)).json.leader === node.id) return;
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 50));
  }
  throw new Error(`node ${node.id} did not become leader`);
}
