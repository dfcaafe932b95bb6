import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/base/assert.ts';
import { RaftCore } from '../../src/raft/core.ts';
import { RaftLog } from '../../src/raft/log.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import type { Entry, Message, NodeId } from '../../src/raft/types.ts';
import { Cluster } from './cluster.ts';

const text = (entry: Entry | undefined): string =>
  entry?.kind === 'command' ? new TextDecoder().decode(entry.data) : (entry?.kind ?? 'none');

function logOf(cluster: Cluster, id: NodeId): Entry[] {
  const core = cluster.core(id);
  const entries: Entry[] = [];
  for (let index = core.log.firstIndex(); index <= core.log.lastIndex(); index += 1) {
    const entry = core.log.entry(index);
    if (entry !== undefined) entries.push(entry);
  }
  return entries;
}

describe('Raft paper, Figure 3', () => {
  it('election safety: at most one leader per term, under random partitions (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 5, maxLength: 30 }),
        (seed, script) => {
          const cluster = new Cluster([1, 2, 3, 4, 5], {}, seed);
          cluster.bootstrap(1, [1, 2, 3, 4, 5]);
          const leaderOfTerm = new Map<number, NodeId>();
          for (const step of script) {
            if (step === 0) cluster.heal();
            else cluster.isolate(step);
            for (let tick = 0; tick < 8; tick += 1) {
              cluster.tickAll(1);
              for (const core of cluster.cores.values()) {
                const status = core.status();
                if (status.role !== 'leader') continue;
                const known = leaderOfTerm.get(status.term);
                if (known !== undefined && known !== status.id) return false;
                leaderOfTerm.set(status.term, status.id);
              }
            }
          }
          return true;
        },
      ),
      { numRuns: 30 },
    );
  });

  it('a candidate needs a majority: an isolated node never leads', () => {
    const cluster = new Cluster([1, 2, 3], { preVote: false, checkQuorum: false });
    cluster.bootstrap(1, [1, 2, 3]);
    cluster.isolate(3);
    cluster.tickAll(100);
    expect(cluster.core(3).status().role).not.toBe('leader');
    expect(cluster.core(3).status().term).toBeGreaterThan(2); // it did try (no PreVote here)
  });

  it('a node grants at most one vote per term, also after a crash and restart', () => {
    const cluster = new Cluster([1, 2, 3], { preVote: false });
    const voter = cluster.core(3);
    const request = (from: NodeId): Message => ({
      type: 'vote',
      from,
      to: 3,
      term: 5,
      lastLogIndex: 0,
      lastLogTerm: 0,
      transfer: false,
    });
    voter.step(request(1));
    cluster.process(3);
    const first = cluster.sent.filter((message) => message.type === 'vote_response' && message.granted);
    expect(first.map((message) => message.to)).toEqual([1]);
    cluster.crash(3);
    cluster.restart(3);
    cluster.core(3).step(request(2));
    cluster.process(3);
    const responses = cluster.sent.filter((message) => message.type === 'vote_response' && message.to === 2);
    expect(responses).toHaveLength(1);
    expect(responses[0]?.type === 'vote_response' && responses[0].granted).toBe(false);
  });

  it('denies a vote to a candidate whose log is less up to date (last term, then last index)', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    cluster.propose(1, 'a');
    cluster.stabilize();
    const follower = cluster.core(2);
    const { lastIndex, lastTerm } = follower.status();
    const ask = (lastLogIndex: number, lastLogTerm: number): boolean => {
      const before = cluster.sent.length;
      follower.step({
        type: 'vote',
        from: 3,
        to: 2,
        term: 50 + cluster.sent.length,
        lastLogIndex,
        lastLogTerm,
        transfer: true,
      });
      cluster.process(2);
      const reply = cluster.sent.slice(before).find((message) => message.type === 'vote_response');
      return reply?.type === 'vote_response' && reply.granted;
    };
    expect(ask(lastIndex + 10, lastTerm - 1)).toBe(false);
    expect(ask(lastIndex - 1, lastTerm)).toBe(false);
    expect(ask(lastIndex, lastTerm)).toBe(true);
  });

  it('leader append-only, log matching, leader completeness and state machine safety across leader changes', () => {
    const cluster = new Cluster([1, 2, 3, 4, 5], {}, 9);
    cluster.bootstrap(1, [1, 2, 3, 4, 5]);
    const committed: Entry[] = [];
    for (let round = 0; round < 12; round += 1) {
      const leader = cluster.leaders()[0];
      if (leader === undefined) {
        cluster.tickAll(25);
        continue;
      }
      const before = logOf(cluster, leader);
      cluster.propose(leader, `r${round}`);
      cluster.isolate(leader);
      cluster.propose(leader, `lost${round}`); // never reaches anyone
      cluster.tickAll(30);
      const after = logOf(cluster, leader);
      expect(after.slice(0, before.length)).toEqual(before); // a leader never overwrites its own log
      cluster.heal();
      cluster.tickAll(30);
      const newLeader = cluster.leaders()[0];
      if (newLeader === undefined) continue;
      const leaderLog = logOf(cluster, newLeader);
      for (const entry of committed) expect(leaderLog[entry.index - 1]).toEqual(entry); // completeness
      const commit = cluster.core(newLeader).status().commitIndex;
      committed.splice(0, committed.length, ...leaderLog.slice(0, commit));
    }
    const logs = [1, 2, 3, 4, 5].map((id) => logOf(cluster, id));
    for (const a of logs) {
      for (const b of logs) {
        for (let index = Math.min(a.length, b.length) - 1; index >= 0; index -= 1) {
          if (a[index]?.term === b[index]?.term) {
            expect(a.slice(0, index + 1)).toEqual(b.slice(0, index + 1)); // log matching
            break;
          }
        }
      }
    }
    const applied = [1, 2, 3, 4, 5].map((id) => cluster.applied.get(id) ?? []);
    for (const list of applied)
      for (const entry of list) expect(applied[0]?.[entry.index - 1] ?? entry).toEqual(entry);
    expect(committed.length).toBeGreaterThan(5);
  });

  it('Figure 8: an old-term entry acknowledged by a majority is not committed until a current-term entry is', () => {
    const config = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };
    const core = new RaftCore({ ...defaultRaftConfig(1), preVote: false }, new SeededPrng(1), {
      hardState: { term: 3, vote: 0, commit: 1 },
      entries: [
        { kind: 'config', term: 1, index: 1, config },
        { kind: 'blank', term: 2, index: 2 }, // written by the leader of term 2, never committed
      ],
    });
    const drain = (): void => {
      for (let round = 0; round < 5 && core.hasReady(); round += 1) core.advance(core.ready());
    };
    for (let tick = 0; tick < defaultRaftConfig(1).electionTicksMax; tick += 1) core.tick();
    drain();
    core.step({ type: 'vote_response', from: 2, to: 1, term: 4, granted: true });
    drain();
    expect(core.status().role).toBe('leader');
    expect(core.log.term(3)).toBe(4); // the blank entry of term 4
    // Follower 2 acknowledges the term-2 entry only: with the leader that is a majority for index 2.
    core.step({
      type: 'append_response',
      from: 2,
      to: 1,
      term: 4,
      success: true,
      index: 2,
      hintIndex: 0,
      hintTerm: 0,
    });
    drain();
    expect(core.status().commitIndex).toBe(1);
    core.step({
      type: 'append_response',
      from: 2,
      to: 1,
      term: 4,
      success: true,
      index: 3,
      hintIndex: 0,
      hintTerm: 0,
    });
    drain();
    expect(core.status().commitIndex).toBe(3);
  });
});

