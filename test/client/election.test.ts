import { createServer, type ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError, type LeaderChange } from '../../src/client/index.ts';
import { listenLoopback } from '../support/loopback-server.ts';
import { realNode } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const FAST_RETRY = { attemptsMax: 5, totalMsMax: 3_000, backoffMsMin: 5, backoffMsMax: 20 };
const TTL_SECONDS = 2;
const WAIT_MS_MAX = 5_000;
/** How long a campaign is watched to see that it has not been elected. */
const STILL_WAITING_MS = 300;

async function caught(promise: Promise<unknown>): Promise<KvError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KvError) return error;
    throw error;
  }
  throw new Error('expected a KvError');
}

/** Iterate an observation in the background: what it yielded, and a wait for a condition on it. */
function collect(updates: AsyncIterable<LeaderChange>) {
  const seen: LeaderChange[] = [];
  const state: { failure: unknown } = { failure: null };
  const running = (async () => {
    try {
      for await (const change of updates) seen.push(change);
    } catch (error) {
      state.failure = error;
    }
  })();
  const until = async (done: () => boolean) => {
    const deadline = Date.now() + WAIT_MS_MAX;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`observed ${JSON.stringify(seen)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { seen, state, running, until };
}

const values = (seen: readonly LeaderChange[]) => seen.map((change) => change.leader?.value ?? null);

describe('kv.campaign, kv.electionLeader and kv.observe against a real node', () => {
  it('two campaigns hand over on resign; observe sees the sequence of leaders and the proclaimed value', async () => {
    const kv = new KvClient({ endpoints: [await realNode(cleanups)] });
    const stop = new AbortController();
    const observation = collect(kv.observe('db', { signal: stop.signal }));
    await observation.until(() => observation.seen.length === 1);
    expect(await kv.electionLeader('db')).toBeNull();
    const first = await kv.campaign('db', 'a:1', { ttlSeconds: TTL_SECONDS });
    expect(first).toMatchObject({ name: 'db', value: 'a:1' });
    expect(first.key).toMatch(/^db\/[0-9a-f]{16}$/);
    const second = kv.campaign('db', 'b:2', { ttlSeconds: TTL_SECONDS, timeoutMs: 5_000 });
    let settled = false;
    void second.finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, STILL_WAITING_MS));
    expect(settled).toBe(false);
    await first.proclaim('a:3');
    expect(first.value).toBe('a:3');
    expect(await kv.electionLeader('db')).toMatchObject({
      key: first.key,
      value: 'a:3',
      revision: first.revision,
    });
    await first.resign();
    const next = await second;
    expect(next.revision).toBeGreaterThan(first.revision);
    expect(first.lost.aborted).toBe(false); // resigning is not losing
    expect(await kv.electionLeader('db')).toMatchObject({
      key: next.key,
      value: 'b:2',
      lease_id: next.leaseId,
    });
    await next.resign();
    await observation.until(() => observation.seen.length === 5);
    stop.abort();
    await observation.running;
    expect(observation.state.failure).toBeNull();
    expect(values(observation.seen)).toEqual([null, 'a:1', 'a:3', 'b:2', null]);
    const revisions = observation.seen.map((change) => change.revision);
    expect([...revisions].sort((a, b) => a - b)).toEqual(revisions);
    expect((await kv.lease.list()).leases).toEqual([]); // both resignations revoked their leases
  });

  it('lost fires when the lease is revoked; proclaim then fails; a campaign that times out revokes its lease', async () => {
    const kv = new KvClient({ endpoints: [await realNode(cleanups)] });
    const leader = await kv.campaign('solo', 'x', { ttlSeconds: TTL_SECONDS });
    const timedOut = await caught(kv.campaign('solo', 'y', { ttlSeconds: TTL_SECONDS, timeoutMs: 200 }));
    expect(timedOut).toMatchObject({ code: 'CAMPAIGN_TIMEOUT' });
    expect((await kv.lease.list()).leases.map((lease) => lease.lease_id)).toEqual([leader.leaseId]);
    const lost = new Promise((resolve) => {
      leader.lost.addEventListener('abort', resolve, { once: true });
    });
    await kv.lease.revoke(leader.leaseId);
    await lost;
    expect(leader.lost.reason).toMatchObject({ code: 'LEASE_NOT_FOUND' });
    expect(await caught(leader.proclaim('z'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await kv.electionLeader('solo')).toBeNull();
    await leader.resign(); // the lease is gone already: resolves
  });

  it('refuses bad names before granting anything', async () => {
    const kv = new KvClient({ endpoints: [await realNode(cleanups)] });
    for (const name of ['', 'a/b'])
      expect(await caught(kv.campaign(name, 'v', { ttlSeconds: TTL_SECONDS }))).toMatchObject({
        code: 'INVALID_INPUT',
        definite: true,
      });
    expect(await caught(kv.electionLeader('a/b'))).toMatchObject({ code: 'INVALID_INPUT' });
    expect((await kv.lease.list()).leases).toEqual([]);
  });
});

describe('kv.observe against scripted servers', () => {
  const leader = (revision: number, value: string, id: number) =>
    `event: leader\nid: ${id}\ndata: ${JSON.stringify({ name: 'db', key: 'db/0000000000000007', value, revision, lease_id: 7 })}\n\n`;

  /** A server whose n-th observe request gets the n-th answer (then a stream that stays open). */
  async function scripted(answers: ((response: ServerResponse) => void)[]) {
    let requests = 0;
    const server = createServer((request, response) => {
      requests += 1;
      expect(request.url).toBe('/election/observe?name=db');
      const answer = answers.shift();
      if (answer !== undefined) answer(response);
      else response.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
    });
    const url = await listenLoopback(server, cleanups);
    return { url, requests: () => requests };
  }
  const stream = (text: string) => (response: ServerResponse) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' }).end(text);
  };

  it('a dropped stream reopens on the next endpoint, starting again from the leader then; no repeats', async () => {
    const dropped = (response: ServerResponse) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' }).write(leader(4, 'a', 5));
      setTimeout(() => response.socket?.destroy(), 50);
    };
    const first = await scripted([dropped]);
    const second = await scripted([
      stream(`${leader(4, 'a', 6)}event: no_leader\nid: 8\ndata: {"name":"db"}\n\n`),
    ]);
    const kv = new KvClient({ endpoints: [first.url, second.url], retry: FAST_RETRY });
    const stop = new AbortController();
    const observation = collect(kv.observe('db', { signal: stop.signal }));
    await observation.until(() => observation.seen.length === 2 && second.requests() >= 1);
    stop.abort();
    await observation.running;
    expect(observation.state.failure).toBeNull();
    expect(observation.seen).toEqual([
      {
        revision: 5,
        leader: { name: 'db', key: 'db/0000000000000007', value: 'a', revision: 4, lease_id: 7 },
      },
      { revision: 8, leader: null },
    ]);
  });

  it('gives up after the retry policy on streams that break the protocol; a 400 ends it at once', async () => {
    const garbled = stream('event: leader\nid: 3\ndata: {"name":"other"}\n\n');
    const broken = await scripted([garbled, garbled, garbled, garbled, garbled]);
    const kv = new KvClient({ endpoints: [broken.url], retry: FAST_RETRY });
    const observation = collect(kv.observe('db'));
    await observation.running;
    expect(observation.state.failure).toMatchObject({ code: 'BAD_RESPONSE' });
    expect(broken.requests()).toBe(FAST_RETRY.attemptsMax);
    const refusing = await scripted([
      (response) => {
        response
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: { code: 'INVALID_INPUT', message: 'bad name' } }));
      },
    ]);
    const refused = collect(new KvClient({ endpoints: [refusing.url], retry: FAST_RETRY }).observe('db'));
    await refused.running;
    expect(refused.state.failure).toMatchObject({ code: 'INVALID_INPUT' });
    expect(refusing.requests()).toBe(1);
  });
});
