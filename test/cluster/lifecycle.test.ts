import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startNode } from '../../src/cluster/bootstrap.ts';
import { endpointError } from '../../src/cluster/ports.ts';
import { START_STEPS, type StartStep } from '../../src/cluster/lifecycle.ts';
import { StartError } from '../../src/cluster/errors.ts';
import { parseNodeConfig, type NodeConfig } from '../../src/cluster/config.ts';
import { runToExit } from './node-runner.ts';
import { freePort, ProcessCluster } from './process-harness.ts';

const COOKIE = 'lifecycle-test-cookie';
const directories: string[] = [];
const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-lifecycle-'));
  directories.push(directory);
  return directory;
}

function configArgs(directory: string, raftPort: number, httpPort: number): string[] {
  return [
    '--node-id',
    '1',
    '--port',
    String(raftPort),
    '--http-addr',
    `127.0.0.1:${httpPort}`,
    '--cookie',
    COOKIE,
    '--data-dir',
    directory,
    '--disable-mdns',
    '--disable-gossip',
  ];
}

function configFor(directory: string, raftPort: number, httpPort: number): NodeConfig {
  return parseNodeConfig(configArgs(directory, raftPort, httpPort));
}

/** Whether `port` can be bound on loopback right now (TCP or UDP). */
function bindable(port: number, protocol: 'TCP' | 'UDP'): Promise<boolean> {
  return new Promise((resolve) => {
    if (protocol === 'TCP') {
      const server = net.createServer();
      server.once('error', () => {
        resolve(false);
      });
      server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
        server.close(() => {
          resolve(true);
        });
      });
      return;
    }
    const socket = dgram.createSocket('udp4');
    socket.once('error', () => {
      resolve(false);
    });
    socket.bind({ address: '127.0.0.1', port, exclusive: true }, () => {
      socket.close(() => {
        resolve(true);
      });
    });
  });
}

/** A start on `directory` works now (its lock was let go) and finds the last stop clean. */
async function startsCleanly(directory: string): Promise<void> {
  const lines: string[] = [];
  const running = await startNode(configFor(directory, await freePort(), await freePort()), (line) => {
    lines.push(line);
  });
  await running.stop();
  expect(lines.filter((line) => line.includes('not clean'))).toEqual([]);
}

