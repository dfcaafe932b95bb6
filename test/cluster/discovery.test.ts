import { afterAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/client/index.ts';
import {
  startThreeById,
  DISCOVERY_TIMEOUT_MS,
  discoversAll,
  eventually,
  formById,
  freePort,
  get,
  peerIds,
  post,
  ProcessCluster,
} from './process-harness.ts';

/** A moved node's new address reaches the others by gossip within this: less than QUIC's 10 s idle timeout, so not by waiting out its dead connection. */
const MOVED_FOUND_MS = 8_000;
/** How long a node with another cookie is given to (wrongly) show up. */
const STRANGER_WAIT_MS = 3_000;

const clusters: ProcessCluster[] = [];
afterAll(() => {
  for (const cluster of clusters) cluster.cleanup();
});

describe('discovery across aspen-node processes', () => {
  it('three nodes with only --cookie find each other by mDNS and form a cluster by ids; another cookie never enters', async () => {
    const cluster = new ProcessCluster();
    clusters.push(cluster);
    const nodes = await startThreeById(cluster);
    const [one, two, three] = nodes;
    expect(
      (await post(`${two.http}/write`, { command: { Set: { key: 'found', value: 'by mdns' } } })).status,
    ).toBe(200);
    expect((await get(`${three.http}/read?key=found`)).json).toMatchObject({ value: 'by mdns' });

    // Same LAN, another cookie, even pointed at node 1: it never enters a peer map, nor do they enter its.
    const stranger = await cluster.start(5, {
      cookie: `${cluster.cookie}-other`,
      flags: ['--peers', `1@${one.raftAddr}`],
    });
    await new Promise((resolve) => setTimeout(resolve, STRANGER_WAIT_MS));
    for (const node of nodes) expect(await peerIds(node)).not.toContain(5);
    expect(await peerIds(stranger)).toEqual([]);
  }, 90_000);

  it('with mDNS off, one --peers each is enough: gossip names everyone; a fourth joins with only --ticket', async () => {
    const cluster = new ProcessCluster();
    clusters.push(cluster);
    const off = ['--disable-mdns'];
    const ports = new Map<number, number>();
    for (const id of [1, 2, 3]) ports.set(id, await cluster.raftPort(id));
    const address = (id: number) => `127.0.0.1:${ports.get(id) ?? 0}`;
    // A line 1 - 2 - 3: node 3 hears of node 1 only through node 2's gossip.
    const nodes = await Promise.all([
      cluster.start(1, { flags: [...off, '--peers', `2@${address(2)}`] }),
      cluster.start(2, { flags: [...off, '--peers', `1@${address(1)}`] }),
      cluster.start(3, { flags: [...off, '--peers', `2@${address(2)}`] }),
    ]);
    await discoversAll(nodes);
    await formById(nodes);
    const [one] = nodes;
    const { json } = await get(`${one.http}/cluster-ticket`);
    const ticket = String(json.ticket);
    expect(ticket).toMatch(/^aspen[a-z2-7]+$/);

    const fourth = await cluster.start(4, { cookie: null, flags: [...off, '--ticket', ticket] });
    await discoversAll([...nodes, fourth]);
    expect((await post(`${one.http}/add-learner`, { learner: { id: 4 } })).status).toBe(200);
    const joined = await post(`${fourth.http}/write`, {
      command: { Set: { key: 'joined', value: 'by ticket' } },
    });
    expect(joined.status, JSON.stringify(joined.json)).toBe(200);
    expect((await get(`${fourth.http}/read?key=joined`)).json).toMatchObject({ value: 'by ticket' });
    const bad = await get(`${one.http}/peers`);
    expect(bad.status).toBe(200);
  }, 90_000);

  it('a member that comes back on another port is found again by gossip and catches up', async () => {
    const cluster = new ProcessCluster();
    clusters.push(cluster);
    const dirs = [1, 2, 3].map(() => cluster.tempDir());
    const ports = new Map<number, number>();
    for (const id of [1, 2]) ports.set(id, await cluster.raftPort(id));
    const flags = (id: number) => [
      '--disable-mdns',
      '--peers',
      `${id === 1 ? 2 : 1}@127.0.0.1:${ports.get(id === 1 ? 2 : 1) ?? 0}`,
    ];
    const nodes = await Promise.all(
      [1, 2, 3].map((id) => cluster.start(id, { dataDir: dirs[id - 1] ?? '', flags: flags(id) })),
    );
    await discoversAll(nodes);
    await formById(nodes);
    // Move a follower (the leader may change under load: ask, and let KvClient ride out elections).
    const kv = new KvClient({ endpoints: nodes.map((node) => node.http) });
    const leaderId = await kv.leader();
    const mover = nodes.find((node) => node.id !== leaderId && node.id !== 1);
    const observer =
      nodes.find((node) => node !== mover && node.id === leaderId) ?? nodes.find((node) => node !== mover);
    if (mover === undefined || observer === undefined)
      throw new Error(`no follower to move (leader ${String(leaderId)})`);
    await cluster.kill(mover);
    // Same data dir (same identity and log), another port: the configured raft_addr is now wrong.
    const newPort = await freePort();
    const moved = await cluster.start(mover.id, {
      dataDir: dirs[mover.id - 1] ?? '',
      raftPort: newPort,
      flags: flags(mover.id),
    });
    await kv.put('after-move', 'found');
    await eventually(async () => {
      const { status, json } = await get(`${moved.http}/metrics`);
      const commit = Number((await get(`${observer.http}/metrics`)).json.commit_index);
      return status === 200 && Number(json.last_applied) >= commit;
    }, DISCOVERY_TIMEOUT_MS);
    // Gossip may trail Raft by an announce gap: wait for it, but less than the dead connection's idle timeout.
    await eventually(async () => {
      const peers = (await get(`${observer.http}/peers`)).json.peers as {
        node_id: number;
        addrs: string[];
      }[];
      return (
        peers
          .find((peer) => peer.node_id === mover.id)
          ?.addrs.join(',')
          .includes(`/udp/${newPort}/`) === true
      );
    }, MOVED_FOUND_MS);
    expect((await get(`${moved.http}/read?key=after-move`)).json).toMatchObject({ value: 'found' });
    kv.close();
  }, 90_000);
});
