import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import {
  KEY_BYTES_MAX,
  LEASE_INFO_KEYS_BYTES_MAX,
  LEASE_INFO_KEYS_MAX,
  TXN_OPS_MAX,
} from '../../src/base/limits.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { RaftLeaseClient } from '../../src/node/lease-client.ts';
import { startMemoryNode } from '../support/memory-node.ts';

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** The TTL minimum of a cluster whose election timeout is at most 2 s: ceil(1.5 × 2) = 3 s. */
const ELECTION_TIMEOUT_MAX_MS = 2_000;
const TTL_MIN = 3;

async function server(withLeases = true): Promise<FastifyInstance> {
  const node = startMemoryNode({ electionTicksMin: 3, electionTicksMax: 4 });
  const client = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
  const leases = new RaftLeaseClient(node, { electionTimeoutMaxMs: ELECTION_TIMEOUT_MAX_MS });
  const app = buildHttpServer({
    controller: client,
    store: client,
    ...(withLeases ? { leases } : {}),
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 5_000 },
  });
  stops.push(
    () => app.close(),
    () => {
      node.stop();
    },
  );
  const init = await post(app, '/init', {
    initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }],
  });
  expect(init.status).toBe(200);
  return app;
}

async function post(app: FastifyInstance, url: string, payload: unknown) {
  const response = await app.inject({ method: 'POST', url, payload: payload as object });
  return { status: response.statusCode, json: response.json<Record<string, unknown>>() };
}

async function get(app: FastifyInstance, url: string) {
  const response = await app.inject({ method: 'GET', url });
  return { status: response.statusCode, json: response.json<Record<string, unknown>>() };
}

/** Attach `keys` to lease `id`, TXN_OPS_MAX Sets per transaction. */
async function attach(app: FastifyInstance, id: number, keys: readonly string[]): Promise<void> {
  for (let start = 0; start < keys.length; start += TXN_OPS_MAX) {
    const success = keys
      .slice(start, start + TXN_OPS_MAX)
      .map((key) => ({ Set: { key, value: '', lease_id: id } }));
    const answer = await post(app, '/write', {
      command: { Transaction: { compare: [], success, failure: [] } },
    });
    expect(answer.status).toBe(200);
  }
}

const code = (json: Record<string, unknown>): unknown => (json.error as { code?: unknown } | undefined)?.code;

