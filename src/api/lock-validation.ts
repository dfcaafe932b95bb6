import { assert } from '../base/assert.ts';
import {
  LOCK_KEY_SUFFIX_CHARS,
  LOCK_NAME_BYTES_MAX,
  LOCK_TIMEOUT_MS_DEFAULT,
  LOCK_TIMEOUT_MS_MAX,
} from '../base/limits.ts';
import { AspenError } from './errors.ts';
import { checkedLeaseId } from './lease-validation.ts';
import { requestFields, utf8Length, validateKey } from './limits.ts';

/**
 * Checks of the lock calls' untrusted input (docs/api.md "Locks"). A lock key is
 * `<name>/<lease id as 16 lowercase hex digits>`; a name holds no "/", so the keys of one name are
 * exactly the lock keys under `<name>/` and no other name's keys share that prefix ("a" and "a/b"
 * would: the scan of `a/` would meet `a/b/…`).
 */

/** Hex digits of the lease id in a lock key (a safe integer needs at most 14). */
export const LOCK_KEY_LEASE_HEX_DIGITS = 16;
const LEASE_HEX = /^[0-9a-f]{16}$/;

assert(LOCK_KEY_SUFFIX_CHARS === LOCK_KEY_LEASE_HEX_DIGITS + 1, 'a lock key suffix is "/" and the hex id');

/** A lock name: a valid key of at most LOCK_NAME_BYTES_MAX bytes without "/". Throws INVALID_INPUT. */
export function checkedLockName(value: unknown): string {
  const problem = validateKey(value, 'name');
  if (problem !== null) throw problem.code === 'KEY_TOO_LARGE' ? tooLong(value as string) : problem;
  const name = value as string;
  if (utf8Length(name) > LOCK_NAME_BYTES_MAX) throw tooLong(name);
  if (name.includes('/'))
    throw new AspenError(
      'INVALID_INPUT',
      'name must not contain "/" (the keys of a lock are <name>/<lease id>; see docs/api.md "Locks")',
    );
  return name;
}

function tooLong(name: string): AspenError {
  return new AspenError(
    'INVALID_INPUT',
    `name is ${utf8Length(name)} bytes; the limit is ${LOCK_NAME_BYTES_MAX} (a lock key adds ${LOCK_KEY_SUFFIX_CHARS})`,
  );
}

/** The lock key of a lease under a name: `<name>/<lease id as 16 lowercase hex digits>`. */
export function lockKey(name: string, leaseId: number): string {
  assert(Number.isSafeInteger(leaseId) && leaseId > 0, `lock key lease id ${leaseId}`);
  return `${name}/${leaseId.toString(16).padStart(LOCK_KEY_LEASE_HEX_DIGITS, '0')}`;
}

/** The lease id of a key that is a lock key of `name` (`<name>/<16 hex>`, id ≥ 1), else null. */
export function lockKeyLease(key: string, name: string): number | null {
  if (key.length !== name.length + LOCK_KEY_SUFFIX_CHARS || !key.startsWith(`${name}/`)) return null;
  const hex = key.slice(name.length + 1);
  if (!LEASE_HEX.test(hex)) return null;
  const leaseId = Number.parseInt(hex, 16);
  return Number.isSafeInteger(leaseId) && leaseId > 0 ? leaseId : null;
}

export interface CheckedLock {
  readonly name: string;
  readonly leaseId: number;
  readonly timeoutMs: number;
}

/**
 * A lock request: `name` (checkedLockName), `lease_id` a positive safe integer, `timeout_ms` absent
 * (LOCK_TIMEOUT_MS_DEFAULT) or an integer in [1, LOCK_TIMEOUT_MS_MAX]. Throws INVALID_INPUT.
 */
export function checkedLock(request: unknown): CheckedLock {
  const body = requestFields(request);
  const name = checkedLockName(body.name);
  const leaseId = checkedLeaseId(body.lease_id);
  const timeoutMs = body.timeout_ms ?? LOCK_TIMEOUT_MS_DEFAULT;
  if (
    typeof timeoutMs !== 'number' ||
    !Number.isSafeInteger(timeoutMs) ||
    timeoutMs < 1 ||
    timeoutMs > LOCK_TIMEOUT_MS_MAX
  )
    throw new AspenError('INVALID_INPUT', `timeout_ms must be an integer in [1, ${LOCK_TIMEOUT_MS_MAX}]`);
  return { name, leaseId, timeoutMs };
}

/** An unlock request: `key` a lock key (`<name>/<16 lowercase hex digits>`, valid name). Throws INVALID_INPUT. */
export function checkedUnlockKey(request: unknown): string {
  const key = requestFields(request).key;
  const problem = validateKey(key, 'key');
  if (problem !== null) throw problem;
  const text = key as string;
  const name = text.slice(0, Math.max(0, text.length - LOCK_KEY_SUFFIX_CHARS));
  const valid = name.length > 0 && !name.includes('/') && lockKeyLease(text, name) !== null;
  if (!valid)
    throw new AspenError(
      'INVALID_INPUT',
      'key must be a lock key: <name>/<lease id as 16 lowercase hex digits>, as POST /lock or /election/campaign answered it',
    );
  checkedLockName(name);
  return text;
}
