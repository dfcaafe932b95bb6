import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyValueStore } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { WriteResult } from '../../src/api/types.ts';
import { startNode, type RunningNode } from '../../src/cluster/bootstrap.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import { ForwardingStore } from '../../src/cluster/forwarding.ts';
import { decodeWireMessage, encodeWireMessage } from '../../src/network/codec.ts';
import { WireFormatError } from '../../src/network/errors.ts';
import type { ClientRequest, ClientResponse, WireMessage } from '../../src/node/interfaces.ts';
import { SESSION_RESULTS_MAX } from '../../src/node/sessions.ts';
import {
  casScenario,
  coordinationBadInputs,
  sessionScenario,
  transactionScenario,
  type Send,
} from '../http/coordination.ts';

/** A local store that is never the leader: every call is counted and refused with NOT_LEADER (leader 1). */
function followerStore(calls: { count: number }): KeyValueStore {
  const refuse = (): Promise<never> => {
    calls.count += 1;
    return Promise.reject(new AspenError('NOT_LEADER', 'node 1 is the leader', { leaderId: 1 }));
  };
  return { write: refuse, read: refuse, delete: refuse, scan: refuse };
}

function forwardingOn(
  knownLeader: number | undefined,
  calls: { count: number },
  sent: WireMessage[],
): ForwardingStore {
  return new ForwardingStore({
    local: followerStore(calls),
    nodeId: 2,
    timeoutMs: 1_000,
    transport: {
      send: (message) => {
        sent.push(message);
      },
    },
    clock: { nowMs: () => 0, setTimer: () => () => undefined },
    ...(knownLeader === undefined ? {} : { knownLeader: () => knownLeader }),
  });
}

async function flush(): Promise<void> {
  for (let turn = 0; turn < 5; turn += 1) await Promise.resolve();
}

describe('ForwardingStore', () => {
  it('a follower that knows its leader forwards at once, without asking its local node', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    const result = store.write({ command: { Set: { key: 'k', value: 'v' } } });
    const request = sent[0] as ClientRequest | undefined;
    expect(request).toMatchObject({ type: 'client_request', from: 2, to: 1, operation: { kind: 'write' } });
    expect(calls.count).toBe(0);
    const answer: WriteResult = { command: { Set: { key: 'k', value: 'v' } }, revision: 7, log_index: 7 };
    store.handleResponse({
      type: 'client_response',
      from: 1,
      to: 2,
      term: 0,
      requestId: request?.requestId ?? 0,
      result: answer,
      error: null,
    });
    await expect(result).resolves.toEqual(answer);
  });

  it('without a known leader it asks the local node first and forwards on its NOT_LEADER', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(0, calls, sent);
    const result = store.read({ key: 'k' });
    await flush();
    expect(calls.count).toBe(1);
    const request = sent[0] as ClientRequest | undefined;
    expect(request).toMatchObject({ type: 'client_request', to: 1, operation: { kind: 'read', key: 'k' } });
    // The leader's refusal comes back as the same typed error the client would get locally.
    store.handleResponse({
      type: 'client_response',
      from: 1,
      to: 2,
      term: 0,
      requestId: request?.requestId ?? 0,
      result: null,
      error: { code: 'NOT_LEADER', message: 'node 3 is the leader', leaderId: 3, definite: true },
    });
    await expect(result).rejects.toMatchObject({ code: 'NOT_LEADER', leaderId: 3 });
  });

  it('a follower refuses bad input itself: nothing is forwarded', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    await expect(
      store.write({ command: { Set: { key: 'k', value: 'v', extra: 1 } } } as never),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.read({ key: 'k'.repeat(2_000) })).rejects.toMatchObject({ code: 'KEY_TOO_LARGE' });
    await expect(store.delete({ key: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.scan({ prefix: 'a', continuation_token: 'not a token' })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    expect(sent).toEqual([]);
    expect(calls.count).toBe(0);
  });

  it('the leader answers an invalid forwarded request with its error, and a reply that cannot be framed with an error', async () => {
    const sent: WireMessage[] = [];
    let refuseFirst = true;
    const huge = {
      entries: [{ key: 'k', value: 'x' }],
      count: 1,
      is_truncated: false,
      continuation_token: null,
      revision: 3,
    };
    const local: KeyValueStore = {
      write: () => Promise.reject(new Error('unused')),
      read: () => Promise.reject(new Error('unused')),
      delete: () => Promise.reject(new Error('unused')),
      scan: () => Promise.resolve(huge),
    };
    const lines: string[] = [];
    const leader = new ForwardingStore({
      local,
      nodeId: 1,
      clock: { nowMs: () => 0, setTimer: () => () => undefined },
      log: (line) => {
        lines.push(line);
      },
      transport: {
        send: (message) => {
          if (message.type === 'client_response' && message.error === null && refuseFirst) {
            refuseFirst = false;
            throw new WireFormatError(
              'a client_response message of 6291456 bytes exceeds the 5242880-byte frame',
            );
          }
          sent.push(message);
        },
      },
    });
    leader.handleRequest({
      type: 'client_request',
      from: 2,
      to: 1,
      term: 0,
      requestId: 4,
      operation: { kind: 'invalid', code: 'KEY_TOO_LARGE', message: 'key is 2000 bytes' },
    });
    leader.handleRequest({
      type: 'client_request',
      from: 2,
      to: 1,
      term: 0,
      requestId: 5,
      operation: { kind: 'scan', prefix: '', limit: 10, continuationToken: null },
    });
    await flush();
    expect(sent).toMatchObject([
      {
        type: 'client_response',
        to: 2,
        requestId: 4,
        result: null,
        error: { code: 'KEY_TOO_LARGE', definite: true },
      },
      {
        type: 'client_response',
        to: 2,
        requestId: 5,
        result: null,
        error: { code: 'INTERNAL', definite: true },
      },
    ]);
    expect(lines.join('\n')).toMatch(/cannot be sent/);
  });

  it('stop() fails every forward still waiting, as indeterminate, and refuses new ones', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    const waiting = store.write({ command: { Set: { key: 'k', value: 'v' } } });
    expect(sent).toHaveLength(1);
    store.stop();
    await expect(waiting).rejects.toMatchObject({ code: 'SHUTTING_DOWN', definite: false });
    await expect(store.read({ key: 'k' })).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    expect(sent).toHaveLength(1);
  });
});

