import { requestFields, validateValue } from './limits.ts';
import { type CheckedLock, checkedLock, checkedUnlockKey } from './lock-validation.ts';

/**
 * Checks of the election calls' untrusted input (docs/api.md "Elections"). An election is a lock
 * whose keys hold the candidates' values: the same names (no "/"), keys, lease and timeout rules.
 */

function checkedValue(value: unknown): string {
  const problem = validateValue(value);
  if (problem !== null) throw problem;
  return value as string;
}

export interface CheckedCampaign extends CheckedLock {
  readonly value: string;
}

/** A campaign: the lock request's fields (checkedLock) and `value`, a valid value. Throws INVALID_INPUT. */
export function checkedCampaign(request: unknown): CheckedCampaign {
  const lock = checkedLock(request);
  return { ...lock, value: checkedValue(requestFields(request).value) };
}

/** A proclaim: `key` a campaign key (as checkedUnlockKey) and `value`. Throws INVALID_INPUT or VALUE_TOO_LARGE. */
export function checkedProclaim(request: unknown): { readonly key: string; readonly value: string } {
  const key = checkedUnlockKey(request);
  return { key, value: checkedValue(requestFields(request).value) };
}
