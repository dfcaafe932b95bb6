import http from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_STATUS } from '../../src/api/errors.ts';
import { BATCH_KEYS_MAX, KEY_BYTES_MAX, SCAN_LIMIT_MAX, VALUE_BYTES_MAX } from '../../src/api/limits.ts';
import { REQUEST_BODY_BYTES_MAX } from '../../src/http/errors.ts';
import {
  get,
  ProcessCluster,
  REQUEST_TIMEOUT_MS,
  startFormedCluster,
  type NodeProcess,
} from './process-harness.ts';
import { coordinationBadInputs } from '../http/coordination.ts';

/**
 * Every endpoint of real aspen-node processes, on the leader and on a follower: a table of malformed
 * requests, then a bounded fuzz of random and mutated ones. Every answer must be a 2xx or 4xx JSON body
 * of the documented shape (a follower forwards membership calls too), no process may
 * exit, and a refused request must write nothing.
 */
const FUZZ_TIME_MS_MAX = 30_000;
const FUZZ_RUNS_MAX = 20_000;

const cluster = new ProcessCluster();
let nodes: readonly NodeProcess[] = [];
let leader: NodeProcess;
let follower: NodeProcess;

beforeAll(async () => {
  ({ nodes, leader, follower } = await startFormedCluster(cluster));
}, 60_000);
afterAll(() => {
  cluster.cleanup();
});

interface Request {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  /** The raw body (already serialized), or none. */
  readonly body?: string | Uint8Array;
  readonly contentType?: string;
}

interface Answer {
  readonly status: number;
  readonly text: string;
}

/** Sends of a body over REQUEST_BODY_BYTES_MAX, at most (see `sendOversized`). */
const OVERSIZED_SEND_ATTEMPTS_MAX = 5;

async function send(node: NodeProcess, request: Request): Promise<Answer> {
  const headers: Record<string, string> =
    request.contentType === undefined ? {} : { 'content-type': request.contentType };
  if (request.body !== undefined && request.body.length > REQUEST_BODY_BYTES_MAX)
    return sendOversized(new URL(`${node.http}${request.path}`), request.method, headers, request.body);
  const response = await fetch(`${node.http}${request.path}`, {
    method: request.method,
    headers,
    ...(request.body === undefined ? {} : { body: request.body }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: response.status, text: await response.text() };
}

/**
 * A body over REQUEST_BODY_BYTES_MAX: the node answers 413 once it has the headers and closes the
 * connection (as curl shows), so the client's write of the rest fails with EPIPE or ECONNRESET.
 * fetch gives up on that error; node:http still delivers the answer that came before it. A send
 * whose write failed before any answer arrived is tried again, a bounded number of times.
 */
async function sendOversized(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: string | Uint8Array,
): Promise<Answer> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await new Promise<Answer>((resolve, reject) => {
        let answered = false;
        const outgoing = http.request(url, { method, headers, timeout: REQUEST_TIMEOUT_MS }, (response) => {
          answered = true;
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
          });
          response.on('error', reject);
        });
        outgoing.on('timeout', () => outgoing.destroy(new Error('timed out')));
        outgoing.on('error', (error) => {
          if (!answered) reject(error);
        });
        outgoing.end(body);
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if ((code !== 'EPIPE' && code !== 'ECONNRESET') || attempt >= OVERSIZED_SEND_ATTEMPTS_MAX) throw error;
    }
  }
}

const jsonRequest = (path: string, body: unknown): Request => ({
  method: 'POST',
  path,
  body: JSON.stringify(body),
  contentType: 'application/json',
});

