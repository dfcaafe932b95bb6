import { describe, expect, it } from 'vitest';
import type { Log, LogFields, LogLevel } from '../../src/base/log.ts';
import { HealthMonitor } from '../../src/cluster/health.ts';
import { PeerWatch } from '../../src/cluster/peer-watch.ts';
import { describeRaftEvent, raftEvents, type RaftView } from '../../src/node/raft-events.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { NODE_NONE, type MembershipConfig } from '../../src/raft/types.ts';
import { TICK_MS, VirtualCluster } from '../node/virtual-cluster.ts';

/** The virtual nodes' longest election timeout: the bound of "quorum lost" and "unreachable". */
const ELECTION_MAX_MS = defaultRaftConfig(1).electionTicksMax * TICK_MS;
/** The health monitors sample this often (virtual time). */
const SAMPLE_MS = 20;

const THREE: MembershipConfig = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };

function view(
  role: RaftView['leadership']['role'],
  term: number,
  leaderId: number,
  more: Partial<RaftView> & { transferTarget?: number } = {},
): RaftView {
  return {
    leadership: { role, term, leaderId, transferTarget: more.transferTarget ?? NODE_NONE },
    membership: more.membership === undefined ? THREE : more.membership,
  };
}

/** The info-and-above lines `raftEvents` gives for node 1 going from `before` to `after`. */
function lines(before: RaftView, after: RaftView): string[] {
  return raftEvents(1, before, after)
    .map(describeRaftEvent)
    .filter((line) => line.level !== 'debug')
    .map((line) => line.line);
}

describe('Raft events, from the change between two views of a node', () => {
  it('a leader elected, and why a leader stepped down', () => {
    expect(lines(view('candidate', 2, NODE_NONE), view('leader', 2, 1))).toEqual([
      'leader elected: node 1 (this node) in term 2',
    ]);
    expect(lines(view('follower', 2, NODE_NONE), view('follower', 3, 2))).toEqual([
      'leader elected: node 2 in term 3',
    ]);
    expect(lines(view('leader', 3, 1), view('follower', 4, NODE_NONE))).toEqual([
      'stepped down as leader of term 3: a higher term (4) was seen',
    ]);
    expect(lines(view('leader', 3, 1, { transferTarget: 2 }), view('follower', 4, NODE_NONE))).toEqual([
      'stepped down as leader of term 3: leadership was transferred to node 2',
    ]);
    expect(lines(view('leader', 3, 1), view('follower', 3, NODE_NONE))).toEqual([
      'stepped down as leader of term 3: CheckQuorum: no quorum of voters answered within an election timeout',
    ]);
    const without = { voters: [2, 3], votersOutgoing: [], learners: [] };
    expect(lines(view('leader', 3, 1), view('follower', 3, NODE_NONE, { membership: without }))).toEqual([
      'stepped down as leader of term 3: this node was removed from the voters',
      'membership changed: voters [1, 2, 3], learners [] → voters [2, 3], learners []',
    ]);
    // Nothing changed, or only at debug (a term, a leader lost): no line at info.
    expect(lines(view('follower', 3, 2), view('follower', 3, 2))).toEqual([]);
    expect(lines(view('follower', 3, 2), view('pre_candidate', 3, NODE_NONE))).toEqual([]);
    const fields = raftEvents(1, view('follower', 3, 2), view('leader', 4, 1)).map(
      (event) => describeRaftEvent(event).fields,
    );
    expect(fields).toEqual([
      { event: 'term_changed', term: 4, previous_term: 3 },
      { event: 'leader_elected', term: 4, leader_id: 1 },
    ]);
  });

  it('a configuration: the first known, a simple change, the joint configuration entered and left', () => {
    const joint = { voters: [1, 4], votersOutgoing: [1, 2, 3], learners: [] };
    const after = { voters: [1, 4], votersOutgoing: [], learners: [] };
    expect(lines(view('follower', 1, 2, { membership: null }), view('follower', 1, 2))).toEqual([
      'membership: voters [1, 2, 3], learners []',
    ]);
    expect(lines(view('follower', 1, 2), view('follower', 1, 2, { membership: joint }))).toEqual([
      'membership: entered the joint configuration, voters [1, 2, 3] → [1, 4], learners [] (both majorities decide until it is left)',
    ]);
    expect(
      lines(view('follower', 1, 2, { membership: joint }), view('follower', 1, 2, { membership: after })),
    ).toEqual(['membership: left the joint configuration, voters [1, 4], learners []']);
    // A new configuration object with the same members (new addresses only) is no change.
    expect(lines(view('follower', 1, 2), view('follower', 1, 2, { membership: { ...THREE } }))).toEqual([]);
  });
});

