import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { encodeFrame, FrameDecoder } from './frame.ts';
import { AUTH_TIMEOUT_MS } from './timeouts.ts';

/**
 * Cookie authentication on every new connection (`/aspen/auth/1.0.0`): a challenge–response with
 * HMAC-SHA256 keyed by a key derived from the cluster cookie, over both peer ids and both nonces,
 * so a proof cannot be replayed to another peer or another connection. Raft is served only to
 * peers that passed it.
 */
export const AUTH_PROTOCOL = '/aspen/auth/1.0.0';
export const NONCE_BYTES = 32;
const MAC_BYTES = 32;
const AUTH_FRAME_BYTES_MAX = 1_024;
const ACCEPTED = new Uint8Array([1]);

export class AuthError extends Error {
  override readonly name = 'AuthError';
}

/** The HMAC key for a cookie: the cookie itself never touches the wire. */
export function deriveAuthKey(cookie: string): Buffer {
  if (cookie.length === 0) throw new RangeError('the cluster cookie must not be empty');
  return createHmac('sha256', 'aspen-cluster-cookie-v1').update(cookie, 'utf8').digest();
}

function proof(key: Buffer, role: 'dialer' | 'listener', dialerPeer: string, listenerPeer: string, dialerNonce: Uint8Array, listenerNonce: Uint8Array): Buffer {
  return createHmac('sha256', key)
    .update(`aspen-auth-${role}\u0000${dialerPeer}\u0000${listenerPeer}\u0000`)
    .update(dialerNonce)
    .update(listenerNonce)
    .digest();
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

/** Reads length-prefixed frames from a stream, one at a time, each within the auth deadline. */
class FrameReader {
  private readonly decoder = new FrameDecoder(AUTH_FRAME_BYTES_MAX);
  private readonly frames: Uint8Array[] = [];
  private waiting: ((frame: Uint8Array) => void) | null = null;
  private failure: Error | null = null;
  private failed: ((error: Error) => void) | null = null;

  constructor(stream: Stream) {
    stream.addEventListener('message', (event) => {
      try {
        const data = event.data instanceof Uint8Array ? event.data : event.data.subarray();
        for (const frame of this.decoder.push(data)) this.frames.push(frame);
      } catch (error) {
        this.fail(error instanceof Error ? error : new AuthError(String(error)));
        return;
      }
      this.wake();
    });
    stream.addEventListener('close', () => { this.fail(new AuthError('stream closed during authentication')); });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.failed?.(this.failure);
  }

  private wake(): void {
    const frame = this.frames.shift();
    if (frame === undefined || this.waiting === null) {
      if (frame !== undefined) this.frames.unshift(frame);
      return;
    }
    const resolve = this.waiting;
    this.waiting = null;
    resolve(frame);
  }

  next(signal: AbortSignal): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      if (this.failure !== null) {
        reject(this.failure);
        return;
      }
      signal.addEventListener('abort', () => { reject(new AuthError('authentication timed out')); }, { once: true });
      this.failed = reject;
      this.waiting = resolve;
      this.wake();
    });
  }
}

/** Dialer side: prove the cookie and check the listener's proof. Throws AuthError on refusal. */
export async function authenticateAsDialer(stream: Stream, key: Buffer, dialerPeer: string, listenerPeer: string): Promise<void> {
  const signal = AbortSignal.timeout(AUTH_TIMEOUT_MS);
  const reader = new FrameReader(stream);
  const dialerNonce = randomBytes(NONCE_BYTES);
  stream.send(encodeFrame(dialerNonce));
  const challenge = await reader.next(signal);
  if (challenge.byteLength !== NONCE_BYTES + MAC_BYTES) throw new AuthError('malformed challenge');
  const listenerNonce = challenge.subarray(0, NONCE_BYTES);
  if (!same(challenge.subarray(NONCE_BYTES), proof(key, 'listener', dialerPeer, listenerPeer, dialerNonce, listenerNonce))) {
    throw new AuthError(`peer ${listenerPeer} does not know the cluster cookie`);
  }
  stream.send(encodeFrame(proof(key, 'dialer', dialerPeer, listenerPeer, dialerNonce, listenerNonce)));
  const verdict = await reader.next(signal);
  if (!same(verdict, ACCEPTED)) throw new AuthError(`peer ${listenerPeer} refused our cookie`);
}

/** Listener side: challenge the dialer and check its proof. Throws AuthError on refusal. */
export async function authenticateAsListener(stream: Stream, key: Buffer, dialerPeer: string, listenerPeer: string): Promise<void> {
  const signal = AbortSignal.timeout(AUTH_TIMEOUT_MS);
  const reader = new FrameReader(stream);
  const dialerNonce = await reader.next(signal);
  if (dialerNonce.byteLength !== NONCE_BYTES) throw new AuthError('malformed hello');
  const listenerNonce = randomBytes(NONCE_BYTES);
  const challenge = new Uint8Array(NONCE_BYTES + MAC_BYTES);
  challenge.set(listenerNonce, 0);
  challenge.set(proof(key, 'listener', dialerPeer, listenerPeer, dialerNonce, listenerNonce), NONCE_BYTES);
  stream.send(encodeFrame(challenge));
  const answer = await reader.next(signal);
  if (!same(answer, proof(key, 'dialer', dialerPeer, listenerPeer, dialerNonce, listenerNonce))) {
    stream.send(encodeFrame(new Uint8Array([0])));
    throw new AuthError(`peer ${dialerPeer} does not know the cluster cookie`);
  }
  stream.send(encodeFrame(ACCEPTED));
}