/** A 2xx/4xx JSON answer of the documented shape (a follower forwards membership calls too: no 503). */
function checkShape(request: Request, answer: Answer): string | null {
  const route = request.path.split(/[?#]/)[0] ?? '';
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch {
    if (route === '/metrics/prometheus' && answer.status === 200) return null;
    return `not JSON: ${answer.text.slice(0, 120)}`;
  }
  if (typeof body !== 'object' || body === null) return `not a JSON object: ${answer.text.slice(0, 120)}`;
  if (answer.status >= 200 && answer.status < 300) return 'error' in body ? 'a 2xx with an error body' : null;
  const error = (body as { error?: { code?: unknown; message?: unknown; definite?: unknown } }).error;
  if (
    typeof error?.code !== 'string' ||
    typeof error.message !== 'string' ||
    typeof error.definite !== 'boolean'
  )
    return `bad error body: ${answer.text.slice(0, 200)}`;
  const status = (ERROR_STATUS as Record<string, number>)[error.code];
  if (status !== answer.status) return `code ${error.code} with status ${answer.status}`;
  if (answer.status >= 500) return `server error ${answer.status} ${answer.text.slice(0, 200)}`;
  return null;
}

async function leaderLastIndex(): Promise<number> {
  return (await get(`${leader.http}/metrics`)).json.last_log_index as number;
}

/** Send, check the shape, and check that a refused request wrote nothing. */
async function exercise(node: NodeProcess, request: Request): Promise<Answer> {
  const before = await leaderLastIndex();
  const answer = await send(node, request);
  const problem = checkShape(request, answer);
  if (problem !== null) throw new Error(`${request.method} ${request.path} on node ${node.id}: ${problem}`);
  // A failed compare (409 COMPARE_FAILED) is applied as its one log entry, and writes no data.
  if (answer.status >= 400 && !answer.text.includes('"COMPARE_FAILED"')) {
    const after = await leaderLastIndex();
    if (after !== before)
      throw new Error(
        `${request.method} ${request.path} was refused (${answer.status}) but the log grew ${before} -> ${after}`,
      );
  }
  return answer;
}

describe('the API boundary of real processes, leader and follower', () => {
  it('refuses a table of malformed requests to every endpoint with the documented status and code; nothing is written', async () => {
    const key = 'k'.repeat(KEY_BYTES_MAX + 1);
    const raw = (path: string, body: string, contentType = 'application/json'): Request => ({
      method: 'POST',
      path,
      body,
      contentType,
    });
    const query = (path: string): Request => ({ method: 'GET', path });
    const table: [string, Request, number, string][] = [
      ['bad JSON', raw('/write', '{"command":'), 400, 'INVALID_INPUT'],
      ['text/plain', raw('/write', 'Set greeting hello', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['no command', jsonRequest('/write', {}), 400, 'INVALID_INPUT'],
      ['unknown command', jsonRequest('/write', { command: { Drop: { key: 'k' } } }), 400, 'INVALID_INPUT'],
      [
        'two commands',
        jsonRequest('/write', { command: { Set: { key: 'a', value: '1' }, Delete: { key: 'a' } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'value not a string',
        jsonRequest('/write', { command: { Set: { key: 'k', value: 5 } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'extra field in Set',
        jsonRequest('/write', { command: { Set: { key: 'k', value: 'v', x: 1 } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'extra top-level field',
        jsonRequest('/write', { command: { Set: { key: 'k', value: 'v' } }, junk: 'x' }),
        400,
        'INVALID_INPUT',
      ],
      [
        'key over the limit',
        jsonRequest('/write', { command: { Set: { key, value: 'v' } } }),
        400,
        'KEY_TOO_LARGE',
      ],
      [
        'empty key',
        jsonRequest('/write', { command: { Set: { key: '', value: 'v' } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'lone surrogate key',
        raw('/write', '{"command":{"Set":{"key":"\\udc00","value":"v"}}}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'value over the limit',
        jsonRequest('/write', { command: { Set: { key: 'k', value: 'v'.repeat(VALUE_BYTES_MAX + 1) } } }),
        400,
        'VALUE_TOO_LARGE',
      ],
      [
        'too many pairs',
        jsonRequest('/write', {
          command: {
            SetMulti: { pairs: Array.from({ length: BATCH_KEYS_MAX + 1 }, (_, index) => [`k${index}`, 'v']) },
          },
        }),
        400,
        'BATCH_TOO_LARGE',
      ],
      [
        'a pair of three',
        jsonRequest('/write', { command: { SetMulti: { pairs: [['a', 'b', 'c']] } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'DeleteMulti of numbers',
        jsonRequest('/write', { command: { DeleteMulti: { keys: [1, 2] } } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'body over the limit',
        jsonRequest('/write', { command: { Set: { key: 'k', value: 'x'.repeat(REQUEST_BODY_BYTES_MAX) } } }),
        413,
        'BODY_TOO_LARGE',
      ],
      ['delete without key', jsonRequest('/delete', {}), 400, 'INVALID_INPUT'],
      ['delete of an array key', jsonRequest('/delete', { key: ['a'] }), 400, 'INVALID_INPUT'],
      ['read without key', query('/read'), 400, 'INVALID_INPUT'],
      ['read of a key given twice', query('/read?key=a&key=b'), 400, 'INVALID_INPUT'],
      ['read key over the limit', query(`/read?key=${key}`), 400, 'KEY_TOO_LARGE'],
      ['read of a key that is not UTF-8', query('/read?key=%ED%A0%80'), 400, 'INVALID_INPUT'],
      ['POST read with a number key', jsonRequest('/read', { key: 5 }), 400, 'INVALID_INPUT'],
      [
        'scan limit over the bound',
        jsonRequest('/scan', { prefix: '', limit: SCAN_LIMIT_MAX + 1 }),
        400,
        'INVALID_INPUT',
      ],
      ['scan limit as a string', jsonRequest('/scan', { limit: '5' }), 400, 'INVALID_INPUT'],
      [
        'scan with a garbage token',
        jsonRequest('/scan', { prefix: 'a', continuation_token: '%%%' }),
        400,
        'INVALID_INPUT',
      ],
      ['init without members', jsonRequest('/init', { initial_members: [] }), 400, 'INVALID_INPUT'],
      [
        'init with a string id',
        jsonRequest('/init', { initial_members: [{ id: '1' }] }),
        400,
        'INVALID_INPUT',
      ],
      [
        'learner with id 0',
        jsonRequest('/add-learner', { learner: { id: 0, addr: 'node-0', raft_addr: '127.0.0.1:1' } }),
        400,
        'INVALID_INPUT',
      ],
      [
        'learner with an extra field',
        jsonRequest('/add-learner', { learner: { id: 9, raft_addr: '127.0.0.1:1', role: 'voter' } }),
        400,
        'INVALID_INPUT',
      ],
      ['membership without voters', jsonRequest('/change-membership', { members: [] }), 400, 'INVALID_INPUT'],
      [
        'membership with a negative id',
        jsonRequest('/change-membership', { members: [-1] }),
        400,
        'INVALID_INPUT',
      ],
      [
        'membership with learners not a list',
        jsonRequest('/change-membership', { members: [1, 2, 3], learners: 4 }),
        400,
        'INVALID_INPUT',
      ],
      ['remove-learner without an id', jsonRequest('/remove-learner', {}), 400, 'INVALID_INPUT'],
      [
        'remove-learner with a float id',
        jsonRequest('/remove-learner', { learner_id: 1.5 }),
        400,
        'INVALID_INPUT',
      ],
      [
        'add-peer with an id past 2^53',
        raw('/add-peer', '{"node_id":9007199254740993,"addr":"127.0.0.1:26002"}'),
        400,
        'INVALID_INPUT',
      ],
      [
        'add-peer with a bad address',
        jsonRequest('/add-peer', { node_id: 500, addr: 'not an address' }),
        400,
        'INVALID_INPUT',
      ],
      ['trigger-snapshot with a body', jsonRequest('/trigger-snapshot', { now: true }), 400, 'INVALID_INPUT'],
      ['state with a query', query('/state?x=1'), 400, 'INVALID_INPUT'],
      ['metrics with a query', query('/metrics?x=1'), 400, 'INVALID_INPUT'],
      ['health with a query', query('/health?verbose=true'), 400, 'INVALID_INPUT'],
      ['an unknown route', query('/admin'), 404, 'NOT_FOUND'],
      ...coordinationBadInputs().map(([name, body, status, code]): [string, Request, number, string] => [
        name,
        jsonRequest('/write', body),
        status,
        code,
      ]),
    ];
    for (const node of [leader, follower]) {
      for (const [name, request, status, code] of table) {
        const answer = await exercise(node, request);
        const error = (JSON.parse(answer.text) as { error?: { code?: string } }).error;
        expect({ node: node.id, name, status: answer.status, code: error?.code }).toEqual({
          node: node.id,
          name,
          status,
          code,
        });
      }
    }
    for (const node of nodes) expect(node.child.exitCode).toBeNull();
  }, 120_000);

  it('survives a bounded fuzz of random and mutated requests on every endpoint (fast-check)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(requestArbitrary(), fc.boolean(), async (request, toFollower) => {
        runs += 1;
        await exercise(toFollower ? follower : leader, request);
        return true;
      }),
      {
        numRuns: FUZZ_RUNS_MAX,
        interruptAfterTimeLimit: FUZZ_TIME_MS_MAX,
        markInterruptAsFailure: false,
        seed: Number(process.env.ASPEN_FUZZ_SEED ?? Date.now() % 2 ** 31),
      },
    );
    expect(runs).toBeGreaterThan(100);
    for (const node of nodes) {
      expect(node.child.exitCode).toBeNull();
      expect((await get(`${node.http}/health`)).status).toBe(200);
    }
  }, 120_000);
});

// ------------------------------------------------------------------ the request generator

/** Valid bodies to start mutations from, per POST endpoint; ids chosen so a valid result changes nothing that matters. */
const VALID_BODIES: Readonly<Record<string, unknown>> = {
  '/write': { command: { Set: { key: 'fuzz/k', value: 'v' } } },
  '/delete': { key: 'fuzz/k' },
  '/read': { key: 'fuzz/k' },
  '/scan': { prefix: 'fuzz/', limit: 10, continuation_token: null },
  '/init': { initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:1' }] },
  '/add-learner': { learner: { id: 1, addr: 'node-1', raft_addr: '127.0.0.1:1' } },
  '/change-membership': { members: [1, 2, 3] },
  '/remove-learner': { learner_id: 1 },
  '/add-peer': { node_id: 500, addr: '127.0.0.1:1' },
  '/trigger-snapshot': {},
  '/join-ticket': { node_id: 500, ttl_seconds: 60 },
};
/** More valid /write bodies to mutate: the coordination commands. */
const VALID_WRITES: readonly unknown[] = [
  { command: { CompareAndSwap: { key: 'fuzz/c', expected: null, new_value: 'v' } } },
  { command: { CompareAndDelete: { key: 'fuzz/c', expected: 'v' } } },
  {
    command: {
      Transaction: {
        compare: [
          { key: 'fuzz/c', target: 'value', op: 'equal', value: 'v' },
          { key: 'fuzz/k', target: 'version', op: 'greater', value: 0 },
        ],
        success: [{ Set: { key: 'fuzz/t', value: 'v' } }, { Get: { key: 'fuzz/c' } }],
        failure: [{ Delete: { key: 'fuzz/t' } }, { Scan: { prefix: 'fuzz/', limit: 5 } }],
      },
    },
  },
];
const GET_PATHS = [
  '/read',
  '/state',
  '/metrics',
  '/metrics/prometheus',
  '/health',
  '/leader',
  '/node-info',
  '/peers',
  '/cluster-ticket',
  '/nope',
];

const oddString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(
    '\ud800',
    'a\udfffb',
    '',
    ' ',
    '\u0000',
    '🌲',
    'k'.repeat(KEY_BYTES_MAX + 1),
    'x'.repeat(VALUE_BYTES_MAX + 1),
  ),
);
const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  oddString,
  fc.constantFrom(2 ** 53, -1, 0, 1.5, 1e308, Number.MAX_SAFE_INTEGER, null, true, [], {}),
  fc
    .oneof(fc.integer({ min: 1, max: 40 }), fc.constant(1_000))
    .map((depth) => JSON.parse(`${'['.repeat(depth)}${']'.repeat(depth)}`) as unknown),
);

type Mutation = (value: unknown) => unknown;

/** One random change somewhere in a JSON value: replace, drop or add a field, wrap, or retype. */
function mutation(): fc.Arbitrary<Mutation> {
  return fc
    .tuple(fc.nat(), oddValue, fc.constantFrom('replace', 'drop', 'add', 'wrap', 'stringify'))
    .map(([pick, odd, kind]) => (value: unknown) => {
      const copy = JSON.parse(JSON.stringify(value)) as unknown;
      const containers: Record<string, unknown>[] = [];
      const stack: unknown[] = [copy];
      for (let item = stack.pop(); item !== undefined && containers.length < 64; item = stack.pop()) {
        if (typeof item !== 'object' || item === null) continue;
        containers.push(item as Record<string, unknown>);
        for (const child of Object.values(item)) stack.push(child);
      }
      const target = containers[pick % Math.max(1, containers.length)];
      if (target === undefined) return odd;
      const names = Object.keys(target);
      const name = names[pick % Math.max(1, names.length)] ?? 'extra';
      if (kind === 'replace') target[name] = odd;
      else if (kind === 'drop') Reflect.deleteProperty(target, name);
      else if (kind === 'add') target[Array.isArray(target) ? String(names.length) : `x${pick % 7}`] = odd;
      else if (kind === 'wrap') target[name] = [target[name]];
      else target[name] = JSON.stringify(target[name] ?? null);
      return copy;
    });
}

/** Keep a mutated membership body harmless if it happens to be valid: it may name only existing nodes. */
function harmless(path: string, body: unknown): unknown {
  if (typeof body !== 'object' || body === null) return body;
  const fields = body as Record<string, unknown>;
  if (path === '/add-learner' && typeof fields.learner === 'object' && fields.learner !== null) {
    const learner = fields.learner as Record<string, unknown>;
    if (Number.isSafeInteger(learner.id)) learner.id = 1; // a voter: refused as "already a voter"
  }
  if (path === '/change-membership' && Array.isArray(fields.members)) fields.members = [1, 2, 3];
  if (path === '/change-membership' && Array.isArray(fields.learners)) fields.learners = [];
  if (path === '/add-peer' && Number.isSafeInteger(fields.node_id)) fields.node_id = 500;
  return body;
}

function requestArbitrary(): fc.Arbitrary<Request> {
  const paths = Object.keys(VALID_BODIES);
  const starts: [string, unknown][] = [
    ...Object.entries(VALID_BODIES),
    ...VALID_WRITES.map((body): [string, unknown] => ['/write', body]),
  ];
  const mutated = fc
    .tuple(fc.constantFrom(...starts), fc.array(mutation(), { minLength: 1, maxLength: 3 }))
    .map(([[path, start], mutations]): Request => {
      let body = start;
      for (const mutate of mutations) body = mutate(body);
      return jsonRequest(path, harmless(path, body));
    });
  const randomJson = fc
    .tuple(fc.constantFrom(...paths), fc.jsonValue({ maxDepth: 4 }))
    .map(([path, body]) => jsonRequest(path, harmless(path, body)));
  const rawBytes = fc
    .tuple(
      fc.constantFrom(...paths),
      fc.uint8Array({ maxLength: 200 }),
      fc.constantFrom(
        'application/json',
        'text/plain',
        'application/octet-stream',
        'application/json; charset=latin1',
      ),
    )
    .map(([path, body, contentType]): Request => ({ method: 'POST', path, body, contentType }));
  const queryText = fc.oneof(
    fc.string({ maxLength: 30 }),
    fc.constantFrom('key=%FF', 'key=%', 'key=a&key=b', 'key=%ED%A0%80', 'key=', 'x=1', 'key=fuzz%2Fk'),
  );
  const getRequest = fc.tuple(fc.constantFrom(...GET_PATHS), queryText).map(([path, text]): Request => ({
    method: 'GET',
    path: text.length === 0 ? path : `${path}?${encodeURI(text).replaceAll('%25', '%')}`,
  }));
  return fc.oneof(mutated, mutated, randomJson, rawBytes, getRequest);
}
