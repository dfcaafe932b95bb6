import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  EXIT_COMPARE_FAILED,
  EXIT_FAILED,
  EXIT_LEASE_LOST,
  EXIT_NOT_FOUND,
  EXIT_OK,
  EXIT_UNAVAILABLE,
  EXIT_USAGE,
} from '../../src/bin/aspen.ts';
import { TXN_INPUT_BYTES_MAX } from '../../src/bin/aspen-txn.ts';
import { aspen, closedPort, fakeServer as fakeServerIn } from './aspen-run.ts';
import { realNode } from './real-node.ts';
import { listenLoopback } from '../support/loopback-server.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A scripted server answering each path with [status, body] after `delayMs`, closed after the tests. */
const fakeServer = (answer: (path: string) => readonly [number, unknown], delayMs = 0): Promise<string> =>
  fakeServerIn(cleanups, answer, delayMs);

describe('aspen CLI against a real node', () => {
  it('put then get prints the value; --json prints one document; scan pages; delete; get of a missing key exits 3', async () => {
    const endpoint = await realNode(cleanups);
    const at = ['--endpoints', endpoint];
    expect(await aspen([...at, 'put', 'greeting', 'hello world'])).toMatchObject({
      code: EXIT_OK,
      stdout: expect.stringMatching(/^OK \(log index \d+\)\n$/) as string,
      stderr: '',
    });
    expect(await aspen([...at, 'get', 'greeting'])).toEqual({
      code: EXIT_OK,
      stdout: 'hello world\n',
      stderr: '',
    });
    const json = await aspen([...at, '--json', 'get', 'greeting']);
    expect(JSON.parse(json.stdout)).toMatchObject({ key: 'greeting', value: 'hello world', version: 1 });
    // The environment variable serves as well as the flag.
    expect(await aspen(['put', 'app/b', '2'], { ASPEN_ENDPOINTS: endpoint })).toMatchObject({
      code: EXIT_OK,
    });
    await aspen([...at, 'put', 'app/a', '1']);
    const scan = await aspen([...at, 'scan', 'app/']);
    expect(scan.stdout.split('\n').filter((line) => line.length > 0)).toEqual([
      expect.stringMatching(/^KEY\s+VALUE$/),
      expect.stringMatching(/^app\/a\s+1$/),
      expect.stringMatching(/^app\/b\s+2$/),
    ]);
    const first = JSON.parse((await aspen([...at, '--json', 'scan', 'app/', '--limit', '1'])).stdout) as {
      entries: unknown[];
      is_truncated: boolean;
      continuation_token: string;
    };
    expect(first).toMatchObject({ count: 1, is_truncated: true, entries: [{ key: 'app/a' }] });
    const second = await aspen([
      ...at,
      '--json',
      'scan',
      'app/',
      '--limit',
      '1',
      '--continuation-token',
      first.continuation_token,
    ]);
    expect(JSON.parse(second.stdout)).toMatchObject({ entries: [{ key: 'app/b', value: '2' }] });
    expect(await aspen([...at, 'delete', 'greeting'])).toMatchObject({ code: EXIT_OK, stdout: 'deleted\n' });
    const missing = await aspen([...at, 'get', 'greeting']);
    expect(missing).toMatchObject({ code: EXIT_NOT_FOUND, stdout: '' });
    expect(missing.stderr).toMatch(/^aspen: KEY_NOT_FOUND: [^\n]+\n$/);
    expect((await aspen([...at, '--json', 'get', 'greeting'])).code).toBe(EXIT_NOT_FOUND);
  }, 60_000);

  it('members and status print aligned tables (JSON with --json); init of an initialized cluster exits 1', async () => {
    const endpoint = await realNode(cleanups);
    const dead = await closedPort();
    const at = ['--endpoints', `${endpoint},${dead}`];
    const members = await aspen([...at, 'members']);
    expect(members.stdout).toMatch(
      /^ID\s+ROLE\s+ADDR\s+RAFT_ADDR\s+PEER_ID\n1\s+leader\s+node-1\s+127\.0\.0\.1:26001\s+(12D3KooW\w+|-)\n$/,
    );
    expect(JSON.parse((await aspen([...at, '--json', 'members'])).stdout)).toMatchObject({
      members: [1],
      leader: 1,
    });
    const status = await aspen([...at, 'status']);
    expect(status.code).toBe(EXIT_OK);
    const lines = status.stdout.split('\n');
    expect(lines[0]).toBe('leader 1; voters 1; learners none');
    expect(lines[2]).toMatch(
      /^NODE\s+ROLE\s+ENDPOINT\s+STATE\s+TERM\s+LEADER\s+LAST_LOG\s+COMMIT\s+APPLIED$/,
    );
    expect(lines[3]).toMatch(
      new RegExp(
        `^1\\s+leader\\s+${endpoint.replace(/[.]/g, '\\.')}\\s+Leader\\s+\\d+\\s+1\\s+\\d+\\s+\\d+\\s+\\d+$`,
      ),
    );
    // A given endpoint that does not answer: which node it is cannot be told.
    expect(lines[4]).toMatch(
      new RegExp(`^-\\s+\\?\\s+${dead.replace(/[.]/g, '\\.')}\\s+unreachable \\(CONNECTION\\)$`),
    );
    const statusJson = JSON.parse((await aspen([...at, '--json', 'status'])).stdout) as {
      cluster: unknown;
      endpoints: unknown[];
    };
    expect(statusJson).toMatchObject({
      cluster: { leader: 1 },
      endpoints: [
        { node_id: 1, role: 'leader', endpoint, metrics: { state: 'Leader' }, error: null },
        { node_id: null, role: null, endpoint: dead, metrics: null, error: 'CONNECTION' },
      ],
    });
    const init = await aspen(['--endpoints', endpoint, 'init', '1=127.0.0.1:26001']);
    expect(init).toMatchObject({ code: EXIT_FAILED, stdout: '' });
    expect(init.stderr).toMatch(/^aspen: ALREADY_INITIALIZED: [^\n]+\n$/);
  }, 60_000);
});

