import type { BackupService, BackupSnapshot, KeyValueStore } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { assert } from '../base/assert.ts';
import type { Snapshot } from './interfaces.ts';
import { callNode } from './node-call.ts';
import type { RaftNode } from './raft-node.ts';

/** How often a node that is behind the barrier looks at its applied index again. */
export const BACKUP_CATCH_UP_POLL_MS = 10;
/** How long a backup waits for the barrier, then for this node to apply up to it. */
export const BACKUP_WAIT_MS_DEFAULT = 10_000;

/**
 * GET /backup on one node: a linearizable barrier through the leader (a one-key scan, which the
 * store runs after a ReadIndex on the leader, forwarded from a follower: its revision is the
 * leader's applied index then), then, once this node applied that far, the state machine read at
 * its applied index in one consistent view (RaftNode.readSnapshot, the encoding nodes send each
 * other). So a backup holds every write acknowledged before it was asked for.
 */
export class NodeBackupSource implements BackupService {
  private readonly node: RaftNode;
  private readonly store: KeyValueStore;
  private readonly waitMs: number;

  constructor(options: { node: RaftNode; store: KeyValueStore; waitMs?: number }) {
    this.node = options.node;
    this.store = options.store;
    this.waitMs = options.waitMs ?? BACKUP_WAIT_MS_DEFAULT;
  }

  async backup(): Promise<BackupSnapshot> {
    const barrier = (await this.store.scan({ prefix: '', limit: 1 })).revision;
    await this.appliedReaches(barrier);
    const snapshot = await callNode<Snapshot>(this.node, this.waitMs, 'backup', (callback) => {
      this.node.readSnapshot(callback);
    });
    assert(snapshot.meta.index >= barrier, 'a backup is read at or after its barrier');
    assert(snapshot.data !== null, 'a snapshot read for a backup carries its bytes');
    return {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      nodeId: this.node.id,
      data: snapshot.data,
    };
  }

  /** Wait (at most waitMs) until this node applied `index`: a follower may be a little behind the leader. */
  private appliedReaches(index: number): Promise<void> {
    const node = this.node;
    const deadlineMs = node.clock.nowMs() + this.waitMs;
    return new Promise<void>((resolve, reject) => {
      const poll = (): void => {
        const applied = node.stateMachine.appliedIndex;
        if (applied >= index) resolve();
        else if (node.isStopped) reject(new AspenError('SHUTTING_DOWN', `node ${node.id} is shutting down`));
        else if (node.clock.nowMs() >= deadlineMs)
          reject(
            new AspenError(
              'TIMEOUT',
              `backup: node ${node.id} applied ${applied} of ${index} within ${this.waitMs} ms; ask the leader`,
            ),
          );
        else node.clock.setTimer(BACKUP_CATCH_UP_POLL_MS, poll);
      };
      poll();
    });
  }
}
