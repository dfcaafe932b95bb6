import { AssertionError } from '../base/assert.ts';
import type { NodeId } from '../base/ids.ts';

/** Stable error codes of the API, each with its HTTP status (the status table in docs/api.md). */
export const ERROR_STATUS = {
  INVALID_INPUT: 400,
  KEY_TOO_LARGE: 400,
  VALUE_TOO_LARGE: 400,
  BATCH_TOO_LARGE: 400,
  KEY_NOT_FOUND: 404,
  NOT_FOUND: 404,
  ALREADY_INITIALIZED: 409,
  MEMBERSHIP_CHANGE_IN_PROGRESS: 409,
  LEARNER_NOT_CAUGHT_UP: 409,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HOST_NOT_ALLOWED: 421,
  INTERNAL: 500,
  NOT_LEADER: 503,
  NOT_INITIALIZED: 503,
  NO_LEADER: 503,
  NO_QUORUM: 503,
  OVERLOADED: 503,
  SHUTTING_DOWN: 503,
  TIMEOUT: 504,
} as const;

export type AspenErrorCode = keyof typeof ERROR_STATUS;

/**
 * The one error type of the API layer. `definite` tells whether a failed write certainly did not
 * take effect (true) or may still be applied (false: timeouts, lost leadership after proposing).
 */
export class AspenError extends Error {
  override readonly name = 'AspenError';
  readonly code: AspenErrorCode;
  readonly leaderId: NodeId | null;
  readonly definite: boolean;

  constructor(
    code: AspenErrorCode,
    message: string,
    options: { leaderId?: NodeId | null; definite?: boolean; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.leaderId = options.leaderId ?? null;
    this.definite = options.definite ?? true;
  }

  get httpStatus(): number {
    return ERROR_STATUS[this.code];
  }

  /** The seed's `{code, message}`, plus `leader_id` for NOT_LEADER and `definite` (false: a write may still apply). */
  toJSON(): { error: { code: AspenErrorCode; message: string; leader_id?: NodeId; definite: boolean } } {
    const body: { code: AspenErrorCode; message: string; leader_id?: NodeId; definite: boolean } = {
      code: this.code,
      message: this.message,
      definite: this.definite,
    };
    if (this.leaderId !== null) body.leader_id = this.leaderId;
    return { error: body };
  }
}

export function isAspenError(value: unknown): value is AspenError {
  return value instanceof AspenError;
}

/**
 * A broken invariant met where the caller would swallow it (an HTTP error handler, a forwarded
 * request, a libp2p stream handler): it is thrown again outside that caller, so the process stops
 * loudly. Returns whether `error` was one; any other error is the caller's to answer.
 */
export function escalateBrokenInvariant(error: unknown): boolean {
  if (!(error instanceof AssertionError)) return false;
  process.nextTick(() => {
    throw error;
  });
  return true;
}
