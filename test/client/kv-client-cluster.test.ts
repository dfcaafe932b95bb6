import { afterAll, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/client/index.ts';
import { formCluster, ProcessCluster, type NodeProcess } from '../cluster/process-harness.ts';

/** Writes attempted in all; the leader is killed after KILL_AFTER_WRITES of them. */
const WRITES_TOTAL = 400;
const KILL_AFTER_WRITES = 100;
const WRITERS = 8;
/** Writes left in doubt at most: one per writer, should a resend outlast the retry budget. */
const IN_DOUBT_MAX = WRITERS;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

describe('KvClient against real aspen-node processes', () => {
  it('while the leader is killed: sessions resend writes in doubt; every acknowledged write applied once', async () => {
    const nodes = await Promise.all([1, 2, 3].map((id) => cluster.start(id, { dataDir: cluster.tempDir() })));
    await formCluster(cluster, nodes);
    const kv = new KvClient({
      endpoints: nodes.map((node) => node.http),
      timeoutMs: 5_000,
      retry: { totalMsMax: 15_000 },
    });
    const leaderId = await kv.leader();
    const leader = nodes.find((node) => node.id === leaderId) as NodeProcess;
    const acked = new Set<string>();
    const unknown = new Set<string>();
    const definiteFailures: string[] = [];
    let next = 0;
    let killed: Promise<void> = Promise.resolve();
    const writer = async (): Promise<void> => {
      while (next < WRITES_TOTAL) {
        const key = `k/${next}`;
        next += 1;
        if (next === KILL_AFTER_WRITES) killed = cluster.kill(leader);
        try {
          await kv.put(key, 'v');
          acked.add(key);
        } catch (error) {
          if (!(error instanceof KvError)) throw error;
          if (error.definite) definiteFailures.push(`${key}: ${error.code}`);
          else unknown.add(key);
        }
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, writer));
    await killed;
    console.log(`acked ${acked.size}, in doubt ${unknown.size}, failed ${definiteFailures.join(' ')}`);
    // The client rode through the election: nearly everything was acknowledged.
    expect(acked.size + unknown.size + definiteFailures.length).toBe(WRITES_TOTAL);
    expect(acked.size).toBeGreaterThan(WRITES_TOTAL * 0.9);
    // Sessions resend a write in doubt until it is answered: only one outlasting the retry budget stays in doubt.
    expect(unknown.size).toBeLessThanOrEqual(IN_DOUBT_MAX);
    const entries = await kv.scanAll('k/');
    const found = new Map(entries.map((entry) => [entry.key, entry]));
    for (const key of acked) expect(found.has(key), key).toBe(true);
    for (const key of found.keys())
      expect(
        acked.has(key) || unknown.has(key),
        `${key} appeared without being acknowledged or in doubt`,
      ).toBe(true);
    // A Set applied twice would show version 2: a resent write is answered from the session table.
    for (const key of acked) expect((await kv.get(key))?.version, key).toBe(1);
    for (const key of unknown) {
      const read = await kv.get(key);
      if (read !== null) expect(read.version, key).toBe(1);
    }
    kv.close();
  }, 120_000);
});