describe('core behaviours', () => {
  it('PreVote: a partitioned node that rejoins does not raise the term or disrupt the leader', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    const term = cluster.core(leader).status().term;
    const outsider = [1, 2, 3].find((id) => id !== leader) ?? 0;
    cluster.isolate(outsider);
    cluster.tickAll(200);
    expect(cluster.core(outsider).status().term).toBe(term);
    cluster.heal();
    cluster.tickAll(50);
    expect(cluster.leaders()).toEqual([leader]);
    expect(cluster.core(leader).status().term).toBe(term);
  });

  it('CheckQuorum: a leader cut off from the majority steps down within two election timeouts', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    cluster.isolate(leader);
    cluster.tickAll(2 * defaultRaftConfig(1).electionTicksMin);
    expect(cluster.core(leader).status().role).toBe('follower');
  });

  it('the leader reports how long ago a quorum acknowledged it; followers report nothing', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    const follower = [1, 2, 3].find((id) => id !== leader) ?? 0;
    expect(cluster.core(leader).status().ticksSinceQuorumAck).toBe(0);
    expect(cluster.core(follower).status().ticksSinceQuorumAck).toBeNull();
    cluster.isolate(leader);
    const ticks = defaultRaftConfig(1).electionTicksMin - 1;
    cluster.tick(leader, ticks);
    expect(cluster.core(leader).status().ticksSinceQuorumAck).toBe(ticks);
    cluster.heal();
    cluster.tick(leader, defaultRaftConfig(1).heartbeatTicks);
    cluster.stabilize();
    expect(cluster.core(leader).status().ticksSinceQuorumAck).toBe(0);
  });

  it('an uninitialized node and a learner never campaign', () => {
    const cluster = new Cluster([1, 2]);
    cluster.tickAll(100);
    expect(cluster.core(1).status().term).toBe(0);
    cluster.bootstrap(1, [1]);
    const change = cluster.core(1).proposeMembership({ voters: [1], learners: [2] });
    expect(change.ok).toBe(true);
    cluster.stabilize();
    cluster.crash(1);
    cluster.tickAll(200);
    expect(cluster.core(2).status().role).toBe('follower');
    expect(cluster.core(2).status().membership?.learners).toEqual([2]);
  });

  it('a follower with a long divergent log is repaired in few round trips (conflict hints)', () => {
    const cluster = new Cluster([1, 2, 3], { appendEntriesMax: 1024 });
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    const victim = [1, 2, 3].find((id) => id !== leader) ?? 0;
    cluster.isolate(leader);
    for (let index = 0; index < 300; index += 1) cluster.propose(leader, `stale-${index}`);
    cluster.processAll();
    cluster.tickAll(40); // the others elect a new leader
    const newLeader = cluster.leaders().find((id) => id !== leader) ?? 0;
    for (let index = 0; index < 50; index += 1) cluster.propose(newLeader, `fresh-${index}`);
    cluster.stabilize();
    cluster.heal();
    const before = cluster.sent.filter(
      (message) => message.type === 'append_response' && !message.success,
    ).length;
    cluster.tickAll(30);
    const rejections =
      cluster.sent.filter((message) => message.type === 'append_response' && !message.success).length -
      before;
    expect(rejections).toBeLessThanOrEqual(4);
    expect(text(cluster.core(leader).log.entry(cluster.core(leader).status().lastIndex))).not.toMatch(
      /stale/,
    );
    expect(victim).toBeGreaterThan(0);
  });

  it('never has more than inflightAppendsMax unacknowledged appends to a follower', () => {
    const inflight = 4;
    const cluster = new Cluster([1, 2], { inflightAppendsMax: inflight, appendEntriesMax: 1 });
    cluster.bootstrap(1, [1, 2]);
    for (let index = 0; index < 50; index += 1) cluster.propose(1, `e${index}`);
    cluster.processAll();
    const appends = cluster.queue.filter(
      (message) => message.type === 'append' && message.entries.length > 0,
    );
    expect(appends.length).toBe(inflight);
  });

  it('a new commit index alone sends no message: followers learn it with the next heartbeat', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    const followers = [1, 2, 3].filter((id) => id !== leader);
    const sentBefore = cluster.sent.length;
    cluster.propose(leader, 'x');
    cluster.stabilize();
    const appendSizes = cluster.sent
      .slice(sentBefore)
      .flatMap((message) => (message.type === 'append' ? [message.entries.length] : []));
    expect(appendSizes).toEqual([1, 1]);
    const committed = cluster.core(leader).status().commitIndex;
    for (const id of followers) expect(cluster.core(id).status().commitIndex).toBeLessThan(committed);
    cluster.tick(leader, 1); // heartbeatTicks is 1
    cluster.stabilize();
    for (const id of followers) expect(cluster.core(id).status().commitIndex).toBe(committed);
  });

  it('rejects proposals on a follower with the leader id, and past the uncommitted bound with overloaded', () => {
    const cluster = new Cluster([1, 2, 3], { uncommittedEntriesMax: 5 });
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.leaders()[0] ?? 0;
    const follower = [1, 2, 3].find((id) => id !== leader) ?? 0;
    const rejection = cluster.core(follower).propose(new Uint8Array(1));
    expect(rejection).toEqual({ ok: false, error: { code: 'not_leader', leaderId: leader } });
    cluster.isolate(leader);
    const results = Array.from({ length: 8 }, () => cluster.core(leader).propose(new Uint8Array(1)));
    expect(results.map((result) => (result.ok ? 'ok' : result.error.code))).toContain('overloaded');
  });

  it('ReadIndex: released only after a quorum acknowledges the round; reads of one turn share one round', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.core(cluster.leaders()[0] ?? 0);
    for (let id = 1; id <= 10; id += 1) expect(leader.readIndex(id).ok).toBe(true);
    cluster.process(leader.id);
    expect(cluster.readStates.get(leader.id) ?? []).toEqual([]);
    const heartbeats = cluster.queue.filter((message) => message.type === 'heartbeat');
    expect(heartbeats).toHaveLength(2); // one round for ten reads, to each follower
    cluster.stabilize();
    expect(cluster.readStates.get(leader.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('ReadIndex: a partitioned leader cannot confirm reads and fails them when it steps down', () => {
    const cluster = new Cluster([1, 2, 3]);
    cluster.bootstrap(1, [1, 2, 3]);
    const leaderId = cluster.leaders()[0] ?? 0;
    cluster.isolate(leaderId);
    expect(cluster.core(leaderId).readIndex(7).ok).toBe(true);
    cluster.tickAll(2 * defaultRaftConfig(1).electionTicksMin);
    expect(cluster.readStates.get(leaderId) ?? []).toEqual([]);
    expect(cluster.readFailures.get(leaderId)).toEqual([7]);
  });

  it('a single-node cluster commits and reads alone', () => {
    const cluster = new Cluster([1]);
    cluster.bootstrap(1, [1]);
    const index = cluster.propose(1, 'solo');
    cluster.stabilize();
    expect(cluster.core(1).status().commitIndex).toBe(index);
    expect(cluster.core(1).readIndex(1).ok).toBe(true);
    cluster.stabilize();
    expect(cluster.readStates.get(1)).toEqual([1]);
  });

  it('a leader that appended its own demotion and lost its quorum can still be replaced', () => {
    // Regression (simulator seed 997): the joint configuration needs the demoted node's vote.
    const cluster = new Cluster([1, 2, 3], {}, 5);
    cluster.bootstrap(1, [1, 2]);
    const leader = cluster.leaders()[0] ?? 0;
    expect(leader).toBe(1);
    expect(cluster.core(1).proposeMembership({ voters: [1, 2], learners: [3] }).ok).toBe(true);
    cluster.stabilize();
    expect(cluster.core(1).proposeMembership({ voters: [2, 3], learners: [1] }).ok).toBe(true);
    cluster.stabilize(); // joint [2,3] & [1,2] commits; node 1 appends C_new and steps down once it commits
    cluster.tickAll(60);
    expect(cluster.leaders().length).toBe(1);
    expect([2, 3]).toContain(cluster.leaders()[0]);
    expect(cluster.core(2).status().membership).toMatchObject({
      voters: [2, 3],
      votersOutgoing: [],
      learners: [1],
    });
  });

  it('after a torn write left entries of a newer term, a restarted node moves to that term with no vote', () => {
    const core = new RaftCore(defaultRaftConfig(1), new SeededPrng(1), {
      hardState: { term: 2, vote: 3, commit: 1 },
      entries: [
        { kind: 'blank', term: 1, index: 1 },
        { kind: 'blank', term: 4, index: 2 },
      ],
    });
    expect(core.status().term).toBe(4);
    expect(core.status().vote).toBe(0);
    expect(core.hasReady()).toBe(true); // the new term is persisted before anything else happens
    expect(core.ready().hardState).toEqual({ term: 4, vote: 0, commit: 1 });
  });

  it('timers go through step(): local messages script an election, a heartbeat and a quorum check', () => {
    const cluster = new Cluster([1, 2, 3], { preVote: false });
    cluster.bootstrap(1, [1, 2, 3]);
    expect(cluster.leaders()).toEqual([1]);
    const term = cluster.core(1).status().term;
    cluster.core(1).step({ type: 'hup' }); // a leader ignores hup
    expect(cluster.core(1).status()).toMatchObject({ role: 'leader', term });
    const heartbeats = (): number => cluster.sent.filter((message) => message.type === 'heartbeat').length;
    const before = heartbeats();
    cluster.core(1).step({ type: 'beat' });
    cluster.core(2).step({ type: 'beat' }); // a follower ignores beat
    cluster.stabilize();
    expect(heartbeats()).toBe(before + 2);
    cluster.isolate(1);
    cluster.core(1).step({ type: 'check_quorum' }); // the heartbeat acks count once
    expect(cluster.core(1).status().role).toBe('leader');
    cluster.core(1).step({ type: 'check_quorum' });
    expect(cluster.core(1).status().role).toBe('follower');
    cluster.core(2).step({ type: 'hup' }); // node 3 still hears node 1's lease: no vote yet
    expect(cluster.core(2).status()).toMatchObject({ role: 'candidate', term: term + 1, vote: 2 });
  });

  it('Ready: a leader sends and applies before its sync; acks and votes wait for it', () => {
    const cluster = new Cluster([1, 2, 3], { preVote: false });
    cluster.bootstrap(1, [1, 2, 3]);
    const leader = cluster.core(1);
    cluster.propose(1, 'x');
    const proposal = leader.ready();
    expect(proposal).toMatchObject({ mustSync: true, applyBeforePersist: true });
    expect(proposal.messages.map((message) => message.type)).toEqual(['append', 'append']);
    expect(proposal.messagesAfterPersist).toEqual([]);
    leader.advance(proposal);
    const follower = cluster.core(2);
    for (const message of proposal.messages) if (message.to === 2) follower.step(message);
    const ack = follower.ready();
    expect(ack).toMatchObject({ mustSync: true, messages: [], applyBeforePersist: false });
    expect(ack.messagesAfterPersist.map((message) => message.type)).toEqual(['append_response']);
    follower.advance(ack);
    for (const message of ack.messagesAfterPersist) leader.step(message);
    const commitOnly = leader.ready();
    expect(commitOnly).toMatchObject({ mustSync: false, hardState: null, entries: [] });
    expect(commitOnly.commitIndex).toBe(leader.status().lastIndex);
    expect(commitOnly.committedEntries.map(text)).toEqual(['x']);
    leader.advance(commitOnly);
    cluster.propose(1, 'y'); // the deferred commit index goes out with the next synced batch
    const next = leader.ready();
    expect(next.hardState?.commit).toBe(commitOnly.commitIndex);
    leader.advance(next);
    cluster.core(3).step({ type: 'hup' });
    const campaign = cluster.core(3).ready();
    expect(campaign).toMatchObject({ mustSync: true, messages: [], applyBeforePersist: false });
    expect(campaign.hardState).toMatchObject({ vote: 3 });
    expect(campaign.messagesAfterPersist.map((message) => message.type)).toEqual(['vote', 'vote']);
  });

  it('the log asserts instead of truncating a committed entry', () => {
    const log = new RaftLog();
    log.restore(
      null,
      [
        { kind: 'blank', term: 1, index: 1 },
        { kind: 'blank', term: 2, index: 2 },
      ],
      2,
    );
    expect(() => log.maybeAppend(1, 1, 2, [{ kind: 'blank', term: 3, index: 2 }])).toThrow(AssertionError);
    expect(log.maybeAppend(2, 2, 2, [{ kind: 'blank', term: 3, index: 3 }])).toBe(3);
  });
});
