import type { RetryPolicy } from './options.ts';

/** Where a call goes: to the leader only, the leader when known, any node, or one given node. */
export type Route =
  { readonly to: 'leader' | 'prefer-leader' | 'any' } | { readonly to: 'node'; readonly endpoint: string };

export interface Call {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: unknown;
  /** Whether the call may run twice without harm: reads yes; writes and membership changes no. */
  readonly idempotent: boolean;
  readonly route: Route;
  /** The answer is text (Prometheus), not a JSON object. */
  readonly text?: boolean;
  /** A status other than 2xx whose body is an answer, not an error (/health answers 503 when unhealthy). */
  readonly answerStatus?: number;
  /** The body carries client_id and sequence (session.ts): a retry is answered, never applied twice. */
  readonly sessioned?: boolean;
}

/**
 * Failures worth another attempt: a leader change, overload, an endpoint down or slow, or a node not
 * yet in the cluster (NOT_INITIALIZED: a member that has not heard from the leader since /init, or a
 * node still to be added; another endpoint may be a member).
 */
export const TRANSIENT_CODES = new Set([
  'NOT_LEADER',
  'NOT_INITIALIZED',
  'NO_LEADER',
  'OVERLOADED',
  'SHUTTING_DOWN',
  'CONNECTION',
  'TIMEOUT',
  'NO_QUORUM',
]);

/**
 * Transient failures from the least to the most telling about why a call failed: when several
 * attempts failed, the error reported is the most telling of them (a NO_QUORUM answer from one node
 * says more than the refused connection of the next). Codes not listed rank above all of these:
 * a server's refusal (UNAUTHENTICATED, FORBIDDEN, INVALID_INPUT, …), TLS_ERROR,
 * BAD_RESPONSE; no retry changes them, so they end the call anyway.
 */
export const TELLING_ORDER: readonly string[] = [
  'CONNECTION',
  'NOT_LEADER',
  'NOT_INITIALIZED', // one endpoint in no cluster says less than a member's answer
  'SHUTTING_DOWN',
  'OVERLOADED',
  'TIMEOUT',
  'NO_LEADER',
  'NO_QUORUM',
];

/** A failure's place in TELLING_ORDER (higher tells more); unlisted codes rank highest. */
export function tellingRank(code: string): number {
  const rank = TELLING_ORDER.indexOf(code);
  return rank < 0 ? TELLING_ORDER.length : rank;
}

/** The more telling of an earlier failure and a later one; a tie goes to the later (newer news). */
export function moreTelling<E extends { readonly code: string }>(earlier: E | null, later: E): E {
  return earlier !== null && tellingRank(earlier.code) > tellingRank(later.code) ? earlier : later;
}

/** Whether a failed attempt is worth another: a session answers a retry, never applies it twice. */
export function shouldRetry(
  call: Call,
  error: { readonly code: string; readonly definite: boolean },
): boolean {
  if (!TRANSIENT_CODES.has(error.code)) return false;
  if (call.idempotent || call.sessioned === true) return true;
  return error.definite; // without a session a write that may have applied is never sent again
}

export const LEADER: Route = { to: 'leader' };
export const PREFER_LEADER: Route = { to: 'prefer-leader' };
export const ANY: Route = { to: 'any' };

export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`KvClient invariant: ${message}`);
}

export function checkPolicy(policy: RetryPolicy): RetryPolicy {
  const { attemptsMax, totalMsMax, backoffMsMin, backoffMsMax } = policy;
  const ok =
    Number.isSafeInteger(attemptsMax) &&
    attemptsMax >= 1 &&
    totalMsMax >= 0 &&
    backoffMsMin >= 0 &&
    backoffMsMin <= backoffMsMax;
  if (!ok) throw new RangeError(`bad retry policy ${JSON.stringify(policy)}`);
  return policy;
}

export function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

/** Full-jitter exponential backoff, never past `endMs`; an abort ends it early. */
export async function backoff(
  retry: RetryPolicy,
  attempt: number,
  endMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const ceilingMs = Math.min(retry.backoffMsMax, retry.backoffMsMin * 2 ** (attempt - 1));
  const delayMs = Math.max(0, Math.min(endMs - Date.now(), Math.floor(Math.random() * ceilingMs)));
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, delayMs);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** An error answer of the API: `{"error":{…}}`. */
export function isErrorBody(body: unknown): boolean {
  return typeof body === 'object' && body !== null && 'error' in body;
}