describe('aspen-node start and stop', () => {
  it("starts in the seed's order and a graceful stop stops every component in reverse", async () => {
    const directory = dataDir();
    const steps: StartStep[] = [];
    const stopped: StartStep[] = [];
    const running = await startNode(
      configFor(directory, await freePort(), await freePort()),
      () => undefined,
      {
        beforeStep: (step) => {
          steps.push(step);
        },
        onStopped: (step) => {
          stopped.push(step);
        },
      },
    );
    expect(steps).toEqual([...START_STEPS]);
    await running.stop();
    expect(stopped).toEqual([...START_STEPS].reverse());
    await startsCleanly(directory);
  });

  for (const [position, failing] of START_STEPS.entries()) {
    it(`a failure at step ${failing} stops exactly the steps before it, in reverse: no port stays bound, the store is closed cleanly`, async () => {
      const directory = dataDir();
      const raftPort = await freePort();
      const httpPort = await freePort();
      const injected = new StartError(`injected failure at ${failing}`);
      const stopped: StartStep[] = [];
      const start = startNode(configFor(directory, raftPort, httpPort), () => undefined, {
        beforeStep: (step) => {
          if (step === failing) throw injected;
        },
        onStopped: (step) => {
          stopped.push(step);
        },
      });
      await expect(start).rejects.toBe(injected);
      expect(stopped).toEqual(START_STEPS.slice(0, position).reverse());
      expect([
        await bindable(raftPort, 'TCP'),
        await bindable(raftPort, 'UDP'),
        await bindable(httpPort, 'TCP'),
      ]).toEqual([true, true, true]);
      await startsCleanly(directory);
    });
  }

  it('aspen-node failing at each start step exits 1 with one line; no port stays bound and the data dir opens cleanly again', async () => {
    for (const step of START_STEPS) {
      const directory = dataDir();
      const raftPort = await freePort();
      const httpPort = await freePort();
      const args = configArgs(directory, raftPort, httpPort);
      const result = await runToExit(args, undefined, { ASPEN_TEST_FAIL_START_STEP: step });
      expect({ step, result }).toEqual({
        step,
        result: {
          code: 1,
          lines: [`aspen-node: cannot start node 1: start step ${step} failed (ASPEN_TEST_FAIL_START_STEP)`],
        },
      });
      expect({
        step,
        free: [
          await bindable(raftPort, 'TCP'),
          await bindable(raftPort, 'UDP'),
          await bindable(httpPort, 'TCP'),
        ],
      }).toEqual({ step, free: [true, true, true] });
      await startsCleanly(directory); // the lock was let go and LMDB closed: a new node opens it
    }
  }, 120_000);

  it('a Raft port in use (TCP or UDP) or an HTTP port in use is one line naming the port; the store is closed cleanly', async () => {
    const directory = dataDir();
    const raftPort = await freePort();
    const httpPort = await freePort();
    const tcp = net.createServer();
    await new Promise<void>((resolve) => {
      tcp.listen(raftPort, '127.0.0.1', resolve);
    });
    await expect(startNode(configFor(directory, raftPort, httpPort), () => undefined)).rejects.toThrow(
      new StartError(`port ${raftPort} is already in use (raft, TCP)`),
    );
    await new Promise((resolve) => {
      tcp.close(resolve);
    });
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => {
      udp.bind(raftPort, '127.0.0.1', resolve);
    });
    await expect(startNode(configFor(directory, raftPort, httpPort), () => undefined)).rejects.toThrow(
      new StartError(`port ${raftPort} is already in use (raft, UDP)`),
    );
    await new Promise((resolve) => {
      udp.close(() => {
        resolve(null);
      });
    });
    const http = net.createServer();
    await new Promise<void>((resolve) => {
      http.listen(httpPort, '127.0.0.1', resolve);
    });
    await expect(startNode(configFor(directory, raftPort, httpPort), () => undefined)).rejects.toThrow(
      new StartError(`port ${httpPort} is already in use (http, TCP)`),
    );
    await new Promise((resolve) => {
      http.close(resolve);
    });
    expect([await bindable(raftPort, 'TCP'), await bindable(raftPort, 'UDP')]).toEqual([true, true]); // the endpoint was stopped
    await startsCleanly(directory);
  });

  it('a listen failure that reaches libp2p becomes one line, the port named when it is in use', () => {
    const config = configFor('/nowhere', 26001, 8001);
    const message =
      'Some configured addresses failed to be listened on, you may need to remove one or more listen addresses from your configuration or set `transportManager.faultTolerance` to NO_FATAL:\n\n' +
      '  /ip4/127.0.0.1/udp/26001/quic-v1: Error: Address already in use (os error 98)\n      at QuicListener.listen (file:///x/listener.js:72:26)\n';
    expect(endpointError(new Error(message), config).message).toBe(
      'port 26001 is already in use (raft, UDP)',
    );
    const other = message.replace(
      'Address already in use (os error 98)',
      'Cannot assign requested address (os error 99)',
    );
    expect(endpointError(new Error(other), config).message).toBe(
      'cannot start the raft endpoint on 127.0.0.1:26001: /ip4/127.0.0.1/udp/26001/quic-v1: Error: Cannot assign requested address (os error 99)',
    );
  });

  it('aspen-node with its Raft port in use exits 1 with one line; the next start does not claim an unclean stop', async () => {
    const directory = cluster.tempDir();
    const raftPort = await freePort();
    const taken = net.createServer();
    await new Promise<void>((resolve) => {
      taken.listen(raftPort, '127.0.0.1', resolve);
    });
    try {
      const refused = await runToExit([
        '--node-id',
        '1',
        '--port',
        String(raftPort),
        '--http-addr',
        `127.0.0.1:${await freePort()}`,
        '--cookie',
        cluster.cookie,
        '--data-dir',
        directory,
        '--disable-mdns',
        '--disable-gossip',
      ]);
      expect(refused).toEqual({
        code: 1,
        lines: [`aspen-node: cannot start node 1: port ${raftPort} is already in use (raft, TCP)`],
      });
    } finally {
      await new Promise((resolve) => {
        taken.close(resolve);
      });
    }
    const node = await cluster.start(1, { dataDir: directory });
    expect(node.log.filter((line) => line.includes('not clean'))).toEqual([]);
  }, 60_000);
});
