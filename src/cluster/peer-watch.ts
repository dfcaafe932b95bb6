import { assert } from '../base/assert.ts';
import type { Log } from '../base/log.ts';
import { CLUSTER_NODES_MAX, allMembers } from '../raft/quorum.ts';
import type { MembershipConfig, NodeId, Role } from '../raft/types.ts';

export interface PeerWatchOptions {
  readonly selfId: NodeId;
  /** A member the leader has not heard from for longer than this is unreachable. */
  readonly unreachableAfterMs: number;
  readonly log: Log;
  /** The libp2p peer id a member is bound to, when known (a field of the log line). */
  readonly peerIdOf?: (id: NodeId) => string | undefined;
}

/**
 * Which members a leader can reach, from the answers it gets: every member answers the leader's
 * appends and heartbeats, so one silent for longer than `unreachableAfterMs` is unreachable (down,
 * partitioned, or refusing our cookie). Each change is logged once, by node id: "node 3 unreachable",
 * later "node 3 reachable again", never once per retry. Only a leader judges (followers do not talk
 * to each other); what it judged is forgotten when it stops leading.
 */
export class PeerWatch {
  private readonly options: PeerWatchOptions;
  /** When each member was last heard from (members only: at most CLUSTER_NODES_MAX entries). */
  private readonly heardAtMs = new Map<NodeId, number>();
  private readonly unreachable = new Set<NodeId>();
  /** When this node became leader (null: not leading). */
  private leaderSinceMs: number | null = null;
  private members: readonly NodeId[] = [];

  constructor(options: PeerWatchOptions) {
    assert(options.unreachableAfterMs > 0, 'the unreachable bound is positive');
    this.options = options;
  }

  /** A message from `from` arrived. */
  heard(from: NodeId, nowMs: number): void {
    if (this.heardAtMs.has(from) || this.members.includes(from)) this.heardAtMs.set(from, nowMs);
  }

  /** Look at every member now (called every HEALTH_SAMPLE_INTERVAL_MS). */
  sample(role: Role, membership: MembershipConfig | null, nowMs: number): void {
    this.members =
      membership === null ? [] : allMembers(membership).filter((id) => id !== this.options.selfId);
    assert(this.members.length <= CLUSTER_NODES_MAX, 'members are bounded by the cluster size');
    for (const id of this.heardAtMs.keys()) if (!this.members.includes(id)) this.heardAtMs.delete(id);
    for (const id of this.unreachable) if (!this.members.includes(id)) this.unreachable.delete(id);
    if (role !== 'leader') {
      this.leaderSinceMs = null;
      this.unreachable.clear();
      return;
    }
    this.leaderSinceMs ??= nowMs;
    for (const id of this.members) this.check(id, nowMs, this.leaderSinceMs);
  }

  private check(id: NodeId, nowMs: number, leaderSinceMs: number): void {
    const silentMs = nowMs - Math.max(this.heardAtMs.get(id) ?? 0, leaderSinceMs);
    const silent = silentMs > this.options.unreachableAfterMs;
    if (silent === this.unreachable.has(id)) return;
    const peerId = this.options.peerIdOf?.(id);
    const fields = {
      event: silent ? 'peer_unreachable' : 'peer_reachable',
      peer_node_id: id,
      ...(peerId === undefined ? {} : { peer_id: peerId }),
    };
    if (silent) {
      this.unreachable.add(id);
      this.options.log(`node ${id} unreachable: no answer for ${silentMs} ms`, 'warn', fields);
    } else {
      this.unreachable.delete(id);
      this.options.log(`node ${id} reachable again`, 'info', fields);
    }
  }
}
