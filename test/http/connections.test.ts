import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';
import type { ClusterState } from '../../src/api/types.ts';
import {
  HTTP_CONNECTIONS_MAX,
  HTTP_CONNECTIONS_PER_ADDRESS_MAX,
  HTTP_IDLE_TIMEOUT_MS,
} from '../../src/http/connections.ts';
import { buildHttpServer, type HttpTls } from '../../src/http/server.ts';
import { makeTestCertificates } from '../support/tls.ts';
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

/** The server certificate and its CA, for the same tests over TLS (where requests ride a TLSSocket). */
let tls: HttpTls;
let ca: string;
let certificateDir: string;
beforeAll(() => {
  certificateDir = mkdtempSync(join(tmpdir(), 'aspen-conn-tls-'));
  const certs = makeTestCertificates(certificateDir);
  tls = { cert: certs.pem(certs.serverCert), key: certs.pem(certs.serverKey) };
  ca = certs.pem(certs.caCert);
});
afterAll(() => {
  rmSync(certificateDir, { recursive: true, force: true });
});

type Scheme = 'http' | 'https';

async function listening(scheme: Scheme, limits = LIMITS): Promise<number> {
  const app = buildHttpServer({
    controller,
    store,
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    connectionLimits: limits,
    ...(scheme === 'https' ? { tls } : {}),
  });
  stops.push(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return address.port;
}

/**
 * A TCP connection (with https, a TLS client on it: what is written waits for the handshake). It
 * resolves once TCP connected, so a connection the server refuses still opens, then closes.
 */
function open(scheme: Scheme, port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const tcp = connect({ port, host: '127.0.0.1', localAddress });
    const socket = scheme === 'http' ? tcp : connectTls({ socket: tcp, ca });
    tcp.once('connect', () => {
      socket.on('error', () => undefined); // a refused connection is reset: seen as its close
      resolve(socket);
    });
    socket.once('error', reject);
    sockets.push(socket);
  });
}

const GET_NODE_INFO = 'GET /node-info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

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
});

describe.each<Scheme>(['http', 'https'])('HTTP connection hygiene over %s', (scheme) => {
  it('closes a connection that never sends a request, and an idle keep-alive one', async () => {
    const port = await listening(scheme);
    const silent = await open(scheme, port);
    expect(await closedWithin(silent)).not.toBeNull();
    const keepAlive = await open(scheme, port);
    const answered = firstAnswer(keepAlive);
    keepAlive.write(GET_NODE_INFO);
    expect(await answered).toMatch(/^HTTP\/1\.1 200/);
    expect(await closedWithin(keepAlive)).not.toBeNull();
    // Over TLS a client that never even starts the handshake is closed too.
    const mute = await open('http', port);
    expect(await closedWithin(mute)).not.toBeNull();
  });

  it('never cuts a request that is waiting for its answer', async () => {
    const port = await listening(scheme);
    const socket = await open(scheme, port);
    const answered = firstAnswer(socket);
    socket.write('GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const answer = await answered; // answered after 600 ms, three idle timeouts
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(JSON.parse(answer?.split('\r\n\r\n')[1] ?? '')).toMatchObject(state);
  });

  it('caps connections per remote address and in total', async () => {
    const port = await listening(scheme, { ...LIMITS, idleTimeoutMs: 60_000 }); // no idle closing during this test
    const first = [await open(scheme, port), await open(scheme, port)];
    const third = await open(scheme, port);
    expect(await closedWithin(third, 1_000)).not.toBeNull(); // a third from 127.0.0.1
    for (const socket of first) expect(socket.destroyed).toBe(false);
    const others = [await open(scheme, port, '127.0.0.2'), await open(scheme, port, '127.0.0.3')];
    for (const socket of others) expect(socket.destroyed).toBe(false);
    const fifth = await open(scheme, port, '127.0.0.4');
    expect(await closedWithin(fifth, 1_000)).not.toBeNull(); // four open in total
    first[0]?.destroy();
    // A freed slot serves again (once the server has seen the close: retried a bounded number of times).
    let answer: string | null = null;
    for (let attempt = 0; attempt < 20 && answer === null; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const replacement = await open(scheme, port, '127.0.0.4');
      const answered = firstAnswer(replacement);
      replacement.write(GET_NODE_INFO);
      answer = await answered;
    }
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
  });
});
