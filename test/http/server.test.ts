import type { InjectOptions } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { BATCH_KEYS_MAX, KEY_BYTES_MAX, SCAN_LIMIT_MAX, VALUE_BYTES_MAX } from '../../src/api/limits.ts';
import { buildHttpServer, REQUEST_BODY_BYTES_MAX } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function server() {
  const logStore = new MemoryLogStore();
  const node = new RaftNode({
    config: { ...defaultRaftConfig(1), electionTicksMin: 3, electionTicksMax: 4 },
    prng: new SeededPrng(1), persisted: logStore.load().persisted, logStore,
    stateMachine: new MemoryKvStateMachine(), transport: { send: () => undefined }, clock: systemClock, tickMs: 5,
  });
  node.start();
  const client = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
  const app = buildHttpServer({ controller: client, store: client, identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 5_000 } });
  stops.push(() => app.close(), () => { node.stop(); });
  return app;
}

const json = (method: 'GET' | 'POST', url: string, payload?: unknown) => ({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
const member = { id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' };

describe('HTTP control-plane API (the seed formats)', () => {
  it('init, write, read, delete, state, metrics, health, leader', async () => {
    const app = server();
    const init = await app.inject(json('POST', '/init', { initial_members: [member] }));
    expect(init.statusCode).toBe(200);
    expect(init.json()).toMatchObject({ nodes: [member], members: [1], learners: [] });
    const write = await app.inject(json('POST', '/write', { command: { Set: { key: 'greeting', value: 'hello world' } } }));
    expect(write.statusCode).toBe(200);
    expect(write.json()).toMatchObject({ command: { Set: { key: 'greeting', value: 'hello world' } } });
    const logIndex = write.json<{ log_index: number }>().log_index;
    const read = await app.inject(json('GET', '/read?key=greeting'));
    expect(read.json()).toEqual({ key: 'greeting', value: 'hello world', create_index: logIndex, mod_index: logIndex, version: 1 });
    expect((await app.inject(json('POST', '/read', { key: 'greeting' }))).json()).toMatchObject({ value: 'hello world' });
    const multi = await app.inject(json('POST', '/write', { command: { SetMulti: { pairs: [['a', '1'], ['b', '2']] } } }));
    expect(multi.statusCode).toBe(200);
    expect((await app.inject(json('POST', '/delete', { key: 'a' }))).json()).toEqual({ key: 'a', deleted: true });
    expect((await app.inject(json('POST', '/delete', { key: 'a' }))).json()).toEqual({ key: 'a', deleted: false });
    expect((await app.inject(json('GET', '/state'))).json()).toMatchObject({ members: [1], leader: 1 });
    expect((await app.inject(json('GET', '/metrics'))).json()).toMatchObject({ node_id: 1, state: 'Leader', current_leader: 1, millis_since_quorum_ack: 0 });
    expect((await app.inject(json('GET', '/leader'))).json()).toEqual({ leader: 1 });
    const health = await app.inject(json('GET', '/health'));
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ status: 'healthy', node_id: 1, raft_node_id: 1, uptime_seconds: 5 });
    await app.inject(json('POST', '/write', { command: { SetMulti: { pairs: [['app/1', 'x'], ['app/2', 'y'], ['app/3', 'z'], ['apq', 'no']] } } }));
    const page1 = (await app.inject(json('POST', '/scan', { prefix: 'app/', limit: 2 }))).json<{ entries: unknown[]; is_truncated: boolean; continuation_token: string | null; count: number }>();
    expect(page1).toMatchObject({ entries: [{ key: 'app/1', value: 'x' }, { key: 'app/2', value: 'y' }], count: 2, is_truncated: true });
    const page2 = (await app.inject(json('POST', '/scan', { prefix: 'app/', limit: 2, continuation_token: page1.continuation_token }))).json<unknown>();
    expect(page2).toEqual({ entries: [{ key: 'app/3', value: 'z' }], count: 1, is_truncated: false, continuation_token: null });
    expect((await app.inject(json('POST', '/scan', { limit: 20_000 }))).statusCode).toBe(400);
    expect((await app.inject(json('POST', '/trigger-snapshot'))).json()).toMatchObject({ snapshot: { term: 2 } });
    const prometheus = await app.inject(json('GET', '/metrics/prometheus'));
    expect(prometheus.headers['content-type']).toContain('text/plain');
    expect(prometheus.body).toMatch(/^aspen_current_leader 1$/m);
    expect(prometheus.body).toMatch(/^aspen_state 2$/m);
    expect(prometheus.body).toMatch(/^aspen_quorum_ack_age_seconds 0$/m);
    expect(prometheus.body).toMatch(/^aspen_write_latency_seconds_count [1-9]/m);
    expect((await app.inject(json('GET', '/node-info'))).json()).toEqual({ node_id: 1, endpoint_id: '', addrs: [], http_addr: null });
  });

  it('maps every failure to a status and a JSON error body', async () => {
    const app = server();
    const before = await app.inject(json('POST', '/write', { command: { Set: { key: 'k', value: 'v' } } }));
    expect(before.statusCode).toBe(503);
    expect(before.json()).toMatchObject({ error: { code: 'NOT_INITIALIZED' } });
    expect((await app.inject(json('GET', '/health'))).json()).toMatchObject({ status: 'degraded', checks: { initialized: false } });
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    expect((await app.inject(json('POST', '/init', { initial_members: [member] }))).statusCode).toBe(409);
    const missing = await app.inject(json('GET', '/read?key=nope'));
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: { code: 'KEY_NOT_FOUND' } });
    const bigKey = await app.inject(json('POST', '/write', { command: { Set: { key: 'k'.repeat(2_000), value: 'v' } } }));
    expect(bigKey.json()).toMatchObject({ error: { code: 'KEY_TOO_LARGE' } });
    expect(bigKey.statusCode).toBe(400);
    const badShape = await app.inject(json('POST', '/write', { command: { Set: { key: 1 } } }));
    expect(badShape.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const badJson = await app.inject({ method: 'POST', url: '/write', headers: { 'content-type': 'application/json' }, payload: '{"command":' });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const tooLarge = await app.inject(json('POST', '/write', { command: { Set: { key: 'k', value: 'x'.repeat(REQUEST_BODY_BYTES_MAX) } } }));
    expect(tooLarge.statusCode).toBe(413);
    expect(tooLarge.json()).toMatchObject({ error: { code: 'BODY_TOO_LARGE' } });
    const emptyMembers = await app.inject(json('POST', '/change-membership', { members: [] }));
    expect(emptyMembers.statusCode).toBe(400);
    const strangerVoter = await app.inject(json('POST', '/change-membership', { members: [1, 9] }));
    expect(strangerVoter.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await app.inject(json('GET', '/nope'))).statusCode).toBe(404);
    expect((await app.inject(json('POST', '/add-peer', { node_id: 2, addr: '127.0.0.1:26002' }))).json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await app.inject(json('GET', '/metrics/prometheus'))).body).toMatch(/^aspen_errors_total\{code="KEY_NOT_FOUND"\} 1$/m);
  });

  it('refuses a table of malformed and oversized requests with the documented status and code; nothing is written', async () => {
    const app = server();
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    await expect.poll(async () => (await app.inject(json('POST', '/write', { command: { Set: { key: 'seed', value: '1' } } }))).statusCode, { timeout: 5_000 }).toBe(200);
    const before = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>().last_log_index;
    const raw = (url: string, payload: string, contentType = 'application/json') => ({ method: 'POST' as const, url, headers: { 'content-type': contentType }, payload });
    const key = 'k'.repeat(KEY_BYTES_MAX + 1);
    const cases: [string, InjectOptions, number, string][] = [
      ['bad JSON', raw('/write', '{"command":'), 400, 'INVALID_INPUT'],
      ['not JSON at all', raw('/write', 'Set greeting hello', 'text/plain'), 400, 'INVALID_INPUT'],
      ['no command', json('POST', '/write', {}), 400, 'INVALID_INPUT'],
      ['command of the wrong type', json('POST', '/write', { command: 'Set' }), 400, 'INVALID_INPUT'],
      ['unknown command', json('POST', '/write', { command: { Drop: { key: 'k' } } }), 400, 'INVALID_INPUT'],
      ['two commands in one', json('POST', '/write', { command: { Set: { key: 'a', value: '1' }, Delete: { key: 'a' } } }), 400, 'INVALID_INPUT'],
      ['value of the wrong type', json('POST', '/write', { command: { Set: { key: 'k', value: 5 } } }), 400, 'INVALID_INPUT'],
      ['missing value', json('POST', '/write', { command: { Set: { key: 'k' } } }), 400, 'INVALID_INPUT'],
      ['key over the limit', json('POST', '/write', { command: { Set: { key, value: 'v' } } }), 400, 'KEY_TOO_LARGE'],
      ['empty key', json('POST', '/write', { command: { Set: { key: '', value: 'v' } } }), 400, 'INVALID_INPUT'],
      ['value over the limit', json('POST', '/write', { command: { Set: { key: 'k', value: 'v'.repeat(VALUE_BYTES_MAX + 1) } } }), 400, 'VALUE_TOO_LARGE'],
      ['too many pairs', json('POST', '/write', { command: { SetMulti: { pairs: Array.from({ length: BATCH_KEYS_MAX + 1 }, (_, index) => [`k${index}`, 'v']) } } }), 400, 'BATCH_TOO_LARGE'],
      ['body over the limit', json('POST', '/write', { command: { Set: { key: 'k', value: 'x'.repeat(REQUEST_BODY_BYTES_MAX) } } }), 413, 'BODY_TOO_LARGE'],
      ['delete without key', json('POST', '/delete', {}), 400, 'INVALID_INPUT'],
      ['read without key', json('GET', '/read'), 400, 'INVALID_INPUT'],
      ['read key over the limit', json('GET', `/read?key=${key}`), 400, 'KEY_TOO_LARGE'],
      ['scan limit over the bound', json('POST', '/scan', { prefix: '', limit: SCAN_LIMIT_MAX + 1 }), 400, 'INVALID_INPUT'],
      ['membership without voters', json('POST', '/change-membership', { members: [] }), 400, 'INVALID_INPUT'],
      ['membership naming an unknown node', json('POST', '/change-membership', { members: [1, 9] }), 400, 'INVALID_INPUT'],
      ['membership with a negative id', json('POST', '/change-membership', { members: [-1] }), 400, 'INVALID_INPUT'],
      ['learner without raft_addr', json('POST', '/add-learner', { learner: { id: 2, addr: 'node-2' } }), 400, 'INVALID_INPUT'],
      ['learner with id 0', json('POST', '/add-learner', { learner: { id: 0, addr: 'node-0', raft_addr: '127.0.0.1:1' } }), 400, 'INVALID_INPUT'],
      ['init a second time', json('POST', '/init', { initial_members: [member] }), 409, 'ALREADY_INITIALIZED'],
      ['init with no members', json('POST', '/init', { initial_members: [] }), 400, 'INVALID_INPUT'],
    ];
    for (const [name, request, status, code] of cases) {
      const response = await app.inject(request);
      expect({ name, status: response.statusCode, code: response.json<{ error?: { code?: string } }>().error?.code }).toEqual({ name, status, code });
      expect(response.json<{ error: { message: string } }>().error.message.length, name).toBeGreaterThan(0);
    }
    const after = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>().last_log_index;
    expect(after).toBe(before); // not one entry was proposed
    expect((await app.inject(json('GET', '/health'))).statusCode).toBe(200);
    expect((await app.inject(json('POST', '/write', { command: { Set: { key: 'still', value: 'serving' } } }))).statusCode).toBe(200);
  });
});
