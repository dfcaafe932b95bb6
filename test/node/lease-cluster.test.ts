import { describe, expect, it } from 'vitest';
import { AspenError } from '../../src/api/errors.ts';
import { LEASE_CHECK_INTERVAL_MS } from '../../src/node/lessor.ts';
import type { LeaseMutations } from '../../src/node/lease-keeper.ts';
import { VirtualCluster, type VirtualNode } from './virtual-cluster.ts';

/** How long after its deadline an expired lease's keys may still be read on a healthy cluster. */
const EXPIRY_BOUND_MS = LEASE_CHECK_INTERVAL_MS + 200;

async function refusal(cluster: VirtualCluster, promise: Promise<unknown>): Promise<AspenError> {
  const error: unknown = await cluster.settle(promise).then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(AspenError);
  return error as AspenError;
}

async function started(
  size = 3,
  mutations: LeaseMutations = {},
  keepAlivesPerSecondMax?: number,
): Promise<VirtualCluster> {
  const cluster = new VirtualCluster(size, mutations, keepAlivesPerSecondMax);
  await cluster.start();
  return cluster;
}

/** Grant a lease on the leader and put `key` on it. */
async function leasedKey(cluster: VirtualCluster, key: string, ttlSeconds: number): Promise<number> {
  const { client, leases } = cluster.leader();
  const grant = await cluster.settle(leases.grant({ ttl_seconds: ttlSeconds }));
  expect(grant.ttl_seconds).toBe(ttlSeconds);
  await cluster.settle(client.write({ command: { Set: { key, value: 'v', lease_id: grant.lease_id } } }));
  return grant.lease_id;
}

async function present(cluster: VirtualCluster, on: VirtualNode, key: string): Promise<boolean> {
  try {
    await cluster.settle(on.client.read({ key }));
    return true;
  } catch (error) {
    if (error instanceof AspenError && error.code === 'KEY_NOT_FOUND') return false;
    throw error;
  }
}

