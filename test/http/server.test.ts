import { afterEach, describe, expect, it } from 'vitest';
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
});
