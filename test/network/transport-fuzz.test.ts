import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import type { Connection, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WireMessage } from '../../src/node/interfaces.ts';
import { AUTH_PROTOCOL, authenticateAsDialer, deriveAuthKey, NONCE_BYTES } from '../../src/network/auth.ts';
import { encodeWireMessage } from '../../src/network/codec.ts';
import { encodeFrame, FRAME_BYTES_MAX } from '../../src/network/frame.ts';
import { RAFT_PROTOCOL, type Libp2pTransport } from '../../src/network/libp2p-transport.ts';
import { aspenNode, eventually, rawClient, tcpAddressOf } from './intruders.ts';
import { samples } from './samples.ts';

const COOKIE = 'test-cluster';
/** Runs per property: a few seconds in all on loopback. */
const RAFT_RUNS_AUTHENTICATED = 60;
const RAFT_RUNS_UNAUTHENTICATED = 30;
const AUTH_RUNS = 24;
/** Auth fuzzing needs a fresh connection per run: spread them over addresses, under 5 per second each. */
const AUTH_CLIENT_ADDRESSES = Array.from({ length: 8 }, (_, index) => `127.0.1.${index + 1}`);
/** Each step settles in milliseconds; this bounds a loaded machine. */
const STEP_MS = 5_000;
const WRITES_PER_RUN_MAX = 3;

const cleanups: (() => Promise<void> | void)[] = [];
let target: { transport: Libp2pTransport; received: WireMessage[]; logs: string[] };
let goodRound = 0;

beforeAll(async () => {
  target = await aspenNode(cleanups, { nodeId: 2, cookie: COOKIE });
});
afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A valid frame of a sample message, with bytes overwritten, cut short, or a header that lies. */
const mutatedFrame = fc
  .record({
    message: fc.constantFrom(...samples),
    edits: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
    cut: fc.option(fc.nat(), { nil: null }),
    header: fc.option(
      fc.oneof(fc.integer({ min: FRAME_BYTES_MAX + 1, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 64 })),
      { nil: null },
    ),
  })
  .map(({ message, edits, cut, header }) => {
    const frame = encodeFrame(encodeWireMessage({ ...message, to: 2 }));
    for (const edit of edits) frame[edit.at % frame.length] = edit.value;
    if (header !== null) new DataView(frame.buffer).setUint32(0, header, false);
    return cut === null ? frame : frame.subarray(0, Math.max(1, cut % frame.length));
  });
/** What a fuzzed peer writes on a stream: random bytes or mutated frames, in 1..3 writes. */
const fuzzWrites = fc.array(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 512 }), mutatedFrame), {
  minLength: 1,
  maxLength: WRITES_PER_RUN_MAX,
});

function closedOrReset(stream: Stream): boolean {
  return stream.status !== 'open';
}

function trySend(stream: Stream, bytes: Uint8Array): void {
  try {
    stream.send(bytes);
  } catch {
    // Reset by the listener already: a refusal, which is what these peers should get.
  }
}

/** A cookie-less peer's client connection that has proved the cookie the way a dialing node does. */
async function authenticatedConnection(): Promise<Connection> {
  const client = await rawClient(cleanups);
  const connection = await client.dial(multiaddr(tcpAddressOf(target.transport)));
  const stream = await connection.newStream(AUTH_PROTOCOL);
  await authenticateAsDialer(
    stream,
    deriveAuthKey(COOKIE),
    client.peerId.toString(),
    connection.remotePeer.toString(),
  );
  await stream.close();
  return connection;
}

/** A good heartbeat on `stream` gets delivered (the transport still works after whatever came before). */
async function stillDelivers(stream: Stream): Promise<void> {
  goodRound += 1;
  const round = goodRound;
  stream.send(
    encodeFrame(
      encodeWireMessage({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: round }),
    ),
  );
  await eventually(
    () => target.received.some((message) => message.type === 'heartbeat' && message.readRound === round),
    STEP_MS,
    'a good frame after fuzz',
  );
}