describe('leases on a three-node cluster (virtual time)', () => {
  it('grants a lease, attaches a key, shows it in info and list', async () => {
    const cluster = await started();
    const { client, leases } = cluster.leader();
    const grant = await cluster.settle(leases.grant({ ttl_seconds: 5 }));
    expect(grant).toEqual({ lease_id: grant.lease_id, ttl_seconds: 5, log_index: grant.log_index });
    expect(grant.lease_id).toBeGreaterThanOrEqual(grant.log_index);
    const chosen = await cluster.settle(leases.grant({ ttl_seconds: 7, lease_id: 1_000 }));
    expect(chosen.lease_id).toBe(1_000);
    await cluster.settle(
      client.write({ command: { Set: { key: 'b', value: '1', lease_id: grant.lease_id } } }),
    );
    await cluster.settle(
      client.write({ command: { Set: { key: 'a', value: '2', lease_id: grant.lease_id } } }),
    );
    const read = await cluster.settle(client.read({ key: 'a' }));
    expect(read.lease_id).toBe(grant.lease_id);
    const info = await cluster.settle(leases.info({ lease_id: grant.lease_id, keys: true }));
    expect(info).toEqual({
      lease_id: grant.lease_id,
      ttl_seconds: 5,
      remaining_seconds: 5,
      keys: ['a', 'b'],
      keys_truncated: false,
    });
    await cluster.run(1_500);
    const later = await cluster.settle(leases.info({ lease_id: grant.lease_id }));
    expect(later).toEqual({ lease_id: grant.lease_id, ttl_seconds: 5, remaining_seconds: 4 });
    const list = await cluster.settle(leases.list());
    expect(list.leases.map((lease) => lease.lease_id)).toEqual([grant.lease_id, 1_000]);
    expect(list.leases.find((lease) => lease.lease_id === 1_000)).toEqual({
      lease_id: 1_000,
      ttl_seconds: 7,
      remaining_seconds: 6,
    });
  });

  it('refuses a second grant of an id (LEASE_EXISTS), a Set on an unknown lease, an unknown lease (404)', async () => {
    const cluster = await started();
    const { client, leases } = cluster.leader();
    await cluster.settle(leases.grant({ ttl_seconds: 5, lease_id: 9 }));
    expect((await refusal(cluster, leases.grant({ ttl_seconds: 6, lease_id: 9 }))).code).toBe('LEASE_EXISTS');
    const set = client.write({ command: { Set: { key: 'k', value: 'v', lease_id: 10 } } });
    expect((await refusal(cluster, set)).code).toBe('LEASE_NOT_FOUND');
    expect(await present(cluster, cluster.leader(), 'k')).toBe(false);
    for (const call of [
      leases.keepAlive({ lease_id: 10 }),
      leases.info({ lease_id: 10 }),
      leases.revoke({ lease_id: 10 }),
    ]) {
      expect((await refusal(cluster, call)).code).toBe('LEASE_NOT_FOUND');
    }
  });

  it('checks its input: TTL bounds of the cluster, integer ids, sessions', async () => {
    const cluster = await started(1);
    const { client, leases } = cluster.leader();
    for (const bad of [
      { ttl_seconds: 0 },
      { ttl_seconds: 86_401 },
      { ttl_seconds: 1.5 },
      { ttl_seconds: '5' },
      { ttl_seconds: 5, lease_id: -1 },
      { ttl_seconds: 5, client_id: 'c' },
    ]) {
      expect((await refusal(cluster, leases.grant(bad as never))).code).toBe('INVALID_INPUT');
    }
    for (const bad of [{}, { lease_id: 0 }, { lease_id: 2 ** 53 }, { lease_id: 'x' }]) {
      expect((await refusal(cluster, leases.keepAlive(bad as never))).code).toBe('INVALID_INPUT');
      expect((await refusal(cluster, leases.revoke(bad as never))).code).toBe('INVALID_INPUT');
      expect((await refusal(cluster, leases.info(bad as never))).code).toBe('INVALID_INPUT');
    }
    expect((await refusal(cluster, leases.info({ lease_id: 1, keys: 'yes' } as never))).code).toBe(
      'INVALID_INPUT',
    );
    // Lease commands are made by the lease calls and the expiry check only, never taken from /write.
    const forged = client.write({ command: { LeaseRevoke: { lease_id: 1, expired_in_term: 1 } } } as never);
    expect((await refusal(cluster, forged)).code).toBe('INVALID_INPUT');
  });

  it('keepalives keep a key past its TTL; once they stop, the key goes within TTL + the bound', async () => {
    const cluster = await started();
    const leaseId = await leasedKey(cluster, 'held', 2);
    const { leases } = cluster.leader();
    for (let second = 0; second < 6; second += 1) {
      await cluster.run(1_000);
      const renewed = await cluster.settle(leases.keepAlive({ lease_id: leaseId }));
      expect(renewed).toEqual({ lease_id: leaseId, ttl_seconds: 2 });
    }
    expect(await present(cluster, cluster.leader(), 'held')).toBe(true);
    const lastKeepAliveMs = cluster.clock.nowMs();
    await cluster.run(1_900);
    expect(await present(cluster, cluster.leader(), 'held')).toBe(true);
    await cluster.run(lastKeepAliveMs + 2_000 + EXPIRY_BOUND_MS - cluster.clock.nowMs());
    expect(await present(cluster, cluster.leader(), 'held')).toBe(false);
    // Every node applied the same revoke.
    for (const node of cluster.nodes) expect(node.node.stateMachine.lease(leaseId)).toBeUndefined();
    expect((await refusal(cluster, leases.keepAlive({ lease_id: leaseId }))).code).toBe('LEASE_NOT_FOUND');
    expect((await refusal(cluster, leases.info({ lease_id: leaseId }))).code).toBe('LEASE_NOT_FOUND');
  });

  it('a follower answers keepalive, info and list with NOT_LEADER naming the leader', async () => {
    const cluster = await started();
    const leaseId = await leasedKey(cluster, 'k', 5);
    const leader = cluster.leader();
    const { leases } = cluster.follower();
    for (const call of [
      leases.keepAlive({ lease_id: leaseId }),
      leases.info({ lease_id: leaseId }),
      leases.list(),
    ]) {
      const error = await refusal(cluster, call);
      expect(error.code).toBe('NOT_LEADER');
      expect(error.leaderId).toBe(leader.id);
    }
  });

  it('the leader serves at most its keepalives per second; past it 503 OVERLOADED renews nothing', async () => {
    const cluster = await started(3, {}, 3);
    const leaseId = await leasedKey(cluster, 'k', 5);
    await cluster.run(1_000); // the bucket is full again after the grant's own traffic
    const leader = cluster.leader();
    // Four at the same instant: three tokens.
    const calls = [1, 2, 3, 4].map(() => leader.leases.keepAlive({ lease_id: leaseId }));
    const refused = await refusal(cluster, calls[3] as Promise<unknown>);
    expect(refused.code).toBe('OVERLOADED');
    expect(refused.definite).toBe(true);
    expect(refused.message).toContain('at most 3 keepalives per second');
    for (const call of calls.slice(0, 3)) {
      expect(await cluster.settle(call)).toEqual({ lease_id: leaseId, ttl_seconds: 5 });
    }
    const deadline = leader.node.leaseDeadline(leaseId);
    expect(deadline).toBeDefined();
    // A follower spends none of the leader's tokens: it answers NOT_LEADER.
    expect((await refusal(cluster, cluster.follower().leases.keepAlive({ lease_id: leaseId }))).code).toBe(
      'NOT_LEADER',
    );
    await cluster.run(200); // 0.6 token: still refused, and the deadline did not move
    expect((await refusal(cluster, leader.leases.keepAlive({ lease_id: leaseId }))).code).toBe('OVERLOADED');
    expect(leader.node.leaseDeadline(leaseId)).toBe(deadline);
    await cluster.run(200); // a token again
    expect(await cluster.settle(leader.leases.keepAlive({ lease_id: leaseId }))).toEqual({
      lease_id: leaseId,
      ttl_seconds: 5,
    });
    expect(leader.node.leaseDeadline(leaseId)).toBeGreaterThan(deadline ?? Number.POSITIVE_INFINITY);
  });

  it('revoke deletes the lease and its keys in one entry', async () => {
    const cluster = await started();
    const leaseId = await leasedKey(cluster, 'a', 30);
    const { client, leases } = cluster.leader();
    await cluster.settle(client.write({ command: { Set: { key: 'b', value: 'v', lease_id: leaseId } } }));
    await cluster.settle(client.write({ command: { Set: { key: 'free', value: 'v' } } }));
    const revoked = await cluster.settle(leases.revoke({ lease_id: leaseId }));
    expect(revoked).toEqual({ lease_id: leaseId, revoked: true, log_index: revoked.log_index });
    expect(await present(cluster, cluster.leader(), 'a')).toBe(false);
    expect(await present(cluster, cluster.leader(), 'b')).toBe(false);
    expect(await present(cluster, cluster.leader(), 'free')).toBe(true);
    expect((await cluster.settle(leases.list())).leases).toEqual([]);
    expect((await refusal(cluster, leases.revoke({ lease_id: leaseId }))).code).toBe('LEASE_NOT_FOUND');
  });

  it('a session retry of a grant answers as the first time and grants nothing more', async () => {
    const cluster = await started();
    const { leases } = cluster.leader();
    const request = { ttl_seconds: 5, client_id: 'c1', sequence: 1 };
    const first = await cluster.settle(leases.grant(request));
    const retry = await cluster.settle(leases.grant(request));
    expect(retry).toEqual(first);
    expect((await cluster.settle(leases.list())).leases).toHaveLength(1);
  });

  it('a new leader restarts every deadline at full TTL: the lease outlives the old leader by TTL after the last keepalive', async () => {
    const cluster = await started();
    const leaseId = await leasedKey(cluster, 'held', 3);
    await cluster.run(2_500);
    const old = cluster.leader();
    await cluster.settle(old.leases.keepAlive({ lease_id: leaseId }));
    const acknowledgedMs = cluster.clock.nowMs();
    cluster.kill(old.id);
    // Until TTL after the acknowledged keepalive, the key is there on whichever node leads.
    for (let step = 0; step < 5; step += 1) {
      await cluster.run(550);
      const survivor = cluster.nodes.find((entry) => entry.up);
      expect(survivor?.node.stateMachine.get('held')).toBeDefined();
    }
    expect(cluster.clock.nowMs()).toBeGreaterThanOrEqual(acknowledgedMs + 2_700);
    const leader = cluster.leader();
    expect(leader.id).not.toBe(old.id);
    // The new leader counts the full TTL from when it gained authority, then expires it.
    await cluster.run(3_000 + EXPIRY_BOUND_MS);
    expect(await present(cluster, leader, 'held')).toBe(false);
  });

  it('a leader cut off from its quorum steps down and drops its deadlines; its expiry never applies', async () => {
    const cluster = await started();
    const leaseId = await leasedKey(cluster, 'k', 1);
    const leader = cluster.leader();
    // Cut the leader off: its revoke cannot commit, and it keeps its authority until check-quorum.
    for (const entry of cluster.nodes) if (entry !== leader) cluster.kill(entry.id);
    await cluster.run(1_000 + LEASE_CHECK_INTERVAL_MS);
    expect(leader.node.leaseDeadline(leaseId)).toBeUndefined(); // stepped down: no deadlines kept
    expect(leader.node.stateMachine.lease(leaseId)).toBeDefined();
    expect(leader.node.stateMachine.get('k')).toBeDefined();
  });
});

