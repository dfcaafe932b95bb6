import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePortRun } from '../../src/bench/ports.ts';
import { HTTP_STOP_GRACE_MS, startNode, type RunningNode } from '../../src/cluster/bootstrap.ts';
import {
  CONFIG_FILE_BYTES_MAX,
  COOKIE_CHARS_MIN,
  DEFAULT_COOKIE,
  parseNodeConfig,
} from '../../src/cluster/config.ts';
import { ConfigError } from '../../src/cluster/errors.ts';
import { encodeTicket } from '../../src/cluster/discovery/ticket.ts';
import { clusterTopic } from '../../src/cluster/discovery/topic.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

async function get(url: string): Promise<Record<string, unknown>> {
  return (await (await fetch(url)).json()) as Record<string, unknown>;
}

async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(await check()).toBe(true);
}

function configFor(id: number, raftPort: number, dataDir: string) {
  return parseNodeConfig([
    '--node-id',
    String(id),
    '--port',
    String(raftPort),
    '--http-addr',
    '127.0.0.1:0',
    '--cookie',
    'node-test-cluster-cookie',
    '--data-dir',
    join(dataDir, `node-${id}`),
    '--heartbeat-interval-ms',
    '20',
    '--election-timeout-min-ms',
    '150',
    '--election-timeout-max-ms',
    '300',
  ]);
}

