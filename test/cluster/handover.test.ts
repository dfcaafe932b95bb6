import { describe, expect, it } from 'vitest';
import { startNode, type RunningNode } from '../../src/cluster/bootstrap.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';

describe('graceful shutdown of a leader', () => {
  it('hands leadership to a caught-up voter before it exits, faster than an election timeout', async () => {
    const electionTimeoutMinMs = 1_000;
    const nodes: RunningNode[] = [];
    const stopped = new Set<RunningNode>();
    const stop = async (running: RunningNode | undefined): Promise<void> => {
      if (running === undefined || stopped.has(running)) return;
      stopped.add(running);
      await running.stop();
    };
    for (const id of [1, 2, 3]) {
      nodes.push(
        await startNode(
          parseNodeConfig([
            '--node-id',
            String(id),
            '--port',
            '0',
            '--http-addr',
            '127.0.0.1:0',
            '--storage',
            'memory',
            '--cookie',
            'handover-test-cookie',
            '--heartbeat-interval-ms',
            '50',
            '--election-timeout-min-ms',
            String(electionTimeoutMinMs),
            '--election-timeout-max-ms',
            '2000',
          ]),
          () => undefined,
        ),
      );
    }
    try {
      const members = [1, 2, 3].map((id) => ({
        id,
        addr: `node-${id}`,
        raft_addr: nodes[id - 1]?.transport.listenAddresses.join(',') ?? '',
      }));
      const init = await fetch(`${nodes[0]?.httpUrl ?? ''}/init`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ initial_members: members }),
      });
      expect(init.status).toBe(200);
      const leaderOf = (): number =>
        nodes.find((running) => running.node.status().role === 'leader')?.node.id ?? 0;
      for (
        let waited = 0;
        waited < 5_000 &&
        (leaderOf() === 0 || nodes.some((running) => running.node.status().commitIndex < 2));
        waited += 20
      )
        await new Promise((resolve) => setTimeout(resolve, 20));
      const leader = leaderOf();
      expect(leader).toBeGreaterThan(0);
      const stoppedAt = Date.now();
      await stop(nodes[leader - 1]);
      const others = nodes.filter((running) => running.node.id !== leader);
      for (
        let waited = 0;
        waited < 5_000 && !others.some((running) => running.node.status().role === 'leader');
        waited += 10
      )
        await new Promise((resolve) => setTimeout(resolve, 10));
      expect(others.some((running) => running.node.status().role === 'leader')).toBe(true);
      expect(Date.now() - stoppedAt).toBeLessThan(electionTimeoutMinMs);
    } finally {
      for (const running of nodes) await stop(running);
    }
  }, 30_000);
});