describe('aspen cas and txn against a real node', () => {
  it('cas creates, swaps and exits 5 on a stale value; txn runs a branch from stdin', async () => {
    const at = ['--endpoints', await realNode(cleanups)];
    const created = await aspen([...at, 'cas', '--absent', 'counter', '1']);
    expect(created).toMatchObject({ code: EXIT_OK, stderr: '' });
    expect(created.stdout).toMatch(/^OK \(revision \d+\)\n$/);
    expect((await aspen([...at, 'cas', 'counter', '1', '2'])).code).toBe(EXIT_OK);
    const stale = await aspen([...at, 'cas', 'counter', '1', '3']);
    expect(stale).toMatchObject({ code: EXIT_COMPARE_FAILED, stdout: '2\n' });
    expect(stale.stderr).toMatch(
      /^aspen: COMPARE_FAILED: nothing written: "counter" holds another value \(version 2, mod_index \d+\)\n$/,
    );
    expect((await aspen([...at, 'cas', '--absent', 'counter', '9'])).code).toBe(EXIT_COMPARE_FAILED);
    const txn = {
      compare: [{ key: 'counter', target: 'value', op: 'equal', value: '2' }],
      success: [{ Set: { key: 'counter', value: '3' } }, { Get: { key: 'counter' } }],
      failure: [{ Get: { key: 'counter' } }],
    };
    const held = await aspen([...at, '--json', 'txn'], {}, JSON.stringify(txn));
    expect(held.code).toBe(EXIT_OK);
    expect(JSON.parse(held.stdout)).toMatchObject({
      succeeded: true,
      results: [{ Set: { key: 'counter' } }, { Get: { key: 'counter', value: '3', version: 3 } }],
    });
    const failed = await aspen([...at, 'txn', '-'], {}, JSON.stringify(txn));
    expect(failed).toMatchObject({ code: EXIT_OK, stderr: '' });
    expect(failed.stdout).toMatch(
      /^not succeeded: a compare failed, failure ran \(revision \d+\)\n.*\n1 +get +counter +found +3 +\d+ +3\n$/,
    );
    const refused = await aspen(
      [...at, 'txn'],
      {},
      '{"compare":[{"key":"counter","target":"size","op":"equal","value":1}]}',
    );
    expect(refused).toMatchObject({ code: EXIT_FAILED, stdout: '' });
    expect(refused.stderr).toMatch(/^aspen: INVALID_INPUT: [^\n]+\n$/);
  }, 60_000);
});

