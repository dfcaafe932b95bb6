import { describe, expect, it } from 'vitest';
import type { KeyValueStore, LeaseService } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import { KEY_BYTES_MAX } from '../../src/base/limits.ts';
import { FORWARD_KEEPALIVE_TIMEOUT_MS, FORWARD_TIMEOUT_MS_DEFAULT } from '../../src/cluster/forwarding.ts';
import { decodeWireMessage, encodeWireMessage } from '../../src/network/codec.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import type { ClientRequest, WireMessage } from '../../src/node/interfaces.ts';
import { RaftLeaseClient } from '../../src/node/lease-client.ts';
import { startMemoryNode } from '../support/memory-node.ts';
import { followerOfSilentLeader, forwardingPair } from '../support/forwarding-pair.ts';

const unused = (): Promise<never> => Promise.reject(new Error('unused'));
const noKv: KeyValueStore = { write: unused, read: unused, delete: unused, scan: unused };

/** A leader's lease service that records what it was asked and answers like the real one. */
function leaderLeases(calls: unknown[]): LeaseService {
  return {
    grant: (request) => {
      calls.push(['grant', request]);
      return Promise.resolve({
        lease_id: request.lease_id ?? 11,
        ttl_seconds: request.ttl_seconds,
        log_index: 4,
      });
    },
    keepAlive: (request) => {
      calls.push(['keepAlive', request]);
      if (request.lease_id === 404)
        return Promise.reject(new AspenError('LEASE_NOT_FOUND', 'lease 404 not found'));
      return Promise.resolve({ lease_id: request.lease_id, ttl_seconds: 5 });
    },
    revoke: (request) => {
      calls.push(['revoke', request]);
      return Promise.resolve({ lease_id: request.lease_id, revoked: true, log_index: 6 });
    },
    info: (request) => {
      calls.push(['info', request]);
      return Promise.resolve({
        lease_id: request.lease_id,
        ttl_seconds: 5,
        remaining_seconds: 2,
        keys: ['a'],
      });
    },
    list: () => {
      calls.push(['list']);
      return Promise.resolve({ leases: [{ lease_id: 3, ttl_seconds: 5, remaining_seconds: 1 }] });
    },
  };
}

/**
 * Node 2 (a follower that knows leader 1) and node 1, linked through the wire codec; the leader runs
 * requests on `leaderSide` (default: leaderLeases recording into `calls`, no KV store).
 */
function pair(
  calls: unknown[],
  followerLocal?: LeaseService,
  leaderSide: { local: KeyValueStore; leases: LeaseService } = { local: noKv, leases: leaderLeases(calls) },
) {
  return forwardingPair(
    {
      local: noKv,
      leases: followerLocal ?? leaderLeases([]),
      leaseTtlSecondsMin: 3,
      ...(followerLocal === undefined ? { knownLeader: () => 1 } : {}),
    },
    leaderSide,
  );
}

