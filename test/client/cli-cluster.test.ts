import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { VALUE_BYTES_MAX } from '../../src/api/limits.ts';
import { EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_UNHEALTHY, EXIT_USAGE } from '../../src/bin/aspen.ts';
import { endpointUrl, endpointUrls } from '../../src/bin/aspen-endpoints.ts';
import { cliMessage } from '../../src/bin/aspen-hints.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { toAspenError } from '../../src/node/errors.ts';
import {
  eventually,
  formCluster,
  post,
  ProcessCluster,
  type NodeProcess,
} from '../cluster/process-harness.ts';
import { aspen, closedPort, fakeServer as fakeServerIn, type Run } from './aspen-run.ts';
import { realNode, realNodeParts } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const fakeServer = (answer: (path: string) => readonly [number, unknown]): Promise<string> =>
  fakeServerIn(cleanups, answer);
const failure = (code: string, message = code.toLowerCase()) => ({ error: { code, message } });
/** host:port of a URL, as etcdctl takes endpoints. */
const hostPort = (url: string): string => url.replace(/^https?:\/\//, '');
/** A cluster of real processes: starting, forming and losing nodes on a slow CI machine. */
const CLUSTER_TEST_TIMEOUT_MS = 150_000;
/** How long a cluster may take to settle (all healthy, or a lost quorum noticed). */
const SETTLE_TIMEOUT_MS = 30_000;

/** An aspen-node on memory stores that was never initialized: its URL. */
async function uninitializedNode(): Promise<string> {
  const parts = realNodeParts();
  const app = buildHttpServer({
    controller: parts.control,
    store: parts.control,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(
    () => {
      parts.node.stop();
    },
    () => app.close(),
  );
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

describe('aspen --endpoints takes host:port or URLs', () => {
  it('assumes http://, or https:// with --cacert; refuses what is not an endpoint, naming it', () => {
    expect(endpointUrl('127.0.0.1:8001', false)).toBe('http://127.0.0.1:8001');
    expect(endpointUrl('127.0.0.1:8001', true)).toBe('https://127.0.0.1:8001');
    expect(endpointUrl('[::1]:8001', false)).toBe('http://[::1]:8001');
    expect(endpointUrl('db-1.example:8443', true)).toBe('https://db-1.example:8443');
    expect(endpointUrl('http://10.0.0.5:8001', true)).toBe('http://10.0.0.5:8001');
    expect(endpointUrl('https://db-1.example', false)).toBe('https://db-1.example');
    expect(endpointUrls(' 127.0.0.1:8001, http://127.0.0.1:8001 ,127.0.0.1:8002', false)).toEqual([
      'http://127.0.0.1:8001',
      'http://127.0.0.1:8002',
    ]);
    for (const [bad, why] of [
      ['localhost', /"localhost" has no port/],
      ['foo bar:1', /"foo bar:1" is not host:port or an http/],
      ['ftp://h:1', /"ftp:\/\/h:1" is not an http/],
      ['http://u:p@h:1', /carries credentials/],
      ['http://h:1/v2', /has a path/],
      ['127.0.0.1:99999', /is not host:port/],
    ] as const)
      expect(() => endpointUrl(bad, false)).toThrow(why);
    expect(() => endpointUrls(' , ', false)).toThrow(/at least one endpoint/);
  });

  it('a put and a get through 127.0.0.1:PORT; a bad endpoint is a usage error that names it', async () => {
    const endpoint = await realNode(cleanups);
    const at = ['--endpoints', hostPort(endpoint)];
    expect(await aspen([...at, 'put', 'greeting', 'hello'])).toMatchObject({ code: EXIT_OK, stderr: '' });
    expect(await aspen([...at, 'get', 'greeting'])).toMatchObject({ code: EXIT_OK, stdout: 'hello\n' });
    expect(await aspen(['get', 'greeting'], { ASPEN_ENDPOINTS: hostPort(endpoint) })).toMatchObject({
      code: EXIT_OK,
      stdout: 'hello\n',
    });
    const bad = await aspen(['--endpoints', `${hostPort(endpoint)},localhost`, 'get', 'greeting']);
    expect(bad).toEqual({
      code: EXIT_USAGE,
      stdout: '',
      stderr:
        'aspen: USAGE: --endpoints: "localhost" has no port: give host:port (e.g. 127.0.0.1:8001) or a URL\n',
    });
  }, 60_000);
});

describe('aspen put KEY reads the value from stdin', () => {
  it('when the value is left out or "-", byte for byte, up to the largest value a node stores', async () => {
    const endpoint = await realNode(cleanups);
    const at = ['--endpoints', endpoint];
    expect(await aspen([...at, 'put', 'cert'], {}, '-----BEGIN-----\nline two\n')).toMatchObject({
      code: EXIT_OK,
      stdout: expect.stringMatching(/^OK \(log index \d+\)\n$/) as string,
    });
    expect((await aspen([...at, '--json', 'get', 'cert'])).stdout).toContain(
      '"value":"-----BEGIN-----\\nline two\\n"',
    );
    expect(await aspen([...at, 'put', 'dash', '-'], {}, 'from stdin')).toMatchObject({ code: EXIT_OK });
    expect((await aspen([...at, 'get', 'dash'])).stdout).toBe('from stdin\n');
    expect(await aspen([...at, 'put', 'empty'], {}, '')).toMatchObject({ code: EXIT_OK });
    expect(await aspen([...at, 'get', 'empty'])).toMatchObject({ code: EXIT_OK, stdout: '\n' });
    const largest = 'v'.repeat(VALUE_BYTES_MAX);
    expect(await aspen([...at, 'put', 'large'], {}, largest)).toMatchObject({ code: EXIT_OK });
    expect((await aspen([...at, 'get', 'large'])).stdout).toBe(`${largest}\n`);
  }, 60_000);

  it('refuses more than the largest value, or text that is not UTF-8, before sending anything (exit 2)', async () => {
    const paths: string[] = [];
    const server = await fakeServer((path) => {
      paths.push(path);
      return [503, failure('NO_LEADER')];
    });
    const over = await aspen(['--endpoints', server, 'put', 'k'], {}, 'v'.repeat(VALUE_BYTES_MAX + 1));
    expect(over).toEqual({
      code: EXIT_USAGE,
      stdout: '',
      stderr: `aspen: USAGE: the value on stdin is over ${VALUE_BYTES_MAX} bytes, the largest value a node stores\n`,
    });
    const binary = await aspen(['--endpoints', server, 'put', 'k', '-'], {}, Buffer.from([0xff, 0xfe]));
    expect(binary).toMatchObject({
      code: EXIT_USAGE,
      stderr: 'aspen: USAGE: the value on stdin is not UTF-8 text\n',
    });
    expect(paths).toEqual([]);
  }, 60_000);
});

describe('aspen: the most telling error of several endpoints wins', () => {
  it('NO_QUORUM from the first endpoint, not the refused connection of the last; a refusal over both', async () => {
    const quorumless = await fakeServer(() => [503, failure('NO_QUORUM', 'no quorum answers the leader')]);
    const dead = await closedPort();
    const get = await aspen(['--endpoints', `${quorumless},${dead}`, '--timeout-ms', '2000', 'get', 'k']);
    expect(get.code).toBe(EXIT_UNAVAILABLE);
    expect(get.stderr).toMatch(
      /^aspen: NO_QUORUM: no quorum answers the leader \(`aspen health` shows which nodes answer\)\n$/,
    );
    // status with nothing answering: the token refusal is the news, not "no endpoint answered".
    const refusing = await fakeServer(() => [
      401,
      failure('UNAUTHENTICATED', 'this node requires a bearer token'),
    ]);
    const status = await aspen(['--endpoints', `${refusing},${dead}`, '--timeout-ms', '2000', 'status']);
    expect(status.code).toBe(EXIT_FAILED);
    expect(status.stderr).toMatch(/^aspen: UNAUTHENTICATED: this node requires a bearer token\n$/);
  }, 60_000);
});

describe('aspen usage hints name CLI commands, not HTTP routes', () => {
  it('rewrites every route hint the server gives, keeping the server message otherwise', async () => {
    const notInitialized = toAspenError({ code: 'not_initialized' });
    expect(cliMessage(notInitialized.code, notInitialized.message)).toBe(
      'the cluster is not initialized: initialize it first: aspen init 1=HOST:RAFT_PORT 2=HOST:RAFT_PORT 3=HOST:RAFT_PORT (with discovery: aspen init 1 2 3)',
    );
    const lagging = toAspenError({
      code: 'learner_not_caught_up',
      nodeId: 5,
      matchIndex: 3,
      requiredIndex: 9,
    });
    expect(cliMessage(lagging.code, lagging.message)).toMatch(
      /^learner 5 has not caught up .*; wait for it to catch up, or remove it with `aspen member remove 5`$/,
    );
    // The control client's own hints, from a real single-node cluster.
    const parts = realNodeParts();
    cleanups.push(() => {
      parts.node.stop();
    });
    const control = new RaftControlClient(parts.node, { requestTimeoutMs: 2_000 });
    await control.init({ initial_members: [{ id: 1, addr: 'node-1', raft_addr: '127.0.0.1:26001' }] });
    const refused = (call: Promise<unknown>): Promise<Error> =>
      call.then(
        () => new Error('resolved'),
        (error: unknown) => error as Error,
      );
    const refusals = await Promise.all([
      refused(control.removeLearner({ learner_id: 1 })),
      refused(control.changeMembership({ members: [1], learners: [7] })),
    ]);
    expect(refusals.map((error) => cliMessage('INVALID_INPUT', error.message))).toEqual([
      'node 1 is not a learner: it is a voter (demote it first: `aspen change-membership OTHER_VOTERS… --learners 1`)',
      'node 7 is not in the cluster: add it with `aspen add-learner 7`',
    ]);
    // add-learner's timeout hint (control-client.ts rollBackLearner) names both; the CLI keeps its own.
    expect(
      cliMessage(
        'TIMEOUT',
        'learner 4 did not catch up in time; it stays a learner and keeps catching up (promote it later, or remove it with POST /remove-learner {"learner_id":4} or `aspen member remove 4`)',
      ),
    ).toMatch(/promote it later, or remove it with `aspen member remove 4`\)$/);
    for (const message of [
      notInitialized.message,
      lagging.message,
      ...refusals.map((error) => error.message),
    ])
      expect(cliMessage('X', message)).not.toMatch(
        /POST \/|\/(init|add-learner|change-membership|remove-learner)\b/,
      );
  });

  it('a write to a cluster not yet initialized says to run aspen init (exit 1)', async () => {
    const endpoint = await uninitializedNode();
    const put = await aspen(['--endpoints', endpoint, 'put', 'k', 'v']);
    expect(put.code).toBe(EXIT_FAILED);
    expect(put.stderr).toMatch(
      /^aspen: NOT_INITIALIZED: the cluster is not initialized: initialize it first: aspen init 1=/,
    );
    expect(put.stderr).not.toContain('POST /init');
  }, 30_000);
});

/** Run aspen against `nodes` (as host:port), resolving when it exits. */
function cli(nodes: readonly NodeProcess[], args: readonly string[]) {
  return aspen([
    '--endpoints',
    nodes.map((node) => hostPort(node.http)).join(','),
    '--timeout-ms',
    '5000',
    ...args,
  ]);
}

/** Run aspen until `done` holds of its run (a cluster settling, gossip spreading): that run. */
async function settled(
  nodes: readonly NodeProcess[],
  args: readonly string[],
  done: (run: Run) => boolean,
): Promise<Run> {
  let run = await cli(nodes, args);
  await eventually(async () => {
    run = await cli(nodes, args);
    return done(run);
  }, SETTLE_TIMEOUT_MS);
  return run;
}

describe('aspen status, health and leader find every member through the cluster', () => {
  it(
    'a learner given as no endpoint shows up; health exits 0, then 8 with a node down; without a quorum leader exits 4 and health 8',
    async () => {
      const cluster = new ProcessCluster();
      cleanups.push(() => {
        cluster.cleanup();
      });
      const nodes = await Promise.all([1, 2, 3].map((id) => cluster.start(id)));
      await formCluster(cluster, nodes);
      const learner = await cluster.start(4);
      expect(
        (await post(`${nodes[0]?.http ?? ''}/add-learner`, { learner: cluster.member(learner) })).status,
      ).toBe(200);
      const [first] = nodes;
      if (first === undefined) throw new Error('no node');

      // One endpoint given: the other voters and the learner (once gossip told where it listens) are
      // found through the cluster.
      const learnerRow = new RegExp(`^4\\s+learner\\s+${learner.http}\\s+Learner\\s`, 'm');
      const status = await settled([first], ['status'], (run) => learnerRow.test(run.stdout));
      expect(status.code, status.stderr).toBe(EXIT_OK);
      expect(status.stdout).toMatch(/^leader \d; voters 1, 2, 3; learners 4\n/);
      for (const node of nodes)
        expect(status.stdout).toMatch(
          new RegExp(`^${node.id}\\s+(leader|voter)\\s+${node.http}\\s+(Leader|Follower)\\s+\\d+`, 'm'),
        );

      const health = await settled([first], ['health'], (run) => run.code === EXIT_OK);
      expect(health.stdout).toMatch(/^NODE\s+ROLE\s+ENDPOINT\s+STATUS\s+LEADER\s+CHECKS$/m);
      expect(health.stdout.match(/\shealthy\s+\d\s+ok$/gm)).toHaveLength(4);
      expect(health.stdout).toMatch(/\n\nhealthy: 4 members answered healthy; leader \d\n$/);
      const json = await settled([first], ['--json', 'health'], (run) => run.code === EXIT_OK);
      const report = JSON.parse(json.stdout) as {
        healthy: boolean;
        leader: number;
        members: { node_id: number; health: { status: string } }[];
      };
      expect(report).toMatchObject({ healthy: true, problems: [] });
      expect(report.members.map((member) => [member.node_id, member.health.status])).toEqual([
        [1, 'healthy'],
        [2, 'healthy'],
        [3, 'healthy'],
        [4, 'healthy'],
      ]);

      const leaderNode = [...nodes].find((node) => node.id === report.leader);
      expect(await cli([first], ['leader'])).toMatchObject({
        code: EXIT_OK,
        stdout: `${report.leader} ${leaderNode?.http ?? '?'}\n`,
      });
      expect(JSON.parse((await cli([first], ['--json', 'leader'])).stdout)).toEqual({
        leader: report.leader,
        endpoint: leaderNode?.http,
      });

      // The learner goes down: the cluster still answers, but is not healthy (exit 8).
      await cluster.kill(learner);
      const degraded = await cli([first], ['health']);
      expect(degraded.code).toBe(EXIT_UNHEALTHY);
      // (Under load a voter may be late to hear its leader, and be named too.)
      expect(degraded.stdout).toMatch(
        /\n\nunhealthy: (.*; )?node 4: (unreachable \(CONNECTION\)|no HTTP address known)(;.*)?\n$/,
      );

      // Two voters down: no quorum, so no leader once an election timeout has passed (exit 4 for leader).
      const survivor = nodes.find((node) => node.id !== report.leader) ?? first;
      for (const node of nodes) if (node !== survivor) await cluster.kill(node);
      let leaderless = await cli([survivor], ['leader']);
      await eventually(async () => {
        leaderless = await cli([survivor], ['leader']);
        return leaderless.code === EXIT_UNAVAILABLE;
      }, SETTLE_TIMEOUT_MS);
      expect(leaderless).toMatchObject({
        stdout: '',
        stderr: expect.stringMatching(/^aspen: NO_LEADER: /) as string,
      });
      const noLeader = await cli([survivor], ['health']);
      expect(noLeader.code).toBe(EXIT_UNHEALTHY);
      expect(noLeader.stdout).toMatch(/unhealthy: no leader is known; /);
      expect(noLeader.stdout).toMatch(
        new RegExp(
          `^${survivor.id}\\s+voter\\s+${survivor.http}\\s+(unhealthy|degraded)\\s+-\\s+leader`,
          'm',
        ),
      );
    },
    CLUSTER_TEST_TIMEOUT_MS,
  );
});
