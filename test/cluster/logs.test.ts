import { afterAll, describe, expect, it } from 'vitest';
import { eventually, formCluster, get, ProcessCluster, type NodeProcess } from './process-harness.ts';

/** Elections, discovery and the unreachable bound (1.6 s here) settle well within this on a slow machine. */
const SETTLE_MS = 20_000;

interface Line {
  readonly level: string;
  readonly node_id: number;
  readonly component: string;
  readonly msg: string;
  readonly [field: string]: unknown;
}

function lines(node: NodeProcess): Line[] {
  return node.log.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Line);
}

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

describe('what aspen-node processes log about Raft', () => {
  it('every node names the leader elected and the configuration; the new leader names the member it lost; debug adds discovery', async () => {
    const nodes = await Promise.all(
      [1, 2, 3].map((id) => cluster.start(id, id === 1 ? { flags: ['--log-level', 'debug'] } : {})),
    );
    await formCluster(cluster, nodes);
    const leaderId = (await get(`${nodes[0]?.http ?? ''}/leader`)).json.leader as number;
    const leader = nodes.find((node) => node.id === leaderId);
    if (leader === undefined) throw new Error(`no leader (${String(leaderId)})`);
    const elected = (node: NodeProcess, id: number) =>
      lines(node).find(
        (line) => line.component === 'raft' && line.event === 'leader_elected' && line.leader_id === id,
      );
    await eventually(() => nodes.every((node) => elected(node, leaderId) !== undefined), SETTLE_MS);
    const term = elected(leader, leaderId)?.term as number;
    for (const node of nodes) {
      const self = node === leader ? ' (this node)' : '';
      expect(elected(node, leaderId)).toMatchObject({
        level: 'info',
        node_id: node.id,
        msg: `leader elected: node ${leaderId}${self} in term ${term}`,
      });
    }
    // The configuration each node ends with: voters 1, 2 and 3, out of the joint configuration.
    const final = (node: NodeProcess) =>
      lines(node).some(
        (line) =>
          line.event === 'membership_changed' &&
          line.voters === '1,2,3' &&
          line.learners === '' &&
          line.joint === false &&
          line.msg.endsWith('voters [1, 2, 3], learners []'),
      );
    await eventually(() => nodes.every(final), SETTLE_MS);
    // Node 1 logs at debug: discovery's chatter and each HTTP request are there; the others hold no debug line.
    await eventually(
      () =>
        lines(nodes[0] as NodeProcess).some(
          (line) => line.component === 'discovery' && line.level === 'debug',
        ),
      SETTLE_MS,
    );
    expect(
      lines(nodes[0] as NodeProcess).some((line) => line.component === 'http' && line.reqId !== undefined),
    ).toBe(true);
    for (const node of nodes.slice(1))
      expect(lines(node).filter((line) => line.level === 'debug')).toEqual([]);

    // The leader dies: the others elect a new one, which names the member it cannot reach, once.
    await cluster.kill(leader);
    const rest = nodes.filter((node) => node !== leader);
    const newLeader = () =>
      rest.find((node) =>
        lines(node).some(
          (line) =>
            line.event === 'leader_elected' && (line.term as number) > term && line.leader_id === node.id,
        ),
      );
    await eventually(() => newLeader() !== undefined, SETTLE_MS);
    const successor = newLeader() as NodeProcess;
    const unreachable = () => lines(successor).filter((line) => line.event === 'peer_unreachable');
    await eventually(() => unreachable().length > 0, SETTLE_MS);
    expect(unreachable()).toEqual([
      expect.objectContaining({
        level: 'warn',
        component: 'raft',
        peer_node_id: leaderId,
        msg: expect.stringMatching(
          new RegExp(`^node ${leaderId} unreachable: no answer for \\d+ ms$`),
        ) as string,
      }),
    ]);
    for (const node of rest)
      expect(
        lines(node).some((line) => line.event === 'leader_elected' && line.leader_id === successor.id),
      ).toBe(true);
  }, 90_000);
});