interface Logged {
  readonly id: number;
  readonly level: LogLevel;
  readonly line: string;
  readonly fields: LogFields;
}

/** Three virtual nodes whose Raft events and health monitors log into one list. */
function watchedCluster(): {
  cluster: VirtualCluster;
  logged: Logged[];
  info: (id: number) => string[];
  run: (ms: number) => Promise<void>;
} {
  const logged: Logged[] = [];
  const monitors = new Map<number, HealthMonitor>();
  const cluster = new VirtualCluster(3, {}, undefined, {
    observer: {
      raftEvent: (id, event) => {
        logged.push({ id, ...describeRaftEvent(event) });
      },
    },
    delivered: (message) => {
      monitors.get(message.to)?.observe(message);
    },
  });
  for (const { id, node } of cluster.nodes) {
    const log: Log = (line, level = 'info', fields = {}) => {
      logged.push({ id, level, line, fields });
    };
    const nowMs = () => cluster.clock.nowMs();
    const peers = new PeerWatch({
      selfId: id,
      unreachableAfterMs: ELECTION_MAX_MS,
      log,
      peerIdOf: (peer) => `peer-of-${peer}`,
    });
    monitors.set(
      id,
      new HealthMonitor({
        subject: node,
        nowMs,
        electionTimeoutMaxMs: ELECTION_MAX_MS,
        storageFailed: () => false,
        log,
        peers,
      }),
    );
  }
  /** Run the cluster, sampling every monitor every SAMPLE_MS as its timer would. */
  const run = async (ms: number): Promise<void> => {
    for (let elapsed = 0; elapsed < ms; elapsed += SAMPLE_MS) {
      await cluster.run(SAMPLE_MS);
      for (const monitor of monitors.values()) monitor.observation();
    }
  };
  const info = (id: number) =>
    logged.filter((entry) => entry.id === id && entry.level !== 'debug').map((entry) => entry.line);
  return { cluster, logged, info, run };
}

