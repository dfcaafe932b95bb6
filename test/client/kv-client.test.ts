import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/client/index.ts';
import { realNode } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A scripted HTTP server: `answer` gives status and JSON body per request; requests are counted. */
async function fakeServer(answer: (path: string, count: number) => [number, unknown]): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      requests.push(request.url ?? '');
      const [status, body] = answer(request.url ?? '', requests.length);
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => { resolve(); }); }));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const fast = { backoffMsMin: 1, backoffMsMax: 5 };
const closedPort = 'http://127.0.0.1:1';
const error = (code: string, extra: Record<string, unknown> = {}) => ({ error: { code, message: code.toLowerCase(), ...extra } });

describe('KvClient', () => {
  it('writes, reads, scans and deletes against a real node; get of a missing key is null', async () => {
    const kv = new KvClient({ endpoints: [await realNode(cleanups)] });
    cleanups.push(() => { kv.close(); });
    expect(await kv.put('greeting', 'hello')).toMatchObject({ log_index: expect.any(Number) as number });
    expect(await kv.get('greeting')).toMatchObject({ key: 'greeting', value: 'hello', version: 1 });
    expect(await kv.get('missing')).toBeNull();
    await expect(kv.read('missing')).rejects.toMatchObject({ code: 'KEY_NOT_FOUND', status: 404, definite: true });
    await kv.write({ SetMulti: { pairs: [['app/1', 'a'], ['app/2', 'b']] } });
    expect(await kv.scanAll('app/')).toEqual([{ key: 'app/1', value: 'a' }, { key: 'app/2', value: 'b' }]);
    expect(await kv.delete('greeting')).toEqual({ key: 'greeting', deleted: true });
    expect(await kv.state()).toMatchObject({ members: [1], leader: 1 });
    await expect(kv.put('k'.repeat(2_000), 'v')).rejects.toMatchObject({ code: 'KEY_TOO_LARGE', status: 400 });
  });

  it('follows NOT_LEADER to the named leader and remembers it', async () => {
    const leader = await fakeServer((path) => (path === '/node-info' ? [200, { node_id: 2 }] : [200, { members: [1, 2], leader: 2, nodes: [], learners: [] }]));
    const follower = await fakeServer((path) => (path === '/node-info' ? [200, { node_id: 1 }] : [503, error('NOT_LEADER', { leader_id: 2 })]));
    const kv = new KvClient({ endpoints: [follower.url, leader.url], retry: fast });
    cleanups.push(() => { kv.close(); });
    await kv.changeMembership([1, 2]);
    expect(kv.cachedLeader).toBe(leader.url);
    const followerCalls = follower.requests.filter((path) => path !== '/node-info').length;
    await kv.changeMembership([1, 2]);
    expect(follower.requests.filter((path) => path !== '/node-info')).toHaveLength(followerCalls); // straight to the leader
  });

  it('retries reads past a dead endpoint, and a write whose connection was refused before sending', async () => {
    const live = await fakeServer((path) => (path === '/write' ? [200, { command: {}, log_index: 9 }] : [200, { key: 'k', value: 'v' }]));
    const kv = new KvClient({ endpoints: [closedPort, live.url], retry: fast });
    cleanups.push(() => { kv.close(); });
    expect(await kv.read('k')).toMatchObject({ value: 'v' });
    const again = new KvClient({ endpoints: [closedPort, live.url], retry: fast });
    cleanups.push(() => { again.close(); });
    expect(await again.put('k', 'v')).toMatchObject({ log_index: 9 });
  });

  it('never sends a write again after a TIMEOUT answer: one request, definite false', async () => {
    const server = await fakeServer(() => [504, error('TIMEOUT')]);
    const kv = new KvClient({ endpoints: [server.url], retry: fast });
    cleanups.push(() => { kv.close(); });
    const failure = await kv.put('k', 'v').catch((caught: unknown) => caught);
    expect(failure).toBeInstanceOf(KvError);
    expect(failure).toMatchObject({ code: 'TIMEOUT', status: 504, definite: false });
    expect(server.requests).toEqual(['/write']);
  });

  it('bounds retries by count: a cluster with no leader gets exactly attemptsMax requests', async () => {
    const server = await fakeServer(() => [503, error('NO_LEADER')]);
    const kv = new KvClient({ endpoints: [server.url], retry: { ...fast, attemptsMax: 4 } });
    cleanups.push(() => { kv.close(); });
    await expect(kv.put('k', 'v')).rejects.toMatchObject({ code: 'NO_LEADER', definite: true });
    expect(server.requests).toHaveLength(4);
    await expect(kv.read('k')).rejects.toMatchObject({ code: 'NO_LEADER' });
    expect(server.requests).toHaveLength(8);
  });

  it('bounds retries by total time, and does not retry bad input', async () => {
    const server = await fakeServer((path) => (path === '/read' ? [503, error('OVERLOADED')] : [400, error('INVALID_INPUT')]));
    const kv = new KvClient({ endpoints: [server.url], retry: { attemptsMax: 1_000, totalMsMax: 200, backoffMsMin: 20, backoffMsMax: 50 } });
    cleanups.push(() => { kv.close(); });
    const startedMs = Date.now();
    await expect(kv.read('k')).rejects.toMatchObject({ code: 'OVERLOADED' });
    expect(Date.now() - startedMs).toBeLessThan(2_000);
    expect(server.requests.length).toBeLessThan(1_000);
    await expect(kv.put('k', 'v')).rejects.toMatchObject({ code: 'INVALID_INPUT', definite: true });
    expect(server.requests.filter((path) => path === '/write')).toHaveLength(1);
  });

  it('honours an AbortSignal and a per-call timeout', async () => {
    const silent = http.createServer(() => undefined); // accepts and never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => { silent.closeAllConnections(); silent.close(() => { resolve(); }); }));
    const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const kv = new KvClient({ endpoints: [url], retry: { ...fast, attemptsMax: 1 } });
    cleanups.push(() => { kv.close(); });
    const controller = new AbortController();
    setTimeout(() => { controller.abort(); }, 50);
    await expect(kv.put('k', 'v', { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED', definite: false });
    await expect(kv.read('k', { timeoutMs: 50 })).rejects.toMatchObject({ code: 'TIMEOUT', definite: false });
  });
});