describe('aspen-node configuration', () => {
  it('applies defaults, then environment, then flags', () => {
    const config = parseNodeConfig(['--node-id', '3']);
    expect(config).toMatchObject({
      nodeId: 3,
      port: 26000,
      host: '127.0.0.1',
      httpHost: '127.0.0.1',
      httpPort: 8080,
      storage: 'lmdb',
      dataDir: './data/node-3',
      cookieIsDefault: true,
    });
    process.env.ASPEN_PORT = '27000';
    try {
      expect(parseNodeConfig(['--node-id', '3']).port).toBe(27000);
      expect(parseNodeConfig(['--node-id', '3', '--port', '28000']).port).toBe(28000);
    } finally {
      delete process.env.ASPEN_PORT;
    }
    expect(config.httpAllowedHosts).toEqual([]);
    expect(
      parseNodeConfig([
        '--node-id',
        '3',
        '--http-allowed-hosts',
        'Aspen.Internal,node3.example',
        '--http-allowed-hosts',
        'lb.example',
      ]).httpAllowedHosts,
    ).toEqual(['aspen.internal', 'node3.example', 'lb.example']);
    expect(
      parseNodeConfig([
        '--node-id',
        '1',
        '--peers',
        '2@127.0.0.1:26002',
        '--peers',
        '3@/ip4/127.0.0.1/tcp/26003',
      ]).peers,
    ).toEqual([
      { id: 2, address: '127.0.0.1:26002' },
      { id: 3, address: '/ip4/127.0.0.1/tcp/26003' },
    ]);
  });

  it('reads a TOML config file under the flags and over the environment', () => {
    const directory = mkdtempSync(join(tmpdir(), 'aspen-config-'));
    directories.push(directory);
    const file = join(directory, 'aspen.toml');
    writeFileSync(
      file,
      'node-id = 7\nport = 27007\ncookie = "from-the-config-file"\npeers = ["2@127.0.0.1:26002"]\nstorage = "memory"\n',
    );
    process.env.ASPEN_PORT = '27000';
    try {
      expect(parseNodeConfig(['--config', file])).toMatchObject({
        nodeId: 7,
        port: 27007,
        cookie: 'from-the-config-file',
        storage: 'memory',
        peers: [{ id: 2, address: '127.0.0.1:26002' }],
      });
      expect(parseNodeConfig(['--config', file, '--port', '27100']).port).toBe(27100);
    } finally {
      delete process.env.ASPEN_PORT;
    }
    writeFileSync(file, 'nodeid_typo = 1\n');
    expect(() => parseNodeConfig(['--config', file])).toThrow(/unknown setting "nodeid_typo"/);
    writeFileSync(file, 'node-id = = 1\n');
    expect(() => parseNodeConfig(['--config', file])).toThrow(/not valid TOML/);
    expect(() => parseNodeConfig(['--config', join(directory, 'missing.toml')])).toThrow(
      /cannot read --config/,
    );
  });

  it('reads the config file with a bound: a device, a FIFO or a large file is refused before it is read', () => {
    const directory = mkdtempSync(join(tmpdir(), 'aspen-config-'));
    directories.push(directory);
    expect(() => parseNodeConfig(['--config', '/dev/zero'])).toThrow(
      new ConfigError('--config /dev/zero is not a regular file'),
    );
    const fifo = join(directory, 'fifo.toml');
    execFileSync('mkfifo', [fifo]);
    expect(() => parseNodeConfig(['--config', fifo])).toThrow(
      new ConfigError(`--config ${fifo} is not a regular file`),
    ); // no writer: it must not block
    expect(() => parseNodeConfig(['--config', directory])).toThrow(
      new ConfigError(`--config ${directory} is not a regular file`),
    );
    const large = join(directory, 'large.toml');
    const comment = '#'.repeat(99) + '\n';
    writeFileSync(large, `node-id = 5\n${comment.repeat(Math.ceil(CONFIG_FILE_BYTES_MAX / comment.length))}`);
    expect(() => parseNodeConfig(['--config', large])).toThrow(
      new ConfigError(`--config ${large} is larger than ${CONFIG_FILE_BYTES_MAX} bytes`),
    );
    const exact = 'node-id = 5\n';
    writeFileSync(large, exact + '#'.repeat(CONFIG_FILE_BYTES_MAX - exact.length - 1) + '\n');
    expect(parseNodeConfig(['--config', large]).nodeId).toBe(5); // exactly the bound is fine
    writeFileSync(large, Buffer.from([0x6e, 0x6f, 0xff, 0x0a]));
    expect(() => parseNodeConfig(['--config', large])).toThrow(/cannot read --config .*large\.toml/);
  });

  it('type-checks each TOML value against its setting, naming the key', () => {
    const directory = mkdtempSync(join(tmpdir(), 'aspen-config-'));
    directories.push(directory);
    const file = join(directory, 'aspen.toml');
    const cases: [string, string][] = [
      ['cookie = true', '"cookie" must be a string, got the boolean true'],
      ['port = "27007"', '"port" must be an integer, got the string "27007"'],
      ['port = 27007.5', '"port" must be an integer, got the number 27007.5'],
      ['node_id = 1.0', '"node_id" must be an integer, got the number 1'],
      ['disable-mdns = "yes"', '"disable-mdns" must be true or false, got the string "yes"'],
      ['insecure = 1', '"insecure" must be true or false, got the integer 1'],
      [
        'peers = "2@127.0.0.1:26002"',
        '"peers" must be an array of strings, got the string "2@127.0.0.1:26002"',
      ],
      ['peers = [2]', '"peers" must be an array of strings, got an array'],
      ['host = { name = "a" }', '"host" must be a string, got a table'],
    ];
    for (const [line, message] of cases) {
      writeFileSync(file, `${line}\n`);
      expect(() => parseNodeConfig(['--node-id', '1', '--config', file]), line).toThrow(
        new ConfigError(`--config ${file}: ${message}`),
      );
    }
    writeFileSync(
      file,
      'node-id = 7\ndisable-mdns = true\ninsecure = true\ncookie = "short"\npeers = ["2@127.0.0.1:26002", "3@127.0.0.1:26003"]\n',
    );
    expect(parseNodeConfig(['--config', file])).toMatchObject({
      nodeId: 7,
      mdns: false,
      insecure: true,
      cookie: 'short',
      peers: [{ id: 2 }, { id: 3 }],
    });
  });

  it(`refuses a cookie shorter than ${COOKIE_CHARS_MIN} characters, with the reason, unless --insecure`, () => {
    const reason = (count: number): ConfigError =>
      new ConfigError(
        `--cookie is too short: ${count} character${count === 1 ? '' : 's'}; the cookie is the cluster's only secret and needs at least ${COOKIE_CHARS_MIN} (or pass --insecure)`,
      );
    expect(() => parseNodeConfig(['--node-id', '1', '--cookie', 'x'])).toThrow(reason(1));
    expect(() => parseNodeConfig(['--node-id', '1', '--cookie', 'x'.repeat(COOKIE_CHARS_MIN - 1)])).toThrow(
      reason(COOKIE_CHARS_MIN - 1),
    );
    expect(parseNodeConfig(['--node-id', '1', '--cookie', 'x'.repeat(COOKIE_CHARS_MIN)]).cookie).toHaveLength(
      COOKIE_CHARS_MIN,
    );
    expect(parseNodeConfig(['--node-id', '1', '--cookie', 'x', '--insecure'])).toMatchObject({
      cookie: 'x',
      insecure: true,
    });
    process.env.ASPEN_INSECURE = 'true';
    try {
      expect(parseNodeConfig(['--node-id', '1', '--cookie', 'x']).insecure).toBe(true);
    } finally {
      delete process.env.ASPEN_INSECURE;
    }
    // The default cookie is public: fine where only this machine can connect, refused elsewhere.
    expect(parseNodeConfig(['--node-id', '1'])).toMatchObject({
      cookie: DEFAULT_COOKIE,
      cookieIsDefault: true,
      insecure: false,
    });
    expect(() => parseNodeConfig(['--node-id', '1', '--host', '0.0.0.0'])).toThrow(
      /^the default cookie is public and cannot protect a node on 0\.0\.0\.0: .* \(or pass --insecure\)$/,
    );
    expect(parseNodeConfig(['--node-id', '1', '--host', '0.0.0.0', '--insecure']).cookieIsDefault).toBe(true);
    // A ticket's cookie is held to the same rule.
    const ticket = encodeTicket({
      topic: clusterTopic('tiny'),
      clusterId: 'tiny',
      bootstrap: ['/ip4/127.0.0.1/tcp/26001'],
    });
    expect(() => parseNodeConfig(['--node-id', '4', '--ticket', ticket])).toThrow(reason(4));
    expect(parseNodeConfig(['--node-id', '4', '--ticket', ticket, '--insecure']).cookie).toBe('tiny');
  });

  it('takes --previous-cookie from a flag, the environment or TOML, held to the rules of --cookie and different from it', () => {
    const current = 'the-new-cluster-cookie';
    const previous = 'the-old-cluster-cookie';
    const base = ['--node-id', '1', '--cookie', current];
    expect(parseNodeConfig(base).previousCookie).toBeNull();
    expect(parseNodeConfig([...base, '--previous-cookie', previous])).toMatchObject({
      cookie: current,
      previousCookie: previous,
    });
    process.env.ASPEN_PREVIOUS_COOKIE = previous;
    try {
      expect(parseNodeConfig(base).previousCookie).toBe(previous);
    } finally {
      delete process.env.ASPEN_PREVIOUS_COOKIE;
    }
    const directory = mkdtempSync(join(tmpdir(), 'aspen-config-'));
    directories.push(directory);
    const file = join(directory, 'aspen.toml');
    writeFileSync(file, `previous-cookie = "${previous}"\n`);
    expect(parseNodeConfig([...base, '--config', file]).previousCookie).toBe(previous);
    const refusals: [string[], string][] = [
      [['--previous-cookie', current], '--previous-cookie must differ from --cookie'],
      [['--previous-cookie', ''], '--previous-cookie must not be empty'],
      [['--previous-cookie', 'short'], '--previous-cookie is too short: 5 characters'],
      [['--host', '10.0.0.1', '--previous-cookie', DEFAULT_COOKIE], 'set --previous-cookie to a secret'],
    ];
    for (const [extra, expected] of refusals) {
      let refusal: unknown = null;
      try {
        parseNodeConfig([...base, ...extra]);
      } catch (error) {
        refusal = error;
      }
      expect(refusal).toBeInstanceOf(ConfigError);
      const message = (refusal as ConfigError).message;
      expect(message).toContain(expected);
      for (const cookie of [current, previous]) expect(message).not.toContain(cookie); // never shown
    }
    expect(parseNodeConfig([...base, '--previous-cookie', 'short', '--insecure']).previousCookie).toBe(
      'short',
    );
    // Rotating away from the default cookie works where that cookie was allowed.
    expect(parseNodeConfig([...base, '--previous-cookie', DEFAULT_COOKIE]).previousCookie).toBe(
      DEFAULT_COOKIE,
    );
    // A ticket brings the cookie: the previous one must differ from the ticket's.
    const ticket = encodeTicket({
      topic: clusterTopic(current),
      clusterId: current,
      bootstrap: ['/ip4/127.0.0.1/tcp/26001'],
    });
    expect(() =>
      parseNodeConfig(['--node-id', '4', '--ticket', ticket, '--previous-cookie', current]),
    ).toThrow('--previous-cookie must differ from --cookie');
  });

  it('refuses bad configuration with one clear line', () => {
    const cases: [string[], RegExp][] = [
      [[], /node-id/],
      [['--node-id', '0'], /--node-id must be an integer/],
      [['--node-id', '1', '--port', '70000'], /--port must be an integer/],
      [['--node-id', '1', '--http-addr', 'localhost'], /--http-addr must be host:port/],
      [['--node-id', '1', '--storage', 'floppy'], /floppy/],
      [['--node-id', '1', '--unknown'], /unknown option/],
      [
        ['--node-id', '1', '--election-timeout-min-ms', '500', '--election-timeout-max-ms', '400'],
        /min-ms must be <=/,
      ],
      [['--node-id', '1', '--heartbeat-interval-ms', '600'], /less than half/],
      [['--node-id', '1', '--peers', 'nobody'], /ID@ADDRESS/],
      [
        ['--node-id', '1', '--http-allowed-hosts', 'evil example'],
        /--http-allowed-hosts: "evil example" is not a host name/,
      ],
    ];
    for (const [argv, message] of cases) {
      expect(() => parseNodeConfig(argv)).toThrow(ConfigError);
      expect(() => parseNodeConfig(argv)).toThrow(message);
    }
  });
});

