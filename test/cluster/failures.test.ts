import { afterAll, describe, expect, it } from 'vitest';
import { eventually, formCluster, get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

/** Writes in flight at once when loading the cluster (bounded; each is one HTTP request). */
const LOAD_CONCURRENCY = 64;
/** Writes before a learner joins: past the default snapshot threshold (10,000 entries). */
const WRITES_BEFORE_LEARNER = 10_000;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

async function write(node: NodeProcess, key: string, value: string): Promise<boolean> {
  const result = await post(`${node.http}/write`, { command: { Set: { key, value } } });
  return result.status === 200;
}

/** Attempts per key: a busy CI machine may see a leader change mid-load (NOT_LEADER, TIMEOUT); a client retries. */
const WRITE_ATTEMPTS_MAX = 5;

/**
 * Write `count` keys through `nodes` in turn, LOAD_CONCURRENCY at a time, each retried a bounded number
 * of times (the value is the same, so a retry of a write that did apply is harmless here); returns the acknowledged ones.
 */
async function load(
  nodes: readonly NodeProcess[],
  prefix: string,
  count: number,
): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next;
      next += 1;
      const node = nodes[index % nodes.length];
      if (node === undefined) throw new Error('no node');
      const key = `${prefix}/${index}`;
      for (let attempt = 1; attempt <= WRITE_ATTEMPTS_MAX; attempt += 1) {
        if (await write(nodes[(index + attempt - 1) % nodes.length] ?? node, key, `v${index}`)) {
          acked.set(key, `v${index}`);
          break;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: LOAD_CONCURRENCY }, worker));
  return acked;
}

async function leaderOf(node: NodeProcess): Promise<number | null> {
  try {
    const { json } = await get(`${node.http}/leader`);
    return typeof json.leader === 'number' ? json.leader : null;
  } catch {
    return null;
  }
}

/** A read that timed out (504: no answer in time, as a client would see on a loaded machine) is asked again, at most this often. */
const READ_TIMEOUT_RETRIES_MAX = 2;

async function expectReadable(node: NodeProcess, acked: ReadonlyMap<string, string>): Promise<void> {
  for (const [key, value] of acked) {
    const url = `${node.http}/read?key=${encodeURIComponent(key)}`;
    let answer = await get(url);
    for (let retry = 0; retry < READ_TIMEOUT_RETRIES_MAX && answer.status === 504; retry += 1)
      answer = await get(url);
    expect({ key, status: answer.status, value: answer.json.value }).toEqual({ key, status: 200, value });
  }
}

describe('aspen-node processes under failure (LMDB, SIGKILL)', () => {
  it('survives kill -9 of the leader, catches the node up on restart, snapshots a late learner, shrinks to one node', async () => {
    const dirs = new Map([1, 2, 3, 4].map((id) => [id, cluster.tempDir()]));
    const nodes = await Promise.all(
      [1, 2, 3].map((id) => cluster.start(id, { dataDir: dirs.get(id) ?? '' })),
    );
    await formCluster(cluster, nodes);
    const acked = await load(nodes, 'before', 300);
    expect(acked.size).toBe(300);

    // kill -9 the leader: the others elect a new one and every acknowledged write is readable.
    const oldLeaderId = await leaderOf(nodes[0] as NodeProcess);
    const oldLeader = nodes.find((node) => node.id === oldLeaderId);
    if (oldLeader === undefined) throw new Error('no leader');
    await cluster.kill(oldLeader);
    const survivors = nodes.filter((node) => node !== oldLeader);
    await eventually(async () => {
      const leaders = await Promise.all(survivors.map(leaderOf));
      return leaders[0] !== null && leaders[0] !== oldLeaderId && leaders.every((id) => id === leaders[0]);
    }, 15_000);
    for (const node of survivors) await expectReadable(node, acked);
    const during = await load(survivors, 'during', 200);
    expect(during.size).toBe(200);

    // Restart it from its data dir: it rejoins as a follower and catches up.
    const restarted = await cluster.start(oldLeader.id, { dataDir: dirs.get(oldLeader.id) ?? '' });
    const newLeaderId = await leaderOf(survivors[0] as NodeProcess);
    const leaderNow = survivors.find((node) => node.id === newLeaderId);
    if (leaderNow === undefined) throw new Error('no new leader');
    const commit = Number((await get(`${leaderNow.http}/metrics`)).json.commit_index);
    await eventually(
      async () => Number((await get(`${restarted.http}/metrics`)).json.last_applied) >= commit,
      15_000,
    );
    await expectReadable(restarted, new Map([...acked, ...during]));
    const live = [...survivors, restarted];

    // 10,000 more writes, then a learner that must catch up through a snapshot (the log is compacted).
    const bulk = await load(live, 'bulk', WRITES_BEFORE_LEARNER);
    expect(bulk.size).toBe(WRITES_BEFORE_LEARNER);
    const learner = await cluster.start(4, { dataDir: dirs.get(4) ?? '' });
    const leaderForLearner = live.find((node) => node.id === newLeaderId) ?? restarted;
    const added = await post(`${leaderForLearner.http}/add-learner`, { learner: cluster.member(learner) });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    const learnerMetrics = (await get(`${learner.http}/metrics`)).json;
    expect(learnerMetrics).toMatchObject({ state: 'Learner' });
    expect(learnerMetrics.snapshot).not.toBeNull();
    expect(Number(learnerMetrics.last_applied)).toBeGreaterThanOrEqual(WRITES_BEFORE_LEARNER + 500);
    expect(
      learner.log.some((line) =>
        /"event":"snapshot_installed".*"msg":"snapshot installed from the leader at index \d+ term \d+ \(\d+ bytes\)"/.test(
          line,
        ),
      ),
    ).toBe(true);
    await expectReadable(learner, new Map([...bulk].slice(-50)));

    // Shrink to the leader alone, stop everyone else, and keep writing.
    const soleId = await leaderOf(restarted);
    const sole = live.find((node) => node.id === soleId);
    if (sole === undefined) throw new Error('no leader to keep');
    expect((await post(`${sole.http}/change-membership`, { members: [sole.id] })).json).toMatchObject({
      members: [sole.id],
    });
    for (const node of [...live, learner]) if (node !== sole) await cluster.kill(node);
    const alone = await load([sole], 'alone', 100);
    expect(alone.size).toBe(100);
    await expectReadable(sole, new Map([...alone, ...[...acked].slice(0, 20)]));
  }, 180_000);
});