describe('random and mutated bytes at the transport (fast-check, bounded)', () => {
  it('before authentication: every Raft stream is refused unread, whatever it carries', async () => {
    const client = await rawClient(cleanups);
    let connection = await client.dial(multiaddr(tcpAddressOf(target.transport)));
    await fc.assert(
      fc.asyncProperty(fuzzWrites, async (writes) => {
        if (connection.status !== 'open')
          connection = await client.dial(multiaddr(tcpAddressOf(target.transport))); // past the deadline
        const refusedBefore = target.transport.admission.streamsRefused;
        const receivedBefore = target.received.length;
        const stream = await connection.newStream(RAFT_PROTOCOL);
        for (const bytes of writes) trySend(stream, bytes);
        await eventually(() => closedOrReset(stream), STEP_MS, 'the stream is reset');
        await eventually(
          () => target.transport.admission.streamsRefused === refusedBefore + 1,
          STEP_MS,
          'the refusal is counted',
        );
        expect(target.received.length).toBe(receivedBefore);
      }),
      { numRuns: RAFT_RUNS_UNAUTHENTICATED, endOnFailure: true },
    );
    expect(target.received).toEqual([]);
    expect(target.transport.isConnected(client.peerId.toString())).toBe(false);
  });

  it('after authentication: every bad frame is counted and refused, and good frames keep flowing', async () => {
    const connection = await authenticatedConnection();
    const good = await connection.newStream(RAFT_PROTOCOL);
    await stillDelivers(good);
    await fc.assert(
      fc.asyncProperty(fuzzWrites, async (writes) => {
        const rejectedBefore = target.transport.framesRejected;
        const receivedBefore = target.received.length;
        const stream = await connection.newStream(RAFT_PROTOCOL);
        for (const bytes of writes) trySend(stream, bytes);
        await stream.close().catch(() => undefined);
        await eventually(() => closedOrReset(stream), STEP_MS, 'the listener has read the stream to its end');
        // Every byte sequence ends up as frames delivered or refused, a cut-off frame included.
        expect(
          target.transport.framesRejected - rejectedBefore + target.received.length - receivedBefore,
        ).toBeGreaterThanOrEqual(1);
        expect(target.received.slice(receivedBefore).every((message) => message.to === 2)).toBe(true);
        await stillDelivers(good);
      }),
      { numRuns: RAFT_RUNS_AUTHENTICATED, endOnFailure: true },
    );
    expect(target.transport.framesRejected).toBeGreaterThan(0);
  });

  it('on the auth stream: garbage and near-misses never authenticate, each costs its connection, and a real node still gets in', async () => {
    const clients = await Promise.all(AUTH_CLIENT_ADDRESSES.map((address) => rawClient(cleanups, address)));
    const nonceFrame = fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }).map(encodeFrame);
    const nearMiss = fc
      .tuple(nonceFrame, fc.uint8Array({ minLength: 0, maxLength: 64 }).map(encodeFrame))
      .map(([hello, proof]) => [hello, proof]);
    const authWrites = fc.oneof(
      fc.array(fc.uint8Array({ minLength: 0, maxLength: 200 }), {
        minLength: 1,
        maxLength: WRITES_PER_RUN_MAX,
      }),
      nearMiss,
      fuzzWrites,
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(authWrites, async (writes) => {
        const client = clients[run % clients.length];
        run += 1;
        if (client === undefined) throw new Error('no client');
        const refusalsBefore = target.transport.authRefusals;
        const connection = await client.dial(multiaddr(tcpAddressOf(target.transport)));
        const stream = await connection.newStream(AUTH_PROTOCOL);
        for (const bytes of writes) trySend(stream, bytes);
        await stream.close().catch(() => undefined);
        await eventually(() => connection.status !== 'open', STEP_MS, 'the listener hangs up');
        expect(target.transport.authRefusals).toBe(refusalsBefore + 1);
        expect(target.transport.isConnected(client.peerId.toString())).toBe(false);
      }),
      { numRuns: AUTH_RUNS, endOnFailure: true },
    );

    const real = await aspenNode(cleanups, { nodeId: 1, cookie: COOKIE });
    real.transport.addPeer(2, target.transport.listenAddresses.join(','));
    const round = 1_000_000 + Number.parseInt(randomBytes(2).toString('hex'), 16);
    real.transport.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: round });
    await eventually(
      () => target.received.some((message) => message.type === 'heartbeat' && message.readRound === round),
      STEP_MS,
      'a real node gets in',
    );
  });
});
