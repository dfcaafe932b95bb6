import { describe, expect, it } from 'vitest';
import type { Simulation } from '../../src/sim/simulation.ts';
import { scripted } from './scripted.ts';

/** Run in small steps until `done()` or the budget runs out; returns the virtual time it took. */
function runUntil(simulation: Simulation, done: () => boolean, budgetMs: number): number {
  const start = simulation.nowMs;
  for (let waited = 0; waited < budgetMs && !done(); waited += 10) simulation.runFor(10);
  return simulation.nowMs - start;
}

function change(simulation: Simulation, leader: number, voters: number[], learners: number[]): void {
  const handle = simulation.changeMembership(leader, { voters, learners });
  runUntil(simulation, () => handle.done, 3_000);
  expect(handle.errorCode).toBeNull();
  expect(handle.value?.voters).toEqual(voters);
  expect(handle.value?.votersOutgoing).toEqual([]);
  expect(handle.value?.learners).toEqual(learners);
}

function write(simulation: Simulation, node: number, key: string, value: string): void {
  const handle = simulation.write(node, key, value);
  runUntil(simulation, () => handle.done, 2_000);
  expect(handle.errorCode).toBeNull();
}

describe('membership changes, snapshots and leadership transfer in the simulator', () => {
  it("the seed's smoke test: 3 voters, add learners 4 and 5, promote to 5, write, shrink to [3], write and read on 3", () => {
    const simulation = scripted(5, 7, [0, 0, 0, 0, 0], { initialVoters: 3 });
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    expect([1, 2, 3]).toContain(leader);
    change(simulation, leader, [1, 2, 3], [4]);
    change(simulation, leader, [1, 2, 3], [4, 5]);
    // As /add-learner does: wait until both learners acknowledged the commit index, then promote.
    const caughtUp = () =>
      [4, 5].every(
        (id) =>
          (simulation.nodeStatus(leader)?.peers.find((peer) => peer.id === id)?.matchIndex ?? 0) >=
          (simulation.nodeStatus(leader)?.commitIndex ?? 1),
      );
    runUntil(simulation, caughtUp, 2_000);
    change(simulation, leader, [1, 2, 3, 4, 5], []);
    write(simulation, simulation.leaderId() ?? 0, 'greeting', 'hello world');
    change(simulation, simulation.leaderId() ?? 0, [3], []);
    runUntil(simulation, () => simulation.leaderId() === 3, 3_000);
    expect(simulation.leaderId()).toBe(3);
    write(simulation, 3, 'after', 'shrink');
    for (const key of ['greeting', 'after']) {
      const read = simulation.read(3, key);
      runUntil(simulation, () => read.done, 1_000);
      expect(read.ok).toBe(true);
    }
    expect(simulation.nodeStatus(3)?.membership).toMatchObject({
      voters: [3],
      votersOutgoing: [],
      learners: [],
    });
  });

  it('never promotes a learner that has not caught up; such a learner can be removed, and the cluster stays live', () => {
    const simulation = scripted(5, 11, [0, 0, 0, 0, 0], { initialVoters: 3 });
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    simulation.crash(4); // a learner added by mistake: it never answers
    change(simulation, leader, [1, 2, 3], [4, 5]);
    write(simulation, leader, 'before', 'promotion');
    runUntil(
      simulation,
      () =>
        (simulation.nodeStatus(leader)?.peers.find((peer) => peer.id === 5)?.matchIndex ?? 0) >=
        (simulation.nodeStatus(leader)?.commitIndex ?? 1),
      2_000,
    );
    const refused = simulation.changeMembership(leader, { voters: [1, 2, 3, 4, 5], learners: [] });
    runUntil(simulation, () => refused.done, 1_000);
    expect(refused.errorCode).toBe('LEARNER_NOT_CAUGHT_UP');
    expect(simulation.nodeStatus(leader)?.membership).toMatchObject({
      voters: [1, 2, 3],
      votersOutgoing: [],
      learners: [4, 5],
    });
    change(simulation, leader, [1, 2, 3, 5], []); // the caught-up learner is promoted; the silent one is removed
    write(simulation, simulation.leaderId() ?? 0, 'after', 'promotion');
    // A learner that answered once but fell silent for longer than an election timeout is refused too.
    change(simulation, simulation.leaderId() ?? 0, [1, 2, 3], [5]);
    simulation.crash(5);
    simulation.runFor(500);
    const stale = simulation.changeMembership(simulation.leaderId() ?? 0, {
      voters: [1, 2, 3, 5],
      learners: [],
    });
    runUntil(simulation, () => stale.done, 1_000);
    expect(stale.errorCode).toBe('LEARNER_NOT_CAUGHT_UP');
  });

  it('a learner that joins after 10,000 entries catches up through a snapshot', () => {
    const simulation = scripted(4, 7, [0, 0, 0, 0], {
      initialVoters: 3,
      snapshotThresholdEntries: 1_000,
      snapshotChunkBytes: 4_096,
    });
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    let acknowledged = 0;
    for (let batch = 0; batch < 10; batch += 1) {
      const result = simulation.writeMany(leader, 1_000, 200);
      runUntil(simulation, () => result.acknowledged === 1_000, 5_000);
      acknowledged += result.acknowledged;
    }
    expect(acknowledged).toBe(10_000);
    expect(simulation.nodeStatus(leader)?.snapshot?.index ?? 0).toBeGreaterThan(9_000);
    change(simulation, leader, [1, 2, 3], [4]);
    const caughtUp = () =>
      (simulation.nodeStatus(4)?.appliedIndex ?? 0) >= (simulation.nodeStatus(leader)?.commitIndex ?? 1);
    runUntil(simulation, caughtUp, 5_000);
    expect(caughtUp()).toBe(true);
    expect(simulation.snapshotsInstalled).toBeGreaterThanOrEqual(1);
    const read = simulation.read(leader, 'bulk-7');
    runUntil(simulation, () => read.done, 1_000);
    expect(read.value).toBe('807'); // the last of each batch of 1,000 writes to bulk-7
  });

  it('a removed leader hands over with TimeoutNow, faster than an election timeout', () => {
    const simulation = scripted(3);
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    const others = [1, 2, 3].filter((id) => id !== leader);
    const handle = simulation.changeMembership(leader, { voters: others, learners: [] });
    runUntil(simulation, () => handle.done, 2_000);
    expect(handle.ok).toBe(true);
    const handover = runUntil(simulation, () => others.includes(simulation.leaderId() ?? 0), 2_000);
    expect(others).toContain(simulation.leaderId());
    // electionTicksMin is 10 ticks of 10 ms: TimeoutNow makes the successor campaign at once.
    expect(handover).toBeLessThan(100);
    expect(simulation.nodeStatus(leader)?.role).toBe('follower');
  });

  it('a node removed while cut off does not disrupt the cluster when it comes back (PreVote, CheckQuorum)', () => {
    const simulation = scripted(3);
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    const outcast = [1, 2, 3].find((id) => id !== leader) ?? 0;
    const rest = [1, 2, 3].filter((id) => id !== outcast);
    simulation.partition([outcast], rest);
    change(simulation, leader, rest, []);
    const term = simulation.nodeStatus(leader)?.term;
    simulation.runFor(3_000); // the outcast times out again and again, but only pre-votes
    simulation.healNetwork();
    simulation.runFor(3_000);
    expect(simulation.leaderId()).toBe(leader);
    expect(simulation.nodeStatus(leader)?.term).toBe(term);
    write(simulation, leader, 'still', 'undisturbed');
  });

  it('leadership transfer to a caught-up voter', () => {
    const simulation = scripted(3);
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    const target = leader === 3 ? 2 : 3;
    simulation.transferLeadership(leader, target);
    runUntil(simulation, () => simulation.leaderId() === target, 500);
    expect(simulation.leaderId()).toBe(target);
  });

  it('refuses a second change while one is in flight, an empty voter set, and promoting a stranger', () => {
    const simulation = scripted(4, 7, [0, 0, 0, 0], { initialVoters: 3 });
    simulation.runFor(1_000);
    const leader = simulation.leaderId() ?? 0;
    const first = simulation.changeMembership(leader, { voters: [1, 2, 3], learners: [4] });
    const second = simulation.changeMembership(leader, { voters: [1, 2], learners: [] });
    const empty = simulation.changeMembership(leader, { voters: [], learners: [] });
    runUntil(simulation, () => first.done && second.done && empty.done, 2_000);
    expect(first.ok).toBe(true);
    expect(second.errorCode).toBe('MEMBERSHIP_CHANGE_IN_PROGRESS');
    expect(empty.errorCode).toBe('INVALID_INPUT');
    const stranger = simulation.changeMembership(leader, { voters: [1, 2, 3, 5], learners: [4] });
    runUntil(simulation, () => stranger.done, 500);
    expect(stranger.errorCode).toBe('INVALID_INPUT');
  });

  it('a learner never votes or counts: a cluster of one voter and three learners survives the learners crashing', () => {
    const simulation = scripted(4, 7, [0, 0, 0, 0], { initialVoters: 1 });
    simulation.runFor(500);
    expect(simulation.leaderId()).toBe(1);
    change(simulation, 1, [1], [2, 3, 4]);
    for (const id of [2, 3, 4]) simulation.crash(id);
    write(simulation, 1, 'alone', 'still commits');
    for (const id of [2, 3, 4]) expect(simulation.nodeStatus(id)).toBeUndefined();
    for (const id of [2, 3, 4]) simulation.restart(id);
    simulation.crash(1);
    simulation.runFor(3_000);
    // Learners never campaign, so with the only voter down there is no leader.
    expect(simulation.leaderId()).toBeUndefined();
  });
});
