import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';
import type { ClusterState } from '../../src/api/types.ts';
import {
  HTTP_CONNECTIONS_MAX,
  HTTP_CONNECTIONS_PER_ADDRESS_MAX,
  HTTP_IDLE_TIMEOUT_MS,
} from '../../src/http/connections.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { unusedController, unusedStore } from '../support/unused-services.ts';

const stops: (() => Promise<unknown>)[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const stop of stops.splice(0)) await stop();
});

/** Bound on waiting for a socket event in these tests. */
const WAIT_MS_MAX = 5_000;
/** How long GET /state takes here: longer than the idle timeout under test. */
const SLOW_ANSWER_MS = 600;
const LIMITS = { connectionsMax: 4, perAddressMax: 2, idleTimeoutMs: 200 };

const state: ClusterState = { nodes: [], members: [], learners: [], leader: null };
const controller: ClusterController = {
  ...unusedController,
  currentState: () =>
    new Promise((resolve) => {
      setTimeout(() => {
        resolve(state);
      }, SLOW_ANSWER_MS);
    }),
};
const store: KeyValueStore = unusedStore;

async function listening(limits = LIMITS): Promise<number> {
  const app = buildHttpServer({
    controller,
    store,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    connectionLimits: limits,
  });
  stops.push(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return address.port;
}

function open(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress }, () => {
      resolve(socket);
    });
    socket.once('error', reject);
    sockets.push(socket);
  });
}

/** The first bytes the server sends back on `socket`, or null when it closes or WAIT_MS_MAX passes first. */
function firstAnswer(socket: Socket): Promise<string | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      resolve(null);
    }, WAIT_MS_MAX);
    socket.once('data', (data: Buffer) => {
      clearTimeout(timer);
      resolve(data.toString('utf8'));
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
}

/** Resolves with how long the socket stayed open, or null if it is still open after WAIT_MS_MAX. */
function closedWithin(socket: Socket, waitMs = WAIT_MS_MAX): Promise<number | null> {
  const start = Date.now();
  return new Promise((resolve) => {
    if (socket.destroyed || socket.readyState === 'closed') {
      resolve(0);
      return;
    }
    const timer = setTimeout(() => {
      resolve(null);
    }, waitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
  });
}

describe('HTTP connection hygiene', () => {
  it('has sane defaults', () => {
    expect(HTTP_CONNECTIONS_PER_ADDRESS_MAX).toBeLessThanOrEqual(HTTP_CONNECTIONS_MAX);
    expect(HTTP_IDLE_TIMEOUT_MS).toBeGreaterThan(0);
  });

  it('closes a connection that never sends a request, and an idle keep-alive one', async () => {
    const port = await listening();
    const silent = await open(port);
    expect(await closedWithin(silent)).not.toBeNull();
    const keepAlive = await open(port);
    const answered = firstAnswer(keepAlive);
    keepAlive.write('GET /node-info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await answered).toMatch(/^HTTP\/1\.1 200/);
    expect(await closedWithin(keepAlive)).not.toBeNull();
  });

  it('never cuts a request that is waiting for its answer', async () => {
    const port = await listening();
    const response = await fetch(`http://127.0.0.1:${port}/state`, {
      signal: AbortSignal.timeout(WAIT_MS_MAX),
    });
    expect(response.status).toBe(200); // answered after 600 ms, three idle timeouts
    expect(await response.json()).toEqual(state);
  });

  it('caps connections per remote address and in total', async () => {
    const port = await listening({ ...LIMITS, idleTimeoutMs: 60_000 }); // no idle closing during this test
    const first = [await open(port), await open(port)];
    const third = await open(port);
    expect(await closedWithin(third, 1_000)).not.toBeNull(); // a third from 127.0.0.1
    for (const socket of first) expect(socket.destroyed).toBe(false);
    const others = [await open(port, '127.0.0.2'), await open(port, '127.0.0.3')];
    for (const socket of others) expect(socket.destroyed).toBe(false);
    const fifth = await open(port, '127.0.0.4');
    expect(await closedWithin(fifth, 1_000)).not.toBeNull(); // four open in total
    first[0]?.destroy();
    // A freed slot serves again (once the server has seen the close: retried a bounded number of times).
    let answer: string | null = null;
    for (let attempt = 0; attempt < 20 && answer === null; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const replacement = await open(port, '127.0.0.4');
      const answered = firstAnswer(replacement);
      replacement.write('GET /node-info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      answer = await answered;
    }
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
  });
});
