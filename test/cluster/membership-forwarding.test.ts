import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterController } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { ClusterState } from '../../src/api/types.ts';
import { ADD_LEARNER_TIMEOUT_MS_DEFAULT } from '../../src/client/options.ts';
import { FORWARD_TIMEOUT_MS_DEFAULT, ForwardingStore } from '../../src/cluster/forwarding.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { WireFormatError } from '../../src/network/errors.ts';
import {
  ADD_LEARNER_RUN_MS_MAX,
  CHANGE_MEMBERSHIP_RUN_MS_MAX,
  LEARNER_CATCH_UP_TIMEOUT_MS_DEFAULT,
  RaftControlClient,
} from '../../src/node/control-client.ts';
import type { ClientRequest, WireMessage } from '../../src/node/interfaces.ts';
import type { RaftNode } from '../../src/node/raft-node.ts';
import { startMemoryNode } from '../support/memory-node.ts';
import { followerOfSilentLeader, forwardingPair } from '../support/forwarding-pair.ts';
import { unusedStore } from '../support/unused-services.ts';

const PEER = '12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR';
const STATE: ClusterState = { nodes: [], members: [1], learners: [], leader: 1 };
/** A cluster of one elects itself within a few ticks; this bounds a slow machine. */
const LEADER_WAIT_MS = 5_000;
const clock = { nowMs: () => 0, setTimer: () => () => undefined };

/** A controller that records its calls and answers as `answer` says (default: the state above). */
function recordingController(
  calls: unknown[],
  answer: (call: string) => Promise<unknown> = () => Promise.resolve(STATE),
): ClusterController {
  const record =
    (name: string) =>
    (request?: unknown): Promise<never> => {
      calls.push(request === undefined ? [name] : [name, request]);
      return answer(name) as Promise<never>;
    };
  return {
    init: record('init'),
    addLearner: record('addLearner'),
    changeMembership: record('changeMembership'),
    removeLearner: record('removeLearner'),
    triggerSnapshot: record('triggerSnapshot'),
    currentState: record('currentState'),
    getMetrics: record('getMetrics'),
  };
}

/** A follower's own controller: it is not the leader (node 1 is). */
function followerController(calls: unknown[]): ClusterController {
  return recordingController(calls, () =>
    Promise.reject(new AspenError('NOT_LEADER', 'node 1 is the leader', { leaderId: 1 })),
  );
}

/**
 * Node 2 (a follower) and node 1 (the leader, running calls on `leaderController`), linked through
 * the wire codec. `knownLeader` 0: the follower asks its own controller first.
 */
function pair(leaderController: ClusterController, options: { knownLeader?: number } = {}) {
  const followerCalls: unknown[] = [];
  const { follower, sent } = forwardingPair(
    { controller: followerController(followerCalls), knownLeader: () => options.knownLeader ?? 1 },
    { controller: leaderController },
  );
  return { follower, sent, followerCalls };
}

const learner = { id: 4, addr: 'node-4', raft_addr: '127.0.0.1:26004', peer_id: PEER };

const nodes: RaftNode[] = [];
afterEach(() => {
  for (const node of nodes.splice(0)) node.stop();
});