describe('aspen as a library', () => {
  it('starts an in-memory node from the package entry and serves the API', async () => {
    const aspen = await import('../../src/index.ts');
    const running = await aspen.startNode(
      aspen.parseNodeConfig([
        '--node-id',
        '1',
        '--port',
        '0',
        '--http-addr',
        '127.0.0.1:0',
        '--storage',
        'memory',
        '--cookie',
        'library-test-cookie',
      ]),
      () => undefined,
    );
    try {
      const raftAddress = running.transport.listenAddresses[0]?.split('/p2p/')[0] ?? '';
      expect(
        (
          await post(`${running.httpUrl}/init`, {
            initial_members: [{ id: 1, addr: 'node-1', raft_addr: raftAddress }],
          })
        ).status,
      ).toBe(200);
      await eventually(async () => (await get(`${running.httpUrl}/leader`)).leader === 1, 5_000);
      expect(
        (await post(`${running.httpUrl}/write`, { command: { Set: { key: 'lib', value: 'ok' } } })).status,
      ).toBe(200);
      expect(await get(`${running.httpUrl}/read?key=lib`)).toMatchObject({ value: 'ok' });
      const info = await get(`${running.httpUrl}/node-info`);
      expect(info).toMatchObject({ node_id: 1, endpoint_id: running.transport.peerId });
      expect((info.addrs as string[]).some((address) => address.includes('/quic-v1'))).toBe(true);
      expect(
        (await post(`${running.httpUrl}/add-peer`, { node_id: 9, addr: '127.0.0.1:26009' })).json,
      ).toEqual({ node_id: 9, addr: '127.0.0.1:26009' });
      expect((await post(`${running.httpUrl}/add-peer`, { node_id: 9, addr: 'not an address' })).status).toBe(
        400,
      );
    } finally {
      await running.stop();
    }
  });

  it('stops within the HTTP grace while an add-learner still waits for an unreachable learner', async () => {
    const aspen = await import('../../src/index.ts');
    const running = await aspen.startNode(
      aspen.parseNodeConfig([
        '--node-id',
        '1',
        '--port',
        '0',
        '--http-addr',
        '127.0.0.1:0',
        '--storage',
        'memory',
        '--cookie',
        'library-test-cookie',
        '--disable-mdns',
      ]),
      () => undefined,
    );
    const raftAddress = running.transport.listenAddresses[0]?.split('/p2p/')[0] ?? '';
    expect(
      (
        await post(`${running.httpUrl}/init`, {
          initial_members: [{ id: 1, addr: 'node-1', raft_addr: raftAddress }],
        })
      ).status,
    ).toBe(200);
    await eventually(async () => (await get(`${running.httpUrl}/leader`)).leader === 1, 5_000);
    // Waits up to 30 s for a learner that does not exist.
    const waiting = fetch(`${running.httpUrl}/add-learner`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ learner: { id: 7, raft_addr: '127.0.0.1:9' } }),
    }).then(
      (response) => response.status,
      () => 'connection closed',
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    await running.stop();
    expect(Date.now() - started).toBeLessThan(HTTP_STOP_GRACE_MS + 5_000); // far below the learner's 30 s
    expect(['connection closed', 503]).toContain(await waiting);
  });
});