describe('aspen CLI exit codes', () => {
  it('usage errors exit 2 with one line on stderr', async () => {
    const usage = await aspen(['get']);
    expect(usage).toMatchObject({ code: EXIT_USAGE, stdout: '' });
    expect(usage.stderr).toMatch(/^aspen: USAGE: missing required argument 'key' \(aspen --help\)\n$/);
    const bare = await aspen([]);
    expect(bare).toMatchObject({ code: EXIT_USAGE, stdout: '' });
    expect(bare.stderr).toMatch(/^Usage: aspen /);
    expect((await aspen(['frobnicate'])).code).toBe(EXIT_USAGE);
    expect((await aspen(['--endpoints', 'http://127.0.0.1:1', 'scan', '--limit', 'x'])).code).toBe(
      EXIT_USAGE,
    );
    expect((await aspen(['change-membership', '1', 'two'])).code).toBe(EXIT_USAGE);
    expect((await aspen(['init', '1='])).code).toBe(EXIT_USAGE);
    expect((await aspen(['--timeout-ms', '0', 'get', 'k'])).code).toBe(EXIT_USAGE);
    expect((await aspen(['--endpoints', 'not a url', 'get', 'k'])).code).toBe(EXIT_USAGE);
    const help = await aspen(['--help']);
    expect(help).toMatchObject({ code: EXIT_OK });
    expect(help.stdout).toMatch(/add-learner <id> \[raft_addr\]/);
  }, 60_000);

  it('an unreachable cluster exits 4; a write that timed out says it may still take effect', async () => {
    const dead = await closedPort();
    const down = await aspen(['--endpoints', dead, '--timeout-ms', '1000', 'put', 'k', 'v']);
    expect(down).toMatchObject({ code: EXIT_UNAVAILABLE, stdout: '' });
    expect(down.stderr).toMatch(/^aspen: CONNECTION: [^\n]+\n$/);
    expect((await aspen(['--endpoints', dead, '--timeout-ms', '1000', 'status'])).code).toBe(
      EXIT_UNAVAILABLE,
    );
    expect((await aspen(['--endpoints', dead, '--timeout-ms', '1000', 'get', 'k'])).code).toBe(
      EXIT_UNAVAILABLE,
    );
    const timeout = { error: { code: 'TIMEOUT', message: 'no answer within 5000 ms' } };
    const slow = await fakeServer((path) =>
      path === '/write' ? [504, timeout] : [503, { error: { code: 'NO_LEADER', message: 'election' } }],
    );
    const doubt = await aspen(['--endpoints', slow, 'put', 'k', 'v']);
    expect(doubt).toMatchObject({
      code: EXIT_UNAVAILABLE,
      stderr: 'aspen: TIMEOUT: no answer within 5000 ms (it may still take effect)\n',
    });
  }, 60_000);

  it('add-learner waits for the answer and, off a terminal, prints no progress line', async () => {
    const state = {
      nodes: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }],
      members: [1],
      learners: [{ id: 2, addr: 'node-2', raft_addr: '127.0.0.1:26002' }],
      leader: 1,
    };
    const leader = await fakeServer(
      (path) =>
        path === '/node-info'
          ? [200, { node_id: 1 }]
          : path === '/leader'
            ? [200, { leader: 1 }]
            : [200, state],
      1_500,
    );
    const run = await aspen(['--endpoints', leader, 'add-learner', '2', '127.0.0.1:26002']);
    expect(run).toEqual({ code: EXIT_OK, stdout: 'learner 2 caught up; learners 2\n', stderr: '' });
  }, 60_000);
});

/**
 * A scripted server that records the bodies of /write (without their session) and their sessions
 * ([client_id, sequence]), and answers them in turn (discovery names node 1).
 */
async function writeServer(writes: readonly (readonly [number, unknown])[]): Promise<{
  url: string;
  bodies: unknown[];
  sessions: [unknown, unknown][];
}> {
  const bodies: unknown[] = [];
  const sessions: [unknown, unknown][] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = request.url ?? '';
      let answer: readonly [number, unknown] = [200, { leader: 1, node_id: 1 }];
      if (path === '/write') {
        answer = writes[bodies.length] ?? [500, { error: { code: 'INTERNAL', message: 'unscripted' } }];
        const {
          client_id: clientId,
          sequence,
          ...body
        } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        bodies.push(body);
        sessions.push([clientId, sequence]);
      }
      response.writeHead(answer[0], { 'content-type': 'application/json' }).end(JSON.stringify(answer[1]));
    });
  });
  return { url: await listenLoopback(server, cleanups), bodies, sessions };
}

