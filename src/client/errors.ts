import { ERROR_STATUS, type AspenErrorCode, type CurrentRecord } from '../api/errors.ts';

/** Codes a KvError carries: the server's (src/api/errors.ts, docs/api.md) and the client's own. */
export type KvErrorCode =
  /** The server's; COMPARE_FAILED (409) is a CompareAndSwap or CompareAndDelete whose compare did not hold. */
  | AspenErrorCode
  /** The server has no such route (an older node, e.g. without /cluster-ticket). */
  | 'NOT_FOUND'
  /** Other answers of src/http/server.ts: a non-JSON body, an unexpected server failure. */
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'INTERNAL'
  /** The answer was not the JSON the API promises (or carried an unknown error code). */
  | 'BAD_RESPONSE'
  /** The endpoint could not be reached or the connection broke (definite only when never connected). */
  | 'CONNECTION'
  /** The caller's AbortSignal fired. */
  | 'ABORTED'
  /**
   * The TLS handshake with an https:// endpoint failed: its certificate is not signed by a trusted CA
   * (KvClientOptions.ca), names another host, or the endpoint does not speak TLS. Definite, and never
   * retried: no other attempt changes a certificate.
   */
  | 'TLS_ERROR';

/** Every code an answer of src/http/server.ts may carry; anything else is a BAD_RESPONSE. */
const SERVER_CODES = new Set<string>([
  ...Object.keys(ERROR_STATUS),
  'NOT_FOUND',
  'UNSUPPORTED_MEDIA_TYPE',
  'INTERNAL',
]);

/** Server answers that prove the request had no effect (it was refused before anything was proposed). */
const DEFINITE_CODES = new Set<string>([
  'INVALID_INPUT',
  'KEY_TOO_LARGE',
  'VALUE_TOO_LARGE',
  'BATCH_TOO_LARGE',
  'KEY_NOT_FOUND',
  'ALREADY_INITIALIZED',
  'MEMBERSHIP_CHANGE_IN_PROGRESS',
  'BODY_TOO_LARGE',
  'NOT_INITIALIZED',
  'NO_LEADER',
  'OVERLOADED',
  'NOT_FOUND',
  'UNSUPPORTED_MEDIA_TYPE',
  'COMPARE_FAILED',
  // The leader refused before proposing: the state machine is at its quota.
  'QUOTA_EXCEEDED',
  // Lease refusals: nothing was written (an unknown or full lease, an id in use, too many leases).
  'LEASE_NOT_FOUND',
  'LEASE_EXISTS',
  'TOO_MANY_LEASES',
  'TOO_MANY_LEASE_KEYS',
]);

/** The record a COMPARE_FAILED answer found (its key is the request's): a KeyValue without `key`. */
export type CompareCurrent = CurrentRecord;

const CURRENT_COUNTERS = ['create_index', 'mod_index', 'version', 'lease_id'] as const;

/** The `current` of a COMPARE_FAILED answer: the record, null (the key is absent), or undefined when malformed. */
function parseCurrent(raw: unknown): CompareCurrent | null | undefined {
  if (raw === null) return null;
  if (typeof raw !== 'object') return undefined;
  const record = raw as Record<string, unknown>;
  if (typeof record.value !== 'string') return undefined;
  for (const name of CURRENT_COUNTERS) {
    const count = record[name];
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) return undefined;
  }
  return {
    value: record.value,
    create_index: record.create_index as number,
    mod_index: record.mod_index as number,
    version: record.version as number,
    lease_id: record.lease_id as number,
  };
}

/**
 * Whether an error answer proves that nothing was applied. The wire format drops the server's own
 * `definite` flag (it is honoured when present), so two codes are judged by shape:
 * - NOT_LEADER names the leader (`leader_id`) when the node refused before proposing; the answers a
 *   proposal gets after losing leadership or being displaced carry no leader_id and may still apply.
 * - SHUTTING_DOWN is also what writes waiting inside a stopping node get, so it proves nothing.
 */
function isDefinite(code: string, leaderId: number | null, explicit: unknown): boolean {
  if (typeof explicit === 'boolean') return explicit;
  if (code === 'NOT_LEADER') return leaderId !== null;
  return DEFINITE_CODES.has(code);
}

/**
 * Every failure of a KvClient call. `definite` is true when the operation certainly did not take
 * effect (safe to send a write again); false after a timeout or a connection lost mid-request.
 */
export class KvError extends Error {
  override readonly name = 'KvError';
  readonly code: KvErrorCode;
  /** HTTP status of the answer, or null when none arrived. */
  readonly status: number | null;
  readonly leaderId: number | null;
  readonly definite: boolean;
  /** The endpoint that failed (null for failures not tied to one). */
  readonly endpoint: string | null;
  /**
   * COMPARE_FAILED only: the record the compare met (null: the key is absent); undefined for every
   * other code, and when the server's `current` was missing or malformed.
   */
  readonly current: CompareCurrent | null | undefined;
  /** COMPACTED only: the oldest revision the node can still watch from. */
  readonly compactRevision: number | undefined;

  constructor(
    code: KvErrorCode,
    message: string,
    options: {
      status?: number | null;
      leaderId?: number | null;
      definite: boolean;
      endpoint?: string | null;
      current?: CompareCurrent | null;
      compactRevision?: number;
    },
  ) {
    super(message);
    this.code = code;
    this.status = options.status ?? null;
    this.leaderId = options.leaderId ?? null;
    this.definite = options.definite;
    this.endpoint = options.endpoint ?? null;
    this.current = options.current;
    this.compactRevision = options.compactRevision;
  }

  /** The same error with another `definite` (what the whole call proves, not just this attempt). */
  withDefinite(definite: boolean): KvError {
    if (definite === this.definite) return this;
    return new KvError(this.code, this.message, {
      status: this.status,
      leaderId: this.leaderId,
      definite,
      endpoint: this.endpoint,
      ...(this.current === undefined ? {} : { current: this.current }),
      ...(this.compactRevision === undefined ? {} : { compactRevision: this.compactRevision }),
    });
  }

  /** The error an HTTP error answer stands for. */
  static fromAnswer(status: number, body: unknown, endpoint: string): KvError {
    const error = (
      body as {
        error?: {
          code?: unknown;
          message?: unknown;
          leader_id?: unknown;
          definite?: unknown;
          current?: unknown;
          compact_revision?: unknown;
        };
      } | null
    )?.error;
    const given = typeof error?.code === 'string' ? error.code : null;
    const code = given !== null && SERVER_CODES.has(given) ? given : 'BAD_RESPONSE';
    const text = typeof error?.message === 'string' ? error.message : `HTTP ${status}`;
    const message = given === null || given === code ? text : `${given}: ${text}`;
    const leaderId = typeof error?.leader_id === 'number' ? error.leader_id : null;
    const definite = isDefinite(code, leaderId, error?.definite);
    const current = code === 'COMPARE_FAILED' ? parseCurrent(error?.current) : undefined;
    const compactRevision = error?.compact_revision;
    return new KvError(code as KvErrorCode, message, {
      status,
      leaderId,
      definite,
      endpoint,
      ...(current === undefined ? {} : { current }),
      ...(code === 'COMPACTED' && typeof compactRevision === 'number' ? { compactRevision } : {}),
    });
  }
}

export function isKvError(value: unknown): value is KvError {
  return value instanceof KvError;
}
