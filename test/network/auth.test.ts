import { createHmac, randomBytes, scryptSync } from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AUTH_KDF_BLOCK_SIZE,
  AUTH_KDF_COST,
  AUTH_KDF_PARALLELISM,
  AUTH_KEYS_MAX,
  AUTH_PROTOCOL,
  authProof,
  deriveAuthKey,
  MAC_BYTES,
  matchDialerProof,
  NONCE_BYTES,
  type AuthTranscript,
} from '../../src/network/auth.ts';
import { encodeFrame } from '../../src/network/frame.ts';
import type { Libp2pTransport } from '../../src/network/libp2p-transport.ts';
import { aspenNode, eventually, FrameCollector, rawClient, tcpAddressOf } from './intruders.ts';

const SETTLE_MS = 5_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The key as documented: scrypt of the cookie with the named costs and the fixed public salt. */
function documentedKey(cookie: string): Buffer {
  return scryptSync(cookie, 'aspen-cluster-key-v2', 32, {
    N: AUTH_KDF_COST,
    r: AUTH_KDF_BLOCK_SIZE,
    p: AUTH_KDF_PARALLELISM,
    maxmem: 256 * AUTH_KDF_COST * AUTH_KDF_BLOCK_SIZE,
  });
}

describe('the cluster key', () => {
  it('is scrypt of the cookie with the named costs, computed once per process, never the old fast HMAC', () => {
    expect(AUTH_KDF_COST).toBeGreaterThanOrEqual(2 ** 15);
    const key = deriveAuthKey('kdf-cookie');
    expect(key.equals(documentedKey('kdf-cookie'))).toBe(true);
    expect(deriveAuthKey('kdf-cookie')).toBe(key); // cached: the same buffer, no second derivation
    expect(key.equals(createHmac('sha256', 'aspen-cluster-cookie-v1').update('kdf-cookie').digest())).toBe(
      false,
    );
    expect(deriveAuthKey('kdf-cookie-2').equals(key)).toBe(false);
    expect(() => deriveAuthKey('')).toThrow(RangeError);
  });
});

/** A proof a fake listener received, with the nonces it was bound to. */
interface HandedProof {
  readonly hello: Uint8Array;
  readonly proof: Uint8Array;
  readonly nonce: Uint8Array;
}

/**
 * A libp2p peer that plays a listener of the auth protocol: it answers each hello with a nonce,
 * records the dialer's proof, then answers `answer()`. Returns its address and what it received.
 */
async function fakeListener(answer: () => Uint8Array): Promise<{
  address: ReturnType<typeof multiaddr>;
  peerId: string;
  seen: HandedProof[];
  connections: () => number;
}> {
  const fake = await rawClient(cleanups, '127.0.0.1', ['/ip4/127.0.0.1/tcp/0']);
  const seen: HandedProof[] = [];
  await fake.handle(AUTH_PROTOCOL, (stream: Stream) => {
    const collector = new FrameCollector(stream); // its listener runs first: frames are counted below
    const nonce = randomBytes(NONCE_BYTES);
    let answered = 0;
    stream.addEventListener('message', () => {
      const [hello, proof] = collector.frames;
      if (hello !== undefined && answered === 0) {
        answered = 1;
        stream.send(encodeFrame(nonce));
      }
      if (hello !== undefined && proof !== undefined && answered === 1) {
        answered = 2;
        seen.push({ hello, proof, nonce });
        stream.send(encodeFrame(answer()));
      }
    });
  });
  const listening = fake.getMultiaddrs()[0];
  if (listening === undefined) throw new Error('the fake listener has no address');
  return {
    address: multiaddr(listening.toString()),
    peerId: fake.peerId.toString(),
    seen,
    connections: () => fake.getConnections().length,
  };
}