/** A ClusterState's nodes without the peer ids recorded for them (each must have one). */
function withoutPeerIds(nodes: unknown): unknown[] {
  return (nodes as { id: number; addr: string; raft_addr: string; peer_id?: string }[]).map((node) => {
    expect(node.peer_id).toMatch(/^12D3KooW/);
    return { id: node.id, addr: node.addr, raft_addr: node.raft_addr };
  });
}

describe('aspen-node: three nodes over libp2p with the HTTP API', () => {
  it("runs the seed's walkthrough, then survives a full restart from LMDB with addresses replicated", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'aspen-nodes-'));
    directories.push(dataDir);
    // Three free ports in a row, below the ephemeral range (a random pick in it collided with a dial).
    const basePort = await freePortRun(3);
    const ports = [basePort + 1, basePort + 2, basePort + 3];
    const log = (): void => undefined;
    let nodes: RunningNode[] = [];
    for (const [index, port] of ports.entries())
      nodes.push(await startNode(configFor(index + 1, port, dataDir), log));
    const http = (id: number): string => nodes[id - 1]?.httpUrl ?? '';
    const member = (id: number) => ({ id, addr: `node-${id}`, raft_addr: `127.0.0.1:${ports[id - 1] ?? 0}` });
    expect((await post(`${http(1)}/init`, { initial_members: [member(1)] })).status).toBe(200);
    await eventually(async () => (await get(`${http(1)}/leader`)).leader === 1, 5_000);
    expect((await post(`${http(1)}/add-learner`, { learner: member(2) })).status).toBe(200);
    expect((await post(`${http(1)}/add-learner`, { learner: member(3) })).status).toBe(200);
    const changed = await post(`${http(1)}/change-membership`, { members: [1, 2, 3] });
    expect(changed.json).toMatchObject({ members: [1, 2, 3], nodes: [member(1), member(2), member(3)] });
    const written = await post(`${http(1)}/write`, {
      command: { Set: { key: 'greeting', value: 'hello world' } },
    });
    expect(written.status).toBe(200);
    // Every node knows every address: they are replicated with the configuration.
    await eventually(
      async () =>
        JSON.stringify(withoutPeerIds((await get(`${http(3)}/state`)).nodes)) ===
        JSON.stringify([member(1), member(2), member(3)]),
      5_000,
    );
    // raft_addr host:port is dialed over QUIC first.
    expect(
      nodes[0]?.transport
        .connections()
        .some((connection) => connection.remoteAddr.toString().includes('/quic-v1')),
    ).toBe(true);
    // Any node serves clients: followers forward writes and linearizable reads to the leader.
    const viaFollower = await post(`${http(2)}/write`, {
      command: { Set: { key: 'greeting', value: 'hello from 2' } },
    });
    expect(viaFollower.status).toBe(200);
    expect(await get(`${http(3)}/read?key=greeting`)).toMatchObject({
      key: 'greeting',
      value: 'hello from 2',
    });
    expect((await post(`${http(3)}/delete`, { key: 'nothing-here' })).json).toEqual({
      key: 'nothing-here',
      deleted: false,
      revision: expect.any(Number) as number,
    });
    expect((await post(`${http(3)}/scan`, { prefix: 'greet' })).json).toEqual({
      entries: [{ key: 'greeting', value: 'hello from 2' }],
      count: 1,
      is_truncated: false,
      continuation_token: null,
      revision: expect.any(Number) as number,
    });
    const missing = await fetch(`${http(2)}/read?key=nope`);
    expect(missing.status).toBe(404);
    for (const running of nodes) await running.stop();
    nodes = [];
    for (const [index, port] of ports.entries())
      nodes.push(await startNode(configFor(index + 1, port, dataDir), log));
    await eventually(async () => {
      const leader = (await get(`${http(2)}/leader`)).leader;
      return typeof leader === 'number';
    }, 10_000);
    const leader = (await get(`${http(2)}/leader`)).leader as number;
    expect(await get(`${http(leader)}/read?key=greeting`)).toMatchObject({ value: 'hello from 2' });
    for (const running of nodes) await running.stop();
  }, 60_000);
});