describe('forwarding CAS, CAD and transactions', () => {
  it('a COMPARE_FAILED on the leader reaches the follower through the codec with its current record', async () => {
    const toFollower: WireMessage[] = [];
    const current = { value: 'v', create_index: 3, mod_index: 8, version: 2, lease_id: 0 };
    const local: KeyValueStore = {
      write: () => Promise.reject(AspenError.compareFailed('k', current)),
      read: () => Promise.reject(new Error('unused')),
      delete: () => Promise.reject(new Error('unused')),
      scan: () => Promise.reject(new Error('unused')),
    };
    const leader = new ForwardingStore({
      local,
      nodeId: 1,
      clock: { nowMs: () => 0, setTimer: () => () => undefined },
      transport: {
        send: (message) => {
          toFollower.push(decodeWireMessage(encodeWireMessage(message)));
        },
      },
    });
    const sent: WireMessage[] = [];
    const follower = forwardingOn(1, { count: 0 }, sent);
    const command = { CompareAndSwap: { key: 'k', expected: 'old', new_value: 'new' } };
    const answer = follower.write({ command });
    const request = decodeWireMessage(encodeWireMessage(sent[0] as WireMessage)) as ClientRequest;
    expect(request.operation).toEqual({ kind: 'write', command, session: null });
    leader.handleRequest(request);
    await flush();
    follower.handleResponse(toFollower[0] as ClientResponse);
    const error = (await answer.catch((caught: unknown) => caught)) as AspenError;
    expect(error).toBeInstanceOf(AspenError);
    expect(error.toJSON()).toEqual({
      error: {
        code: 'COMPARE_FAILED',
        message: 'compare failed for key k: the key is at version 2',
        definite: true,
        current,
      },
    });
  });

  it('a COMPARE_FAILED that lost its record on the way is not passed on as one', () => {
    const follower = forwardingOn(1, { count: 0 }, []);
    const answer = follower.write({ command: { CompareAndDelete: { key: 'k', expected: 'v' } } });
    follower.handleResponse({
      type: 'client_response',
      from: 1,
      to: 2,
      term: 0,
      requestId: 1,
      result: null,
      error: { code: 'COMPARE_FAILED', message: 'm', leaderId: null, definite: true },
    });
    return expect(answer).rejects.toMatchObject({ code: 'TIMEOUT', current: undefined });
  });
});

