import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError, Op } from '../../src/client/index.ts';
import { moreTelling, tellingRank } from '../../src/client/retry.ts';
import { realNode } from './real-node.ts';
import { closedPort } from '../support/loopback-server.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** What a scripted server does with one request: answer, drop the connection, or never answer. */
type Script = readonly [number, unknown] | 'drop' | 'hang';

interface FakeServer {
  readonly url: string;
  /** Paths of the requests received, in order. */
  readonly requests: string[];
  /** The JSON bodies of the requests to `path`, in order. */
  bodies(path: string): Record<string, unknown>[];
  count(path: string): number;
}

/** A scripted HTTP server: `answer` decides per request (path, and how many of that path so far). */
async function fakeServer(answer: (path: string, count: number) => Script): Promise<FakeServer> {
  const requests: string[] = [];
  const received: [string, Record<string, unknown>][] = [];
  const count = (path: string): number => requests.filter((seen) => seen === path).length;
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = request.url ?? '';
      requests.push(path);
      const text = Buffer.concat(chunks).toString('utf8');
      received.push([path, text === '' ? {} : (JSON.parse(text) as Record<string, unknown>)]);
      const script = answer(path, count(path));
      if (script === 'drop') request.socket.destroy();
      else if (script !== 'hang')
        response.writeHead(script[0], { 'content-type': 'application/json' }).end(JSON.stringify(script[1]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  );
  const bodies = (path: string): Record<string, unknown>[] =>
    received.filter(([seen]) => seen === path).map(([, body]) => body);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, count, bodies };
}

function client(
  endpoints: string[],
  retry: Partial<{
    attemptsMax: number;
    totalMsMax: number;
    backoffMsMin: number;
    backoffMsMax: number;
  }> = {},
  sessions = true,
): KvClient {
  const kv = new KvClient({ endpoints, retry: { backoffMsMin: 1, backoffMsMax: 5, ...retry }, sessions });
  cleanups.push(() => {
    kv.close();
  });
  return kv;
}

const failure = (code: string, extra: Record<string, unknown> = {}): { error: Record<string, unknown> } => ({
  error: { code, message: code.toLowerCase(), ...extra },
});
const written = { command: { Set: { key: 'k', value: 'v' } }, log_index: 9 };
const caught = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => 'resolved',
    (error: unknown) => error,
  );

