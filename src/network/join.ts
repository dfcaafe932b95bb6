import type { PrivateKey, Stream } from '@libp2p/interface';
import { escalateBrokenInvariant } from '../api/errors.ts';
import { assert, AssertionError } from '../base/assert.ts';
import { isNodeId, type NodeId } from '../base/ids.ts';
import { JoinError } from './errors.ts';
import { encodeFrame, FrameDecoder } from './frame.ts';
import { Gatekeeper } from './gatekeeper.ts';
import { createLibp2pNode, dialFirst } from './libp2p-services.ts';
import { toMultiaddrs } from './multiaddrs.ts';
import { AUTH_DEADLINE_MS, AUTH_TIMEOUT_MS, STREAM_OPEN_TIMEOUT_MS } from './timeouts.ts';

/**
 * How a node without the cookie gets it: it proves a single-use join credential (from a join
 * ticket) to the node that minted it, over this protocol, and is answered the cookie or a refusal
 * code. It is served BEFORE cookie authentication (that is its point), so it is kept small: one
 * request frame `{node_id, credential}`, one answer frame, a deadline, and a cap on concurrent
 * exchanges. Without a valid credential it answers a refusal code and nothing else. The connection
 * is Noise (TCP) or TLS 1.3 (QUIC) with the peer ids checked, and a join ticket's addresses name
 * the minting node's peer id, so the credential and the cookie travel encrypted between the two
 * nodes only.
 */
export const JOIN_PROTOCOL = '/aspen/join/1.0.0';
/** Largest join frame either way: a request is ~80 bytes, an answer at most a 1 KiB cookie in base64url. */
export const JOIN_FRAME_BYTES_MAX = 2_048;
/** Longest cookie a join hands over (the bound of a cookie ticket's cluster id). */
export const JOIN_COOKIE_BYTES_MAX = 1_024;
/** A join credential: 32 random bytes. */
export const JOIN_CREDENTIAL_BYTES = 32;
/** Join exchanges one node serves at once (each is a few hundred bytes and one hash per pending credential). */
export const JOIN_STREAMS_MAX = 8;
/** Join streams one connection may open (a joining node sends one request). */
export const JOIN_STREAMS_PER_CONNECTION_MAX = 1;
/**
 * Each side's wait for the other's frame, once the stream is open. The member closes a connection
 * that has not proved the cookie AUTH_DEADLINE_MS after it opened: a join must fit well inside
 * (test/network/join.test.ts checks it).
 */
export const JOIN_TIMEOUT_MS = AUTH_TIMEOUT_MS;

/** Why a join was refused: the only thing a refused joiner learns. */
export const JOIN_REFUSALS = ['expired', 'used_or_unknown', 'wrong_node_id'] as const;
export type JoinRefusal = (typeof JOIN_REFUSALS)[number];

export interface JoinRequest {
  readonly nodeId: NodeId;
  /** JOIN_CREDENTIAL_BYTES bytes. */
  readonly credential: Uint8Array;
}

export type JoinAnswer =
  { readonly ok: true; readonly cookie: string } | { readonly ok: false; readonly reason: JoinRefusal };

/** Decides a join: the credential checked (and used up) by the node that minted it. */
export type JoinService = (request: JoinRequest, remotePeerId: string) => JoinAnswer;

/**
 * What one served join stream came to, for the member's log line: a decided request (`lost`: why
 * the answer could not be sent, null when it was), or a request never decided (`failure`).
 */
export type JoinOutcome =
  | {
      readonly answered: true;
      readonly nodeId: NodeId;
      readonly answer: JoinAnswer;
      readonly lost: string | null;
    }
  | { readonly answered: false; readonly failure: string };

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