describe('what a running node logs about Raft (virtual cluster)', () => {
  it('the configuration and the leader elected, on every node; a transfer; a higher term', async () => {
    const { cluster, info, run } = watchedCluster();
    await cluster.start();
    const leader = cluster.leader();
    const term = leader.node.status().term;
    for (const { id } of cluster.nodes) {
      expect(info(id)).toContain('membership: voters [1, 2, 3], learners []');
      expect(info(id)).toContain(
        `leader elected: node ${leader.id}${id === leader.id ? ' (this node)' : ''} in term ${term}`,
      );
    }

    const snapshot = await cluster.settle(leader.client.triggerSnapshot());
    expect(info(leader.id)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          new RegExp(
            `^snapshot taken at index ${snapshot.snapshot.index} term ${snapshot.snapshot.term} \\(\\d+ bytes\\)$`,
          ),
        ) as string,
      ]),
    );

    const successor = cluster.follower();
    await cluster.settle(
      new Promise((resolve) => {
        leader.node.transferLeadership(successor.id, resolve);
      }),
    );
    await run(300);
    expect(cluster.leader().id).toBe(successor.id);
    const newTerm = successor.node.status().term;
    expect(info(leader.id)).toContain(
      `stepped down as leader of term ${term}: leadership was transferred to node ${successor.id}`,
    );
    for (const { id } of cluster.nodes)
      expect(info(id)).toContain(
        `leader elected: node ${successor.id}${id === successor.id ? ' (this node)' : ''} in term ${newTerm}`,
      );

    // A candidate of a much higher term that the leader must heed (a transfer's vote ignores the lease).
    const status = successor.node.status();
    const disruptor = cluster.follower();
    successor.node.deliver({
      type: 'vote',
      from: disruptor.id,
      to: successor.id,
      term: newTerm + 5,
      lastLogIndex: status.lastIndex + 100,
      lastLogTerm: status.lastTerm + 5,
      transfer: true,
    });
    await cluster.run(TICK_MS);
    expect(info(successor.id)).toContain(
      `stepped down as leader of term ${newTerm}: a higher term (${newTerm + 5}) was seen`,
    );
  });

  it('a member unreachable and back, once each; quorum lost (CheckQuorum) and regained', async () => {
    const { cluster, logged, info, run } = watchedCluster();
    await cluster.start();
    await run(SAMPLE_MS);
    const leader = cluster.leader();
    const [one, two] = cluster.nodes.filter((entry) => entry !== leader) as [
      (typeof cluster.nodes)[0],
      (typeof cluster.nodes)[0],
    ];

    one.up = false; // partitioned: it keeps running, nothing reaches it or leaves it
    await run(ELECTION_MAX_MS * 3);
    one.up = true;
    await run(ELECTION_MAX_MS * 2);
    const about = (id: number) => info(leader.id).filter((line) => line.startsWith(`node ${id} `));
    expect(about(one.id)).toHaveLength(2);
    expect(about(one.id)[0]).toMatch(new RegExp(`^node ${one.id} unreachable: no answer for \\d+ ms$`));
    expect(about(one.id)[1]).toBe(`node ${one.id} reachable again`);
    expect(about(two.id)).toEqual([]);
    const unreachable = logged.find((entry) => entry.fields.event === 'peer_unreachable');
    expect(unreachable).toMatchObject({
      level: 'warn',
      fields: { peer_node_id: one.id, peer_id: `peer-of-${one.id}` },
    });
    expect(info(leader.id).some((line) => line.startsWith('quorum'))).toBe(false); // one of three away: the quorum stands

    const term = leader.node.status().term;
    // The partitioned node lost the quorum too (it heard no leader), and regained it on its return.
    expect(info(one.id).filter((line) => line.startsWith('quorum'))).toEqual([
      expect.stringMatching(/^quorum lost: no leader known for \d+ ms/) as string,
      `quorum regained: node ${leader.id} leads in term ${term}`,
    ]);
    const before = logged.length;
    const since = (id: number) =>
      logged
        .slice(before)
        .filter((entry) => entry.id === id)
        .map((entry) => entry.line);
    one.up = false;
    two.up = false;
    await run(ELECTION_MAX_MS * 4);
    expect(info(leader.id)).toContain(
      `stepped down as leader of term ${term}: CheckQuorum: no quorum of voters answered within an election timeout`,
    );
    for (const { id } of cluster.nodes) {
      const lost = since(id).filter((line) => line.startsWith('quorum lost: '));
      expect(lost, `node ${id}`).toHaveLength(1);
    }
    one.up = true;
    two.up = true;
    await run(ELECTION_MAX_MS * 4);
    const next = cluster.leader();
    for (const { id } of cluster.nodes)
      expect(since(id).filter((line) => line.startsWith('quorum regained: '))).toEqual([
        `quorum regained: node ${next.id} leads in term ${next.node.status().term}`,
      ]);
  });

  it('a membership change that removes the leader, told on every node', async () => {
    const { cluster, info, run } = watchedCluster();
    await cluster.start();
    const leader = cluster.leader();
    const term = leader.node.status().term;
    const others = cluster.nodes.filter((entry) => entry !== leader).map((entry) => entry.id);
    await cluster.settle(leader.client.changeMembership({ members: others }));
    await run(ELECTION_MAX_MS * 2);
    expect(info(leader.id)).toContain(
      `stepped down as leader of term ${term}: this node was removed from the voters`,
    );
    for (const id of others)
      expect(info(id).filter((line) => line.startsWith('membership'))).toEqual([
        'membership: voters [1, 2, 3], learners []',
        `membership: entered the joint configuration, voters [1, 2, 3] → [${others.join(', ')}], learners [] (both majorities decide until it is left)`,
        `membership: left the joint configuration, voters [${others.join(', ')}], learners []`,
      ]);
  });
});