describe('the simulator-only lease mutants', () => {
  /**
   * Grant at 0 (TTL 3 s), keepalive at 2.5 s on the leader, then the leader dies: a correct new
   * leader keeps the key until at least 5.5 s; a mutant expires it by its stale deadline.
   */
  async function survivesLeaderDeath(mutations: LeaseMutations): Promise<boolean> {
    const cluster = await started(3, mutations);
    const leaseId = await leasedKey(cluster, 'held', 3);
    const grantedMs = cluster.clock.nowMs();
    const old = cluster.leader();
    await cluster.run(2_500);
    await cluster.settle(old.leases.keepAlive({ lease_id: leaseId }));
    const acknowledgedMs = cluster.clock.nowMs();
    cluster.kill(old.id);
    await cluster.run(acknowledgedMs + 2_900 - cluster.clock.nowMs());
    expect(cluster.clock.nowMs()).toBeGreaterThan(grantedMs + 3_000 + EXPIRY_BOUND_MS);
    const survivor = cluster.nodes.find((entry) => entry.up);
    return survivor?.node.stateMachine.get('held') !== undefined;
  }

  it('correct: the lease survives', async () => {
    expect(await survivesLeaderDeath({})).toBe(true);
  });

  it('lessorOnFollowers: a follower that becomes leader expires it by the grant-time deadline', async () => {
    expect(await survivesLeaderDeath({ lessorOnFollowers: true })).toBe(false);
  });

  it('lessorKeepsDeadlines: a node regaining leadership uses its old deadline', async () => {
    const cluster = await started(3, { lessorKeepsDeadlines: true });
    const leaseId = await leasedKey(cluster, 'held', 3);
    const first = cluster.leader();
    const deadline = first.node.leaseDeadline(leaseId);
    expect(deadline).toBeDefined();
    // Hand leadership away and back: a correct node restarts the deadline at full TTL from then.
    await cluster.run(2_000);
    const other = cluster.follower();
    await cluster.settle(
      new Promise((resolve) => {
        first.node.transferLeadership(other.id, resolve);
      }),
    );
    await cluster.run(500);
    expect(cluster.leader().id).toBe(other.id);
    await cluster.settle(
      new Promise((resolve) => {
        other.node.transferLeadership(first.id, resolve);
      }),
    );
    await cluster.run(300);
    expect(cluster.leader().id).toBe(first.id);
    expect(first.node.leaseDeadline(leaseId)).toBe(deadline);
  });
});