function parse(bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new JoinError(`the join ${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new JoinError(`the join ${what} is not an object`);
  return value as Record<string, unknown>;
}

export function encodeJoinRequest(request: JoinRequest): Uint8Array {
  assert(request.credential.byteLength === JOIN_CREDENTIAL_BYTES, 'a join credential has 32 bytes');
  return json({ node_id: request.nodeId, credential: Buffer.from(request.credential).toString('base64url') });
}

export function decodeJoinRequest(bytes: Uint8Array): JoinRequest {
  const fields = parse(bytes, 'request');
  const credential = typeof fields.credential === 'string' ? fields.credential : '';
  const decoded = Buffer.from(credential, 'base64url');
  if (
    !isNodeId(fields.node_id) ||
    decoded.byteLength !== JOIN_CREDENTIAL_BYTES ||
    decoded.toString('base64url') !== credential
  )
    throw new JoinError('the join request is not {node_id, credential}');
  return { nodeId: fields.node_id, credential: decoded };
}

/** The cookie travels as base64url: any cookie fits the frame bound, whatever its characters. */
export function encodeJoinAnswer(answer: JoinAnswer): Uint8Array {
  if (!answer.ok) return json({ ok: false, reason: answer.reason });
  const cookie = Buffer.from(answer.cookie, 'utf8');
  assert(
    cookie.byteLength >= 1 && cookie.byteLength <= JOIN_COOKIE_BYTES_MAX,
    'a handed-over cookie is 1..1024 bytes',
  );
  return json({ ok: true, cookie: cookie.toString('base64url') });
}

export function decodeJoinAnswer(bytes: Uint8Array): JoinAnswer {
  const fields = parse(bytes, 'answer');
  if (fields.ok === false && JOIN_REFUSALS.includes(fields.reason as JoinRefusal))
    return { ok: false, reason: fields.reason as JoinRefusal };
  if (fields.ok === true && typeof fields.cookie === 'string') {
    const cookie = Buffer.from(fields.cookie, 'base64url');
    const text = cookie.toString('utf8');
    if (cookie.byteLength >= 1 && cookie.byteLength <= JOIN_COOKIE_BYTES_MAX && text.isWellFormed())
      return { ok: true, cookie: text };
  }
  throw new JoinError('the join answer is neither a cookie nor a known refusal');
}

/** The first frame of `stream` (at most JOIN_FRAME_BYTES_MAX), within JOIN_TIMEOUT_MS. */
async function readOneFrame(stream: Stream): Promise<Uint8Array> {
  const decoder = new FrameDecoder(JOIN_FRAME_BYTES_MAX);
  const timer = setTimeout(() => {
    stream.abort(new JoinError(`no join frame within ${JOIN_TIMEOUT_MS} ms`));
  }, JOIN_TIMEOUT_MS);
  try {
    // Ends when a frame is whole, the peer closes, the stream is aborted, or a frame is oversized.
    for await (const chunk of stream) {
      const frame = decoder.push(chunk instanceof Uint8Array ? chunk : chunk.subarray())[0];
      if (frame !== undefined) return frame;
    }
  } finally {
    clearTimeout(timer);
  }
  throw new JoinError('the stream ended before a whole join frame');
}

function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

/** Member side: read one request, answer what `service` decides, close. Never rejects. */
export async function answerJoin(
  stream: Stream,
  remotePeerId: string,
  service: JoinService,
): Promise<JoinOutcome> {
  let decided: { nodeId: NodeId; answer: JoinAnswer } | null = null;
  try {
    const request = decodeJoinRequest(await readOneFrame(stream));
    decided = { nodeId: request.nodeId, answer: service(request, remotePeerId) };
    stream.send(encodeFrame(encodeJoinAnswer(decided.answer)));
    void stream.close().catch(() => undefined); // answered: never wait on the close
    return { answered: true, ...decided, lost: null };
  } catch (error) {
    escalateBrokenInvariant(error);
    stream.abort(error instanceof Error ? error : new Error(String(error)));
    // A decision stands even when its answer is lost (a used credential stays used).
    return decided === null
      ? { answered: false, failure: message(error) }
      : { answered: true, ...decided, lost: message(error) };
  }
}

export interface JoinDial {
  /** The joining node's own identity: the member binds the node id to its peer id. */
  readonly privateKey: PrivateKey;
  /** The join ticket's addresses (each naming the minting node's peer id), tried in order. */
  readonly bootstrap: readonly string[];
  readonly request: JoinRequest;
}

/**
 * Joining side: a throwaway dial-only libp2p node with the node's identity (no listener, no
 * protocol served), one join exchange with the first bootstrap address that answers, then stopped.
 * Resolves to the member's answer; rejects with JoinError when no answer came.
 */
export async function requestJoin(dial: JoinDial): Promise<JoinAnswer> {
  const gatekeeper = new Gatekeeper({
    deadlineMs: AUTH_DEADLINE_MS,
    log: () => undefined,
    onAuthenticated: () => undefined,
  });
  const libp2p = await createLibp2pNode({ listen: [], privateKey: dial.privateKey }, gatekeeper);
  try {
    await libp2p.start();
    const connection = await dialFirst(
      libp2p,
      dial.bootstrap.flatMap((address) => toMultiaddrs(address)),
    );
    const stream = await connection.newStream(JOIN_PROTOCOL, {
      signal: AbortSignal.timeout(STREAM_OPEN_TIMEOUT_MS),
    });
    const reading = readOneFrame(stream); // listening before the request leaves
    reading.catch(() => undefined); // awaited below; a failed send must not leave it unhandled
    stream.send(encodeFrame(encodeJoinRequest(dial.request)));
    return decodeJoinAnswer(await reading);
  } catch (error) {
    if (error instanceof JoinError || error instanceof AssertionError) throw error; // never "no answer"
    throw new JoinError(message(error), { cause: error });
  } finally {
    await Promise.resolve()
      .then(() => libp2p.stop())
      .catch(() => undefined);
    gatekeeper.stop();
  }
}