const record = { value: 'old value', create_index: 3, mod_index: 5, version: 2, lease_id: 0 };
const compareFailed = (current: unknown): readonly [number, unknown] => [
  409,
  { error: { code: 'COMPARE_FAILED', message: 'compare failed', definite: true, current } },
];
const written = (revision: number): readonly [number, unknown] => [
  200,
  { command: {}, log_index: revision, revision },
];

describe('aspen cas', () => {
  it('prints the new revision; --absent sends expected null; --json prints the outcome', async () => {
    const { url, bodies, sessions } = await writeServer([written(12), written(13), written(14)]);
    const at = ['--endpoints', url];
    expect(await aspen([...at, 'cas', 'k', 'old', 'new'])).toEqual({
      code: EXIT_OK,
      stdout: 'OK (revision 12)\n',
      stderr: '',
    });
    expect(await aspen([...at, 'cas', '--absent', 'k', 'first'])).toMatchObject({ code: EXIT_OK });
    expect(await aspen([...at, '--json', 'cas', 'k', '', 'v'])).toMatchObject({
      code: EXIT_OK,
      stdout: '{"succeeded":true,"revision":14}\n',
    });
    expect(bodies).toEqual([
      { command: { CompareAndSwap: { key: 'k', expected: 'old', new_value: 'new' } } },
      { command: { CompareAndSwap: { key: 'k', expected: null, new_value: 'first' } } },
      { command: { CompareAndSwap: { key: 'k', expected: '', new_value: 'v' } } },
    ]);
    // One invocation, one session: a fresh random client id each time, from sequence 1.
    expect(sessions.map(([, sequence]) => sequence)).toEqual([1, 1, 1]);
    expect(new Set(sessions.map(([clientId]) => clientId)).size).toBe(3);
    for (const [clientId] of sessions) expect(clientId).toMatch(/^[A-Za-z0-9_-]{22}$/);
  }, 60_000);

  it('a failed compare exits 5 with the current value on stdout and the reason on stderr', async () => {
    const { url } = await writeServer([compareFailed(record), compareFailed(null), compareFailed(record)]);
    const at = ['--endpoints', url];
    expect(await aspen([...at, 'cas', 'k', 'stale', 'new'])).toEqual({
      code: EXIT_COMPARE_FAILED,
      stdout: 'old value\n',
      stderr: 'aspen: COMPARE_FAILED: nothing written: "k" holds another value (version 2, mod_index 5)\n',
    });
    expect(await aspen([...at, 'cas', 'k', 'stale', 'new'])).toEqual({
      code: EXIT_COMPARE_FAILED,
      stdout: '',
      stderr: 'aspen: COMPARE_FAILED: nothing written: "k" does not exist\n',
    });
    const json = await aspen([...at, '--json', 'cas', '--absent', 'k', 'new']);
    expect(json.code).toBe(EXIT_COMPARE_FAILED);
    expect(JSON.parse(json.stdout)).toEqual({ succeeded: false, current: { key: 'k', ...record } });
  }, 60_000);

  it('refuses the wrong number of arguments (exit 2) and sends nothing; other errors keep their codes', async () => {
    const timeout = [504, { error: { code: 'TIMEOUT', message: 'no answer', definite: false } }] as const;
    const { url, bodies, sessions } = await writeServer([
      [400, { error: { code: 'VALUE_TOO_LARGE', message: 'value is too large', definite: true } }],
      timeout,
      written(30),
      ...Array.from({ length: 8 }, () => timeout),
    ]);
    const at = ['--endpoints', url];
    const missing = await aspen([...at, 'cas', 'k', 'v']);
    expect(missing).toMatchObject({ code: EXIT_USAGE, stdout: '' });
    expect(missing.stderr).toBe('aspen: USAGE: cas takes KEY EXPECTED NEW (or --absent KEY NEW)\n');
    expect((await aspen([...at, 'cas', '--absent', 'k', 'a', 'b'])).code).toBe(EXIT_USAGE);
    expect((await aspen([...at, 'cas', 'k'])).code).toBe(EXIT_USAGE);
    expect(bodies).toHaveLength(0);
    expect((await aspen([...at, 'cas', 'k', 'a', 'b'])).code).toBe(EXIT_FAILED);
    // A timed-out cas is resent under its session (same client id and sequence) and answered.
    expect(await aspen([...at, 'cas', 'k', 'a', 'b'])).toMatchObject({ code: EXIT_OK });
    expect(bodies).toHaveLength(3);
    expect(sessions[2]).toEqual(sessions[1]);
    // Still in doubt when --timeout-ms (or the attempts) run out: exit 4, "may still take effect".
    expect(await aspen([...at, '--timeout-ms', '300', 'cas', 'k', 'a', 'b'])).toMatchObject({
      code: EXIT_UNAVAILABLE,
      stderr: 'aspen: TIMEOUT: no answer (it may still take effect)\n',
    });
    expect(new Set(sessions.slice(3).map((session) => JSON.stringify(session))).size).toBe(1);
  }, 60_000);
});

