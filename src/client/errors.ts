/** Codes a KvError carries: the server's (docs/api.md) and the client's own. */
export type KvErrorCode =
  | 'INVALID_INPUT' | 'KEY_TOO_LARGE' | 'VALUE_TOO_LARGE' | 'BATCH_TOO_LARGE' | 'KEY_NOT_FOUND' | 'ALREADY_INITIALIZED'
  | 'MEMBERSHIP_CHANGE_IN_PROGRESS' | 'BODY_TOO_LARGE' | 'NOT_LEADER' | 'NOT_INITIALIZED' | 'NO_LEADER' | 'NO_QUORUM'
  | 'OVERLOADED' | 'SHUTTING_DOWN' | 'TIMEOUT' | 'NOT_FOUND' | 'BAD_RESPONSE'
  /** The endpoint could not be reached (definite when the connection was refused before sending). */
  | 'CONNECTION'
  /** The caller's AbortSignal fired. */
  | 'ABORTED';

/** Server answers that prove a write did not take effect. */
const DEFINITE_CODES = new Set<string>([
  'INVALID_INPUT', 'KEY_TOO_LARGE', 'VALUE_TOO_LARGE', 'BATCH_TOO_LARGE', 'KEY_NOT_FOUND', 'ALREADY_INITIALIZED',
  'MEMBERSHIP_CHANGE_IN_PROGRESS', 'BODY_TOO_LARGE', 'NOT_LEADER', 'NOT_INITIALIZED', 'NO_LEADER', 'OVERLOADED', 'SHUTTING_DOWN', 'NOT_FOUND',
]);

/**
 * Every failure of a KvClient call. `definite` is true when the operation certainly did not take
 * effect (safe to retry a write); false after a timeout or a connection lost mid-request.
 */
export class KvError extends Error {
  override readonly name = 'KvError';
  readonly code: KvErrorCode;
  /** HTTP status of the answer, or null when none arrived. */
  readonly status: number | null;
  readonly leaderId: number | null;
  readonly definite: boolean;
  readonly endpoint: string | null;

  constructor(code: KvErrorCode, message: string, options: { status?: number | null; leaderId?: number | null; definite: boolean; endpoint?: string | null }) {
    super(message);
    this.code = code;
    this.status = options.status ?? null;
    this.leaderId = options.leaderId ?? null;
    this.definite = options.definite;
    this.endpoint = options.endpoint ?? null;
  }

  /** The error an HTTP error answer stands for. */
  static fromAnswer(status: number, body: unknown, endpoint: string): KvError {
    const error = (body as { error?: { code?: unknown; message?: unknown; leader_id?: unknown } } | null)?.error;
    const code = typeof error?.code === 'string' ? error.code : 'BAD_RESPONSE';
    const message = typeof error?.message === 'string' ? error.message : `HTTP ${status}`;
    const leaderId = typeof error?.leader_id === 'number' ? error.leader_id : null;
    return new KvError(code as KvErrorCode, message, { status, leaderId, definite: DEFINITE_CODES.has(code), endpoint });
  }
}