/** Node 1 as a real leader of a cluster of one, behind its control client. */
async function realLeader(options: { learnerCatchUpTimeoutMs?: number } = {}): Promise<RaftControlClient> {
  const node = startMemoryNode();
  nodes.push(node);
  const client = new RaftControlClient(node, { requestTimeoutMs: 2_000, ...options });
  await client.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
  const deadline = Date.now() + LEADER_WAIT_MS;
  while ((await client.currentState()).leader !== 1) {
    if (Date.now() > deadline) throw new Error(`node 1 did not lead within ${LEADER_WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return client;
}

describe('forwarding the membership calls and snapshots', () => {
  it('a follower forwards add-learner, change-membership, remove-learner and trigger-snapshot; the leader runs them', async () => {
    const calls: unknown[] = [];
    const { follower, sent, followerCalls } = pair(recordingController(calls));
    await expect(follower.addLearner({ learner })).resolves.toEqual(STATE);
    await expect(follower.changeMembership({ members: [3, 1, 4] })).resolves.toEqual(STATE);
    await follower.changeMembership({ members: [1], learners: [] });
    await follower.removeLearner({ learner_id: 4 });
    await follower.triggerSnapshot();
    await follower.triggerSnapshot({ node: 'leader' });
    expect(sent.map((request) => request.operation)).toEqual([
      { kind: 'add_learner', learner },
      { kind: 'change_membership', members: [1, 3, 4], learners: null },
      { kind: 'change_membership', members: [1], learners: [] },
      { kind: 'remove_learner', learnerId: 4 },
      { kind: 'trigger_snapshot' },
      { kind: 'trigger_snapshot' },
    ]);
    expect(calls).toEqual([
      ['addLearner', { learner }],
      ['changeMembership', { members: [1, 3, 4] }],
      ['changeMembership', { members: [1], learners: [] }],
      ['removeLearner', { learner_id: 4 }],
      ['triggerSnapshot', { node: 'leader' }],
      ['triggerSnapshot', { node: 'leader' }],
    ]);
    expect(followerCalls).toEqual([]);
  });

  it('"local" snapshots the follower itself; /init, state and metrics are never forwarded', async () => {
    const { follower, sent, followerCalls } = pair(recordingController([]));
    await expect(follower.triggerSnapshot({ node: 'local' })).rejects.toMatchObject({ code: 'NOT_LEADER' });
    await follower.init({ initial_members: [] }).catch(() => undefined);
    await follower.currentState().catch(() => undefined);
    await follower.getMetrics().catch(() => undefined);
    expect(followerCalls).toEqual([
      ['triggerSnapshot', { node: 'local' }],
      ['init', { initial_members: [] }],
      ['currentState'],
      ['getMetrics'],
    ]);
    expect(sent).toEqual([]);
  });

  it('without a known leader the follower asks its own node first and forwards on its NOT_LEADER', async () => {
    const calls: unknown[] = [];
    const { follower, sent, followerCalls } = pair(recordingController(calls), { knownLeader: 0 });
    await follower.removeLearner({ learner_id: 4 });
    await follower.triggerSnapshot();
    expect(followerCalls).toEqual([
      ['removeLearner', { learner_id: 4 }],
      ['triggerSnapshot', { node: 'leader' }],
    ]);
    expect(sent.map((request) => request.operation.kind)).toEqual(['remove_learner', 'trigger_snapshot']);
    expect(calls).toHaveLength(2);
  });

  it("bad input is refused on the follower with the leader's own error, without a round trip", async () => {
    const leader = await realLeader();
    const { follower, sent } = pair(leader);
    const cases: [string, (controller: ClusterController) => Promise<unknown>][] = [
      ['learner id 0', (c) => c.addLearner({ learner: { ...learner, id: 0 } })],
      ['bad raft_addr', (c) => c.addLearner({ learner: { ...learner, raft_addr: 'nowhere' } })],
      ['bad peer id', (c) => c.addLearner({ learner: { ...learner, peer_id: 'not/a peer' } })],
      ['no members', (c) => c.changeMembership({ members: [] })],
      ['a member twice', (c) => c.changeMembership({ members: [1, 1] })],
      ['learners not a list', (c) => c.changeMembership({ members: [1], learners: 'x' } as never)],
      ['learner id -1', (c) => c.removeLearner({ learner_id: -1 })],
      ['snapshot elsewhere', (c) => c.triggerSnapshot({ node: 'elsewhere' } as never)],
    ];
    for (const [name, call] of cases) {
      const onFollower = (await call(follower).catch((error: unknown) => error)) as AspenError;
      const onLeader = (await call(leader).catch((error: unknown) => error)) as AspenError;
      expect(onFollower, name).toBeInstanceOf(AspenError);
      expect({ name, ...onFollower.toJSON() }).toEqual({ name, ...onLeader.toJSON() });
      expect(onFollower.code, name).toBe('INVALID_INPUT');
    }
    expect(sent).toEqual([]);
  });

  it("the real leader's answers come back through the follower: a snapshot, its refusals, an add-learner that timed out", async () => {
    const leader = await realLeader({ learnerCatchUpTimeoutMs: 100 });
    const { follower, sent } = pair(leader);
    await expect(follower.triggerSnapshot()).resolves.toEqual({
      snapshot: { index: expect.any(Number) as number, term: expect.any(Number) as number },
    });
    await expect(follower.removeLearner({ learner_id: 1 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('node 1 is not a learner: it is a voter') as string,
    });
    await expect(follower.changeMembership({ members: [1, 9] })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: 'node 9 must be added as a learner first',
    });
    // Node 4 never answers: the leader removes it again and says so (definite), the follower passes it on.
    await expect(follower.addLearner({ learner })).rejects.toMatchObject({
      code: 'TIMEOUT',
      definite: true,
      message: expect.stringContaining('it never answered, so it was removed again') as string,
    });
    expect((await leader.currentState()).learners).toEqual([]);
    expect(sent.map((request) => request.operation.kind)).toEqual([
      'trigger_snapshot',
      'remove_learner',
      'change_membership',
      'add_learner',
    ]);
  });

  it("a leader change mid-call: the old leader's NOT_LEADER reaches the client with the new leader, never forwarded twice", async () => {
    const lostBefore = new AspenError('NOT_LEADER', 'node 3 is the leader', { leaderId: 3 });
    const lostDuring = new AspenError('NOT_LEADER', 'leadership changed while the learner caught up', {
      leaderId: 3,
      definite: false,
    });
    const { follower, sent } = pair(
      recordingController([], (call) => Promise.reject(call === 'addLearner' ? lostDuring : lostBefore)),
    );
    await expect(follower.changeMembership({ members: [1, 2, 3] })).rejects.toMatchObject({
      code: 'NOT_LEADER',
      leaderId: 3,
      definite: true,
    });
    // Proposed, then leadership moved: whether it applies is unknown, and the client hears so.
    await expect(follower.addLearner({ learner })).rejects.toMatchObject({
      code: 'NOT_LEADER',
      leaderId: 3,
      definite: false,
    });
    await expect(follower.triggerSnapshot()).rejects.toMatchObject({ code: 'NOT_LEADER', leaderId: 3 });
    expect(sent.map((request) => request.to)).toEqual([1, 1, 1]);
  });

  it('a leader that does not answer: TIMEOUT, indeterminate; an add-learner waits as long as it may run on the leader', async () => {
    const { follower, timers } = followerOfSilentLeader({ controller: followerController([]) });
    const calls = [
      follower.addLearner({ learner }),
      follower.changeMembership({ members: [1, 2, 3] }),
      follower.removeLearner({ learner_id: 4 }),
      follower.triggerSnapshot(),
    ];
    expect(timers.map((timer) => timer.delayMs)).toEqual([
      ADD_LEARNER_RUN_MS_MAX,
      CHANGE_MEMBERSHIP_RUN_MS_MAX,
      FORWARD_TIMEOUT_MS_DEFAULT,
      FORWARD_TIMEOUT_MS_DEFAULT,
    ]);
    // The follower outwaits the leader's catch-up bound, and the client's default outwaits the follower.
    expect(ADD_LEARNER_RUN_MS_MAX).toBeGreaterThan(LEARNER_CATCH_UP_TIMEOUT_MS_DEFAULT);
    expect(ADD_LEARNER_TIMEOUT_MS_DEFAULT).toBeGreaterThanOrEqual(ADD_LEARNER_RUN_MS_MAX);
    for (const timer of timers) timer.fire();
    for (const call of calls)
      await expect(call).rejects.toMatchObject({ code: 'TIMEOUT', definite: false, leaderId: 1 });
  });

  it('an answer the leader cannot send back is INTERNAL, indeterminate for every membership call', async () => {
    const sent: WireMessage[] = [];
    const leader = new ForwardingStore({
      local: unusedStore,
      controller: recordingController([]),
      nodeId: 1,
      clock,
      transport: {
        send: (message) => {
          if (message.type === 'client_response' && message.error === null)
            throw new WireFormatError('a client_response message exceeds the frame');
          sent.push(message);
        },
      },
    });
    const operations: ClientRequest['operation'][] = [
      { kind: 'add_learner', learner },
      { kind: 'change_membership', members: [1], learners: null },
      { kind: 'remove_learner', learnerId: 4 },
      { kind: 'trigger_snapshot' },
    ];
    for (const [requestId, operation] of operations.entries())
      leader.handleRequest({ type: 'client_request', from: 2, to: 1, term: 0, requestId, operation });
    for (let turn = 0; turn < 10; turn += 1) await Promise.resolve();
    expect(sent).toHaveLength(4);
    for (const message of sent)
      expect(message).toMatchObject({
        type: 'client_response',
        error: { code: 'INTERNAL', definite: false },
      });
  });
});

describe('the HTTP layer completes an add-learner on the node it reached, then forwards it', () => {
  const member = (id: number) => ({ id, addr: `node-${id}`, raft_addr: `127.0.0.1:2600${id}` });

  function followerServer(network: Parameters<typeof buildHttpServer>[0]['network'], waitMs: number) {
    const { follower, sent } = pair(recordingController([]));
    const app = buildHttpServer({
      controller: follower,
      store: unusedStore,
      identity: { nodeId: 2, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
      ...(network === undefined ? {} : { network }),
      discoveryWaitMs: waitMs,
    });
    return { app, sent };
  }

  const addLearner = (id: number) => ({
    method: 'POST' as const,
    url: '/add-learner',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ learner: { id } }),
  });

  it('by id: it waits for discovery to find the node, binds the peer this node knows, and forwards the complete learner', async () => {
    let asked = 0;
    const { app, sent } = followerServer(
      {
        addresses: () => [],
        addPeer: () => undefined,
        // Discovery finds node 4 on the fourth look (a node started a moment before the call).
        resolve: (id) => {
          asked += 1;
          return asked >= 4 ? member(id).raft_addr : undefined;
        },
        // Only this node knows the peer that proved node 4's join credential.
        identify: (id) => Promise.resolve(id === 4 ? PEER : undefined),
      },
      5_000,
    );
    const answer = await app.inject(addLearner(4));
    expect(answer.statusCode, answer.body).toBe(200);
    expect(asked).toBe(4);
    expect(sent.map((request) => request.operation)).toEqual([
      { kind: 'add_learner', learner: { ...member(4), peer_id: PEER } },
    ]);
    await app.close();
  });

  it('by id: a node discovery never finds is 400 after the bounded wait; nothing is forwarded', async () => {
    const { app, sent } = followerServer(
      { addresses: () => [], addPeer: () => undefined, resolve: () => undefined },
      300,
    );
    const started = Date.now();
    const answer = await app.inject(addLearner(5));
    const waitedMs = Date.now() - started;
    expect(answer.statusCode).toBe(400);
    expect(answer.json()).toMatchObject({
      error: {
        code: 'INVALID_INPUT',
        message: expect.stringContaining('discovery has not found that node within 300 ms') as string,
      },
    });
    expect(waitedMs).toBeGreaterThanOrEqual(250);
    expect(waitedMs).toBeLessThan(3_000);
    expect(sent).toEqual([]);
    await app.close();
  });

  it('/trigger-snapshot takes no body, {} or {"node":"leader"|"local"}; anything else is 400', async () => {
    const { app, sent } = followerServer(undefined, 0);
    const post = (payload?: string) =>
      app.inject({
        method: 'POST',
        url: '/trigger-snapshot',
        ...(payload === undefined ? {} : { headers: { 'content-type': 'application/json' }, payload }),
      });
    for (const payload of [undefined, '{}', '{"node":"leader"}'])
      expect((await post(payload)).statusCode, payload).toBe(200);
    expect(sent).toHaveLength(3);
    // "local" runs on this follower's own controller (here: it answers NOT_LEADER, as a stub).
    expect((await post('{"node":"local"}')).statusCode).toBe(503);
    for (const payload of ['{"node":"elsewhere"}', '{"node":"local","now":true}', '[]', '"leader"']) {
      const answer = await post(payload);
      expect([payload, answer.statusCode, answer.json<{ error: { code: string } }>().error.code]).toEqual([
        payload,
        400,
        'INVALID_INPUT',
      ]);
    }
    expect(sent).toHaveLength(3);
    await app.close();
  });
});