describe('aspen txn', () => {
  const txn = {
    compare: [{ key: 'a', target: 'value', op: 'equal', value: '1' }],
    success: [
      { Set: { key: 'a', value: '2' } },
      { Delete: { key: 'b' } },
      { Get: { key: 'c' } },
      { Get: { key: 'gone' } },
      { Scan: { prefix: 'app/', limit: 2 } },
    ],
    failure: [{ Get: { key: 'a' } }],
  };
  const results = [
    { Set: { key: 'a' } },
    { Delete: { key: 'b', deleted: true } },
    { Get: { key: 'c', value: 'see', create_index: 4, mod_index: 6, version: 3, lease_id: 0 } },
    { Get: null },
    {
      Scan: {
        entries: [
          { key: 'app/1', value: 'x', create_index: 7, mod_index: 7, version: 1, lease_id: 0 },
          { key: 'app/2', value: 'y', create_index: 8, mod_index: 9, version: 2, lease_id: 0 },
        ],
        is_truncated: true,
      },
    },
  ];
  const answer = (succeeded: boolean, revision: number, answered: unknown[]): readonly [number, unknown] => [
    200,
    { command: {}, log_index: revision, revision, succeeded, results: answered },
  ];

  it('reads the transaction from stdin, prints succeeded, revision and a results table', async () => {
    const { url, bodies } = await writeServer([answer(true, 20, results)]);
    const run = await aspen(['--endpoints', url, 'txn'], {}, JSON.stringify(txn));
    expect(run).toMatchObject({ code: EXIT_OK, stderr: '' });
    expect(run.stdout.split('\n').map((line) => line.replace(/ +/g, ' '))).toEqual([
      'succeeded: the compares held, success ran (revision 20)',
      '# OP KEY RESULT VERSION MOD_INDEX VALUE',
      '1 set a written - -',
      '2 delete b deleted - -',
      '3 get c found 3 6 see',
      '4 get gone absent - -',
      '5 scan app/1 found 1 7 x',
      '5 scan app/2 found 2 9 y',
      '5 scan app/* truncated - -',
      '',
    ]);
    expect(bodies).toEqual([{ command: { Transaction: txn } }]);
  }, 60_000);

  it('reads a file ("-" is stdin); exits 0 when the compares failed; --json prints the result', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aspen-txn-'));
    cleanups.push(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const file = join(dir, 'txn.json');
    writeFileSync(file, JSON.stringify({ success: [{ Set: { key: 'a', value: '2' } }] }));
    const failed = [
      { Get: { key: 'a', value: '9', create_index: 2, mod_index: 2, version: 1, lease_id: 0 } },
    ];
    const { url, bodies } = await writeServer([
      answer(false, 21, failed),
      answer(true, 22, []),
      answer(false, 23, []),
    ]);
    const at = ['--endpoints', url];
    const run = await aspen([...at, 'txn', file]);
    expect(run).toMatchObject({ code: EXIT_OK, stderr: '' });
    expect(run.stdout).toMatch(/^not succeeded: a compare failed, failure ran \(revision 21\)\n#/);
    expect(run.stdout).toMatch(/\n1 +get +a +found +1 +2 +9\n$/);
    expect(await aspen([...at, 'txn', file])).toEqual({
      code: EXIT_OK,
      stdout: 'succeeded: the compares held, success ran (revision 22)\n',
      stderr: '',
    });
    const json = await aspen([...at, '--json', 'txn', '-'], {}, '{}');
    expect(json.code).toBe(EXIT_OK);
    expect(JSON.parse(json.stdout)).toEqual({ succeeded: false, revision: 23, results: [] });
    expect(bodies).toEqual([
      {
        command: { Transaction: { compare: [], success: [{ Set: { key: 'a', value: '2' } }], failure: [] } },
      },
      {
        command: { Transaction: { compare: [], success: [{ Set: { key: 'a', value: '2' } }], failure: [] } },
      },
      { command: { Transaction: { compare: [], success: [], failure: [] } } },
    ]);
  }, 60_000);

  it('bad JSON, a wrong shape, a missing or oversized file exit 2 and send nothing; a refusal exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aspen-txn-'));
    cleanups.push(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const big = join(dir, 'big.json');
    writeFileSync(big, ' '.repeat(TXN_INPUT_BYTES_MAX + 1));
    const refused = {
      error: { code: 'INVALID_INPUT', message: 'compare 1: unknown target', definite: true },
    };
    const { url, bodies } = await writeServer([[400, refused]]);
    const at = ['--endpoints', url];
    const bad = await aspen([...at, 'txn'], {}, '{"compare": [');
    expect(bad).toMatchObject({ code: EXIT_USAGE, stdout: '' });
    expect(bad.stderr).toMatch(/^aspen: USAGE: stdin is not JSON: [^\n]+\n$/);
    expect((await aspen([...at, 'txn'])).stderr).toMatch(/^aspen: USAGE: stdin is not JSON/); // empty stdin
    const array = await aspen([...at, 'txn'], {}, '[1]');
    expect(array.stderr).toMatch(
      /a transaction is \{"compare":\[…\],"success":\[…\],"failure":\[…\]\}, not \[1\]/,
    );
    expect((await aspen([...at, 'txn'], {}, '{"Transaction":{}}')).stderr).toMatch(
      /unknown field "Transaction"/,
    );
    expect((await aspen([...at, 'txn'], {}, '{"success":{}}')).stderr).toMatch(/"success" must be a list/);
    const missing = await aspen([...at, 'txn', join(dir, 'none.json')]);
    expect(missing).toMatchObject({ code: EXIT_USAGE });
    expect(missing.stderr).toMatch(/cannot read .*none\.json: ENOENT/);
    const oversized = await aspen([...at, 'txn', big]);
    expect(oversized).toMatchObject({ code: EXIT_USAGE });
    expect(oversized.stderr).toMatch(/big\.json is over 2097152 bytes/);
    expect(bodies).toHaveLength(0);
    const server = await aspen([...at, 'txn'], {}, '{"compare":[{"key":"a","target":"size"}]}');
    expect(server).toEqual({
      code: EXIT_FAILED,
      stdout: '',
      stderr: 'aspen: INVALID_INPUT: compare 1: unknown target\n',
    });
  }, 60_000);
});

