import { assert, AssertionError } from '../base/assert.ts';
import type { NodeId } from '../base/ids.ts';
import type { KeyValue } from './types.ts';

/** Stable error codes of the API, each with its HTTP status (the status table in docs/api.md). */
export const ERROR_STATUS = {
  INVALID_INPUT: 400,
  KEY_TOO_LARGE: 400,
  VALUE_TOO_LARGE: 400,
  BATCH_TOO_LARGE: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  KEY_NOT_FOUND: 404,
  NOT_FOUND: 404,
  LEASE_NOT_FOUND: 404,
  ALREADY_INITIALIZED: 409,
  MEMBERSHIP_CHANGE_IN_PROGRESS: 409,
  LEARNER_NOT_CAUGHT_UP: 409,
  COMPARE_FAILED: 409,
  SESSION_EXPIRED: 409,
  LEASE_EXISTS: 409,
  TOO_MANY_LEASES: 409,
  TOO_MANY_LEASE_KEYS: 409,
  LOCK_TIMEOUT: 409,
  CAMPAIGN_TIMEOUT: 409,
  NOT_ELECTED: 409,
  COMPACTED: 410,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HOST_NOT_ALLOWED: 421,
  TOO_MANY_REQUESTS: 429,
  INTERNAL: 500,
  NOT_LEADER: 503,
  NOT_INITIALIZED: 503,
  NO_LEADER: 503,
  NO_QUORUM: 503,
  OVERLOADED: 503,
  TOO_MANY_WATCHERS: 503,
  TOO_MANY_WAITERS: 503,
  SHUTTING_DOWN: 503,
  TIMEOUT: 504,
  QUOTA_EXCEEDED: 507,
} as const;

export type AspenErrorCode = keyof typeof ERROR_STATUS;

/** A key's record as COMPARE_FAILED shows it: a KeyValue without the key (the request names it). */
export type CurrentRecord = Omit<KeyValue, 'key'>;

export interface AspenErrorOptions {
  readonly leaderId?: NodeId | null;
  readonly definite?: boolean;
  readonly cause?: unknown;
  /** COMPARE_FAILED only (and required there): the record the compare found, null when the key is absent. */
  readonly current?: CurrentRecord | null;
  /** COMPACTED only (and required there): the oldest revision this node can still watch from. */
  readonly compactRevision?: number;
}

/** The JSON error body of every failed request (docs/api.md). */
export interface ErrorJson {
  readonly code: AspenErrorCode;
  readonly message: string;
  readonly definite: boolean;
  readonly leader_id?: NodeId;
  /** COMPARE_FAILED only. */
  readonly current?: CurrentRecord | null;
  /** COMPACTED only. */
  readonly compact_revision?: number;
}

/**
 * The one error type of the API layer. `definite` tells whether a failed write certainly did not
 * take effect (true) or may still be applied (false: timeouts, lost leadership after proposing).
 * A COMPARE_FAILED carries `current`, the record the compare met (null: absent); no other code does.
 */
export class AspenError extends Error {
  override readonly name = 'AspenError';
  readonly code: AspenErrorCode;
  readonly leaderId: NodeId | null;
  readonly definite: boolean;
  /** COMPARE_FAILED: the record found (null: absent). Undefined for every other code. */
  readonly current: CurrentRecord | null | undefined;
  /** COMPACTED: the oldest revision this node can still watch from. Undefined for every other code. */
  readonly compactRevision: number | undefined;

  constructor(code: AspenErrorCode, message: string, options: AspenErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    assert(
      (code === 'COMPARE_FAILED') === (options.current !== undefined),
      'an AspenError carries current exactly when it is COMPARE_FAILED',
    );
    assert(
      (code === 'COMPACTED') === (options.compactRevision !== undefined),
      'an AspenError carries compactRevision exactly when it is COMPACTED',
    );
    this.code = code;
    this.leaderId = options.leaderId ?? null;
    this.definite = options.definite ?? true;
    this.current = options.current;
    this.compactRevision = options.compactRevision;
  }

  /** A CompareAndSwap or CompareAndDelete that found another record: nothing was written (definite). */
  static compareFailed(key: string, current: CurrentRecord | null): AspenError {
    const found = current === null ? 'the key does not exist' : `the key is at version ${current.version}`;
    return new AspenError('COMPARE_FAILED', `compare failed for key ${key.slice(0, 64)}: ${found}`, {
      current,
    });
  }

  get httpStatus(): number {
    return ERROR_STATUS[this.code];
  }

  /** The seed's `{code, message}`, plus `leader_id` for NOT_LEADER, `definite`, and `current` for COMPARE_FAILED. */
  toJSON(): { error: ErrorJson } {
    return {
      error: {
        code: this.code,
        message: this.message,
        definite: this.definite,
        ...(this.leaderId === null ? {} : { leader_id: this.leaderId }),
        ...(this.current === undefined ? {} : { current: this.current }),
        ...(this.compactRevision === undefined ? {} : { compact_revision: this.compactRevision }),
      },
    };
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
