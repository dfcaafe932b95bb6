import { createHmac, randomBytes, scryptSync } from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AUTH_KDF_BLOCK_SIZE,
  AUTH_KDF_COST,
  AUTH_KDF_PARALLELISM,
  AUTH_PROTOCOL,
  deriveAuthKey,
  MAC_BYTES,
  NONCE_BYTES,
} from '../../src/network/auth.ts';
import { encodeFrame } from '../../src/network/frame.ts';
import { aspenNode, eventually, FrameCollector, rawClient } from './intruders.ts';

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

describe('the dialer proves first', () => {
  it('a real node dialing a fake listener hands over one proof under the scrypt key, learns it is fake, and hangs up', async () => {
    const cookie = 'fake-listener-cookie';
    const { transport, logs } = await aspenNode(cleanups, { nodeId: 1, cookie });
    const fake = await rawClient(cleanups, '127.0.0.1', ['/ip4/127.0.0.1/tcp/0']);
    const seen: { hello: Uint8Array; proof: Uint8Array; nonce: Uint8Array }[] = [];
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
          stream.send(encodeFrame(randomBytes(MAC_BYTES))); // a made-up listener proof
        }
      });
    });
    const listening = fake.getMultiaddrs()[0];
    if (listening === undefined) throw new Error('the fake listener has no address');
    await expect(transport.connect([multiaddr(listening.toString())])).rejects.toThrow();
    await eventually(() => seen.length === 1, SETTLE_MS, 'the fake listener got a proof');
    const [{ hello, proof, nonce }] = seen as [(typeof seen)[number]];
    expect(hello.byteLength).toBe(NONCE_BYTES);
    // What a guesser must recompute per guess: HMAC under scrypt(cookie), not under a fast hash of it.
    const expected = createHmac('sha256', documentedKey(cookie))
      .update(`aspen-auth-v2-dialer\u0000${transport.peerId}\u0000${fake.peerId.toString()}\u0000`)
      .update(hello)
      .update(nonce)
      .digest();
    expect(Buffer.from(proof).equals(expected)).toBe(true);
    expect(transport.authRefusals).toBe(1);
    expect(logs.join('\n')).toMatch(/auth: refused connection to .*does not know the cluster cookie/);
    await eventually(() => fake.getConnections().length === 0, SETTLE_MS, 'the real node hangs up');
  });
});