describe('aspen lease', () => {
  const renewed = [200, { lease_id: 7, ttl_seconds: 1 }] as const;
  const notFound = [
    404,
    { error: { code: 'LEASE_NOT_FOUND', message: 'lease 7 not found', definite: true } },
  ] as const;
  const leaseServer = (keepalive: () => readonly [number, unknown]): Promise<string> =>
    fakeServer((path) =>
      path === '/lease/grant'
        ? [200, { lease_id: 7, ttl_seconds: 10, log_index: 3 }]
        : path === '/lease/revoke'
          ? [200, { lease_id: 7, revoked: true, log_index: 5 }]
          : path.startsWith('/lease/info')
            ? [
                200,
                {
                  lease_id: 7,
                  ttl_seconds: 10,
                  remaining_seconds: 8,
                  // Two pages: --keys follows them.
                  ...(path.endsWith('keys=true') ? { keys: ['svc/a'], keys_truncated: true } : {}),
                  ...(path.endsWith('after=svc%2Fa') ? { keys: ['svc/b'], keys_truncated: false } : {}),
                },
              ]
            : path === '/leases'
              ? [
                  200,
                  {
                    leases: [
                      { lease_id: 7, ttl_seconds: 10, remaining_seconds: 8 },
                      { lease_id: 12, ttl_seconds: 600, remaining_seconds: 599 },
                    ],
                  },
                ]
              : path === '/lease/keepalive'
                ? keepalive()
                : [200, { leader: 1, node_id: 1 }],
    );

  it('grant, keepalive --once, revoke, info, list print one line or a table; --json one document', async () => {
    const at = ['--endpoints', await leaseServer(() => renewed)];
    expect(await aspen([...at, 'lease', 'grant', '10'])).toEqual({
      code: EXIT_OK,
      stdout: 'lease 7 granted (ttl 10 s, log index 3)\n',
      stderr: '',
    });
    expect(await aspen([...at, '--json', 'lease', 'grant', '10', '--id', '7'])).toMatchObject({
      code: EXIT_OK,
      stdout: '{"lease_id":7,"ttl_seconds":10,"log_index":3}\n',
    });
    expect(await aspen([...at, 'lease', 'keepalive', '7', '--once'])).toMatchObject({
      code: EXIT_OK,
      stdout: 'lease 7 renewed (ttl 1 s)\n',
    });
    expect(await aspen([...at, 'lease', 'revoke', '7'])).toMatchObject({
      code: EXIT_OK,
      stdout: 'lease 7 revoked (log index 5)\n',
    });
    expect(await aspen([...at, 'lease', 'info', '7'])).toMatchObject({
      code: EXIT_OK,
      stdout: 'lease 7: ttl 10 s, 8 s remaining\n',
    });
    expect((await aspen([...at, 'lease', 'info', '7', '--keys'])).stdout).toBe(
      'lease 7: ttl 10 s, 8 s remaining\n2 keys\nsvc/a\nsvc/b\n',
    );
    expect(JSON.parse((await aspen([...at, '--json', 'lease', 'info', '7', '--keys'])).stdout)).toEqual({
      lease_id: 7,
      ttl_seconds: 10,
      remaining_seconds: 8,
      keys: ['svc/a', 'svc/b'],
      keys_truncated: false,
    });
    const list = await aspen([...at, 'lease', 'list']);
    expect(list.stdout.split('\n').map((line) => line.replace(/ +/g, ' '))).toEqual([
      'LEASE_ID TTL REMAINING',
      '7 10 8',
      '12 600 599',
      '',
    ]);
    expect(JSON.parse((await aspen([...at, '--json', 'lease', 'list'])).stdout)).toMatchObject({
      leases: [{ lease_id: 7 }, { lease_id: 12 }],
    });
  }, 60_000);

  it.each(['SIGINT', 'SIGTERM'] as const)(
    'keepalive renews until %s (exit 0), printing each renewal',
    async (signal) => {
      const at = ['--endpoints', await leaseServer(() => renewed)];
      const run = await aspen([...at, 'lease', 'keepalive', '7'], {}, undefined, (stdout, child) => {
        if (stdout.split('\n').length > 2) child.kill(signal);
      });
      expect(run.code).toBe(EXIT_OK);
      expect(run.stderr).toBe('');
      expect(run.stdout.split('\n').slice(0, 2)).toEqual([
        'lease 7 renewed (ttl 1 s)',
        'lease 7 renewed (ttl 1 s)',
      ]);
    },
    30_000,
  );

  it('keepalive exits 6 when the lease is lost; keepalive --once of an unknown lease exits 3', async () => {
    let keepalives = 0;
    const at = ['--endpoints', await leaseServer(() => (++keepalives === 1 ? renewed : notFound))];
    const lost = await aspen([...at, '--json', 'lease', 'keepalive', '7']);
    expect(lost).toMatchObject({ code: EXIT_LEASE_LOST, stdout: '{"lease_id":7,"ttl_seconds":1}\n' });
    expect(lost.stderr).toMatch(/^aspen: LEASE_LOST: lease 7 lost: the cluster no longer has it/);
    expect(await aspen([...at, 'lease', 'keepalive', '7', '--once'])).toMatchObject({
      code: EXIT_NOT_FOUND,
      stderr: 'aspen: LEASE_NOT_FOUND: lease 7 not found\n',
    });
    const gone = ['--endpoints', await leaseServer(() => notFound)];
    expect(await aspen([...gone, 'lease', 'keepalive', '7'])).toMatchObject({ code: EXIT_LEASE_LOST });
  }, 60_000);

  it('put --lease sends lease_id with the Set; bad ids and TTLs are usage errors (exit 2)', async () => {
    const { url, bodies } = await writeServer([written(12)]);
    expect(await aspen(['--endpoints', url, 'put', '--lease', '7', 'k', 'v'])).toMatchObject({
      code: EXIT_OK,
    });
    expect(bodies).toEqual([{ command: { Set: { key: 'k', value: 'v', lease_id: 7 } } }]);
    for (const args of [
      ['put', '--lease', 'x', 'k', 'v'],
      ['lease', 'grant', '0'],
      ['lease', 'grant', '10', '--id', '-3'],
      ['lease', 'revoke'],
      ['lease', 'info', '1.5'],
    ])
      expect(await aspen(['--endpoints', url, ...args])).toMatchObject({
        code: EXIT_USAGE,
        stderr: expect.stringMatching(/^aspen: USAGE: /) as string,
      });
    // `aspen lease` alone shows the lease commands on stderr, as a usage error.
    const bare = await aspen(['--endpoints', url, 'lease']);
    expect(bare).toMatchObject({ code: EXIT_USAGE, stdout: '' });
    expect(bare.stderr).toMatch(/^Usage: aspen lease .*\n[^]*keepalive/);
    expect(bodies).toHaveLength(1); // nothing else was sent
  }, 60_000);
});