describe('the lease routes', () => {
  it('grant, attach, keepalive, info, list, revoke: the documented shapes', async () => {
    const app = await server();
    const chosen = await post(app, '/lease/grant', { ttl_seconds: 10 });
    expect(chosen.status).toBe(200);
    expect(Object.keys(chosen.json).sort()).toEqual(['lease_id', 'log_index', 'ttl_seconds']);
    expect(chosen.json.ttl_seconds).toBe(10);
    const named = await post(app, '/lease/grant', { ttl_seconds: TTL_MIN, lease_id: 7_000 });
    expect(named.json).toEqual({ lease_id: 7_000, ttl_seconds: TTL_MIN, log_index: named.json.log_index });
    const set = await post(app, '/write', { command: { Set: { key: 'k', value: 'v', lease_id: 7_000 } } });
    expect(set.status).toBe(200);
    expect((await post(app, '/read', { key: 'k' })).json.lease_id).toBe(7_000);

    expect(await post(app, '/lease/keepalive', { lease_id: 7_000 })).toEqual({
      status: 200,
      json: { lease_id: 7_000, ttl_seconds: TTL_MIN },
    });
    expect(await get(app, '/lease/info?lease_id=7000')).toEqual({
      status: 200,
      json: { lease_id: 7_000, ttl_seconds: TTL_MIN, remaining_seconds: TTL_MIN },
    });
    expect((await get(app, '/lease/info?lease_id=7000&keys=true')).json).toMatchObject({
      keys: ['k'],
      keys_truncated: false,
    });
    expect((await get(app, '/lease/info?lease_id=7000&keys=false')).json.keys).toBeUndefined();
    const list = await get(app, '/leases');
    expect(list.status).toBe(200);
    expect(list.json).toEqual({
      leases: [
        { lease_id: chosen.json.lease_id, ttl_seconds: 10, remaining_seconds: 10 },
        { lease_id: 7_000, ttl_seconds: TTL_MIN, remaining_seconds: TTL_MIN },
      ],
    });

    const revoked = await post(app, '/lease/revoke', { lease_id: 7_000 });
    expect(revoked.json).toEqual({ lease_id: 7_000, revoked: true, log_index: revoked.json.log_index });
    expect((await post(app, '/read', { key: 'k' })).status).toBe(404);
    expect((await get(app, '/leases')).json.leases).toHaveLength(1);
  });

  it('pages the keys of info: at most LEASE_INFO_KEYS_MAX keys and LEASE_INFO_KEYS_BYTES_MAX bytes, then after=', async () => {
    const app = await server();
    await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 1 });
    await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 2 });
    const short = Array.from(
      { length: LEASE_INFO_KEYS_MAX + 1 },
      (_, n) => `s/${String(n).padStart(4, '0')}`,
    );
    const perLongKey = KEY_BYTES_MAX;
    const longCount = LEASE_INFO_KEYS_BYTES_MAX / perLongKey + 1;
    const long = Array.from({ length: longCount }, (_, n) =>
      `l/${String(n).padStart(4, '0')}`.padEnd(perLongKey, 'x'),
    );
    await attach(app, 1, short);
    await attach(app, 2, long);
    for (const [id, keys, pageSize] of [
      [1, short, LEASE_INFO_KEYS_MAX],
      [2, long, longCount - 1],
    ] as const) {
      const first = await get(app, `/lease/info?lease_id=${id}&keys=true`);
      expect(first.json).toMatchObject({ keys: keys.slice(0, pageSize), keys_truncated: true });
      const after = encodeURIComponent(keys[pageSize - 1] ?? '');
      const next = await get(app, `/lease/info?lease_id=${id}&keys=true&after=${after}`);
      expect(next.json).toMatchObject({ keys: keys.slice(pageSize), keys_truncated: false });
    }
    // After a key that is not on the lease (or past its last): the keys after it in UTF-8 byte order.
    expect((await get(app, '/lease/info?lease_id=1&keys=true&after=s%2F0999%05')).json.keys).toEqual([
      's/1000',
    ]);
    expect((await get(app, '/lease/info?lease_id=1&keys=true&after=t')).json).toMatchObject({
      keys: [],
      keys_truncated: false,
    });
  });

  it('a Set with lease_id 0 is a Set on no lease, in /write and in a transaction; lease routes refuse 0', async () => {
    const app = await server();
    await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 3 });
    for (const key of ['plain', 'in-txn']) {
      const set = await post(app, '/write', { command: { Set: { key, value: 'v', lease_id: 3 } } });
      expect(set.status).toBe(200);
    }
    const plain = await post(app, '/write', { command: { Set: { key: 'plain', value: 'w', lease_id: 0 } } });
    expect(plain.status).toBe(200);
    const success = [{ Set: { key: 'in-txn', value: 'w', lease_id: 0 } }];
    const inTxn = await post(app, '/write', {
      command: { Transaction: { compare: [], success, failure: [] } },
    });
    expect(inTxn.status).toBe(200);
    // Detached from lease 3, as a Set without lease_id detaches.
    for (const key of ['plain', 'in-txn'])
      expect((await post(app, '/read', { key })).json).toMatchObject({ value: 'w', lease_id: 0 });
    expect((await get(app, '/lease/info?lease_id=3&keys=true')).json.keys).toEqual([]);
    const fresh = await post(app, '/write', { command: { Set: { key: 'fresh', value: 'v', lease_id: 0 } } });
    expect(fresh.status).toBe(200);
    expect((await post(app, '/read', { key: 'fresh' })).json.lease_id).toBe(0);
    for (const answer of [
      await post(app, '/lease/revoke', { lease_id: 0 }),
      await get(app, '/lease/info?lease_id=0'),
    ])
      expect(answer.status).toBe(400);
  });

  it('unknown leases are 404 LEASE_NOT_FOUND, a taken id 409 LEASE_EXISTS; nothing is written', async () => {
    const app = await server();
    await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 5_000 });
    const taken = await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 5_000 });
    expect([taken.status, code(taken.json)]).toEqual([409, 'LEASE_EXISTS']);
    for (const answer of [
      await post(app, '/lease/keepalive', { lease_id: 404 }),
      await post(app, '/lease/revoke', { lease_id: 404 }),
      await get(app, '/lease/info?lease_id=404'),
      await post(app, '/write', { command: { Set: { key: 'k', value: 'v', lease_id: 404 } } }),
    ]) {
      expect([answer.status, code(answer.json)]).toEqual([404, 'LEASE_NOT_FOUND']);
    }
    expect((await post(app, '/read', { key: 'k' })).status).toBe(404);
  });

  it('a session sequence reused for another call is 400 INVALID_INPUT, and nothing is applied', async () => {
    const app = await server();
    const session = (sequence: number) => ({ client_id: 'c', sequence });
    const set = { command: { Set: { key: 'k', value: 'v' } }, ...session(1) };
    const written = await post(app, '/write', set);
    expect(written.status).toBe(200);
    const grant = { ttl_seconds: 10, ...session(2) };
    const granted = await post(app, '/lease/grant', grant);
    expect(granted.status).toBe(200);
    const txn = { Transaction: { compare: [], success: [{ Delete: { key: 'k' } }], failure: [] } };
    const cas = { CompareAndSwap: { key: 'k', expected: 'v', new_value: 'w' } };
    const reuses: [string, unknown, string][] = [
      ['/lease/grant', { ttl_seconds: 10, ...session(1) }, 'Set'],
      ['/lease/revoke', { lease_id: granted.json.lease_id, ...session(1) }, 'Set'],
      ['/write', { command: txn, ...session(1) }, 'Set'],
      ['/write', { command: cas, ...session(1) }, 'Set'],
      ['/delete', { key: 'k', ...session(1) }, 'Set'],
      ['/write', { command: { Set: { key: 'k', value: 'x' } }, ...session(2) }, 'LeaseGrant'],
      ['/lease/revoke', { lease_id: granted.json.lease_id, ...session(2) }, 'LeaseGrant'],
    ];
    for (const [url, body, kind] of reuses) {
      const answer = await post(app, url, body);
      expect([url, answer.status, code(answer.json)]).toEqual([url, 400, 'INVALID_INPUT']);
      expect((answer.json.error as { message: string }).message).toContain(
        `client c was already used for another request (${kind})`,
      );
    }
    // The retries of the same calls still answer as the first time; nothing else was applied.
    expect((await post(app, '/write', set)).json).toEqual(written.json);
    expect((await post(app, '/lease/grant', grant)).json).toEqual(granted.json);
    expect((await post(app, '/read', { key: 'k' })).json).toMatchObject({ value: 'v', version: 1 });
    expect((await get(app, '/leases')).json.leases).toHaveLength(1);
  });

  it('refuses malformed and out-of-range input with 400 INVALID_INPUT', async () => {
    const app = await server();
    const before = (await get(app, '/metrics')).json.last_log_index;
    const cases: [string, 'GET' | 'POST', string, unknown][] = [
      ['ttl below the cluster minimum', 'POST', '/lease/grant', { ttl_seconds: TTL_MIN - 1 }],
      ['ttl above one day', 'POST', '/lease/grant', { ttl_seconds: 86_401 }],
      ['ttl not an integer', 'POST', '/lease/grant', { ttl_seconds: 10.5 }],
      ['ttl a string', 'POST', '/lease/grant', { ttl_seconds: '10' }],
      ['no ttl', 'POST', '/lease/grant', {}],
      ['an unknown field', 'POST', '/lease/grant', { ttl_seconds: 10, ttl: 10 }],
      ['a negative lease id', 'POST', '/lease/grant', { ttl_seconds: 10, lease_id: -1 }],
      ['a lease id past 2^53', 'POST', '/lease/grant', { ttl_seconds: 10, lease_id: 2 ** 60 }],
      ['half a session', 'POST', '/lease/grant', { ttl_seconds: 10, client_id: 'c' }],
      ['keepalive of lease 0', 'POST', '/lease/keepalive', { lease_id: 0 }],
      ['keepalive with a string id', 'POST', '/lease/keepalive', { lease_id: '7' }],
      ['keepalive with a session', 'POST', '/lease/keepalive', { lease_id: 7, client_id: 'c', sequence: 1 }],
      ['keepalive without id', 'POST', '/lease/keepalive', {}],
      ['revoke with an extra field', 'POST', '/lease/revoke', { lease_id: 7, keys: true }],
      ['revoke of a fractional id', 'POST', '/lease/revoke', { lease_id: 7.5 }],
      ['info without id', 'GET', '/lease/info', undefined],
      ['info with a leading zero', 'GET', '/lease/info?lease_id=07', undefined],
      ['info with a sign', 'GET', '/lease/info?lease_id=%2B7', undefined],
      ['info with letters', 'GET', '/lease/info?lease_id=7a', undefined],
      ['info past 2^53', 'GET', '/lease/info?lease_id=9999999999999999', undefined],
      ['info with keys=yes', 'GET', '/lease/info?lease_id=7&keys=yes', undefined],
      ['info with a repeated id', 'GET', '/lease/info?lease_id=7&lease_id=8', undefined],
      ['info with an unknown parameter', 'GET', '/lease/info?lease_id=7&prefix=a', undefined],
      ['info after without keys', 'GET', '/lease/info?lease_id=7&after=a', undefined],
      ['info after with keys=false', 'GET', '/lease/info?lease_id=7&keys=false&after=a', undefined],
      ['info after an empty key', 'GET', '/lease/info?lease_id=7&keys=true&after=', undefined],
      ['info after twice', 'GET', '/lease/info?lease_id=7&keys=true&after=a&after=b', undefined],
      ['info after a lone surrogate', 'GET', '/lease/info?lease_id=7&keys=true&after=%ED%A0%80', undefined],
      [
        'info after past KEY_BYTES_MAX characters',
        'GET',
        `/lease/info?lease_id=7&keys=true&after=${'a'.repeat(KEY_BYTES_MAX + 1)}`,
        undefined,
      ],
      ['list with a parameter', 'GET', '/leases?limit=5', undefined],
      [
        'a lease command through /write',
        'POST',
        '/write',
        { command: { LeaseGrant: { lease_id: 0, ttl_seconds: 10 } } },
      ],
      [
        'a revoke through /write',
        'POST',
        '/write',
        { command: { LeaseRevoke: { lease_id: 7, expired_in_term: 1 } } },
      ],
    ];
    for (const [name, method, url, payload] of cases) {
      const answer = method === 'GET' ? await get(app, url) : await post(app, url, payload);
      expect({ name, status: answer.status, code: code(answer.json) }).toEqual({
        name,
        status: 400,
        code: 'INVALID_INPUT',
      });
    }
    expect((await get(app, '/metrics')).json.last_log_index).toBe(before);
  });

  it('refuses an after key past KEY_BYTES_MAX bytes with 400 KEY_TOO_LARGE', async () => {
    const app = await server();
    await post(app, '/lease/grant', { ttl_seconds: 10, lease_id: 7 });
    const wide = encodeURIComponent('é'.repeat(KEY_BYTES_MAX / 2 + 1));
    const answer = await get(app, `/lease/info?lease_id=7&keys=true&after=${wide}`);
    expect([answer.status, code(answer.json)]).toEqual([400, 'KEY_TOO_LARGE']);
  });

  it('a server without the lease service has no lease routes', async () => {
    const app = await server(false);
    const answer = await post(app, '/lease/grant', { ttl_seconds: 10 });
    expect([answer.status, code(answer.json)]).toEqual([404, 'NOT_FOUND']);
  });
});
