import { randomBytes } from 'node:crypto';
import { KvError } from './errors.ts';
import { assert, type Call } from './retry.ts';

/**
 * Exactly-once client sessions (docs/api.md, "Exactly-once writes"). The server applies a client's
 * sequences in increasing order only: a sequence at or below the highest applied that it no longer
 * holds (or a first sequence other than 1) is SESSION_EXPIRED, not applied. Concurrent requests
 * under one client id could reach the leader out of order, so a KvClient keeps up to
 * SESSION_LANES_MAX lanes, each its own session (its own client id) with at most one mutating
 * request in flight; further requests wait in a bounded queue for a free lane.
 *
 * A client id is never reused: every lane starts with a fresh random id, and a lane whose session
 * expired takes a new one. Restarting an evicted id at sequence 1 could apply a write twice (its
 * sequence 1, still in doubt, would be new to the server again).
 */

/** Lanes (sessions, each with one mutating request in flight) per KvClient. */
export const SESSION_LANES_MAX = 8;
/** Mutating requests that may wait for a lane; past it a call fails with OVERLOADED (definite). */
export const SESSION_WAITERS_MAX = 4_096;
/** Random bytes of a client id: 16 bytes are 22 base64url characters. */
export const CLIENT_ID_BYTES = 16;
/** Fresh sessions a call may take after its session expired before anything could have applied. */
export const SESSION_RENEWALS_MAX = 1;

/** A fresh random client id: 22 characters of [A-Za-z0-9_-]. */
export function freshClientId(): string {
  return randomBytes(CLIENT_ID_BYTES).toString('base64url');
}

/** One session: a client id and the last sequence it used. */
export class Lane {
  clientId = freshClientId();
  private sequence = 0;

  /** The next sequence (1, 2, …) of this session. */
  next(): number {
    this.sequence += 1;
    assert(Number.isSafeInteger(this.sequence), 'a session sequence stays a safe integer');
    return this.sequence;
  }

  /** Start a new session under a new id (never reuse an expired one). */
  renew(): void {
    this.clientId = freshClientId();
    this.sequence = 0;
  }
}

interface Waiter {
  readonly grant: (lane: Lane) => void;
}

/** The lanes of one KvClient: at most SESSION_LANES_MAX, handed out one request at a time. */
export class SessionLanes {
  private readonly idle: Lane[] = [];
  private created = 0;
  private readonly waiters: Waiter[] = [];

  /** A lane to use alone until `release`; waits (bounded queue) while every lane is busy. */
  acquire(signal: AbortSignal | undefined): Promise<Lane> {
    const lane = this.idle.pop();
    if (lane !== undefined) return Promise.resolve(lane);
    if (this.created < SESSION_LANES_MAX) {
      this.created += 1;
      return Promise.resolve(new Lane());
    }
    if (this.waiters.length >= SESSION_WAITERS_MAX)
      return Promise.reject(
        new KvError('OVERLOADED', `more than ${SESSION_WAITERS_MAX} writes wait for a session lane`, {
          definite: true,
        }),
      );
    return new Promise<Lane>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new KvError('ABORTED', 'aborted by the caller', { definite: true }));
      };
      const waiter: Waiter = {
        grant: (granted) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(granted);
        },
      };
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(lane: Lane): void {
    const waiter = this.waiters.shift();
    if (waiter === undefined) this.idle.push(lane);
    else waiter.grant(lane);
  }
}

/**
 * Run a mutating call under a session: `send` runs the call (with its retries) carrying client_id
 * and sequence. SESSION_EXPIRED renews the lane; when the error is definite (no attempt of this
 * sequence could have applied) the call is sent once more under the new session.
 */
export async function withSession<T>(
  lanes: SessionLanes,
  call: Call,
  signal: AbortSignal | undefined,
  send: (call: Call) => Promise<T>,
): Promise<T> {
  const lane = await lanes.acquire(signal);
  try {
    for (let renewal = 0; ; renewal += 1) {
      const body = {
        ...(call.body as Record<string, unknown>),
        client_id: lane.clientId,
        sequence: lane.next(),
      };
      try {
        return await send({ ...call, body, sessioned: true });
      } catch (error) {
        if (!(error instanceof KvError) || error.code !== 'SESSION_EXPIRED') throw error;
        lane.renew();
        if (!error.definite || renewal >= SESSION_RENEWALS_MAX) throw error;
      }
    }
  } finally {
    lanes.release(lane);
  }
}

/**
 * A failure as the caller must see it, given whether an earlier attempt of the same session
 * sequence may have applied (`inDoubt`): then a refusal (NO_LEADER, a refused connection, …) says
 * nothing about that copy and is not definite either. SESSION_EXPIRED is definite exactly when no
 * attempt may have applied; COMPARE_FAILED is the state machine's answer for the sequence itself.
 */
export function judge(error: KvError, inDoubt: boolean): KvError {
  const definite =
    error.code === 'SESSION_EXPIRED'
      ? !inDoubt
      : error.definite && (!inDoubt || error.code === 'COMPARE_FAILED');
  return error.withDefinite(definite);
}