/** An observe stream's events, and a follower applying an entry, take milliseconds; this bounds a slow machine. */
const STREAM_WAIT_MS = 10_000;

/** Two real in-process nodes (libp2p, memory storage); every request goes to the follower. */
describe('CAS, CAD and transactions through a follower of real nodes', () => {
  const nodes: RunningNode[] = [];
  let send: Send;
  let leaderUrl = '';
  let followerUrl = '';

  const call = async (base: string, method: 'GET' | 'POST', path: string, body?: unknown) => {
    const response = await fetch(`${base}${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
    return { status: response.status, json: (await response.json()) as Record<string, unknown> };
  };

  /** An event stream of `url`: `until` reads it (bounded) until its text so far passes `done`, then closes it. */
  const openStream = async (url: string) => {
    const closing = new AbortController();
    const response = await fetch(url, { signal: closing.signal });
    expect(response.status).toBe(200);
    const reader = response.body?.pipeThrough(new TextDecoderStream()).getReader();
    if (reader === undefined) throw new Error('no stream body');
    return {
      until: async (done: (text: string) => boolean): Promise<string> => {
        const timer = setTimeout(() => {
          closing.abort();
        }, STREAM_WAIT_MS);
        let text = '';
        try {
          while (!done(text)) {
            const chunk = await reader.read();
            if (chunk.done) break;
            text += chunk.value;
          }
        } finally {
          clearTimeout(timer);
          closing.abort();
        }
        return text;
      },
    };
  };

  /** Wait (bounded) until `url` names node 1 as leader. */
  const leaderKnown = async (url: string): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while ((await call(url, 'GET', '/leader')).json.leader !== 1) {
      if (Date.now() > deadline) throw new Error(`${url} knows no leader after 5 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  beforeAll(async () => {
    for (const id of [1, 2]) {
      const config = parseNodeConfig([
        ...['--node-id', String(id), '--port', '0', '--http-addr', '127.0.0.1:0', '--storage', 'memory'],
        // Timeouts that a busy CI machine's event-loop stalls do not trip (a leader change would
        // leave a forwarded call waiting for its 5 s timeout).
        ...['--cookie', 'forwarding-test-cluster-cookie', '--heartbeat-interval-ms', '100'],
        ...['--election-timeout-min-ms', '1500', '--election-timeout-max-ms', '3000'],
      ]);
      nodes.push(await startNode(config, () => undefined));
    }
    const member = (index: number) => ({
      id: index + 1,
      addr: `node-${index + 1}`,
      raft_addr: nodes[index]?.transport.listenAddresses[0]?.split('/p2p/')[0] ?? '',
    });
    leaderUrl = nodes[0]?.httpUrl ?? '';
    followerUrl = nodes[1]?.httpUrl ?? '';
    expect((await call(leaderUrl, 'POST', '/init', { initial_members: [member(0)] })).status).toBe(200);
    await leaderKnown(leaderUrl);
    expect((await call(leaderUrl, 'POST', '/add-learner', { learner: member(1) })).status).toBe(200);
    expect((await call(leaderUrl, 'POST', '/change-membership', { members: [1, 2] })).status).toBe(200);
    await leaderKnown(followerUrl);
    send = (method, path, body) => call(followerUrl, method, path, body);
  }, 30_000);

  afterAll(async () => {
    for (const node of nodes.reverse()) await node.stop();
  });

  it('CAS and CAD: success, 409 COMPARE_FAILED with the current record, expected null', async () => {
    await casScenario(send, 'fwd-cas/');
  }, 20_000);

  it('exactly-once through a follower: retries answer as the first time, expired sequences 409', async () => {
    await sessionScenario(send, 'fwd-sess/', SESSION_RESULTS_MAX);
  }, 20_000);

  it('transactions: both branches, Get and Scan results, revisions', async () => {
    await transactionScenario(send, 'fwd-txn/');
  }, 20_000);

  it('leases through a follower: grant, attach, keepalive, info, list, revoke; its errors', async () => {
    const grant = await send('POST', '/lease/grant', { ttl_seconds: 30 });
    expect(grant.status).toBe(200);
    const leaseId = grant.json.lease_id as number;
    const set = await send('POST', '/write', {
      command: { Set: { key: 'fwd-lease/k', value: 'v', lease_id: leaseId } },
    });
    expect(set.status).toBe(200);
    expect(await send('POST', '/lease/keepalive', { lease_id: leaseId })).toEqual({
      status: 200,
      json: { lease_id: leaseId, ttl_seconds: 30 },
    });
    const info = await send('GET', `/lease/info?lease_id=${leaseId}&keys=true`);
    expect(info.json).toMatchObject({ lease_id: leaseId, ttl_seconds: 30, keys: ['fwd-lease/k'] });
    const page = await send('GET', `/lease/info?lease_id=${leaseId}&keys=true&after=fwd-lease%2Fa%05`);
    expect(page.json).toMatchObject({ keys: ['fwd-lease/k'], keys_truncated: false });
    const bad = await send('GET', `/lease/info?lease_id=${leaseId}&keys=false&after=fwd-lease%2Fa`);
    expect(bad.status).toBe(400);
    expect((await send('GET', '/leases')).json.leases).toContainEqual(
      expect.objectContaining({ lease_id: leaseId, ttl_seconds: 30 }),
    );
    const revoked = await send('POST', '/lease/revoke', { lease_id: leaseId });
    expect(revoked.json).toMatchObject({ lease_id: leaseId, revoked: true });
    expect((await send('POST', '/read', { key: 'fwd-lease/k' })).status).toBe(404);
    const missing = await send('POST', '/lease/keepalive', { lease_id: leaseId });
    expect([missing.status, (missing.json.error as { code: string }).code]).toEqual([404, 'LEASE_NOT_FOUND']);
    const tooLong = await send('POST', '/lease/grant', { ttl_seconds: 86_401 });
    expect(tooLong.status).toBe(400);
  }, 20_000);

  it('locks through a follower: a waiter there watches its own hub and wins when the owner unlocks on the leader', async () => {
    const lease = async () =>
      (await send('POST', '/lease/grant', { ttl_seconds: 30 })).json.lease_id as number;
    const [a, b] = [await lease(), await lease()];
    const owner = await call(leaderUrl, 'POST', '/lock', { name: 'fwd-lock', lease_id: a });
    expect(owner.status).toBe(200);
    let answered = false;
    const waiter = send('POST', '/lock', { name: 'fwd-lock', lease_id: b }).finally(() => {
      answered = true;
    });
    const deadline = Date.now() + 5_000;
    const scanLocks = { compare: [], success: [{ Scan: { prefix: 'fwd-lock/' } }], failure: [] };
    const lockKeys = async () => {
      const scan = await send('POST', '/write', { command: { Transaction: scanLocks } });
      return (scan.json.results as { Scan: { entries: unknown[] } }[])[0]?.Scan.entries.length ?? 0;
    };
    while ((await lockKeys()) < 2) {
      if (Date.now() > deadline) throw new Error('the waiter key never appeared');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(answered).toBe(false);
    expect((await call(leaderUrl, 'POST', '/unlock', { key: owner.json.key })).status).toBe(200);
    const won = await waiter;
    expect(won.status).toBe(200);
    const token = won.json.fencing_token as number;
    expect(token).toBeGreaterThan(owner.json.fencing_token as number);
    // The fencing recipe: a write guarded by the token's compare succeeds for the owner only.
    const guarded = (fence: number) =>
      send('POST', '/write', {
        command: {
          Transaction: {
            compare: [{ key: won.json.key, target: 'create_index', op: 'equal', value: fence }],
            success: [{ Set: { key: 'fwd-lock-data', value: `by ${fence}` } }],
            failure: [],
          },
        },
      });
    expect((await guarded(token)).json.succeeded).toBe(true);
    expect((await guarded(owner.json.fencing_token as number)).json.succeeded).toBe(false);
    expect((await send('POST', '/unlock', { key: won.json.key })).json).toEqual({ released: true });
  }, 20_000);

  it('elections through a follower: a candidate there leads once the leader resigns on the leader node', async () => {
    const lease = async () =>
      (await send('POST', '/lease/grant', { ttl_seconds: 30 })).json.lease_id as number;
    const [a, b] = [await lease(), await lease()];
    // The follower's observe stream (its own watch hub) sees every leader the leader node elects.
    const stream = await openStream(`${followerUrl}/election/observe?name=fwd-elect`);
    const first = await call(leaderUrl, 'POST', '/election/campaign', {
      name: 'fwd-elect',
      lease_id: a,
      value: 'a',
    });
    expect(first.status).toBe(200);
    const second = send('POST', '/election/campaign', { name: 'fwd-elect', lease_id: b, value: 'b' });
    const deadline = Date.now() + 5_000;
    const candidates = async () =>
      (await call(leaderUrl, 'POST', '/scan', { prefix: 'fwd-elect/' })).json.entries as unknown[];
    while ((await candidates()).length < 2) {
      if (Date.now() > deadline) throw new Error('the second candidate key never appeared');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect((await send('GET', '/election/leader?name=fwd-elect')).json).toMatchObject({
      key: first.json.key,
      value: 'a',
    });
    const refused = await send('POST', '/election/proclaim', {
      key: `fwd-elect/${b.toString(16).padStart(16, '0')}`,
      value: 'x',
    });
    expect(refused.status).toBe(409);
    expect((await call(leaderUrl, 'POST', '/election/resign', { key: first.json.key })).status).toBe(200);
    const won = await second;
    expect(won.status).toBe(200);
    expect(won.json.revision as number).toBeGreaterThan(first.json.revision as number);
    expect((await send('POST', '/election/proclaim', { key: won.json.key, value: 'b2' })).json).toMatchObject(
      { value: 'b2' },
    );
    expect((await send('GET', '/election/leader?name=fwd-elect')).json).toMatchObject({
      key: won.json.key,
      value: 'b2',
    });
    expect((await send('POST', '/election/resign', { key: won.json.key })).json).toEqual({ resigned: true });
    expect((await send('GET', '/election/leader?name=fwd-elect')).status).toBe(404);
    const events = await stream.until(
      (text) => (text.match(/^event: (leader|no_leader)$/gm) ?? []).length >= 5,
    );
    expect(events.match(/^event: (leader|no_leader)$/gm)).toEqual([
      'event: no_leader',
      'event: leader',
      'event: leader',
      'event: leader',
      'event: no_leader',
    ]);
    expect(events).toContain(`"key":"${String(first.json.key)}"`);
    expect(events).toContain('"value":"b2"');
  }, 20_000);

  it('snapshots through a follower: the leader by default, the follower itself with "local"; membership refusals come from the leader', async () => {
    const snapshotOf = async (url: string) =>
      ((await call(url, 'GET', '/metrics')).json.snapshot as { index: number } | null)?.index ?? 0;
    const onLeader = await send('POST', '/trigger-snapshot');
    expect(onLeader.status, JSON.stringify(onLeader.json)).toBe(200);
    const leaderIndex = (onLeader.json.snapshot as { index: number }).index;
    expect(await snapshotOf(leaderUrl)).toBe(leaderIndex);
    const write = await send('POST', '/write', { command: { Set: { key: 'fwd-snap/k', value: 'v' } } });
    const deadline = Date.now() + STREAM_WAIT_MS;
    const applied = async () => (await call(followerUrl, 'GET', '/metrics')).json.last_applied as number;
    while ((await applied()) < (write.json.log_index as number)) {
      if (Date.now() > deadline) throw new Error('the follower did not apply the write');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const local = await send('POST', '/trigger-snapshot', { node: 'local' });
    expect(local.status, JSON.stringify(local.json)).toBe(200);
    const localIndex = (local.json.snapshot as { index: number }).index;
    expect(localIndex).toBeGreaterThan(leaderIndex);
    expect(await snapshotOf(followerUrl)).toBe(localIndex);
    expect(await snapshotOf(leaderUrl)).toBe(leaderIndex);
    const voter = await send('POST', '/remove-learner', { learner_id: 1 });
    expect([voter.status, voter.json.error]).toMatchObject([
      400,
      { code: 'INVALID_INPUT', message: expect.stringContaining('node 1 is not a learner') as string },
    ]);
    const bad = await send('POST', '/trigger-snapshot', { node: 'follower' });
    expect(bad.status).toBe(400);
  }, 20_000);

  it('refuses every malformed compare and op at the follower with its 4xx; nothing is written', async () => {
    const lastIndex = async () => (await call(leaderUrl, 'GET', '/metrics')).json.last_log_index as number;
    const before = await lastIndex();
    for (const [name, body, status, code] of coordinationBadInputs()) {
      const answer = await send('POST', '/write', body);
      const error = answer.json.error as { code?: string; definite?: boolean } | undefined;
      expect({ name, status: answer.status, code: error?.code, definite: error?.definite }).toEqual({
        name,
        status,
        code,
        definite: true,
      });
    }
    expect(await lastIndex()).toBe(before);
  }, 30_000);
});