describe('the dialer proves first', () => {
  it('a real node dialing a fake listener hands over one proof under the scrypt key, learns it is fake, and hangs up', async () => {
    const cookie = 'fake-listener-cookie';
    const { transport, logs } = await aspenNode(cleanups, { nodeId: 1, cookie });
    const fake = await fakeListener(() => randomBytes(MAC_BYTES)); // a made-up listener proof
    await expect(transport.connect([fake.address])).rejects.toThrow();
    await eventually(() => fake.seen.length === 1, SETTLE_MS, 'the fake listener got a proof');
    const [{ hello, proof, nonce }] = fake.seen as [HandedProof];
    expect(hello.byteLength).toBe(NONCE_BYTES);
    // What a guesser must recompute per guess: HMAC under scrypt(cookie), not under a fast hash of it.
    const expected = createHmac('sha256', documentedKey(cookie))
      .update(`aspen-auth-v2-dialer\u0000${transport.peerId}\u0000${fake.peerId}\u0000`)
      .update(hello)
      .update(nonce)
      .digest();
    expect(Buffer.from(proof).equals(expected)).toBe(true);
    expect(transport.authRefusals).toBe(1);
    expect(logs.join('\n')).toMatch(
      /auth: refused connection to peer \S+ at \S+: it does not know this cluster's cookie \(or the cookie differs\)/,
    );
    await eventually(() => fake.connections() === 0, SETTLE_MS, 'the real node hangs up');
  });
});

/** A rotation: the cookie being replaced, its successor, and one that belongs to nobody in the cluster. */
const OLD = 'rotation-old-cookie';
const NEW = 'rotation-new-cookie';
const STRANGER = 'rotation-stranger-cookie';

/** The cookies each kind of node holds (dual: phase 1 of a rotation, --cookie NEW --previous-cookie OLD). */
const KINDS = {
  old: [OLD],
  dual: [NEW, OLD],
  new: [NEW],
  stranger: [STRANGER],
} as const;
type Kind = keyof typeof KINDS;

async function nodeOf(kind: Kind, nodeId: number): Promise<Awaited<ReturnType<typeof aspenNode>>> {
  const [cookie, previous] = KINDS[kind];
  return aspenNode(cleanups, {
    nodeId,
    cookie,
    ...(previous === undefined ? {} : { previousCookie: previous }),
  });
}

function tcpOf(transport: Libp2pTransport): ReturnType<typeof multiaddr> {
  return multiaddr(tcpAddressOf(transport));
}

const transcriptArbitrary: fc.Arbitrary<AuthTranscript> = fc.record({
  dialerPeer: fc.string({ minLength: 1, maxLength: 60 }),
  listenerPeer: fc.string({ minLength: 1, maxLength: 60 }),
  dialerNonce: fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
  listenerNonce: fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }),
});
const keyArbitrary = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes));