describe('KvClient against a real node', () => {
  it('writes, reads, scans page by page, deletes; get of a missing key is null', async () => {
    const kv = client([await realNode(cleanups)]);
    const put = await kv.put('greeting', 'hello');
    expect(put).toMatchObject({
      command: { Set: { key: 'greeting', value: 'hello' } },
      log_index: expect.any(Number) as number,
    });
    expect(put.revision).toBe(put.log_index); // a write's revision is its log index
    const got = await kv.get('greeting');
    expect(got).toMatchObject({ key: 'greeting', value: 'hello', version: 1, create_index: put.revision });
    expect(got?.revision).toBeGreaterThanOrEqual(put.revision); // the applied index it was read at
    expect(await kv.get('missing')).toBeNull();
    await expect(kv.read('missing')).rejects.toMatchObject({
      code: 'KEY_NOT_FOUND',
      status: 404,
      definite: true,
    });
    await kv.write({
      SetMulti: {
        pairs: [
          ['app/1', 'a'],
          ['app/2', 'b'],
          ['app/3', 'c'],
        ],
      },
    });
    const page = await kv.scan({ prefix: 'app/', limit: 2 });
    expect(page).toMatchObject({
      count: 2,
      is_truncated: true,
      continuation_token: expect.any(String) as string,
    });
    expect(await kv.scan({ prefix: 'app/', continuation_token: page.continuation_token })).toMatchObject({
      entries: [{ key: 'app/3', value: 'c' }],
      continuation_token: null,
    });
    expect(await kv.scanAll('app/', { pageLimit: 1 })).toEqual([
      { key: 'app/1', value: 'a' },
      { key: 'app/2', value: 'b' },
      { key: 'app/3', value: 'c' },
    ]);
    await kv.write({ DeleteMulti: { keys: ['app/1', 'app/2'] } });
    const deleted = await kv.delete('greeting');
    expect(deleted).toEqual({ key: 'greeting', deleted: true, revision: expect.any(Number) as number });
    expect(await kv.delete('greeting')).toEqual({
      key: 'greeting',
      deleted: false,
      revision: deleted.revision + 1,
    });
    expect((await kv.scan({ prefix: 'app/' })).revision).toBeGreaterThan(deleted.revision);
    expect(await kv.scanAll('')).toEqual([{ key: 'app/3', value: 'c' }]);
    await expect(kv.put('k'.repeat(2_000), 'v')).rejects.toMatchObject({
      code: 'KEY_TOO_LARGE',
      status: 400,
      definite: true,
    });
  });

  it('answers the cluster and per-node calls with their typed shapes', async () => {
    const endpoint = await realNode(cleanups);
    const kv = client([endpoint]);
    expect(await kv.state()).toMatchObject({
      members: [1],
      leader: 1,
      nodes: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }],
      learners: [],
    });
    expect(await kv.leader()).toBe(1);
    expect(await kv.metrics(endpoint)).toMatchObject({ node_id: 1, state: 'Leader', current_leader: 1 });
    expect(await kv.health(endpoint)).toMatchObject({
      status: 'healthy',
      checks: { initialized: true, leader: true },
      node_id: 1,
    });
    expect(await kv.nodeInfo(endpoint)).toMatchObject({ node_id: 1, http_addr: null });
    expect(await kv.prometheusMetrics(endpoint)).toMatch(/^# HELP /m);
    expect(await kv.triggerSnapshot()).toMatchObject({ snapshot: { index: expect.any(Number) as number } });
    expect(await kv.peers(endpoint)).toEqual({ peers: [] });
    await expect(kv.init([{ id: 1, raft_addr: '127.0.0.1:26001' }])).rejects.toMatchObject({
      code: 'ALREADY_INITIALIZED',
      status: 409,
      definite: true,
    });
    // This engine has no network layer: the ticket and add-peer calls are typed, and refused.
    await expect(kv.clusterTicket()).rejects.toMatchObject({ code: 'INVALID_INPUT', status: 400 });
    await expect(kv.joinTicket(4, { ttlSeconds: 60 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      status: 400,
      message: expect.stringMatching(/no network layer/) as string,
    });
    await expect(kv.addPeer(endpoint, 2, '127.0.0.1:26002')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});

describe('KvClient leader routing', () => {
  it('sends writes to the leader that /leader and /node-info name; the follower sees none', async () => {
    const follower = await fakeServer((path) =>
      path === '/node-info'
        ? [200, { node_id: 1 }]
        : path === '/leader'
          ? [200, { leader: 2 }]
          : [200, written],
    );
    const leader = await fakeServer((path) =>
      path === '/node-info'
        ? [200, { node_id: 2 }]
        : path === '/leader'
          ? [200, { leader: 2 }]
          : [200, written],
    );
    const kv = client([follower.url, leader.url]);
    for (let index = 0; index < 3; index += 1) await kv.put('k', 'v');
    expect(kv.cachedLeader).toBe(leader.url);
    expect(leader.count('/write')).toBe(3);
    expect(follower.count('/write')).toBe(0);
    expect(leader.count('/leader') + follower.count('/leader')).toBeLessThanOrEqual(2); // discovered once, then cached
  });

  it('follows NOT_LEADER with leader_id to the named node, and remembers it', async () => {
    // No node helps discovery: the client finds the leader only through the NOT_LEADER answer.
    const noLeader = [503, failure('NO_LEADER')] as const;
    const follower = await fakeServer((path) =>
      path === '/node-info'
        ? [200, { node_id: 1 }]
        : path === '/leader'
          ? noLeader
          : [503, failure('NOT_LEADER', { leader_id: 2 })],
    );
    const leader = await fakeServer((path) =>
      path === '/node-info' ? [200, { node_id: 2 }] : path === '/leader' ? noLeader : [200, written],
    );
    const kv = client([follower.url, leader.url]);
    expect(await kv.put('k', 'v')).toEqual(written);
    expect(follower.count('/write')).toBe(1);
    expect(leader.count('/write')).toBe(1);
    expect(kv.cachedLeader).toBe(leader.url);
    await kv.put('k', 'v');
    await kv.read('k').catch(() => undefined);
    expect(follower.requests.filter((path) => path === '/write' || path === '/read')).toEqual(['/write']); // straight to the leader since
    expect(leader.count('/write')).toBe(2);
  });

  it('sends membership changes to the leader only, learning it from NOT_LEADER', async () => {
    const state = { nodes: [], members: [1, 2], learners: [], leader: 2 };
    const follower = await fakeServer((path) =>
      path === '/node-info' ? [200, { node_id: 1 }] : [503, failure('NOT_LEADER', { leader_id: 2 })],
    );
    const leader = await fakeServer((path) =>
      path === '/node-info'
        ? [200, { node_id: 2 }]
        : path === '/leader'
          ? [503, failure('NO_LEADER')]
          : [200, state],
    );
    const kv = client([follower.url, leader.url]);
    expect(await kv.changeMembership([1, 2])).toEqual(state);
    expect(kv.cachedLeader).toBe(leader.url);
    await kv.addLearner({ id: 3, raft_addr: '127.0.0.1:26003' });
    expect(follower.requests.filter((path) => path.startsWith('/change') || path.startsWith('/add'))).toEqual(
      ['/change-membership'],
    );
    expect(leader.requests.filter((path) => path.startsWith('/change') || path.startsWith('/add'))).toEqual([
      '/change-membership',
      '/add-learner',
    ]);
  });
});

describe('KvClient retries', () => {
  it('retries a read past a refused endpoint, and a write whose connection was refused before sending', async () => {
    const live = await fakeServer((path) =>
      path === '/write'
        ? [200, written]
        : [200, { key: 'k', value: 'v', create_index: 1, mod_index: 1, version: 1 }],
    );
    const dead = await closedPort();
    expect(await client([dead, live.url]).read('k')).toMatchObject({ value: 'v' });
    expect(await client([dead, live.url]).put('k', 'v')).toEqual(written);
    expect(live.count('/write')).toBe(1);
    // Every endpoint refusing: the write certainly did not apply.
    await expect(client([dead], { attemptsMax: 3 }).put('k', 'v')).rejects.toMatchObject({
      code: 'CONNECTION',
      definite: true,
      status: null,
      endpoint: dead,
    });
  });

  it('without sessions, never sends a write again after a 504 TIMEOUT: one request, definite false; a read is retried', async () => {
    const server = await fakeServer((path, count) =>
      path === '/read' && count > 1 ? [200, { key: 'k', value: 'v' }] : [504, failure('TIMEOUT')],
    );
    const kv = client([server.url], {}, false);
    const error = await caught(kv.put('k', 'v'));
    expect(error).toBeInstanceOf(KvError);
    expect(error).toMatchObject({ code: 'TIMEOUT', status: 504, definite: false, endpoint: server.url });
    expect(server.count('/write')).toBe(1);
    expect(await kv.read('k')).toMatchObject({ value: 'v' });
    expect(server.count('/read')).toBe(2);
  });

  it('without sessions, never sends a write again when the connection is lost after sending it', async () => {
    const server = await fakeServer((path, count) =>
      path === '/read' && count > 1 ? [200, { key: 'k', value: 'v' }] : 'drop',
    );
    const kv = client([server.url], {}, false);
    await expect(kv.put('k', 'v')).rejects.toMatchObject({
      code: 'CONNECTION',
      definite: false,
      status: null,
    });
    expect(server.count('/write')).toBe(1);
    expect(await kv.read('k')).toMatchObject({ value: 'v' });
    expect(server.count('/read')).toBe(2);
  });

  it('without sessions, treats NOT_LEADER without leader_id and SHUTTING_DOWN as in doubt for writes, transient for reads', async () => {
    for (const answer of [failure('NOT_LEADER'), failure('SHUTTING_DOWN')]) {
      const server = await fakeServer((path, count) =>
        path === '/read' && count > 1 ? [200, { key: 'k', value: 'v' }] : [503, answer],
      );
      const kv = client([server.url], {}, false);
      await expect(kv.put('k', 'v')).rejects.toMatchObject({ code: answer.error.code, definite: false });
      expect(server.count('/write')).toBe(1);
      expect(await kv.read('k')).toMatchObject({ value: 'v' });
    }
  });

  it('does not retry bad input; retries NOT_INITIALIZED (a member not yet reached after /init) up to attemptsMax', async () => {
    const server = await fakeServer((path) =>
      path === '/write' ? [400, failure('INVALID_INPUT')] : [503, failure('NOT_INITIALIZED')],
    );
    const kv = client([server.url], { attemptsMax: 3 });
    await expect(kv.put('k', 'v')).rejects.toMatchObject({ code: 'INVALID_INPUT', definite: true });
    await expect(kv.read('k')).rejects.toMatchObject({
      code: 'NOT_INITIALIZED',
      status: 503,
      definite: true,
    });
    expect([server.count('/write'), server.count('/read')]).toEqual([1, 3]);
  });

  it('a write refused with NOT_INITIALIZED by a member that has not heard from the leader yet goes to another endpoint', async () => {
    const uninitialized = await fakeServer(() => [503, failure('NOT_INITIALIZED')]);
    const member = await fakeServer((path) =>
      path === '/write'
        ? [200, { command: { Set: { key: 'k', value: 'v' } }, log_index: 5, revision: 5 }]
        : 'drop',
    );
    const kv = client([uninitialized.url, member.url], {}, false);
    await expect(kv.put('k', 'v')).resolves.toMatchObject({ log_index: 5 });
    expect(member.count('/write')).toBe(1);
  });

  it('bounds retries by count: a cluster with no leader gets exactly attemptsMax requests', async () => {
    const server = await fakeServer(() => [503, failure('NO_LEADER')]);
    const kv = client([server.url], { attemptsMax: 4 });
    await expect(kv.put('k', 'v')).rejects.toMatchObject({ code: 'NO_LEADER', definite: true });
    expect(server.count('/write')).toBe(4);
    await expect(kv.read('k')).rejects.toMatchObject({ code: 'NO_LEADER' });
    expect(server.count('/read')).toBe(4);
  });

  it('bounds retries by total time', async () => {
    const server = await fakeServer(() => [503, failure('OVERLOADED')]);
    const kv = client([server.url], {
      attemptsMax: 100_000,
      totalMsMax: 300,
      backoffMsMin: 10,
      backoffMsMax: 40,
    });
    const startedMs = Date.now();
    await expect(kv.read('k')).rejects.toMatchObject({ code: 'OVERLOADED' });
    const elapsedMs = Date.now() - startedMs;
    expect(elapsedMs).toBeGreaterThanOrEqual(250);
    expect(elapsedMs).toBeLessThan(2_000);
    expect(server.count('/read')).toBeGreaterThan(2);
    expect(server.count('/read')).toBeLessThan(100);
  });
});

describe('KvClient: the most telling failure wins', () => {
  it('ranks a server refusal over NO_QUORUM over NO_LEADER over TIMEOUT over NOT_LEADER over a refused connection', () => {
    const ranked = ['UNAUTHENTICATED', 'NO_QUORUM', 'NO_LEADER', 'TIMEOUT', 'NOT_LEADER', 'CONNECTION'];
    for (const [index, code] of ranked.entries())
      for (const lower of ranked.slice(index + 1)) {
        expect(tellingRank(code)).toBeGreaterThan(tellingRank(lower));
        expect(moreTelling({ code }, { code: lower }).code).toBe(code);
        expect(moreTelling({ code: lower }, { code }).code).toBe(code);
      }
    for (const code of ['FORBIDDEN', 'TLS_ERROR', 'INVALID_INPUT'])
      expect(tellingRank(code)).toBe(tellingRank('UNAUTHENTICATED'));
    // One endpoint in no cluster (retried elsewhere) says less than a member's answer, more than NOT_LEADER.
    expect(tellingRank('NOT_INITIALIZED')).toBeGreaterThan(tellingRank('NOT_LEADER'));
    expect(tellingRank('NOT_INITIALIZED')).toBeLessThan(tellingRank('SHUTTING_DOWN'));
    // A tie goes to the later failure.
    const later = { code: 'CONNECTION', at: 2 };
    expect(moreTelling({ code: 'CONNECTION', at: 1 }, later)).toBe(later);
  });

  it("reports an earlier NO_QUORUM, not the refused connection of the last attempt, with the whole call's definite", async () => {
    const quorumless = await fakeServer(() => [503, failure('NO_QUORUM')]);
    const dead = await closedPort();
    await expect(client([quorumless.url, dead], { attemptsMax: 2 }).read('k')).rejects.toMatchObject({
      code: 'NO_QUORUM',
      endpoint: quorumless.url,
    });
    expect(quorumless.count('/read')).toBe(1);
    // NO_LEADER (definite), then a connection lost after sending (in doubt): the report is in doubt.
    const leaderless = await fakeServer(() => [503, failure('NO_LEADER')]);
    const dropping = await fakeServer(() => 'drop');
    const error = await caught(client([leaderless.url, dropping.url], { attemptsMax: 2 }).put('k', 'v'));
    expect(error).toMatchObject({ code: 'NO_LEADER', definite: false, endpoint: leaderless.url });
    expect([leaderless.count('/write'), dropping.count('/write')]).toEqual([1, 1]);
    // Both definite: the report is definite.
    await expect(client([leaderless.url, dead], { attemptsMax: 2 }).put('k', 'v')).rejects.toMatchObject({
      code: 'NO_LEADER',
      definite: true,
    });
  });
});

describe('KvClient cancellation', () => {
  it('aborts on the caller signal, mid-request and during backoff; a per-call timeout is TIMEOUT', async () => {
    // Discovery gets quick answers; the data calls are accepted and never answered.
    const silent = await fakeServer((path) =>
      path === '/node-info'
        ? [200, { node_id: 1 }]
        : path === '/leader'
          ? [503, failure('NO_LEADER')]
          : 'hang',
    );
    const kv = client([silent.url], { attemptsMax: 1 });
    const controller = new AbortController();
    setTimeout(() => {
      controller.abort();
    }, 50);
    await expect(kv.put('k', 'v', { signal: controller.signal })).rejects.toMatchObject({
      code: 'ABORTED',
      definite: false,
    });
    expect(silent.count('/write')).toBe(1);
    await expect(kv.read('k', { timeoutMs: 50 })).rejects.toMatchObject({
      code: 'TIMEOUT',
      definite: false,
      endpoint: silent.url,
    });
    expect(silent.count('/read')).toBe(1);
    const before = silent.requests.length;
    await expect(kv.read('k', { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: 'ABORTED',
      definite: true,
    });
    expect(silent.requests).toHaveLength(before);

    const busy = await fakeServer(() => [503, failure('OVERLOADED')]);
    const slow = client([busy.url], {
      attemptsMax: 1_000,
      totalMsMax: 60_000,
      backoffMsMin: 10_000,
      backoffMsMax: 10_000,
    });
    const startedMs = Date.now();
    await expect(slow.read('k', { signal: AbortSignal.timeout(100) })).rejects.toMatchObject({
      code: 'ABORTED',
    });
    expect(Date.now() - startedMs).toBeLessThan(5_000);
    expect(busy.count('/read')).toBeLessThan(5); // full jitter may pick a short first delay, rarely
  });
});

describe('KvClient sessions', () => {
  const session = (body: Record<string, unknown>): [unknown, unknown] => [body.client_id, body.sequence];

  it('resends a write in doubt (504, lost connection) with the same client_id and sequence', async () => {
    const server = await fakeServer((path, count) =>
      path !== '/write'
        ? [404, failure('NOT_FOUND')]
        : count === 1
          ? [504, failure('TIMEOUT')]
          : count === 2
            ? 'drop'
            : [200, written],
    );
    const kv = client([server.url]);
    expect(await kv.put('k', 'v')).toEqual(written);
    const bodies = server.bodies('/write');
    expect(bodies).toHaveLength(3);
    const [clientId, sequence] = session(bodies[0] ?? {});
    expect(clientId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(sequence).toBe(1);
    for (const body of bodies)
      expect(body).toEqual({ command: { Set: { key: 'k', value: 'v' } }, client_id: clientId, sequence: 1 });
  });

  it('numbers mutating calls 1, 2, 3 under one client id; reads carry none; each client its own id', async () => {
    const server = await fakeServer((path) =>
      path === '/write'
        ? [200, { ...written, revision: 9 }]
        : path === '/delete'
          ? [200, { key: 'k', deleted: true }]
          : [200, { key: 'k', value: 'v' }],
    );
    const kv = client([server.url]);
    await kv.put('k', 'v');
    await kv.delete('k');
    await kv.read('k');
    await kv.cas('k', null, 'v');
    const sent = [...server.bodies('/write'), ...server.bodies('/delete')];
    const clientId = sent[0]?.client_id;
    expect(sent.map((body) => body.client_id)).toEqual([clientId, clientId, clientId]);
    expect(sent.map((body) => body.sequence).sort()).toEqual([1, 2, 3]);
    expect(server.bodies('/read')[0]).toEqual({ key: 'k' });
    const other = client([server.url]);
    await other.put('k', 'v');
    expect(server.bodies('/write').at(-1)?.client_id).not.toBe(clientId);
  });

  it('runs concurrent writes on separate lanes (client ids), each numbered from 1', async () => {
    const server = await fakeServer(() => [200, written]);
    const kv = client([server.url]);
    await Promise.all(Array.from({ length: 20 }, (_, i) => kv.put(`k${i}`, 'v')));
    const bodies = server.bodies('/write');
    expect(bodies).toHaveLength(20);
    const byClient = new Map<unknown, unknown[]>();
    for (const body of bodies)
      byClient.set(body.client_id, [...(byClient.get(body.client_id) ?? []), body.sequence]);
    expect(byClient.size).toBeLessThanOrEqual(8);
    for (const sequences of byClient.values()) expect(sequences).toEqual(sequences.map((_, i) => i + 1));
  });

  it('with sessions: false sends neither client_id nor sequence', async () => {
    const server = await fakeServer(() => [200, written]);
    await client([server.url], {}, false).put('k', 'v');
    expect(server.bodies('/write')).toEqual([{ command: { Set: { key: 'k', value: 'v' } } }]);
  });

  it('SESSION_EXPIRED after a send in doubt is definite false; on a first send, a new session is taken once', async () => {
    const expired = [409, failure('SESSION_EXPIRED', { definite: false })] as const;
    const doubt = await fakeServer((path, count) =>
      path !== '/write' ? [404, failure('NOT_FOUND')] : count === 1 ? [504, failure('TIMEOUT')] : expired,
    );
    const kv = client([doubt.url]);
    const error = await caught(kv.put('k', 'v'));
    expect(error).toBeInstanceOf(KvError);
    expect(error).toMatchObject({ code: 'SESSION_EXPIRED', status: 409, definite: false });
    expect(doubt.count('/write')).toBe(2);
    // The next call takes a fresh client id (never reused), from sequence 1.
    await caught(kv.put('k', 'v'));
    const [first, , third] = doubt.bodies('/write');
    expect(third?.client_id).not.toBe(first?.client_id);
    expect(third?.sequence).toBe(1);

    const idle = await fakeServer((path, count) =>
      path !== '/write' ? [404, failure('NOT_FOUND')] : count === 1 ? expired : [200, written],
    );
    expect(await client([idle.url]).put('k', 'v')).toEqual(written);
    const [old, renewed] = idle.bodies('/write');
    expect(renewed?.client_id).not.toBe(old?.client_id);
    expect(renewed?.sequence).toBe(1);
  });

  it('a definite refusal after an attempt in doubt is reported in doubt: the first copy may have applied', async () => {
    const server = await fakeServer((path, count) =>
      path !== '/write'
        ? [404, failure('NOT_FOUND')]
        : count === 1
          ? [504, failure('TIMEOUT')]
          : [503, failure('NO_LEADER')],
    );
    const error = await caught(client([server.url], { attemptsMax: 3 }).put('k', 'v'));
    expect(error).toMatchObject({ code: 'NO_LEADER', definite: false });
    expect(server.count('/write')).toBe(3);
  });
});

describe('KvClient leases against a real node', () => {
  const poll = async (check: () => Promise<boolean>, withinMs: number): Promise<boolean> => {
    const endMs = Date.now() + withinMs;
    for (let round = 0; round < 1_000 && Date.now() < endMs; round += 1) {
      if (await check()) return true;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return check();
  };
  const exists = async (kv: KvClient, id: number): Promise<boolean> =>
    (await kv.lease.list()).leases.some((lease) => lease.lease_id === id);

  it('grants, renews, lists, revokes; refusals are definite', async () => {
    const kv = client([await realNode(cleanups)]);
    const granted = await kv.lease.grant(5);
    expect(granted).toMatchObject({ ttl_seconds: 5, log_index: expect.any(Number) as number });
    const id = granted.lease_id;
    expect(id).toBeGreaterThanOrEqual(granted.log_index); // the cluster chose an id at or above its index
    expect(await kv.lease.keepAlive(id)).toEqual({ lease_id: id, ttl_seconds: 5 });
    const info = await kv.lease.info(id, { keys: true });
    expect(info).toMatchObject({ lease_id: id, ttl_seconds: 5, keys: [] });
    expect(info.remaining_seconds).toBeGreaterThan(3);
    expect(await kv.lease.info(id)).not.toHaveProperty('keys');
    expect(await kv.lease.grant(7, { leaseId: 1_000 })).toMatchObject({ lease_id: 1_000, ttl_seconds: 7 });
    expect((await kv.lease.list()).leases.map((lease) => lease.lease_id)).toEqual([id, 1_000]);

    await expect(kv.lease.grant(5, { leaseId: id })).rejects.toMatchObject({
      code: 'LEASE_EXISTS',
      status: 409,
      definite: true,
    });
    await expect(kv.lease.grant(86_401)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await kv.lease.revoke(id)).toMatchObject({ lease_id: id, revoked: true });
    await expect(kv.lease.revoke(id)).rejects.toMatchObject({ code: 'LEASE_NOT_FOUND', status: 404 });
    await expect(kv.lease.keepAlive(id)).rejects.toMatchObject({ code: 'LEASE_NOT_FOUND' });
    await expect(kv.lease.info(id)).rejects.toMatchObject({ code: 'LEASE_NOT_FOUND' });
    expect((await kv.lease.list()).leases.map((lease) => lease.lease_id)).toEqual([1_000]);
  });

  it('a keeper holds a lease past its TTL; once stopped, it expires within TTL + a bound and a late keeper says it is lost', async () => {
    const kv = client([await realNode(cleanups)]);
    const { lease_id: id } = await kv.lease.grant(1);
    const keeper = kv.lease.keepAliveForever(id, { ttlSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(await exists(kv, id)).toBe(true);
    keeper.stop();
    expect(await keeper.done).toEqual({ reason: 'stopped' });
    const stoppedMs = Date.now();
    expect(await poll(async () => !(await exists(kv, id)), 3_000)).toBe(true);
    expect(Date.now() - stoppedMs).toBeGreaterThanOrEqual(500); // not before the TTL of the last renewal ran out
    const late = await kv.lease.keepAliveForever(id).done;
    expect(late).toMatchObject({ reason: 'lost', cause: 'not_found' });
  });

  it('attaches keys with put and Op.set; a Set on an unknown lease writes nothing; revoke and expiry delete the keys', async () => {
    const kv = client([await realNode(cleanups)]);
    const { lease_id: id } = await kv.lease.grant(5);
    await kv.put('svc/a', '1', { leaseId: id });
    await kv
      .txn()
      .then(Op.set('svc/b', '2', id))
      .commit();
    expect(await kv.get('svc/a')).toMatchObject({ lease_id: id });
    expect((await kv.lease.info(id, { keys: true })).keys).toEqual(['svc/a', 'svc/b']);
    await expect(kv.put('svc/c', '3', { leaseId: 999_999 })).rejects.toMatchObject({
      code: 'LEASE_NOT_FOUND',
      status: 404,
      definite: true,
    });
    expect(await kv.get('svc/c')).toBeNull();
    await kv.put('svc/a', 'detached'); // written again without a lease: off the lease
    expect((await kv.lease.info(id, { keys: true })).keys).toEqual(['svc/b']);
    const revoked = await kv.lease.revoke(id);
    expect(await kv.get('svc/b')).toBeNull();
    expect(await kv.get('svc/a')).toMatchObject({ value: 'detached', lease_id: 0 });
    expect((await kv.get('svc/a'))?.revision).toBeGreaterThanOrEqual(revoked.log_index);

    const { lease_id: short } = await kv.lease.grant(1);
    await kv.put('owned', 'yes', { leaseId: short });
    const keeper = kv.lease.keepAliveForever(short, { ttlSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await kv.get('owned')).toMatchObject({ lease_id: short });
    keeper.stop();
    await keeper.done;
    expect(await poll(async () => (await kv.get('owned')) === null, 3_000)).toBe(true);
  });
});

describe('KvClient leases', () => {
  const granted = { lease_id: 7, ttl_seconds: 1, log_index: 3 };
  const renewed = { lease_id: 7, ttl_seconds: 1 };
  const notFound = [404, failure('LEASE_NOT_FOUND')] as const;

  it('sends each lease call to its route: grant and revoke under a session, keepalive and reads without', async () => {
    const server = await fakeServer((path) =>
      path === '/lease/grant'
        ? [200, granted]
        : path === '/lease/keepalive'
          ? [200, renewed]
          : path === '/lease/revoke'
            ? [200, { lease_id: 7, revoked: true, log_index: 5 }]
            : path.startsWith('/lease/info')
              ? [200, { lease_id: 7, ttl_seconds: 1, remaining_seconds: 1, keys: ['a'] }]
              : path === '/leases'
                ? [200, { leases: [{ lease_id: 7, ttl_seconds: 1, remaining_seconds: 1 }] }]
                : path === '/write'
                  ? [200, written]
                  : [404, failure('NOT_FOUND')],
    );
    const kv = client([server.url]);
    expect(await kv.lease.grant(1)).toEqual(granted);
    await kv.lease.grant(10, { leaseId: 7 });
    expect(await kv.lease.keepAlive(7)).toEqual(renewed);
    expect(await kv.lease.info(7, { keys: true })).toMatchObject({ keys: ['a'] });
    await kv.lease.info(7);
    expect((await kv.lease.list()).leases).toHaveLength(1);
    expect(await kv.lease.revoke(7)).toMatchObject({ revoked: true });
    await kv.put('k', 'v', { leaseId: 7 });
    await kv
      .txn()
      .then(Op.set('a', '1', 7), Op.set('b', '2'))
      .commit()
      .catch(() => undefined);

    const [first, second] = server.bodies('/lease/grant');
    expect(first).toMatchObject({ ttl_seconds: 1, sequence: expect.any(Number) as number });
    expect(first).not.toHaveProperty('lease_id');
    expect(second).toMatchObject({ ttl_seconds: 10, lease_id: 7, client_id: expect.any(String) as string });
    expect(server.bodies('/lease/revoke')[0]).toMatchObject({
      lease_id: 7,
      sequence: expect.any(Number) as number,
    });
    expect(server.bodies('/lease/keepalive')).toEqual([{ lease_id: 7 }]);
    expect(server.requests).toContain('/lease/info?lease_id=7&keys=true');
    expect(server.requests).toContain('/lease/info?lease_id=7');
    const [put, txn] = server.bodies('/write');
    expect(put?.command).toEqual({ Set: { key: 'k', value: 'v', lease_id: 7 } });
    expect(txn?.command).toMatchObject({
      Transaction: {
        success: [{ Set: { key: 'a', value: '1', lease_id: 7 } }, { Set: { key: 'b', value: '2' } }],
      },
    });
  });

  it('info lists one page of keys (after a key); infoWithKeys follows the pages', async () => {
    const info = { lease_id: 7, ttl_seconds: 1, remaining_seconds: 1 };
    const pages: Record<string, unknown> = {
      '/lease/info?lease_id=7&keys=true': { ...info, keys: ['a', 'b'], keys_truncated: true },
      '/lease/info?lease_id=7&keys=true&after=b': { ...info, keys: ['c\u0000'], keys_truncated: true },
      '/lease/info?lease_id=7&keys=true&after=c%00': { ...info, keys: ['d'], keys_truncated: false },
    };
    const server = await fakeServer((path) =>
      path in pages ? [200, pages[path]] : [404, failure('LEASE_NOT_FOUND')],
    );
    const kv = client([server.url]);
    expect(await kv.lease.info(7, { keys: true, after: 'b' })).toEqual({
      ...info,
      keys: ['c\u0000'],
      keys_truncated: true,
    });
    expect(await kv.lease.infoWithKeys(7)).toEqual({
      ...info,
      keys: ['a', 'b', 'c\u0000', 'd'],
      keys_truncated: false,
    });
    await expect(kv.lease.info(7, { after: 'b' })).rejects.toThrow(RangeError);
  });

  it('refuses a bad TTL or id before sending; maps the lease codes to definite KvErrors', async () => {
    const server = await fakeServer((path) =>
      path === '/lease/grant'
        ? [409, failure('TOO_MANY_LEASES')]
        : path === '/lease/revoke'
          ? notFound
          : [409, failure('LEASE_EXISTS')],
    );
    const kv = client([server.url]);
    for (const bad of [0, 1.5, 86_401, Number.NaN])
      await expect(kv.lease.grant(bad)).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        status: null,
        definite: true,
      });
    await expect(kv.lease.keepAlive(0)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(kv.lease.grant(5, { leaseId: -1 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(
      kv
        .txn()
        .then(Op.set('a', '1', -1)) // 0 is no lease: sent (see txn.test.ts)
        .commit(),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(server.requests).toEqual([]);
    await expect(kv.lease.grant(5)).rejects.toMatchObject({
      code: 'TOO_MANY_LEASES',
      status: 409,
      definite: true,
    });
    await expect(kv.lease.revoke(9)).rejects.toMatchObject({
      code: 'LEASE_NOT_FOUND',
      status: 404,
      definite: true,
    });
    expect(server.count('/lease/grant')).toBe(1); // not retried
  });

  it('retries a keepalive after a lost connection, and a grant in doubt under the same session', async () => {
    const server = await fakeServer((path, count) =>
      count === 1 && path.startsWith('/lease')
        ? 'drop'
        : path === '/lease/grant'
          ? [200, granted]
          : [200, renewed],
    );
    const kv = client([server.url]);
    expect(await kv.lease.keepAlive(7)).toEqual(renewed);
    expect(server.count('/lease/keepalive')).toBe(2);
    expect(await kv.lease.grant(1)).toEqual(granted);
    const [sent, resent] = server.bodies('/lease/grant');
    expect(resent).toEqual(sent);
  });

  it('a keeper renews every TTL / 3, reports each renewal, and stops on stop()', async () => {
    const server = await fakeServer(() => [200, renewed]);
    const kv = client([server.url]);
    const renewals: number[] = [];
    const before = performance.now();
    const keeper = kv.lease.keepAliveForever(7, { onRenewed: (_answer, until) => renewals.push(until) });
    await new Promise((resolve) => setTimeout(resolve, 900));
    keeper.stop();
    expect(await keeper.done).toEqual({ reason: 'stopped' });
    const sent = server.count('/lease/keepalive');
    expect(sent).toBeGreaterThanOrEqual(3); // at 0, ~333 and ~667 ms
    expect(sent).toBeLessThanOrEqual(4);
    expect(renewals).toHaveLength(sent);
    expect(renewals[0]).toBeGreaterThanOrEqual(before + 1000); // counted from the send, + TTL
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(server.count('/lease/keepalive')).toBe(sent); // nothing after stop()
  });

  it('a keeper reports loss on LEASE_NOT_FOUND, once, and stops', async () => {
    const server = await fakeServer((_path, count) => (count === 1 ? [200, renewed] : notFound));
    const kv = client([server.url]);
    const losses: unknown[] = [];
    const keeper = kv.lease.keepAliveForever(7, { onLost: (end) => losses.push(end) });
    const end = await keeper.done;
    expect(end).toMatchObject({ reason: 'lost', cause: 'not_found', error: { code: 'LEASE_NOT_FOUND' } });
    expect(losses).toEqual([end]);
    expect(server.count('/lease/keepalive')).toBe(2);
  });

  it('a keeper fails over to another endpoint when the one it used drops connections', async () => {
    const a = await fakeServer((path, count) =>
      path !== '/lease/keepalive' ? [404, failure('NOT_FOUND')] : count === 1 ? [200, renewed] : 'drop',
    );
    const b = await fakeServer((path) =>
      path === '/lease/keepalive' ? [200, renewed] : [404, failure('NOT_FOUND')],
    );
    const kv = client([a.url, b.url]);
    const keeper = kv.lease.keepAliveForever(7);
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    keeper.stop();
    expect(await keeper.done).toEqual({ reason: 'stopped' }); // never lost: 1.3 s is past the first TTL
    expect(a.count('/lease/keepalive')).toBe(2);
    expect(b.count('/lease/keepalive')).toBeGreaterThanOrEqual(3);
  });

  it('a keeper gives up on an endpoint that never answers after min(TTL / 4, 1 s) and renews elsewhere', async () => {
    // `a` answers once, then takes keepalives and never answers (a follower forwarding to a dead leader).
    const slowRenewed = { lease_id: 7, ttl_seconds: 2 };
    const a = await fakeServer((path, count) =>
      path !== '/lease/keepalive' ? [404, failure('NOT_FOUND')] : count === 1 ? [200, slowRenewed] : 'hang',
    );
    const b = await fakeServer((path) =>
      path === '/lease/keepalive' ? [200, slowRenewed] : [404, failure('NOT_FOUND')],
    );
    const kv = client([a.url, b.url]);
    const renewedAt: number[] = [];
    const keeper = kv.lease.keepAliveForever(7, {
      onRenewed: () => renewedAt.push(performance.now()),
    });
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    keeper.stop();
    expect(await keeper.done).toEqual({ reason: 'stopped' }); // never lost: 2.5 s is past the first TTL
    expect(a.count('/lease/keepalive')).toBe(2);
    expect(b.count('/lease/keepalive')).toBeGreaterThanOrEqual(2);
    const [first, second] = renewedAt;
    // The second renewal: TTL / 3 after the first, plus one attempt bounded by TTL / 4 on `a`.
    expect((second ?? Infinity) - (first ?? 0)).toBeLessThan(667 + 500 + 300);
  });

  it('a keeper with no acknowledged renewal by send time + TTL reports the lease lost at that instant', async () => {
    const server = await fakeServer((_path, count) => (count === 1 ? [200, renewed] : 'hang'));
    const kv = client([server.url]);
    const before = performance.now();
    let lostAt = 0;
    const keeper = kv.lease.keepAliveForever(7, {
      onLost: () => {
        lostAt = performance.now();
      },
    });
    expect(await keeper.done).toMatchObject({ reason: 'lost', cause: 'deadline' });
    const aliveUntil = keeper.aliveUntilMs ?? 0;
    expect(aliveUntil - before).toBeGreaterThanOrEqual(1_000);
    expect(aliveUntil - before).toBeLessThan(1_200);
    expect(lostAt).toBeGreaterThanOrEqual(aliveUntil);
    expect(lostAt - aliveUntil).toBeLessThan(300);
  });

  it('a keeper gives up on a refusal no retry fixes, and when the first renewal never succeeds within ttlSeconds', async () => {
    const refusing = await fakeServer(() => [400, failure('INVALID_INPUT')]);
    const refused = await client([refusing.url]).lease.keepAliveForever(7).done;
    expect(refused).toMatchObject({ reason: 'lost', cause: 'refused', error: { code: 'INVALID_INPUT' } });
    const down = await closedPort();
    const before = performance.now();
    const unconfirmed = await client([down]).lease.keepAliveForever(7, { ttlSeconds: 1 }).done;
    expect(unconfirmed).toMatchObject({ reason: 'lost', cause: 'deadline' });
    expect(performance.now() - before).toBeGreaterThanOrEqual(990);
  });
});

describe('kv.lock against a real node', () => {
  const TTL_SECONDS = 2;

  it('a second lock of the name waits; release hands it over with a larger token; each release revokes its lease', async () => {
    const kv = client([await realNode(cleanups)]);
    const first = await kv.lock('jobs', { ttlSeconds: TTL_SECONDS });
    expect(first.key).toMatch(/^jobs\/[0-9a-f]{16}$/);
    const second = kv.lock('jobs', { ttlSeconds: TTL_SECONDS, timeoutMs: 5_000 });
    let settled = false;
    void second.finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled).toBe(false);
    await first.release();
    const next = await second;
    expect(next.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(next.key).not.toBe(first.key);
    expect(first.lost.aborted).toBe(false); // releasing is not losing
    await next.release();
    expect((await kv.lease.list()).leases).toEqual([]);
  });

  it('lost fires when the lease is revoked behind its back; a wait that times out gives LOCK_TIMEOUT and revokes its lease', async () => {
    const kv = client([await realNode(cleanups)]);
    const held = await kv.lock('solo', { ttlSeconds: TTL_SECONDS });
    const timedOut = await caught(kv.lock('solo', { ttlSeconds: TTL_SECONDS, timeoutMs: 200 }));
    expect(timedOut).toMatchObject({ code: 'LOCK_TIMEOUT' });
    expect((await kv.lease.list()).leases.map((lease) => lease.lease_id)).toEqual([held.leaseId]);
    const lost = new Promise((resolve) => {
      held.lost.addEventListener('abort', resolve, { once: true });
    });
    await kv.lease.revoke(held.leaseId);
    await lost;
    expect(held.lost.reason).toMatchObject({ code: 'LEASE_NOT_FOUND' });
    await held.release(); // the lease is gone already: resolves
  });

  it('refuses bad names and timeouts before granting anything', async () => {
    const kv = client([await realNode(cleanups)]);
    for (const name of ['', 'a/b', 'x'.repeat(2_000)])
      expect(await caught(kv.lock(name, { ttlSeconds: TTL_SECONDS }))).toMatchObject({
        code: 'INVALID_INPUT',
        definite: true,
      });
    expect(await caught(kv.lock('ok', { ttlSeconds: TTL_SECONDS, timeoutMs: 0 }))).toMatchObject({
      code: 'INVALID_INPUT',
    });
    expect((await kv.lease.list()).leases).toEqual([]);
  });
});

describe('kv.lock against a scripted server', () => {
  const granted: Script = [200, { lease_id: 7, ttl_seconds: 5, log_index: 3 }];
  const renewed: Script = [200, { lease_id: 7, ttl_seconds: 5 }];
  const owned: Script = [200, { name: 'jobs', key: 'jobs/0000000000000007', fencing_token: 4 }];

  it('a lock call whose connection broke is sent again with the same lease; release unlocks then revokes', async () => {
    const server = await fakeServer((path, count) => {
      if (path === '/lease/grant') return granted;
      if (path === '/lease/keepalive') return renewed;
      if (path === '/lock') return count === 1 ? 'drop' : owned;
      if (path === '/unlock') return [200, { released: true }];
      if (path === '/lease/revoke') return [200, { lease_id: 7, log_index: 9 }];
      return [404, failure('NOT_FOUND')];
    });
    const kv = client([server.url]);
    const held = await kv.lock('jobs', { ttlSeconds: 5, timeoutMs: 2_000 });
    expect(held).toMatchObject({ key: 'jobs/0000000000000007', fencingToken: 4, leaseId: 7 });
    expect(server.bodies('/lock').map((body) => body.lease_id)).toEqual([7, 7]);
    const [firstTimeout, secondTimeout] = server.bodies('/lock').map((body) => body.timeout_ms as number);
    expect(firstTimeout).toBeLessThanOrEqual(2_000);
    expect(secondTimeout).toBeLessThan(firstTimeout ?? 0);
    await held.release();
    const order = server.requests.filter((path) => path === '/unlock' || path === '/lease/revoke');
    expect(order).toEqual(['/unlock', '/lease/revoke']);
  });

  it('LOCK_TIMEOUT and TOO_MANY_WAITERS are not retried, and the lease is revoked', async () => {
    for (const [code, status] of [
      ['LOCK_TIMEOUT', 409],
      ['TOO_MANY_WAITERS', 503],
    ] as const) {
      const server = await fakeServer((path) => {
        if (path === '/lease/grant') return granted;
        if (path === '/lease/keepalive') return renewed;
        if (path === '/lock') return [status, failure(code)];
        if (path === '/lease/revoke') return [200, { lease_id: 7, log_index: 9 }];
        return [404, failure('NOT_FOUND')];
      });
      const error = await caught(client([server.url]).lock('jobs', { ttlSeconds: 5, timeoutMs: 1_000 }));
      expect(error).toMatchObject({ code });
      expect(server.count('/lock')).toBe(1);
      expect(server.count('/lease/revoke')).toBe(1);
    }
  });
});
