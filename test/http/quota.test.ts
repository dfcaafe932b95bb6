import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { QUOTA_BACKEND_BYTES_MIN } from '../../src/base/limits.ts';
import { startNode } from '../../src/cluster/bootstrap.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import { isKvError, KvClient } from '../../src/client/index.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

async function post(url: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

/** Until the node leads (bounded: 250 polls of 20 ms). */
async function untilLeader(url: string): Promise<void> {
  for (let attempt = 0; attempt < 250; attempt += 1) {
    const answer = (await (await fetch(`${url}/leader`)).json()) as { leader?: unknown };
    if (answer.leader === 1) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('node 1 did not lead within 5 s');
}

/** 100 keys of 2,000 characters: about 200 KB a batch, so 1 MiB is reached within a few. */
const VALUE = 'v'.repeat(2_000);
const BATCHES_MAX = 20;
const batch = (index: number): [string, string][] =>
  Array.from({ length: 100 }, (_, key): [string, string] => [`b${index}/${key}`, VALUE]);

describe('--quota-backend-bytes through aspen-node and the HTTP API', () => {
  it('answers 507 QUOTA_EXCEEDED with the error body once the state is at the quota; /delete still answers 200', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'aspen-quota-http-'));
    directories.push(dataDir);
    const running = await startNode(
      parseNodeConfig([
        ...`--node-id 1 --port 0 --http-addr 127.0.0.1:0 --cookie quota-test-cluster-cookie`.split(' '),
        ...['--disable-gossip', '--disable-mdns', '--data-dir', dataDir],
        ...['--quota-backend-bytes', String(QUOTA_BACKEND_BYTES_MIN)],
      ]),
      () => undefined,
    );
    const kv = new KvClient({ endpoints: [running.httpUrl], timeoutMs: 5_000 });
    try {
      const url = running.httpUrl;
      const raftAddress = running.transport.listenAddresses[0]?.split('/p2p/')[0] ?? '';
      const members = [{ id: 1, addr: 'node-1', raft_addr: raftAddress }];
      expect((await post(`${url}/init`, { initial_members: members })).status).toBe(200);
      await untilLeader(url);
      let written = 0;
      let refused: { status: number; json: unknown } | null = null;
      for (; written < BATCHES_MAX && refused === null; written += 1) {
        const answer = await post(`${url}/write`, { command: { SetMulti: { pairs: batch(written) } } });
        if (answer.status !== 200) refused = answer;
      }
      expect(written).toBeGreaterThan(2);
      expect(refused).toEqual({
        status: 507,
        json: {
          error: {
            code: 'QUOTA_EXCEEDED',
            message: expect.stringMatching(
              new RegExp(
                `^the state machine holds \\d+ bytes, at its quota of ${QUOTA_BACKEND_BYTES_MIN} \\(--quota-backend-bytes\\): delete keys, or raise the quota$`,
              ),
            ) as string,
            definite: true,
          },
        },
      });
      // The client library: a KvError with the code, the status and `definite`.
      const error: unknown = await kv
        .write({ Set: { key: 'one-more', value: 'x' } })
        .catch((e: unknown) => e);
      if (!isKvError(error)) throw new Error(`expected a KvError, got ${String(error)}`);
      expect({ code: error.code, status: error.status, definite: error.definite }).toEqual({
        code: 'QUOTA_EXCEEDED',
        status: 507,
        definite: true,
      });
      expect(await post(`${url}/delete`, { key: 'b0/0' })).toMatchObject({
        status: 200,
        json: { key: 'b0/0', deleted: true },
      });
      expect((await fetch(`${url}/read?key=one-more`)).status).toBe(404);
    } finally {
      kv.close();
      await running.stop();
    }
  });
});
