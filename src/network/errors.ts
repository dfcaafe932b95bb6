/**
 * The network layer's errors, one class per failure kind. None of them reaches the core: a refused
 * frame, handshake or message is dropped and counted, or answered with an API error by the caller.
 */

/** A frame longer than FRAME_BYTES_MAX announced on a Raft stream: the stream is cut. */
export class FrameTooLargeError extends Error {
  override readonly name = 'FrameTooLargeError';
}

/**
 * How a cookie handshake failed: the peer answered that our proof is wrong (`refused_by_peer`), the
 * peer's proof is wrong under every key we hold (`peer_unproven`), or the exchange itself broke off
 * (`handshake`: a timeout, a closed stream, a malformed frame).
 */
export type AuthFailure = 'refused_by_peer' | 'peer_unproven' | 'handshake';

/** A peer that did not prove the cluster cookie (or proved it wrongly): the connection is closed. */
export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly failure: AuthFailure;

  constructor(message: string, failure: AuthFailure = 'handshake') {
    super(message);
    this.failure = failure;
  }
}

/** Bytes that are not a well-formed WireMessage, or a message that cannot be encoded into a frame. */
export class WireFormatError extends Error {
  override readonly name = 'WireFormatError';
}

/** A join exchange that failed (no answer, a malformed frame, no reachable address): nothing was handed over. */
export class JoinError extends Error {
  override readonly name = 'JoinError';
}
