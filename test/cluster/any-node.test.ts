import { afterAll, describe, expect, it } from 'vitest';
import { eventually, get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * Issue 19, "any node serves every call", on real aspen-node processes: the seed's walkthrough with
 * every call after the first add-learner sent to a node that is not the leader; then the leader is
 * killed, and membership calls, snapshots and a join-ticket learner still work through a follower.
 */
/** An election after a SIGKILL (election timeouts 800-1600 ms here) and gossip take a few seconds; this bounds a slow machine. */
const SETTLE_MS = 10_000;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

async function leaderOf(node: NodeProcess): Promise<number | null> {
  const { status, json } = await get(`${node.http}/leader`);
  return status === 200 ? (json.leader as number | null) : null;
}

/** Wait until every node in `nodes` names the same leader among `candidates`; that leader's id. */
async function agreedLeader(nodes: readonly NodeProcess[], candidates: readonly number[]): Promise<number> {
  let agreed = 0;
  await eventually(async () => {
    const leaders = await Promise.all(nodes.map(leaderOf));
    const first = leaders[0] ?? null;
    agreed = first ?? 0;
    return first !== null && candidates.includes(first) && leaders.every((leader) => leader === first);
  }, SETTLE_MS);
  return agreed;
}

function ok(
  answer: { status: number; json: Record<string, unknown> },
  what: string,
): Record<string, unknown> {
  expect(answer.status, `${what}: ${JSON.stringify(answer.json)}`).toBe(200);
  return answer.json;
}

describe('any node serves every call (real processes)', () => {
  it('the walkthrough through followers; after the leader is killed, membership calls, snapshots and a join-ticket learner through a follower', async () => {
    const [one, two, three] = await Promise.all([1, 2, 3].map((id) => cluster.start(id)));
    if (one === undefined || two === undefined || three === undefined) throw new Error('three nodes');
    ok(await post(`${one.http}/init`, { initial_members: [cluster.member(one)] }), 'init');
    await agreedLeader([one], [1]);
    // A node outside the cluster knows no leader to forward to: the first learner is added on node 1.
    const outside = await post(`${three.http}/add-learner`, { learner: cluster.member(two) });
    expect([outside.status, (outside.json.error as { code: string }).code]).toEqual([503, 'NOT_INITIALIZED']);
    ok(await post(`${one.http}/add-learner`, { learner: cluster.member(two) }), 'add-learner 2');
    await agreedLeader([two], [1]);
    // From here on every call goes to a node that is not the leader.
    ok(await post(`${two.http}/add-learner`, { learner: cluster.member(three) }), 'add-learner 3 via 2');
    await agreedLeader([three], [1]);
    const formed = ok(await post(`${three.http}/change-membership`, { members: [1, 2, 3] }), 'promote');
    expect(formed).toMatchObject({ members: [1, 2, 3], learners: [], leader: 1 });
    const written = ok(
      await post(`${two.http}/write`, { command: { Set: { key: 'walk/k', value: 'v1' } } }),
      'write',
    );
    expect(ok(await post(`${three.http}/read`, { key: 'walk/k' }), 'read')).toMatchObject({ value: 'v1' });
    const snapshot = ok(await post(`${two.http}/trigger-snapshot`, {}), 'trigger-snapshot via 2');
    const leaderSnapshot = (await get(`${one.http}/metrics`)).json.snapshot as { index: number };
    expect((snapshot.snapshot as { index: number }).index).toBe(leaderSnapshot.index);
    expect(leaderSnapshot.index).toBeGreaterThanOrEqual(written.log_index as number);

    // The leader dies without a word; 2 and 3 elect one of them.
    await cluster.kill(one);
    const newLeader = await agreedLeader([two, three], [2, 3]);
    const follower = newLeader === 2 ? three : two;
    ok(await post(`${follower.http}/write`, { command: { Set: { key: 'walk/k', value: 'v2' } } }), 'write');
    expect(ok(await post(`${follower.http}/read`, { key: 'walk/k' }), 'read')).toMatchObject({ value: 'v2' });
    const shrunk = ok(await post(`${follower.http}/change-membership`, { members: [2, 3] }), 'remove 1');
    expect(shrunk).toMatchObject({ members: [2, 3], learners: [], leader: newLeader });

    // A join ticket minted on the follower, and the add-learner sent to it by id at once: it waits
    // for discovery, binds the peer that proved the ticket, and is forwarded to the leader.
    const minted = ok(await post(`${follower.http}/join-ticket`, { node_id: 4 }), 'join-ticket');
    const four = await cluster.start(4, { cookie: null, flags: ['--ticket', minted.ticket as string] });
    const added = ok(await post(`${follower.http}/add-learner`, { learner: { id: 4 } }), 'add-learner 4');
    const endpointId = (await get(`${four.http}/node-info`)).json.endpoint_id;
    const learners = added.learners as { id: number; peer_id?: string }[];
    expect(learners.map((learner) => [learner.id, learner.peer_id])).toEqual([[4, endpointId]]);

    const leaderNode = newLeader === 2 ? two : three;
    const forwarded = ok(await post(`${follower.http}/trigger-snapshot`, {}), 'trigger-snapshot');
    const local = ok(await post(`${follower.http}/trigger-snapshot`, { node: 'local' }), 'local snapshot');
    const snapshotIndex = async (node: NodeProcess) =>
      ((await get(`${node.http}/metrics`)).json.snapshot as { index: number }).index;
    expect(await snapshotIndex(leaderNode)).toBe((forwarded.snapshot as { index: number }).index);
    expect(await snapshotIndex(follower)).toBe((local.snapshot as { index: number }).index);
    const removed = ok(await post(`${follower.http}/remove-learner`, { learner_id: 4 }), 'remove-learner');
    expect(removed).toMatchObject({ members: [2, 3], learners: [] });
    // Bad input is still refused with its own error, not a 503.
    const refused = await post(`${follower.http}/remove-learner`, { learner_id: 4 });
    expect([refused.status, (refused.json.error as { code: string }).code]).toEqual([400, 'INVALID_INPUT']);
  }, 45_000);
});
