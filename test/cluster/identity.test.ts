import { afterAll, describe, expect, it } from 'vitest';
import {
  startThreeById,
  eventually,
  freePort,
  get,
  post,
  ProcessCluster,
  type NodeProcess,
} from './process-harness.ts';

/** A forger announces every 10 s (ANNOUNCE_INTERVAL_MS): two rounds and a slow machine's margin. */
const FORGED_ANNOUNCEMENT_SEEN_MS = 30_000;

const clusters: ProcessCluster[] = [];
afterAll(() => {
  for (const cluster of clusters) cluster.cleanup();
});

async function endpointId(node: NodeProcess): Promise<string> {
  return String((await get(`${node.http}/node-info`)).json.endpoint_id);
}

async function announcedPeer(observer: NodeProcess, nodeId: number): Promise<string | undefined> {
  const { json } = await get(`${observer.http}/peers`);
  return (json.peers as { node_id: number; peer_id: string }[]).find((peer) => peer.node_id === nodeId)
    ?.peer_id;
}

describe('identities bound to membership', () => {
  it("records each member's peer id in the configuration; a forged announcement for a member changes nobody's peer map", async () => {
    const cluster = new ProcessCluster();
    clusters.push(cluster);
    const nodes = await startThreeById(cluster);
    const [one, two, three] = nodes;
    const ids = new Map(
      await Promise.all(nodes.map(async (node) => [node.id, await endpointId(node)] as const)),
    );
    const state = (await get(`${one.http}/state`)).json as { nodes: { id: number; peer_id?: string }[] };
    expect(state.nodes.map((node) => [node.id, node.peer_id])).toEqual([...ids]);

    // Right cookie, a member's node id, its own key: it announces itself as node 2 over gossip.
    const rogue = await cluster.start(2, {
      raftPort: await freePort(),
      httpPort: await freePort(),
      flags: ['--peers', `1@${one.raftAddr}`],
    });
    expect(await endpointId(rogue)).not.toBe(ids.get(2));
    await eventually(
      () =>
        [one, three].some((node) =>
          node.log.some((line) => line.includes('refused an announcement for member 2')),
        ),
      FORGED_ANNOUNCEMENT_SEEN_MS,
    );
    for (const node of [one, three]) expect(await announcedPeer(node, 2)).toBe(ids.get(2));
    const wrote = await post(`${one.http}/write`, { command: { Set: { key: 'bound', value: 'yes' } } });
    expect(wrote.status, JSON.stringify(wrote.json)).toBe(200);
    await eventually(async () => (await get(`${two.http}/read?key=bound`)).json.value === 'yes', 10_000);
    const joined = [...one.log, ...two.log, ...three.log].join('\n');
    expect(joined).toMatch(/refused an announcement for member 2 from peer \S+: member 2 is peer/);
  }, 120_000);
});
