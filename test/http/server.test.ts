import { spawnSync } from 'node:child_process';
import type { InjectOptions } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';
import {
  BATCH_KEYS_MAX,
  KEY_BYTES_MAX,
  SCAN_LIMIT_MAX,
  SCAN_PAGE_BYTES_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  TXN_SCAN_LIMIT_MAX,
  VALUE_BYTES_MAX,
} from '../../src/api/limits.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { REQUEST_BODY_BYTES_MAX } from '../../src/http/errors.ts';
import { SESSION_RESULTS_MAX } from '../../src/node/sessions.ts';
import {
  casScenario,
  coordinationBadInputs,
  sessionScenario,
  transactionScenario,
  type Send,
} from './coordination.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { startMemoryNode } from '../support/memory-node.ts';

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function server() {
  const node = startMemoryNode({ electionTicksMin: 3, electionTicksMax: 4 });
  const client = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
  const app = buildHttpServer({
    controller: client,
    store: client,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 5_000 },
  });
  stops.push(
    () => app.close(),
    () => {
      node.stop();
    },
  );
  return app;
}

const json = (method: 'GET' | 'POST', url: string, payload?: unknown) => ({
  method,
  url,
  ...(payload === undefined ? {} : { payload: payload as object }),
});
const member = { id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' };

describe('HTTP control-plane API (the seed formats)', () => {
  it('init, write, read, delete, state, metrics, health, leader', async () => {
    const app = server();
    const init = await app.inject(json('POST', '/init', { initial_members: [member] }));
    expect(init.statusCode).toBe(200);
    expect(init.json()).toMatchObject({ nodes: [member], members: [1], learners: [] });
    const write = await app.inject(
      json('POST', '/write', { command: { Set: { key: 'greeting', value: 'hello world' } } }),
    );
    expect(write.statusCode).toBe(200);
    const logIndex = write.json<{ log_index: number }>().log_index;
    // A plain Set answers as before, with the revision (its log index) beside log_index.
    expect(write.json()).toEqual({
      command: { Set: { key: 'greeting', value: 'hello world' } },
      log_index: logIndex,
      revision: logIndex,
    });
    const read = await app.inject(json('GET', '/read?key=greeting'));
    expect(read.json()).toEqual({
      key: 'greeting',
      value: 'hello world',
      create_index: logIndex,
      mod_index: logIndex,
      version: 1,
      lease_id: 0,
      revision: logIndex,
    });
    expect((await app.inject(json('POST', '/read', { key: 'greeting' }))).json()).toMatchObject({
      value: 'hello world',
    });
    const multi = await app.inject(
      json('POST', '/write', {
        command: {
          SetMulti: {
            pairs: [
              ['a', '1'],
              ['b', '2'],
            ],
          },
        },
      }),
    );
    expect(multi.statusCode).toBe(200);
    expect(multi.json()).toMatchObject({ log_index: logIndex + 1, revision: logIndex + 1 });
    expect((await app.inject(json('POST', '/delete', { key: 'a' }))).json()).toEqual({
      key: 'a',
      deleted: true,
      revision: logIndex + 2,
    });
    expect((await app.inject(json('POST', '/delete', { key: 'a' }))).json()).toEqual({
      key: 'a',
      deleted: false,
      revision: logIndex + 3,
    });
    // A read is served at the applied index of the moment, past the key's own mod_index.
    expect((await app.inject(json('GET', '/read?key=greeting'))).json()).toMatchObject({
      mod_index: logIndex,
      revision: logIndex + 3,
    });
    expect((await app.inject(json('GET', '/state'))).json()).toMatchObject({ members: [1], leader: 1 });
    expect((await app.inject(json('GET', '/metrics'))).json()).toMatchObject({
      node_id: 1,
      state: 'Leader',
      current_leader: 1,
      millis_since_quorum_ack: 0,
    });
    expect((await app.inject(json('GET', '/leader'))).json()).toEqual({ leader: 1 });
    const health = await app.inject(json('GET', '/health'));
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({
      status: 'healthy',
      node_id: 1,
      raft_node_id: 1,
      uptime_seconds: 5,
    });
    await app.inject(
      json('POST', '/write', {
        command: {
          SetMulti: {
            pairs: [
              ['app/1', 'x'],
              ['app/2', 'y'],
              ['app/3', 'z'],
              ['apq', 'no'],
            ],
          },
        },
      }),
    );
    const page1 = (await app.inject(json('POST', '/scan', { prefix: 'app/', limit: 2 }))).json<{
      entries: unknown[];
      is_truncated: boolean;
      continuation_token: string | null;
      count: number;
    }>();
    expect(page1).toMatchObject({
      entries: [
        { key: 'app/1', value: 'x' },
        { key: 'app/2', value: 'y' },
      ],
      count: 2,
      is_truncated: true,
      revision: logIndex + 4,
    });
    const page2 = (
      await app.inject(
        json('POST', '/scan', { prefix: 'app/', limit: 2, continuation_token: page1.continuation_token }),
      )
    ).json<unknown>();
    expect(page2).toEqual({
      entries: [{ key: 'app/3', value: 'z' }],
      count: 1,
      is_truncated: false,
      continuation_token: null,
      revision: logIndex + 4,
    });
    expect((await app.inject(json('POST', '/scan', { limit: 20_000 }))).statusCode).toBe(400);
    expect((await app.inject(json('POST', '/trigger-snapshot'))).json()).toMatchObject({
      snapshot: { term: 2 },
    });
    const prometheus = await app.inject(json('GET', '/metrics/prometheus'));
    expect(prometheus.headers['content-type']).toContain('text/plain');
    expect(prometheus.body).toMatch(/^aspen_current_leader 1$/m);
    expect(prometheus.body).toMatch(/^aspen_state 2$/m);
    expect(prometheus.body).toMatch(/^aspen_quorum_ack_age_seconds 0$/m);
    expect(prometheus.body).toMatch(/^aspen_write_latency_seconds_count [1-9]/m);
    expect((await app.inject(json('GET', '/node-info'))).json()).toEqual({
      node_id: 1,
      endpoint_id: '',
      addrs: [],
      http_addr: null,
    });
  });

  it('maps every failure to a status and a JSON error body', async () => {
    const app = server();
    const before = await app.inject(json('POST', '/write', { command: { Set: { key: 'k', value: 'v' } } }));
    expect(before.statusCode).toBe(503);
    expect(before.json()).toMatchObject({ error: { code: 'NOT_INITIALIZED' } });
    expect((await app.inject(json('GET', '/health'))).json()).toMatchObject({
      status: 'degraded',
      checks: { initialized: false },
    });
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    expect((await app.inject(json('POST', '/init', { initial_members: [member] }))).statusCode).toBe(409);
    const missing = await app.inject(json('GET', '/read?key=nope'));
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: { code: 'KEY_NOT_FOUND' } });
    const bigKey = await app.inject(
      json('POST', '/write', { command: { Set: { key: 'k'.repeat(2_000), value: 'v' } } }),
    );
    expect(bigKey.json()).toMatchObject({ error: { code: 'KEY_TOO_LARGE' } });
    expect(bigKey.statusCode).toBe(400);
    const badShape = await app.inject(json('POST', '/write', { command: { Set: { key: 1 } } }));
    expect(badShape.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const badJson = await app.inject({
      method: 'POST',
      url: '/write',
      headers: { 'content-type': 'application/json' },
      payload: '{"command":',
    });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    const tooLarge = await app.inject(
      json('POST', '/write', { command: { Set: { key: 'k', value: 'x'.repeat(REQUEST_BODY_BYTES_MAX) } } }),
    );
    expect(tooLarge.statusCode).toBe(413);
    expect(tooLarge.json()).toMatchObject({ error: { code: 'BODY_TOO_LARGE' } });
    const emptyMembers = await app.inject(json('POST', '/change-membership', { members: [] }));
    expect(emptyMembers.statusCode).toBe(400);
    const strangerVoter = await app.inject(json('POST', '/change-membership', { members: [1, 9] }));
    expect(strangerVoter.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await app.inject(json('GET', '/nope'))).statusCode).toBe(404);
    expect(
      (await app.inject(json('POST', '/add-peer', { node_id: 2, addr: '127.0.0.1:26002' }))).json(),
    ).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect((await app.inject(json('GET', '/metrics/prometheus'))).body).toMatch(
      /^aspen_errors_total\{code="KEY_NOT_FOUND"\} 1$/m,
    );
  });

  it('refuses a table of malformed and oversized requests with the documented status and code; nothing is written', async () => {
    const app = server();
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    await expect
      .poll(
        async () =>
          (await app.inject(json('POST', '/write', { command: { Set: { key: 'seed', value: '1' } } })))
            .statusCode,
        { timeout: 5_000 },
      )
      .toBe(200);
    const before = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>()
      .last_log_index;
    const raw = (url: string, payload: string, contentType = 'application/json') => ({
      method: 'POST' as const,
      url,
      headers: { 'content-type': contentType },
      payload,
    });
    const key = 'k'.repeat(KEY_BYTES_MAX + 1);
    const cases: [string, InjectOptions, number, string][] = [
      ['bad JSON', raw('/write', '{"command":'), 400, 'INVALID_INPUT'],
      ['not JSON at all', raw('/write', 'Set greeting hello', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['no command', json('POST', '/write', {}), 400, 'INVALID_INPUT'],
      ['command of the wrong type', json('POST', '/write', { command: 'Set' }), 400, 'INVALID_INPUT'],
      ['unknown command', json('POST', '/write', { command: { Drop: { key: 'k' } } }), 400, 'INVALID_INPUT'],
      [
        'two commands in one',
        json('POST', '/write', { command: { Set: { key: 'a', value: '1' }, Delete: { key: 'a' } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'value of the wrong type',
        json('POST', '/write', { command: { Set: { key: 'k', value: 5 } } }),
        400,
        'INVALID_INPUT',
      ],
      ['missing value', json('POST', '/write', { command: { Set: { key: 'k' } } }), 400, 'INVALID_INPUT'],
      [
        'key over the limit',
        json('POST', '/write', { command: { Set: { key, value: 'v' } } }),
        400,
        'KEY_TOO_LARGE',
      ],
      [
        'empty key',
        json('POST', '/write', { command: { Set: { key: '', value: 'v' } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'value over the limit',
        json('POST', '/write', { command: { Set: { key: 'k', value: 'v'.repeat(VALUE_BYTES_MAX + 1) } } }),
        400,
        'VALUE_TOO_LARGE',
      ],
      [
        'too many pairs',
        json('POST', '/write', {
          command: {
            SetMulti: { pairs: Array.from({ length: BATCH_KEYS_MAX + 1 }, (_, index) => [`k${index}`, 'v']) },
          },
        }),
        400,
        'BATCH_TOO_LARGE',
      ],
      [
        'body over the limit',
        json('POST', '/write', { command: { Set: { key: 'k', value: 'x'.repeat(REQUEST_BODY_BYTES_MAX) } } }),
        413,
        'BODY_TOO_LARGE',
      ],
      ['delete without key', json('POST', '/delete', {}), 400, 'INVALID_INPUT'],
      ['read without key', json('GET', '/read'), 400, 'INVALID_INPUT'],
      ['read key over the limit', json('GET', `/read?key=${key}`), 400, 'KEY_TOO_LARGE'],
      [
        'scan limit over the bound',
        json('POST', '/scan', { prefix: '', limit: SCAN_LIMIT_MAX + 1 }),
        400,
        'INVALID_INPUT',
      ],
      [
        'membership without voters',
        json('POST', '/change-membership', { members: [] }),
        400,
        'INVALID_INPUT',
      ],
      [
        'membership naming an unknown node',
        json('POST', '/change-membership', { members: [1, 9] }),
        400,
        'INVALID_INPUT',
      ],
      [
        'membership with a negative id',
        json('POST', '/change-membership', { members: [-1] }),
        400,
        'INVALID_INPUT',
      ],
      [
        'learner without raft_addr',
        json('POST', '/add-learner', { learner: { id: 2, addr: 'node-2' } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'learner with id 0',
        json('POST', '/add-learner', { learner: { id: 0, addr: 'node-0', raft_addr: '127.0.0.1:1' } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'init a second time',
        json('POST', '/init', { initial_members: [member] }),
        409,
        'ALREADY_INITIALIZED',
      ],
      ['init with no members', json('POST', '/init', { initial_members: [] }), 400, 'INVALID_INPUT'],
      ...coordinationBadInputs().map(
        ([name, body, status, code]): [string, InjectOptions, number, string] => [
          name,
          json('POST', '/write', body),
          status,
          code,
        ],
      ),
      [
        'a lone surrogate in a compare value',
        raw(
          '/write',
          '{"command":{"Transaction":{"compare":[{"key":"k","target":"value","op":"equal","value":"\\ud800"}],"success":[],"failure":[]}}}',
        ),
        400,
        'INVALID_INPUT',
      ],
    ];
    for (const [name, request, status, code] of cases) {
      const response = await app.inject(request);
      expect({
        name,
        status: response.statusCode,
        code: response.json<{ error?: { code?: string } }>().error?.code,
      }).toEqual({ name, status, code });
      expect(response.json<{ error: { message: string } }>().error.message.length, name).toBeGreaterThan(0);
    }
    const after = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>()
      .last_log_index;
    expect(after).toBe(before); // not one entry was proposed
    expect((await app.inject(json('GET', '/health'))).statusCode).toBe(200);
    expect(
      (await app.inject(json('POST', '/write', { command: { Set: { key: 'still', value: 'serving' } } })))
        .statusCode,
    ).toBe(200);
  });
});

describe('coordination: CompareAndSwap, CompareAndDelete, Transaction over HTTP on a real node', () => {
  async function initialized() {
    const app = server();
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    await expect
      .poll(async () => (await app.inject(json('GET', '/leader'))).json<{ leader: number | null }>().leader, {
        timeout: 5_000,
      })
      .toBe(1);
    const send: Send = async (method, url, body) => {
      const response = await app.inject(json(method, url, body));
      return { status: response.statusCode, json: response.json<Record<string, unknown>>() };
    };
    return { app, send };
  }

  it('CAS and CAD: success, 409 COMPARE_FAILED with the current record, expected null, nothing written on failure', async () => {
    const { send } = await initialized();
    await casScenario(send, 'cas/');
  });

  it('exactly-once: a retried sequence applies once and answers as the first time; expired ones are 409', async () => {
    const { send } = await initialized();
    await sessionScenario(send, 'sess/', SESSION_RESULTS_MAX);
  });

  it('transactions: success and failure branches, Get and Scan results, revisions', async () => {
    const { send } = await initialized();
    await transactionScenario(send, 'txn/');
  });

  it('a failed compare writes nothing: the log grows by its one entry, the data not at all', async () => {
    const { app, send } = await initialized();
    const created = await send('POST', '/write', { command: { Set: { key: 'k', value: 'v' } } });
    const failed = await send('POST', '/write', {
      command: { CompareAndSwap: { key: 'k', expected: 'other', new_value: 'w' } },
    });
    expect(failed.status).toBe(409);
    const read = await send('GET', '/read?key=k');
    expect(read.json).toMatchObject({ value: 'v', version: 1, mod_index: created.json.revision });
    expect((await app.inject(json('GET', '/metrics/prometheus'))).body).toMatch(
      /^aspen_errors_total\{code="COMPARE_FAILED"\} 1$/m,
    );
  });

  it('a Set on an unknown lease is 404 LEASE_NOT_FOUND, definite, nothing written (also in a transaction)', async () => {
    const { send } = await initialized();
    await send('POST', '/write', { command: { Set: { key: 'k', value: 'v' } } });
    const plain = await send('POST', '/write', { command: { Set: { key: 'k', value: 'w', lease_id: 7 } } });
    expect(plain.status).toBe(404);
    expect(plain.json).toEqual({
      error: {
        code: 'LEASE_NOT_FOUND',
        message: 'lease 7 not found (expired or revoked?)',
        definite: true,
      },
    });
    const inTxn = await send('POST', '/write', {
      command: {
        Transaction: {
          compare: [],
          success: [{ Set: { key: 'other', value: 'x' } }, { Set: { key: 'k', value: 'w', lease_id: 9 } }],
          failure: [],
        },
      },
    });
    expect(inTxn.status).toBe(404);
    expect((await send('GET', '/read?key=k')).json).toMatchObject({ value: 'v', version: 1, lease_id: 0 });
    expect((await send('GET', '/read?key=other')).status).toBe(404);
  });

  it('refuses a transaction whose Get results pass 4 MiB: 400 BATCH_TOO_LARGE, its writes undone', async () => {
    const { send } = await initialized();
    const mib = 'm'.repeat(1024 * 1024);
    for (const n of [1, 2, 3, 4, 5]) {
      expect((await send('POST', '/write', { command: { Set: { key: `g${n}`, value: mib } } })).status).toBe(
        200,
      );
    }
    const gets = [1, 2, 3, 4, 5].map((n) => ({ Get: { key: `g${n}` } }));
    const refused = await send('POST', '/write', {
      command: {
        Transaction: {
          compare: [],
          success: [{ Set: { key: 'written', value: 'v' } }, ...gets],
          failure: [],
        },
      },
    });
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ error: { code: 'BATCH_TOO_LARGE', definite: true } });
    expect((await send('GET', '/read?key=written')).status).toBe(404);
  });

  it('admits the deepest and the largest valid transaction (JSON depth, 64 compares, 128 ops per branch)', async () => {
    const { send } = await initialized();
    const compare = Array.from({ length: TXN_COMPARES_MAX }, (_, index) => ({
      key: `d${index}`,
      target: (['version', 'create_index', 'mod_index', 'lease_id'] as const)[index % 4],
      op: 'less',
      value: 1,
    }));
    const ops = (branch: string) =>
      Array.from({ length: TXN_OPS_MAX }, (_, index) =>
        index % 2 === 0
          ? { Set: { key: `${branch}${index}`, value: 'v' } }
          : { Scan: { prefix: branch, limit: TXN_SCAN_LIMIT_MAX } },
      );
    const answer = await send('POST', '/write', {
      command: { Transaction: { compare, success: ops('s/'), failure: ops('f/') } },
    });
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ succeeded: true });
    expect((answer.json.results as unknown[]).length).toBe(TXN_OPS_MAX);
  });
});

describe('the request boundary: every input is data, checked before anything is proposed', () => {
  const raw = (
    method: 'GET' | 'POST',
    url: string,
    payload?: string | Buffer,
    headers: Record<string, string> = { 'content-type': 'application/json' },
  ): InjectOptions => ({ method, url, headers, ...(payload === undefined ? {} : { payload }) });

  it('refuses extra fields, coerced types, deep nesting, lone surrogates and bad encodings; nothing is written', async () => {
    const app = server();
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    await expect
      .poll(
        async () =>
          (
            await app.inject(
              json('POST', '/write', {
                command: {
                  SetMulti: {
                    pairs: [
                      ['a', '1'],
                      ['p/x', '2'],
                    ],
                  },
                },
              }),
            )
          ).statusCode,
        { timeout: 5_000 },
      )
      .toBe(200);
    const before = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>()
      .last_log_index;
    const nested = `${'['.repeat(5_000)}${']'.repeat(5_000)}`;
    const page = (await app.inject(json('POST', '/scan', { prefix: 'p/', limit: 1 }))).json<{
      continuation_token: string | null;
    }>();
    expect(page.continuation_token).toBeNull();
    const cases: [string, InjectOptions, number, string][] = [
      [
        'an extra field nested 5,000 deep in Set',
        raw('POST', '/write', `{"command":{"Set":{"key":"k","value":"v","x":${nested}}}}`),
        400,
        'INVALID_INPUT',
      ],
      [
        'an extra field in Set',
        json('POST', '/write', { command: { Set: { key: 'k', value: 'v', junk: 'x'.repeat(10_000) } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'an extra field in Delete',
        json('POST', '/write', { command: { Delete: { key: 'k', also: 'a' } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'an extra top-level field',
        json('POST', '/write', { command: { Set: { key: 'k', value: 'v' } }, x: 1 }),
        400,
        'INVALID_INPUT',
      ],
      [
        'JSON deeper than the bound',
        raw('POST', '/read', `{"key":"k","x":${'{"a":'.repeat(40)}1${'}'.repeat(40)}}`),
        400,
        'INVALID_INPUT',
      ],
      ['a key as an array (no coercion)', json('POST', '/delete', { key: ['a'] }), 400, 'INVALID_INPUT'],
      [
        'a limit as a string (no coercion)',
        json('POST', '/scan', { prefix: 'p/', limit: '5' }),
        400,
        'INVALID_INPUT',
      ],
      ['an unknown scan field', json('POST', '/scan', { prefix: 'p/', start: 'a' }), 400, 'INVALID_INPUT'],
      ['a key given twice in the query', json('GET', '/read?key=a&key=b'), 400, 'INVALID_INPUT'],
      ['an unknown query parameter', json('GET', '/read?key=a&debug=1'), 400, 'INVALID_INPUT'],
      ['a query that is not UTF-8', json('GET', '/read?key=%FF'), 400, 'INVALID_INPUT'],
      ['a query with a stray %', json('GET', '/read?key=50%'), 400, 'INVALID_INPUT'],
      [
        'a lone high surrogate key',
        raw('POST', '/write', '{"command":{"Set":{"key":"\\ud800","value":"v"}}}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'a lone low surrogate key',
        raw('POST', '/write', '{"command":{"Set":{"key":"\\udfff","value":"v"}}}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'a lone surrogate value',
        raw('POST', '/write', '{"command":{"Set":{"key":"k","value":"a\\udc00"}}}'),
        400,
        'INVALID_INPUT',
      ],
      ['a lone surrogate read', raw('POST', '/read', '{"key":"\\ud800"}'), 400, 'INVALID_INPUT'],
      [
        'a body that is not UTF-8',
        raw(
          'POST',
          '/write',
          Buffer.concat([
            Buffer.from('{"command":{"Set":{"key":"'),
            Buffer.from([0xff, 0xfe]),
            Buffer.from('","value":"v"}}}'),
          ]),
        ),
        400,
        'INVALID_INPUT',
      ],
      [
        'a prototype key',
        raw('POST', '/write', '{"command":{"Set":{"key":"k","value":"v"}},"__proto__":{"x":1}}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'a garbage continuation token',
        json('POST', '/scan', { prefix: 'p/', continuation_token: 'garbage!' }),
        400,
        'INVALID_INPUT',
      ],
      [
        'a token of another prefix',
        json('POST', '/scan', { prefix: 'p/', continuation_token: Buffer.from('q/1').toString('base64url') }),
        400,
        'INVALID_INPUT',
      ],
      [
        'a token that is not canonical base64url',
        json('POST', '/scan', { prefix: '', continuation_token: 'YR' }),
        400,
        'INVALID_INPUT',
      ],
      [
        'a node id past 2^53',
        raw('POST', '/add-peer', '{"node_id":9007199254740993,"addr":"127.0.0.1:26002"}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'a member id past 2^53',
        raw('POST', '/change-membership', '{"members":[1,9007199254740993]}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'a form post',
        raw('POST', '/write', 'command=x', { 'content-type': 'application/x-www-form-urlencoded' }),
        415,
        'UNSUPPORTED_MEDIA_TYPE',
      ],
      ['an unknown route', json('GET', '/admin'), 404, 'NOT_FOUND'],
      ['a query on a route that takes none', json('GET', '/metrics?verbose=1'), 400, 'INVALID_INPUT'],
      [
        'a query on a POST route',
        json('POST', '/write?sync=1', { command: { Set: { key: 'k', value: 'v' } } }),
        400,
        'INVALID_INPUT',
      ],
      ['a body for trigger-snapshot', json('POST', '/trigger-snapshot', { index: 5 }), 400, 'INVALID_INPUT'],
    ];
    for (const [name, request, status, code] of cases) {
      const response = await app.inject(request);
      const body = response.json<{ error?: { code?: string; message?: string; definite?: boolean } }>();
      expect({
        name,
        status: response.statusCode,
        code: body.error?.code,
        definite: body.error?.definite,
      }).toEqual({ name, status, code, definite: true });
      expect(body.error?.message?.length ?? 0, name).toBeGreaterThan(0);
    }
    const after = (await app.inject(json('GET', '/metrics'))).json<{ last_log_index: number }>()
      .last_log_index;
    expect(after).toBe(before);
    expect((await app.inject(json('GET', '/read?key=a'))).json()).toMatchObject({ value: '1' });
    expect((await app.inject(json('GET', '/read?key=a%20b'))).statusCode).toBe(404); // well-formed percent-encoding is read as usual
  });

  it('serves only Host names that are this node (DNS rebinding)', async () => {
    const app = buildHttpServer({
      controller: failingController(),
      store: unusedStore,
      identity,
      allowedHostNames: ['aspen.internal'],
    });
    stops.push(() => app.close());
    const host = async (value: string) =>
      (await app.inject({ method: 'GET', url: '/node-info', headers: { host: value } })).statusCode;
    for (const allowed of [
      '127.0.0.1:8001',
      'localhost:8001',
      'LOCALHOST',
      '[::1]:8001',
      '10.1.2.3',
      'aspen.internal:8001',
      'Aspen.Internal',
    ])
      expect({ allowed, status: await host(allowed) }).toEqual({ allowed, status: 200 });
    const refused = await app.inject({
      method: 'GET',
      url: '/node-info',
      headers: { host: 'evil.example:8001' },
    });
    expect(refused.statusCode).toBe(421);
    expect(refused.json()).toMatchObject({ error: { code: 'HOST_NOT_ALLOWED', definite: true } });
    expect(await host('127.0.0.1.evil.example')).toBe(421);
  });

  it('turns an unexpected failure into a 500 INTERNAL for that request and a log line, and keeps serving', async () => {
    const lines: string[] = [];
    const app = buildHttpServer({
      controller: failingController(),
      store: unusedStore,
      identity,
      log: (line) => {
        lines.push(line);
      },
    });
    stops.push(() => app.close());
    const failed = await app.inject(json('GET', '/metrics'));
    expect(failed.statusCode).toBe(500);
    expect(failed.json()).toEqual({
      error: { code: 'INTERNAL', message: 'internal error (see the node log)', definite: false },
    });
    expect(lines.join('\n')).toMatch(/GET \/metrics failed unexpectedly: TypeError: metrics exploded/);
    expect((await app.inject(json('GET', '/node-info'))).statusCode).toBe(200);
  });

  it('cuts scan pages by bytes as well as by count (each page fits a cluster frame)', async () => {
    const app = server();
    await app.inject(json('POST', '/init', { initial_members: [member] }));
    const value = 'v'.repeat(VALUE_BYTES_MAX);
    for (let index = 0; index < 6; index += 1) {
      await expect
        .poll(
          async () =>
            (await app.inject(json('POST', '/write', { command: { Set: { key: `big/${index}`, value } } })))
              .statusCode,
          { timeout: 5_000 },
        )
        .toBe(200);
    }
    const keys: string[] = [];
    let token: string | null = null;
    for (let pages = 0; pages < 6; pages += 1) {
      const page: {
        entries: { key: string; value: string }[];
        is_truncated: boolean;
        continuation_token: string | null;
      } = (await app.inject(json('POST', '/scan', { prefix: 'big/', continuation_token: token }))).json();
      const bytes = page.entries.reduce((sum, entry) => sum + entry.key.length + entry.value.length, 0);
      expect(bytes).toBeLessThanOrEqual(SCAN_PAGE_BYTES_MAX);
      expect(page.entries.length).toBeGreaterThan(0);
      keys.push(...page.entries.map((entry) => entry.key));
      token = page.continuation_token;
      expect(token === null).toBe(!page.is_truncated);
      if (token === null) break;
    }
    expect(keys).toEqual(['big/0', 'big/1', 'big/2', 'big/3', 'big/4', 'big/5']);
  });
});

const identity = { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 };
const unusedStore: KeyValueStore = {
  write: () => Promise.reject(new Error('unused')),
  read: () => Promise.reject(new Error('unused')),
  delete: () => Promise.reject(new Error('unused')),
  scan: () => Promise.reject(new Error('unused')),
};

/** A controller whose metrics call fails the way a bug would (a TypeError, not an AspenError). */
function failingController(): ClusterController {
  const fail = () => Promise.reject(new TypeError('metrics exploded'));
  return {
    init: fail,
    addLearner: fail,
    changeMembership: fail,
    removeLearner: fail,
    triggerSnapshot: fail,
    currentState: fail,
    getMetrics: fail,
  };
}

describe('a broken invariant inside a request', () => {
  it('stops the process loudly instead of becoming a 500 (an assertion is never swallowed)', () => {
    const server = new URL('../../src/http/server.ts', import.meta.url).href;
    const assertModule = new URL('../../src/base/assert.ts', import.meta.url).href;
    const script = `
      const { buildHttpServer } = await import(${JSON.stringify(server)});
      const { AssertionError } = await import(${JSON.stringify(assertModule)});
      const broken = () => Promise.reject(new AssertionError('invariant broken on purpose'));
      const controller = { init: broken, addLearner: broken, changeMembership: broken, removeLearner: broken, triggerSnapshot: broken, currentState: broken, getMetrics: broken };
      const app = buildHttpServer({ controller, store: {}, identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 } });
      await app.inject({ method: 'GET', url: '/metrics' });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      console.log('still running');`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.stdout).not.toContain('still running');
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('AssertionError: invariant broken on purpose');
  });
});
