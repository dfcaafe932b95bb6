import { createHmac, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { assert } from '../base/assert.ts';
import { encodeFrame, FrameDecoder } from './frame.ts';
import { AUTH_TIMEOUT_MS } from './timeouts.ts';
import { AuthError } from './errors.ts';

/**
 * Cookie authentication on every new connection: a challenge–response with HMAC-SHA256 keyed by a
 * key derived from the cluster cookie, over both peer ids and both nonces, so a proof cannot be
 * replayed to another peer or another connection. The DIALER proves first:
 *
 *   dialer → listener: dialer nonce
 *   listener → dialer: listener nonce (nothing else: a stranger dialing in gets no MAC to attack)
 *   dialer → listener: dialer proof      (the listener checks it, or answers REFUSED and hangs up)
 *   listener → dialer: listener proof    (the dialer checks it, or hangs up)
 *
 * A fake listener (say, found by mDNS) still receives a real dialer's proof: the key comes from a
 * slow KDF (scrypt) so that proof costs an offline guesser ~0.1 s of CPU and 32 MiB per guess.
 * Version 2: version 1 had the listener prove first and keyed the HMAC with a fast hash.
 *
 * Cookie rotation (--previous-cookie) keeps this wire format: a listener accepts a proof under any of
 * its keys (at most AUTH_KEYS_MAX: the current cookie's and the previous one's) and answers under the
 * key that matched, so the dialer, which knows only that key, can check the answer. A dialer proves
 * one key per connection; the transport tries its other key on a fresh connection when refused.
 */
export const AUTH_PROTOCOL = '/aspen/auth/2.0.0';
export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;
const AUTH_FRAME_BYTES_MAX = 1_024;
/** The listener's frames carry at most one nonce and one proof; more queued means a misbehaving peer. */
const AUTH_FRAMES_QUEUED_MAX = 4;
const REFUSED = new Uint8Array([0]);

/** scrypt cost N (2^15: ~0.1 s and 32 MiB per derivation on a 2020s core). */
export const AUTH_KDF_COST = 2 ** 15;
/** scrypt block size r (the usual 8). */
export const AUTH_KDF_BLOCK_SIZE = 8;
/** scrypt parallelism p (1: the cost is sequential for a guesser too). */
export const AUTH_KDF_PARALLELISM = 1;
/** scrypt needs 128 * N * r bytes; allow twice that (Node's default ceiling is 32 MiB, just below it). */
const AUTH_KDF_MEMORY_BYTES_MAX = 2 * 128 * AUTH_KDF_COST * AUTH_KDF_BLOCK_SIZE;
/** Public and fixed: every node of a cluster must derive the same key from the cookie alone. */
const AUTH_KDF_SALT = 'aspen-cluster-key-v2';
const AUTH_KEY_BYTES = 32;
/** Cookies whose key a process remembers (a node has one; tests use a few). */
const AUTH_KEYS_CACHED_MAX = 8;
/** Keys a node accepts at once: its cookie's and, during a rotation, the previous cookie's. */
export const AUTH_KEYS_MAX = 2;

const derivedKeys = new Map<string, Buffer>();

/**
 * The key for a cookie, from scrypt: computed once per process and cookie (it blocks the event loop
 * for ~0.1 s the first time, at start-up), then cached. The cookie itself never touches the wire;
 * everything derived from it (auth proofs, gossip topic, mDNS tag, announcement MACs) goes through
 * this key, so each offline guess of the cookie pays the KDF.
 */
export function deriveAuthKey(cookie: string): Buffer {
  if (cookie.length === 0) throw new RangeError('the cluster cookie must not be empty');
  const cached = derivedKeys.get(cookie);
  if (cached !== undefined) return cached;
  const key = scryptSync(cookie, AUTH_KDF_SALT, AUTH_KEY_BYTES, {
    N: AUTH_KDF_COST,
    r: AUTH_KDF_BLOCK_SIZE,
    p: AUTH_KDF_PARALLELISM,
    maxmem: AUTH_KDF_MEMORY_BYTES_MAX,
  });
  if (derivedKeys.size >= AUTH_KEYS_CACHED_MAX) {
    const oldest = derivedKeys.keys().next();
    if (oldest.done !== true) derivedKeys.delete(oldest.value);
  }
  derivedKeys.set(cookie, key);
  return key;
}

/** A value derived from the cluster key for one purpose (`label`), as lowercase hex. */
export function deriveLabel(key: Buffer, label: string): string {
  return createHmac('sha256', key).update(label).digest('hex');
}

/** What both proofs of one handshake are bound to: both peer ids and both nonces. */
export interface AuthTranscript {
  readonly dialerPeer: string;
  readonly listenerPeer: string;
  readonly dialerNonce: Uint8Array;
  readonly listenerNonce: Uint8Array;
}

/** The proof `role` sends in the handshake of `transcript`, under `key`. */
export function authProof(key: Buffer, role: 'dialer' | 'listener', transcript: AuthTranscript): Buffer {
  const { dialerPeer, listenerPeer, dialerNonce, listenerNonce } = transcript;
  return createHmac('sha256', key)
    .update(`aspen-auth-v2-${role}\u0000${dialerPeer}\u0000${listenerPeer}\u0000`)
    .update(dialerNonce)
    .update(listenerNonce)
    .digest();
}

/**
 * The index of the key among `keys` under which `dialerProof` is the dialer's proof, or -1. Every
 * key is checked, each in constant time, whatever matched first: the time taken tells a dialer
 * nothing but the key count, never which key came close.
 */
export function matchDialerProof(
  keys: readonly Buffer[],
  dialerProof: Uint8Array,
  transcript: AuthTranscript,
): number {
  assert(keys.length >= 1 && keys.length <= AUTH_KEYS_MAX, 'a listener accepts one or two keys');
  let matched = -1;
  for (const [index, key] of keys.entries()) {
    const equal = same(dialerProof, authProof(key, 'dialer', transcript));
    if (equal && matched === -1) matched = index;
  }
  return matched;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

/**
 * Reads length-prefixed frames from a stream, one at a time. Frames that arrived are handed out
 * before any failure (the peer may send its last frame and close in one go); the peer closing its
 * side, the stream closing, or the deadline ends the wait.
 */
class FrameReader {
  private readonly decoder = new FrameDecoder(AUTH_FRAME_BYTES_MAX);
  private readonly frames: Uint8Array[] = [];
  private failure: Error | null = null;
  private waiter: { resolve: (frame: Uint8Array) => void; reject: (error: Error) => void } | null = null;

  constructor(stream: Stream) {
    stream.addEventListener('message', (event) => {
      this.receive(event.data instanceof Uint8Array ? event.data : event.data.subarray());
    });
    stream.addEventListener('remoteCloseWrite', () => {
      this.fail(new AuthError('the peer closed the stream during authentication'));
    });
    stream.addEventListener('close', () => {
      this.fail(new AuthError('stream closed during authentication'));
    });
  }

  private receive(data: Uint8Array): void {
    if (this.failure !== null) return;
    let frames: Uint8Array[];
    try {
      frames = this.decoder.push(data);
    } catch (error) {
      this.fail(new AuthError(`malformed frame: ${error instanceof Error ? error.message : String(error)}`));
      return;
    }
    if (this.frames.length + frames.length > AUTH_FRAMES_QUEUED_MAX) {
      this.fail(new AuthError('too many frames'));
      return;
    }
    this.frames.push(...frames);
    this.settle();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.settle();
  }

  private settle(): void {
    const waiter = this.waiter;
    if (waiter === null) return;
    const frame = this.frames.shift();
    if (frame !== undefined) {
      this.waiter = null;
      waiter.resolve(frame);
    } else if (this.failure !== null) {
      this.waiter = null;
      waiter.reject(this.failure);
    }
  }

  next(signal: AbortSignal): Promise<Uint8Array> {
    assert(this.waiter === null, 'one frame read at a time');
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.fail(new AuthError('authentication timed out'));
      };
      const done = (): void => {
        signal.removeEventListener('abort', onAbort);
      };
      this.waiter = {
        resolve: (frame) => {
          done();
          resolve(frame);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      else this.settle();
    });
  }
}

/** Dialer side: prove the cookie first, then check the listener's proof. Throws AuthError on refusal. */
export async function authenticateAsDialer(
  stream: Stream,
  key: Buffer,
  dialerPeer: string,
  listenerPeer: string,
): Promise<void> {
  const signal = AbortSignal.timeout(AUTH_TIMEOUT_MS);
  const reader = new FrameReader(stream);
  const dialerNonce = randomBytes(NONCE_BYTES);
  stream.send(encodeFrame(dialerNonce));
  const listenerNonce = await reader.next(signal);
  if (listenerNonce.byteLength !== NONCE_BYTES) throw new AuthError('malformed challenge');
  const transcript = { dialerPeer, listenerPeer, dialerNonce, listenerNonce };
  stream.send(encodeFrame(authProof(key, 'dialer', transcript)));
  const answer = await reader.next(signal);
  if (same(answer, REFUSED))
    throw new AuthError(`peer ${listenerPeer} refused our cookie`, 'refused_by_peer');
  if (!same(answer, authProof(key, 'listener', transcript))) {
    throw new AuthError(`peer ${listenerPeer} does not know the cluster cookie`, 'peer_unproven');
  }
}

/**
 * Listener side: a bare nonce, then check the dialer's proof under each of `keys` before proving
 * anything, under the key the dialer used. Returns that key's index; throws AuthError on refusal.
 */
export async function authenticateAsListener(
  stream: Stream,
  keys: readonly Buffer[],
  dialerPeer: string,
  listenerPeer: string,
): Promise<number> {
  const signal = AbortSignal.timeout(AUTH_TIMEOUT_MS);
  const reader = new FrameReader(stream);
  const dialerNonce = await reader.next(signal);
  if (dialerNonce.byteLength !== NONCE_BYTES) throw new AuthError('malformed hello');
  const listenerNonce = randomBytes(NONCE_BYTES);
  stream.send(encodeFrame(listenerNonce));
  const transcript = { dialerPeer, listenerPeer, dialerNonce, listenerNonce };
  const matched = matchDialerProof(keys, await reader.next(signal), transcript);
  const key = keys[matched];
  if (key === undefined) {
    stream.send(encodeFrame(REFUSED));
    throw new AuthError(`peer ${dialerPeer} does not know the cluster cookie`, 'peer_unproven');
  }
  stream.send(encodeFrame(authProof(key, 'listener', transcript)));
  return matched;
}