describe('aspen lease against a real node', () => {
  // A TTL far longer than the test: a busy machine's slow CLI starts never make it run low.
  it('grant --id, put --lease, keepalive --once, info, list, revoke; then info exits 3 and keepalive 6', async () => {
    const at = ['--endpoints', await realNode(cleanups)];
    expect(await aspen([...at, 'lease', 'grant', '30', '--id', '42'])).toMatchObject({
      code: EXIT_OK,
      stdout: expect.stringMatching(/^lease 42 granted \(ttl 30 s, log index \d+\)\n$/) as string,
    });
    expect(await aspen([...at, 'lease', 'grant', '30', '--id', '42'])).toMatchObject({
      code: EXIT_FAILED,
      stderr: expect.stringMatching(/^aspen: LEASE_EXISTS: /) as string,
    });
    expect(await aspen([...at, 'lease', 'keepalive', '42', '--once'])).toMatchObject({
      code: EXIT_OK,
      stdout: 'lease 42 renewed (ttl 30 s)\n',
    });
    expect(await aspen([...at, 'put', '--lease', '42', 'svc/x', 'on'])).toMatchObject({ code: EXIT_OK });
    expect(await aspen([...at, 'put', '--lease', '43', 'svc/y', 'on'])).toMatchObject({
      code: EXIT_NOT_FOUND,
      stderr: expect.stringMatching(/^aspen: LEASE_NOT_FOUND: /) as string,
    });
    expect((await aspen([...at, 'lease', 'info', '42', '--keys'])).stdout).toMatch(
      /^lease 42: ttl 30 s, (2\d|30) s remaining\n1 key\nsvc\/x\n$/,
    );
    expect(JSON.parse((await aspen([...at, '--json', 'lease', 'list'])).stdout)).toMatchObject({
      leases: [{ lease_id: 42, ttl_seconds: 30 }],
    });
    expect(await aspen([...at, 'lease', 'revoke', '42'])).toMatchObject({ code: EXIT_OK });
    expect(await aspen([...at, 'get', 'svc/x'])).toMatchObject({ code: EXIT_NOT_FOUND }); // deleted with it
    expect(await aspen([...at, 'lease', 'info', '42'])).toMatchObject({ code: EXIT_NOT_FOUND });
    expect(await aspen([...at, 'lease', 'keepalive', '42'])).toMatchObject({ code: EXIT_LEASE_LOST });
    expect(await aspen([...at, 'lease', 'grant', '86401'])).toMatchObject({ code: EXIT_FAILED });
  }, 60_000);
});
