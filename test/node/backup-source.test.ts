import { describe, expect, it } from 'vitest';
import { NodeBackupSource } from '../../src/node/backup-source.ts';
import { VirtualCluster } from './virtual-cluster.ts';

/** Virtual time a follower stays cut off after the backup was asked of it. */
const PARTITION_MS = 300;

describe('NodeBackupSource: a backup holds every write acknowledged before it was asked', () => {
  it('on a follower that lags behind the leader, waits until it applied the barrier before reading', async () => {
    const cluster = new VirtualCluster(3);
    await cluster.start();
    const leader = cluster.leader();
    const lagging = cluster.follower();
    lagging.up = false; // cut off: the leader and the third node go on committing without it
    let last = 0;
    for (let index = 0; index < 5; index += 1) {
      const written = await cluster.settle(
        leader.client.write({ command: { Set: { key: `k${index}`, value: String(index) } } }),
      );
      last = written.log_index;
    }
    expect(lagging.node.stateMachine.appliedIndex).toBeLessThan(last);

    // The barrier is a linearizable scan through the leader (as the forwarding store runs it).
    const source = new NodeBackupSource({ node: lagging.node, store: leader.client });
    cluster.clock.setTimer(PARTITION_MS, () => {
      lagging.up = true;
    });
    const backup = await cluster.settle(source.backup());
    expect(backup.nodeId).toBe(lagging.id);
    expect(backup.index).toBeGreaterThanOrEqual(last);
  });

  it('answers TIMEOUT when the node cannot catch up within its wait, instead of a stale backup', async () => {
    const cluster = new VirtualCluster(3);
    await cluster.start();
    const leader = cluster.leader();
    const lagging = cluster.follower();
    lagging.up = false;
    await cluster.settle(leader.client.write({ command: { Set: { key: 'k', value: 'v' } } }));
    const source = new NodeBackupSource({ node: lagging.node, store: leader.client, waitMs: 500 });
    await expect(cluster.settle(source.backup())).rejects.toMatchObject({ code: 'TIMEOUT' });
  });
});
