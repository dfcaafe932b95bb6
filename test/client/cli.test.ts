import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE } from '../../src/bin/aspen.ts';
import { realNode } from './real-node.ts';

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const RUN_TIMEOUT_MS = 20_000;
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run the aspen binary as a user would (stdio are pipes, not a terminal); resolves with its exit code and output. */
function aspen(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    // The caller's ASPEN_ENDPOINTS must not leak into the runs.
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => name !== 'ASPEN_ENDPOINTS'),
    );
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...inherited, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`aspen ${args.join(' ')} did not finish`));
    }, RUN_TIMEOUT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** A scripted server answering each path with [status, body] after `delayMs`. */
async function fakeServer(
  answer: (path: string) => readonly [number, unknown],
  delayMs = 0,
): Promise<string> {
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const [status, body] = answer(request.url ?? '');
      setTimeout(() => {
        response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      }, delayMs);
    });
  });
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  cleanups.push(
    () =>
      new Promise<void>((resolveClose) => {
        server.closeAllConnections();
        server.close(() => {
          resolveClose();
        });
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closedPort(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await new Promise<void>((resolveClose) =>
    server.close(() => {
      resolveClose();
    }),
  );
  return url;
}

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
      /^ID\s+ROLE\s+ADDR\s+RAFT_ADDR\n1\s+leader\s+node-1\s+127\.0\.0\.1:26001\n$/,
    );
    expect(JSON.parse((await aspen([...at, '--json', 'members'])).stdout)).toMatchObject({
      members: [1],
      leader: 1,
    });
    const status = await aspen([...at, 'status']);
    expect(status.code).toBe(EXIT_OK);
    const lines = status.stdout.split('\n');
    expect(lines[0]).toBe('leader 1; voters 1; learners none');
    expect(lines[2]).toMatch(/^ENDPOINT\s+NODE\s+STATE\s+TERM\s+LEADER\s+LAST_LOG\s+COMMIT\s+APPLIED$/);
    expect(lines[3]).toMatch(
      new RegExp(`^${endpoint.replace(/[.]/g, '\\.')}\\s+1\\s+Leader\\s+\\d+\\s+1\\s+\\d+\\s+\\d+\\s+\\d+$`),
    );
    expect(lines[4]).toMatch(/unreachable \(CONNECTION\)$/);
    const statusJson = JSON.parse((await aspen([...at, '--json', 'status'])).stdout) as {
      cluster: unknown;
      endpoints: unknown[];
    };
    expect(statusJson).toMatchObject({
      cluster: { leader: 1 },
      endpoints: [
        { endpoint, metrics: { state: 'Leader' }, error: null },
        { endpoint: dead, metrics: null, error: 'CONNECTION' },
      ],
    });
    const init = await aspen(['--endpoints', endpoint, 'init', '1=127.0.0.1:26001']);
    expect(init).toMatchObject({ code: EXIT_FAILED, stdout: '' });
    expect(init.stderr).toMatch(/^aspen: ALREADY_INITIALIZED: [^\n]+\n$/);
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
