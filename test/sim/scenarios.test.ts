import { describe, expect, it } from 'vitest';
import type { Simulation } from '../../src/sim/simulation.ts';
import { scripted } from './scripted.ts';

function electedLeader(simulation: Simulation): number {
  simulation.runFor(1_000);
  const leader = simulation.leaderId();
  expect(leader).toBeDefined();
  return leader ?? 0;
}

function commitWrite(simulation: Simulation, nodeId: number, key: string, value: string): number {
  const handle = simulation.write(nodeId, key, value);
  simulation.runFor(500);
  expect(handle.errorCode).toBeNull();
  expect(handle.ok).toBe(true);
  return handle.value ?? 0;
}

describe('simulator scenarios (the original madsim suite)', () => {
  it('elects a different leader after the leader crashes, keeping committed writes', () => {
    const simulation = scripted(3);
    const first = electedLeader(simulation);
    commitWrite(simulation, first, 'a', '1');
    simulation.crash(first);
    simulation.runFor(1_000);
    const second = simulation.leaderId();
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    const read = simulation.read(second ?? 0, 'a');
    simulation.runFor(200);
    expect(read.value).toBe('1');
  });

  it('a partitioned minority cannot elect or commit while the majority keeps committing', () => {
    const simulation = scripted(5);
    const leader = electedLeader(simulation);
    const others = [1, 2, 3, 4, 5].filter((id) => id !== leader);
    const minority = [leader, others[0] ?? 0];
    const majority = others.slice(1);
    simulation.partition(minority, majority);
    const stranded = simulation.write(leader, 'x', 'minority');
    simulation.runFor(2_000);
    // The old leader stepped down (CheckQuorum) and its write never committed.
    expect(simulation.nodeStatus(leader)?.role).not.toBe('leader');
    expect(stranded.ok).toBe(false);
    const newLeader = simulation.leaderId();
    expect(newLeader !== undefined && majority.includes(newLeader)).toBe(true);
    commitWrite(simulation, newLeader ?? 0, 'x', 'majority');
    for (const id of minority) expect(simulation.nodeStatus(id)?.role).not.toBe('leader');
    simulation.healNetwork();
    simulation.runFor(1_000);
    const read = simulation.read(simulation.leaderId() ?? 0, 'x');
    simulation.runFor(200);
    expect(read.value).toBe('majority');
  });

  it('an asymmetric partition (leader cannot send to one follower) heals', () => {
    const simulation = scripted(3);
    const leader = electedLeader(simulation);
    const follower = [1, 2, 3].find((id) => id !== leader) ?? 0;
    simulation.cutOneWay(leader, follower);
    simulation.runFor(1_500);
    const current = simulation.leaderId() ?? 0;
    commitWrite(simulation, current, 'k', 'during');
    simulation.healNetwork();
    simulation.runFor(1_500);
    const statuses = [1, 2, 3].map((id) => simulation.nodeStatus(id));
    const applied = statuses.map((status) => status?.appliedIndex);
    expect(new Set(applied).size).toBe(1);
  });

  it('5 nodes with 2 crashed keep committing; with 3 crashed they cannot', () => {
    const simulation = scripted(5);
    const leader = electedLeader(simulation);
    const followers = [1, 2, 3, 4, 5].filter((id) => id !== leader);
    simulation.crash(followers[0] ?? 0);
    simulation.crash(followers[1] ?? 0);
    commitWrite(simulation, leader, 'a', 'with-three');
    simulation.crash(followers[2] ?? 0);
    const blocked = simulation.write(leader, 'a', 'with-two');
    simulation.runFor(3_000);
    expect(blocked.ok).toBe(false);
  });

  it('rolling crashes: every node restarts in turn and no committed write is lost', () => {
    const simulation = scripted(3);
    electedLeader(simulation);
    for (let round = 0; round < 6; round += 1) {
      const leader = simulation.leaderId() ?? 0;
      commitWrite(simulation, leader, `key-${round}`, `value-${round}`);
      const victim = (round % 3) + 1;
      simulation.crash(victim);
      simulation.runFor(1_200);
      simulation.restart(victim);
      simulation.runFor(800);
    }
    const leader = simulation.leaderId() ?? 0;
    for (let round = 0; round < 6; round += 1) {
      const read = simulation.read(leader, `key-${round}`);
      simulation.runFor(200);
      expect(read.value).toBe(`value-${round}`);
    }
  });

  it('a partitioned old leader cannot serve a stale read', () => {
    const simulation = scripted(3);
    const oldLeader = electedLeader(simulation);
    commitWrite(simulation, oldLeader, 'r', 'old');
    const others = [1, 2, 3].filter((id) => id !== oldLeader);
    simulation.partition([oldLeader], others);
    simulation.runFor(3_000);
    const newLeader = simulation.leaderId();
    expect(newLeader !== undefined && others.includes(newLeader)).toBe(true);
    commitWrite(simulation, newLeader ?? 0, 'r', 'new');
    const stale = simulation.read(oldLeader, 'r');
    simulation.runFor(1_000);
    expect(stale.ok).toBe(false);
    expect(stale.value).toBeNull();
  });

  it('an old leader that still believes it leads cannot serve a stale read (ReadIndex, not a lease)', () => {
    // Node 1 (the first leader) ticks at half speed, so it notices its lost quorum long after the
    // others have elected a new leader and committed a newer value.
    const simulation = scripted(3, 7, [1, 0, 0]);
    expect(electedLeader(simulation)).toBe(1);
    commitWrite(simulation, 1, 'r', 'old');
    simulation.partition([1], [2, 3]);
    let newLeader: number | undefined;
    for (let waited = 0; waited < 1_000 && newLeader === undefined; waited += 10) {
      simulation.runFor(10);
      newLeader = [2, 3].find((id) => simulation.nodeStatus(id)?.role === 'leader');
    }
    expect(newLeader).toBeDefined();
    const write = simulation.write(newLeader ?? 0, 'r', 'new');
    for (let waited = 0; waited < 500 && !write.done; waited += 1) simulation.runFor(1);
    expect(write.ok).toBe(true);
    expect(simulation.nodeStatus(1)?.role).toBe('leader'); // still believes it leads
    const stale = simulation.read(1, 'r');
    simulation.runFor(2_000);
    expect(stale.done).toBe(true);
    expect(stale.ok).toBe(false);
    expect(stale.errorCode).toBe('NOT_LEADER');
  });

  it('rejects a write on a follower with NOT_LEADER', () => {
    const simulation = scripted(3);
    const leader = electedLeader(simulation);
    const follower = [1, 2, 3].find((id) => id !== leader) ?? 0;
    const handle = simulation.write(follower, 'f', 'v');
    simulation.runFor(10);
    expect(handle.errorCode).toBe('NOT_LEADER');
  });
});
