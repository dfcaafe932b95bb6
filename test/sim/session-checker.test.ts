import { describe, expect, it } from 'vitest';
import { SimViolation } from '../../src/sim/checkers.ts';
import { ObservedKvStateMachine, SessionChecker } from '../../src/sim/session-checker.ts';
import { TEST_TERM } from '../support/apply.ts';

const SET = { Set: { key: 'k', value: 'v' } };
const SESSION = { clientId: 'sim-c1-e0', sequence: 1 };

describe('the exactly-once checker', () => {
  it('accepts a retry answered from the session table, on every node and after a replay', () => {
    const checker = new SessionChecker();
    const first = new ObservedKvStateMachine(1, checker.observe);
    first.apply(1, SET, SESSION, 10, TEST_TERM);
    const retry = first.apply(2, SET, SESSION, 20, TEST_TERM);
    expect(retry.duplicate).toBe(true);
    // Another node (or the same one after a restart) applies the same entries again: not a second apply.
    const second = new ObservedKvStateMachine(2, checker.observe);
    second.apply(1, SET, SESSION, 10, TEST_TERM);
    second.apply(2, SET, SESSION, 20, TEST_TERM);
    expect(checker.freshApplies).toBe(1);
    expect(checker.duplicateAnswers).toBe(2);
  });

  it('fails when a retried sequence is applied again at another index', () => {
    const checker = new SessionChecker();
    checker.onApplied(1, 3, SESSION, { index: 3, deleted: [], succeeded: true });
    expect(() => {
      checker.onApplied(2, 5, SESSION, { index: 5, deleted: [], succeeded: true });
    }).toThrow(SimViolation);
  });

  it('fails when a duplicate answer carries another apply than the first', () => {
    const checker = new SessionChecker();
    checker.onApplied(1, 3, SESSION, { index: 3, deleted: [], succeeded: true });
    expect(() => {
      checker.onApplied(1, 5, SESSION, { index: 4, deleted: [], succeeded: true, duplicate: true });
    }).toThrow(/answered retry/);
  });

  it('does not count a sequence reused for another kind of command as an apply', () => {
    const checker = new SessionChecker();
    const machine = new ObservedKvStateMachine(1, checker.observe);
    machine.apply(1, SET, SESSION, 10, TEST_TERM);
    const reused = machine.apply(2, { Delete: { key: 'k' } }, SESSION, 20, TEST_TERM);
    expect(reused.sessionReused).toEqual({ ...SESSION, kind: 'Set' });
    expect([checker.freshApplies, checker.duplicateAnswers]).toEqual([1, 0]);
  });

  it('ignores writes without a session and SESSION_EXPIRED answers', () => {
    const checker = new SessionChecker();
    checker.onApplied(1, 3, null, { index: 3, deleted: [], succeeded: true });
    checker.onApplied(
      1,
      4,
      { ...SESSION, sequence: 2 },
      {
        index: 4,
        deleted: [],
        succeeded: false,
        sessionExpired: true,
      },
    );
    expect(checker.freshApplies).toBe(0);
  });
});
