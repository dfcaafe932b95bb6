import { AspenError } from '../api/errors.ts';
import type { RaftNode } from './raft-node.ts';
import type { Callback } from './request-tracker.ts';

/**
 * Submit a request to the node and wait at most `timeoutMs` of its clock for the answer; a late
 * answer is ignored. A timeout is indeterminate (a write may still apply): NO_QUORUM while no
 * leader is known, else TIMEOUT.
 */
export function callNode<T>(
  node: RaftNode,
  timeoutMs: number,
  what: string,
  submit: (callback: Callback<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const cancelTimer = node.clock.setTimer(timeoutMs, () => {
      if (settled) return;
      settled = true;
      const leaderless = node.status().leaderId === 0;
      const message = leaderless
        ? `${what}: no leader reachable within ${timeoutMs} ms (is a quorum of nodes up?)`
        : `${what}: no answer within ${timeoutMs} ms`;
      reject(new AspenError(leaderless ? 'NO_QUORUM' : 'TIMEOUT', message, { definite: false }));
    });
    submit((outcome) => {
      if (settled) return;
      settled = true;
      cancelTimer();
      if (outcome.ok) resolve(outcome.value);
      else reject(outcome.error);
    });
  });
}
