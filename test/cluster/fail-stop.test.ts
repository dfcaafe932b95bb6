import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startNode } from '../../src/cluster/bootstrap.ts';
import { type StartStep } from '../../src/cluster/lifecycle.ts';
import { parseNodeConfig, type NodeConfig } from '../../src/cluster/config.ts';
import type { LogStore, PersistBatch } from '../../src/node/interfaces.ts';
import { StorageError } from '../../src/storage/errors.ts';
import { freePort } from './process-harness.ts';

/** Writes in flight at once while the disk "fills up". */
const WRITERS = 16;
/** Batches persisted before the injected ENOSPC. */
const PERSISTS_BEFORE_FAILURE = 40;

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function configFor(directory: string, raftPort: number, httpPort: number): NodeConfig {
  return parseNodeConfig([
    '--node-id',
    '1',
    '--port',
    String(raftPort),
    '--http-addr',
    `127.0.0.1:${httpPort}`,
    '--cookie',
    'fail-stop-test-cookie',
    '--data-dir',
    directory,
    '--disable-mdns',
    '--disable-gossip',
    '--heartbeat-interval-ms',
    '20',
    '--election-timeout-min-ms',
    '150',
    '--election-timeout-max-ms',
    '300',
  ]);
}

/** The LMDB log store until `remaining` persists are used up; then every persist fails with ENOSPC, as on a full disk. */
class FillingLogStore implements LogStore {
  private readonly inner: LogStore;
  private remaining = PERSISTS_BEFORE_FAILURE;
  failedFrom: number | null = null;

  constructor(inner: LogStore) {
    this.inner = inner;
  }

  persist(batch: PersistBatch, done: (error: Error | null) => void): void {
    if (this.remaining > 0) {
      this.remaining -= 1;
      this.inner.persist(batch, done);
      return;
    }
    this.failedFrom ??= batch.entries[0]?.index ?? Number.MAX_SAFE_INTEGER;
    setImmediate(() => {
      done(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    });
  }
}

async function post(
  url: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> } | null> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return { status: response.status, json: (await response.json()) as Record<string, unknown> };
  } catch {
    return null; // the node closed its HTTP port
  }
}

function portsFree(raftPort: number, httpPort: number): Promise<boolean[]> {
  const tcp = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => {
        resolve(false);
      });
      server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
        server.close(() => {
          resolve(true);
        });
      });
    });
  const udp = (port: number) =>
    new Promise<boolean>((resolve) => {
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
  return Promise.all([tcp(raftPort), udp(raftPort), tcp(httpPort)]);
}

describe('a storage failure while running', () => {
  it('fail-stops the node: one report, nothing acknowledged after it, ports closed, the store left for a rebuild', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'aspen-fail-stop-'));
    directories.push(directory);
    const raftPort = await freePort();
    const httpPort = await freePort();
    let filling: FillingLogStore | null = null;
    const stopped: StartStep[] = [];
    let reported: (error: StorageError) => void = () => undefined;
    const fatal = new Promise<StorageError>((resolve) => {
      reported = resolve;
    });
    const running = await startNode(configFor(directory, raftPort, httpPort), () => undefined, {
      wrapStores: (stores) => {
        filling = new FillingLogStore(stores.logStore);
        return { ...stores, logStore: filling };
      },
      onStopped: (step) => {
        stopped.push(step);
      },
      onFatal: (error) => {
        reported(error);
      },
    });
    const url = running.httpUrl;
    expect(
      (
        await post(`${url}/init`, {
          initial_members: [{ id: 1, addr: 'node-1', raft_addr: `127.0.0.1:${raftPort}` }],
        })
      )?.status,
    ).toBe(200);
    const acknowledged = new Map<string, number>();
    const refused: number[] = [];
    let next = 0;
    let failed = false;
    void fatal.then(() => {
      failed = true;
    });
    const writer = async (): Promise<void> => {
      while (!failed) {
        const key = `k${next}`;
        next += 1;
        const result = await post(`${url}/write`, { command: { Set: { key, value: key } } });
        if (result?.status === 200) acknowledged.set(key, Number(result.json.log_index));
        else if (result !== null) refused.push(result.status);
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, writer));
    const error = await fatal;
    expect(error).toBeInstanceOf(StorageError);
    expect(error.message).toBe('storage failed: ENOSPC: no space left on device, write');
    expect(acknowledged.size).toBeGreaterThan(0);
    const failedFrom = (filling as FillingLogStore | null)?.failedFrom ?? 0;
    for (const [key, index] of acknowledged)
      expect({ key, index: index < failedFrom }).toEqual({ key, index: true });
    expect(refused.every((status) => status === 503)).toBe(true); // in flight at the failure: SHUTTING_DOWN, indeterminate
    expect(stopped).toEqual(['http', 'rpc', 'raft', 'discovery', 'endpoint', 'storage']);
    expect(await portsFree(raftPort, httpPort)).toEqual([true, true, true]);
    await expect(running.stop()).rejects.toBe(error);

    // The lock is free and the state machine was not marked clean: the next start rebuilds it and
    // every acknowledged write is there.
    const lines: string[] = [];
    const again = await startNode(configFor(directory, raftPort, httpPort), (line) => {
      lines.push(line);
    });
    try {
      expect(lines.some((line) => line.includes('the last stop was not clean; rebuilding'))).toBe(true);
      for (let attempt = 0; attempt < 200 && again.node.status().role !== 'leader'; attempt += 1)
        await new Promise((resolve) => setTimeout(resolve, 20));
      const keys = [...acknowledged.keys()];
      const values: (string | undefined)[] = [];
      // A bounded number of reads in flight: each HTTP/1.1 request holds a connection.
      for (let start = 0; start < keys.length; start += WRITERS) {
        const chunk = keys.slice(start, start + WRITERS);
        values.push(
          ...(await Promise.all(
            chunk.map(
              async (key) =>
                ((await (await fetch(`${again.httpUrl}/read?key=${key}`)).json()) as { value?: string })
                  .value,
            ),
          )),
        );
      }
      expect(values).toEqual(keys);
    } finally {
      await again.stop();
    }
  }, 60_000);
});