describe('forwarding the lease calls', () => {
  it('a follower forwards all five to the leader, which runs them and answers through the codec', async () => {
    const calls: unknown[] = [];
    const { follower, sent } = pair(calls);
    await expect(
      follower.grant({ ttl_seconds: 5, lease_id: 9, client_id: 'c', sequence: 2 }),
    ).resolves.toEqual({ lease_id: 9, ttl_seconds: 5, log_index: 4 });
    await expect(follower.grant({ ttl_seconds: 5 })).resolves.toEqual({
      lease_id: 11,
      ttl_seconds: 5,
      log_index: 4,
    });
    await expect(follower.keepAlive({ lease_id: 9 })).resolves.toEqual({ lease_id: 9, ttl_seconds: 5 });
    await expect(follower.info({ lease_id: 9, keys: true })).resolves.toMatchObject({ keys: ['a'] });
    await follower.info({ lease_id: 9, keys: true, after: 'a\u0005' });
    await expect(follower.list()).resolves.toMatchObject({ leases: [{ lease_id: 3 }] });
    await expect(follower.revoke({ lease_id: 9, client_id: 'c', sequence: 3 })).resolves.toEqual({
      lease_id: 9,
      revoked: true,
      log_index: 6,
    });
    expect(sent.map((message) => message.operation.kind)).toEqual([
      'lease_grant',
      'lease_grant',
      'lease_keepalive',
      'lease_info',
      'lease_info',
      'lease_list',
      'lease_revoke',
    ]);
    expect(calls).toEqual([
      ['grant', { ttl_seconds: 5, lease_id: 9, client_id: 'c', sequence: 2 }],
      ['grant', { ttl_seconds: 5 }],
      ['keepAlive', { lease_id: 9 }],
      ['info', { lease_id: 9, keys: true }],
      ['info', { lease_id: 9, keys: true, after: 'a\u0005' }],
      ['list'],
      ['revoke', { lease_id: 9, client_id: 'c', sequence: 3 }],
    ]);
  });

  it('a keepalive forwarded to a leader that never answers times out after FORWARD_KEEPALIVE_TIMEOUT_MS', async () => {
    const { follower, timers } = followerOfSilentLeader({ leases: leaderLeases([]) });
    const keepAlive = follower.keepAlive({ lease_id: 9 });
    const info = follower.info({ lease_id: 9 });
    expect(timers.map((timer) => timer.delayMs)).toEqual([
      FORWARD_KEEPALIVE_TIMEOUT_MS,
      FORWARD_TIMEOUT_MS_DEFAULT,
    ]);
    expect(FORWARD_KEEPALIVE_TIMEOUT_MS).toBeLessThan(FORWARD_TIMEOUT_MS_DEFAULT);
    for (const timer of timers) timer.fire();
    await expect(keepAlive).rejects.toMatchObject({
      code: 'TIMEOUT',
      message: expect.stringContaining(`within ${FORWARD_KEEPALIVE_TIMEOUT_MS} ms`) as string,
    });
    await expect(info).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('a sequence reused for another call is refused on the leader and reaches the client as 400', async () => {
    const node = startMemoryNode();
    try {
      const kv = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
      await kv.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
      const leases = new RaftLeaseClient(node, { electionTimeoutMaxMs: 2_000 });
      const { follower, sent } = pair([], undefined, { local: kv, leases });
      const session = { client_id: 'c', sequence: 1 };
      await follower.write({ command: { Set: { key: 'k', value: 'v' } }, ...session });
      await expect(follower.grant({ ttl_seconds: 10, ...session })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        definite: true,
        message: expect.stringContaining(
          'sequence 1 of client c was already used for another request (Set)',
        ) as string,
      });
      await expect(follower.revoke({ lease_id: 1, ...session })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
      expect(sent.map((message) => message.operation.kind)).toEqual(['write', 'lease_grant', 'lease_revoke']);
      expect(node.stateMachine.leaseCount).toBe(0);
    } finally {
      node.stop();
    }
  });

  it("the leader's LEASE_NOT_FOUND reaches the client as itself", async () => {
    const { follower } = pair([]);
    await expect(follower.keepAlive({ lease_id: 404 })).rejects.toMatchObject({
      code: 'LEASE_NOT_FOUND',
      definite: true,
    });
  });

  it('without a known leader, a keepalive goes to the local node first and is forwarded on its NOT_LEADER', async () => {
    const calls: unknown[] = [];
    let localCalls = 0;
    const refuse = (): Promise<never> => {
      localCalls += 1;
      return Promise.reject(new AspenError('NOT_LEADER', 'node 1 is the leader', { leaderId: 1 }));
    };
    const local: LeaseService = {
      grant: refuse,
      keepAlive: refuse,
      revoke: refuse,
      info: refuse,
      list: refuse,
    };
    const { follower, sent } = pair(calls, local);
    await expect(follower.keepAlive({ lease_id: 9 })).resolves.toEqual({ lease_id: 9, ttl_seconds: 5 });
    expect(localCalls).toBe(1);
    expect(sent).toHaveLength(1);
  });

  it('a follower refuses bad input itself (its cluster TTL minimum too): nothing is forwarded', async () => {
    const calls: unknown[] = [];
    const { follower, sent } = pair(calls);
    for (const call of [
      follower.grant({ ttl_seconds: 2 }),
      follower.grant({ ttl_seconds: 86_401 }),
      follower.grant({ ttl_seconds: 5, lease_id: -3 }),
      follower.grant({ ttl_seconds: 5, sequence: 1 }),
      follower.keepAlive({ lease_id: 0 }),
      follower.revoke({ lease_id: 1.5 }),
      follower.info({ lease_id: 7, keys: 'yes' } as never),
    ]) {
      await expect(call).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    expect(sent).toEqual([]);
  });

  it('the codec decodes a malformed lease operation as invalid, so the leader answers it at once', () => {
    const frame = (operation: unknown): ClientRequest['operation'] => {
      const message = { type: 'client_request', from: 2, to: 1, term: 0, requestId: 1, operation };
      const decoded = decodeWireMessage(encodeWireMessage(message as unknown as WireMessage));
      return (decoded as ClientRequest).operation;
    };
    for (const operation of [
      { kind: 'lease_grant', leaseId: 0, ttlSeconds: 0, session: null },
      { kind: 'lease_grant', leaseId: -1, ttlSeconds: 5, session: null },
      { kind: 'lease_grant', leaseId: 0, ttlSeconds: 5, session: { clientId: '', sequence: 1 } },
      { kind: 'lease_revoke', leaseId: 'x', session: null },
      { kind: 'lease_keepalive', leaseId: 2 ** 60 },
      { kind: 'lease_info', leaseId: 1, keys: 'true', after: null },
      { kind: 'lease_info', leaseId: 1, keys: false, after: 'a' },
      { kind: 'lease_info', leaseId: 1, keys: true, after: '' },
      { kind: 'lease_info', leaseId: 1, keys: true, after: 5 },
      { kind: 'lease_bogus' },
    ]) {
      expect(frame(operation)).toMatchObject({ kind: 'invalid', code: 'INVALID_INPUT' });
    }
    expect(
      frame({ kind: 'lease_grant', leaseId: 0, ttlSeconds: 5, session: { clientId: 'c', sequence: 1 } }),
    ).toEqual({
      kind: 'lease_grant',
      leaseId: 0,
      ttlSeconds: 5,
      session: { clientId: 'c', sequence: 1 },
    });
    expect(frame({ kind: 'lease_list', extra: 1 })).toEqual({ kind: 'lease_list' });
    expect(
      frame({ kind: 'lease_info', leaseId: 1, keys: true, after: 'k'.repeat(KEY_BYTES_MAX + 1) }),
    ).toMatchObject({
      kind: 'invalid',
      code: 'KEY_TOO_LARGE',
    });
    expect(frame({ kind: 'lease_info', leaseId: 1, keys: true, after: 'k' })).toEqual({
      kind: 'lease_info',
      leaseId: 1,
      keys: true,
      after: 'k',
    });
  });
});
