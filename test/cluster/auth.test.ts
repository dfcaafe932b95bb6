import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROLES, type Role } from '../../src/http/auth.ts';
import { authCall, checkAuthTable } from '../support/auth-table.ts';
import { eventually, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * Issue 18's authentication on real aspen-node processes: `aspen-node tokens add`, the route × role
 * table on the leader and on a follower (which refuses before it forwards), SIGHUP reading the token
 * file again, no secret in any log line, and the fail-safe refusal of an exposed HTTP API.
 */
const NODE_BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
const ASPEN_CLI = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const EXIT_CONFIG = 2;

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

function aspenNode(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [NODE_BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

function addToken(file: string, name: string, role: string): string {
  const run = aspenNode(['tokens', 'add', name, role, '--auth-tokens', file]);
  expect(run.code, run.stderr).toBe(0);
  return run.stdout.trim();
}

async function call(
  node: NodeProcess,
  path: string,
  token: string | null,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${node.http}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

describe('authentication on real processes', () => {
  it('tokens add prints a token once and stores only its hash; a repeated name or a bad role is refused', () => {
    const file = join(cluster.tempDir(), 'tokens');
    const token = addToken(file, 'ci', 'write');
    expect(token).toMatch(/^aspen_[A-Za-z0-9_-]{43}$/);
    const stored = readFileSync(file, 'utf8');
    expect(stored).toMatch(/^ci write sha256:[0-9a-f]{64}$/m);
    expect(stored).not.toContain(token);
    const again = aspenNode(['tokens', 'add', 'ci', 'read', '--auth-tokens', file]);
    expect([again.code, again.stdout]).toEqual([EXIT_CONFIG, '']);
    expect(again.stderr).toMatch(/already has a token named ci/);
    expect(aspenNode(['tokens', 'add', 'x', 'owner', '--auth-tokens', file]).code).toBe(EXIT_CONFIG);
    expect(aspenNode(['tokens', 'add', 'x']).code).toBe(EXIT_CONFIG);
  });

  it('every route × every role on the leader and on a follower; SIGHUP reads new tokens; no log line holds a secret', async () => {
    const file = join(cluster.tempDir(), 'tokens');
    const tokens = Object.fromEntries(
      ROLES.map((role) => [role, addToken(file, `t-${role}`, role)]),
    ) as Record<Role, string>;
    // The table refuses twice per route from one address: far past the default bound.
    const flags = ['--auth-tokens', file, '--auth-failures-max', '10000'];
    const [first, second] = await Promise.all([1, 2].map((id) => cluster.start(id, { flags })));
    if (first === undefined || second === undefined) throw new Error('two nodes');
    expect((await call(first, '/init', null, { initial_members: [cluster.member(first)] })).status).toBe(401);
    expect(
      (await call(first, '/init', tokens.write, { initial_members: [cluster.member(first)] })).status,
    ).toBe(403);
    expect(
      (await call(first, '/init', tokens.admin, { initial_members: [cluster.member(first)] })).status,
    ).toBe(200);
    await eventually(async () => (await call(first, '/leader', tokens.read)).json.leader === 1, 10_000);
    expect(
      (await call(first, '/add-learner', tokens.admin, { learner: cluster.member(second) })).status,
    ).toBe(200);
    expect((await call(first, '/change-membership', tokens.admin, { members: [1, 2] })).status).toBe(200);
    await eventually(async () => (await call(second, '/leader', tokens.read)).json.leader === 1, 10_000);

    for (const node of [first, second]) await checkAuthTable(node.http, tokens);

    // The follower refuses before it forwards: nothing reaches the log.
    const before = (await call(first, '/metrics', tokens.read)).json.last_log_index;
    const write = { command: { Set: { key: 'auth/k', value: 'v' } } };
    expect((await call(second, '/write', tokens.read, write)).status).toBe(403);
    expect((await call(second, '/write', null, write)).status).toBe(401);
    expect((await call(first, '/metrics', tokens.read)).json.last_log_index).toBe(before);
    expect((await call(second, '/write', tokens.write, write)).status).toBe(200);

    // A token added to the file works once each node got SIGHUP.
    const late = addToken(file, 'late', 'write');
    expect((await authCall(second.http, 'GET /state', late)).status).toBe(401);
    second.child.kill('SIGHUP');
    await eventually(async () => (await authCall(second.http, 'GET /state', late)).status === 200, 10_000);
    expect(second.log.some((line) => line.includes('SIGHUP: 4 tokens read again'))).toBe(true);
    // A file broken meanwhile is refused on SIGHUP, and the tokens in force stay.
    const good = readFileSync(file, 'utf8');
    writeFileSync(file, `${good}not a token line\n`);
    first.child.kill('SIGHUP');
    await eventually(
      () => first.log.some((line) => line.includes('SIGHUP: the tokens in force stay')),
      10_000,
    );
    expect((await authCall(first.http, 'GET /state', tokens.read)).status).toBe(200);
    writeFileSync(file, good);

    // The CLI: --token or ASPEN_TOKEN; without one a clear refusal that never echoes a token.
    const cli = (args: readonly string[], env: Record<string, string> = {}) =>
      spawnSync(process.execPath, [ASPEN_CLI, '--endpoints', second.http, ...args], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, ...env },
      });
    expect(cli(['--token', tokens.write, 'put', 'auth/cli', 'v']).status).toBe(0);
    expect(cli(['get', 'auth/cli'], { ASPEN_TOKEN: tokens.read }).stdout).toMatch(/v/);
    const refused = cli(['get', 'auth/cli']);
    expect([refused.status, refused.stderr]).toEqual([1, expect.stringMatching(/UNAUTHENTICATED/) as string]);
    const weak = cli(['--token', tokens.read, 'put', 'auth/cli', 'w']);
    expect([weak.status, weak.stderr]).toEqual([1, expect.stringMatching(/FORBIDDEN/) as string]);
    expect(weak.stderr).not.toContain(tokens.read);

    const secrets = [cluster.cookie, ...Object.values(tokens), late, 'aspen_not-a-token'];
    const lines = [...first.log, ...second.log];
    expect(lines.length).toBeGreaterThan(4);
    for (const secret of secrets) expect(lines.filter((line) => line.includes(secret))).toEqual([]);
  }, 120_000);

  it('a non-loopback HTTP API without --auth-tokens refuses to start, in one line', () => {
    const run = aspenNode([
      ...['--node-id', '1', '--cookie', cluster.cookie, '--http-addr', '0.0.0.0:0', '--storage', 'memory'],
    ]);
    expect(run.code).toBe(EXIT_CONFIG);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/would let anyone who reaches it write.*--auth-tokens FILE.*--insecure/);
    const missing = aspenNode(['--node-id', '1', '--auth-tokens', join(cluster.tempDir(), 'none')]);
    expect([missing.code, missing.stderr.trim().split('\n').length]).toEqual([EXIT_CONFIG, 1]);
  });
});