describe('a listener with two keys (cookie rotation)', () => {
  it('accepts a dialer proof under exactly the keys it holds, and its answer checks out under the key the dialer used', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(keyArbitrary, {
          minLength: 2,
          maxLength: AUTH_KEYS_MAX + 1,
          selector: (key) => key.toString('hex'),
        }),
        fc.integer({ min: 1, max: AUTH_KEYS_MAX }),
        fc.nat(),
        transcriptArbitrary,
        (keys, held, pick, transcript) => {
          const listenerKeys = keys.slice(0, Math.min(held, keys.length - 1));
          const dialerKey = keys[pick % keys.length] ?? Buffer.alloc(0);
          const expected = listenerKeys.findIndex((key) => key.equals(dialerKey));
          const matched = matchDialerProof(
            listenerKeys,
            authProof(dialerKey, 'dialer', transcript),
            transcript,
          );
          expect(matched).toBe(expected);
          if (matched >= 0) {
            const answer = authProof(listenerKeys[matched] ?? Buffer.alloc(0), 'listener', transcript);
            expect(answer.equals(authProof(dialerKey, 'listener', transcript))).toBe(true);
          }
        },
      ),
    );
  });

  it('refuses a guessed proof, a listener proof reflected back, and a proof for another handshake', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(keyArbitrary, {
          minLength: 1,
          maxLength: AUTH_KEYS_MAX,
          selector: (key) => key.toString('hex'),
        }),
        fc.uint8Array({ minLength: 0, maxLength: 2 * MAC_BYTES }),
        transcriptArbitrary,
        transcriptArbitrary,
        (keys, guess, transcript, other) => {
          expect(matchDialerProof(keys, guess, transcript)).toBe(-1);
          for (const key of keys) {
            expect(matchDialerProof(keys, authProof(key, 'listener', transcript), transcript)).toBe(-1);
            const forOther = authProof(key, 'dialer', other);
            const sameHandshake = forOther.equals(authProof(key, 'dialer', transcript));
            expect(matchDialerProof(keys, forOther, transcript) >= 0).toBe(sameHandshake);
          }
        },
      ),
    );
  });

  it('connects old, dual and new nodes exactly when they share a cookie, in either direction; a stranger never', async () => {
    const listeners = {
      old: await nodeOf('old', 1),
      dual: await nodeOf('dual', 2),
      new: await nodeOf('new', 3),
    };
    let nodeId = 10;
    for (const dialerKind of ['old', 'dual', 'new', 'stranger'] as const) {
      for (const listenerKind of ['old', 'dual', 'new'] as const) {
        nodeId += 1;
        const dialer = await nodeOf(dialerKind, nodeId); // a fresh peer: a new connection, a new handshake
        const listener = listeners[listenerKind];
        const shared = KINDS[dialerKind].some((cookie) =>
          (KINDS[listenerKind] as readonly string[]).includes(cookie),
        );
        const what = `${dialerKind} dialing ${listenerKind}`;
        const refusalsBefore = listener.transport.authRefusals;
        const connecting = dialer.transport.connect([tcpOf(listener.transport)]);
        if (shared) {
          await expect(connecting, what).resolves.toBe(listener.transport.peerId);
          await eventually(() => listener.transport.isConnected(dialer.transport.peerId), SETTLE_MS, what);
          expect(dialer.transport.authRefusals, what).toBe(0);
          // Only a dual node dialing a new-only one is refused once, proving the old cookie first.
          const retried = dialerKind === 'dual' && listenerKind === 'new';
          expect(listener.transport.authRefusals - refusalsBefore, what).toBe(retried ? 1 : 0);
          expect(
            dialer.logs.some((line) => line.includes('the previous cookie failed')),
            what,
          ).toBe(retried);
        } else {
          await expect(connecting, what).rejects.toThrow(/did not authenticate/);
          expect(dialer.transport.authRefusals, what).toBe(1);
          await eventually(() => listener.transport.authRefusals > refusalsBefore, SETTLE_MS, what);
          expect(listener.transport.isConnected(dialer.transport.peerId), what).toBe(false);
          expect(listener.logs.join('\n'), what).toContain(
            `refused connection from peer ${dialer.transport.peerId}`,
          );
        }
      }
    }
  }, 60_000);

  it('a dual node hands a fake listener one proof per cookie it holds, the previous first, then gives up', async () => {
    const { transport, logs } = await nodeOf('dual', 1);
    const fake = await fakeListener(() => new Uint8Array([0])); // refused, as a real listener would
    await expect(transport.connect([fake.address])).rejects.toThrow(/did not authenticate/);
    await eventually(() => fake.seen.length === 2, SETTLE_MS, 'one proof per cookie');
    for (const [index, cookie] of [OLD, NEW].entries()) {
      const { hello, proof, nonce } = fake.seen[index] ?? { hello: [], proof: [], nonce: [] };
      const transcript = {
        dialerPeer: transport.peerId,
        listenerPeer: fake.peerId,
        dialerNonce: Uint8Array.from(hello),
        listenerNonce: Uint8Array.from(nonce),
      };
      expect(Buffer.from(proof).equals(authProof(deriveAuthKey(cookie), 'dialer', transcript))).toBe(true);
    }
    expect(transport.authRefusals).toBe(1); // the first refusal only led to the other key
    expect(logs.join('\n')).toMatch(/the previous cookie failed with .*; trying the current one/);
    expect(logs.join('\n')).toMatch(/auth: peer \S+ refused our cookie: the cookies differ/);
    await eventually(() => fake.connections() === 0, SETTLE_MS, 'the dual node hangs up');
  });

  it('a stranger dialing a dual node gets a bare nonce (no MAC under either key), then the connection closed', async () => {
    const { transport, logs } = await nodeOf('dual', 1);
    const stranger = await rawClient(cleanups);
    const connection = await stranger.dial(tcpOf(transport));
    const stream = await connection.newStream(AUTH_PROTOCOL);
    const collector = new FrameCollector(stream);
    stream.send(encodeFrame(randomBytes(NONCE_BYTES)));
    await eventually(() => collector.frames.length === 1, SETTLE_MS, 'the listener answers the hello');
    expect(collector.frames[0]?.byteLength).toBe(NONCE_BYTES);
    stream.send(encodeFrame(randomBytes(MAC_BYTES))); // a guessed proof
    await eventually(() => stranger.getConnections().length === 0, SETTLE_MS, 'the listener hangs up');
    expect(collector.frames.slice(1).every((frame) => frame.byteLength === 1)).toBe(true); // at most the refusal byte
    expect(transport.authRefusals).toBe(1);
    expect(logs.join('\n')).toMatch(
      /auth: refused connection from peer \S+ at \S+: it does not know this cluster's cookie \(or the cookie differs\)/,
    );
  });
});
