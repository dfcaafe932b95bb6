import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LeaderResult } from '../../src/api/types.ts';
import type { QueueKey } from '../../src/sim/lock-checker.ts';
import { ObserveChecker } from '../../src/sim/observe-checker.ts';

const NAME = 'el0';

/** A checker with `processed` indexes applied, and the failures it reported. */
function checkerOf(processed: number): { checker: ObserveChecker; failures: string[] } {
  const failures: string[] = [];
  const checker = new ObserveChecker(
    [NAME],
    () => processed,
    (message) => failures.push(message),
  );
  return { checker, failures };
}

function candidate(lease: number, token: number, value: string): QueueKey {
  return { key: `${NAME}/${lease.toString(16).padStart(16, '0')}`, token, value };
}

function report(leader: QueueKey | null): LeaderResult | null {
  return leader === null
    ? null
    : { name: NAME, key: leader.key, value: leader.value, revision: leader.token, lease_id: 0 };
}

describe('ObserveChecker', () => {
  it('accepts a stream that reports every change at its revision, from any start', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 30 }),
        fc.nat(),
        (gaps, startChoice) => {
          const { checker, failures } = checkerOf(1_000);
          const changes: { index: number; leader: QueueKey | null }[] = [{ index: 0, leader: null }];
          let index = 0;
          for (const [position, gap] of gaps.entries()) {
            index += gap;
            const leader = position % 3 === 2 ? null : candidate(position + 1, index, `v${position}`);
            checker.onLeader(NAME, index, leader);
            changes.push({ index, leader });
          }
          const start = changes[startChoice % changes.length] ?? { index: 0, leader: null };
          checker.onObserved(1, NAME, start.index, report(start.leader));
          for (const change of changes) {
            if (change.index > start.index) checker.onObserved(1, NAME, change.index, report(change.leader));
          }
          checker.onProgress(1, NAME, index + 10);
          expect(failures).toEqual([]);
        },
      ),
    );
  });

  it('fails a stream that skips a change, even one of the value only', () => {
    const { checker, failures } = checkerOf(100);
    checker.onLeader(NAME, 5, candidate(1, 5, 'a'));
    checker.onLeader(NAME, 8, candidate(1, 5, 'b'));
    checker.onLeader(NAME, 12, candidate(2, 11, 'c'));
    checker.onObserved(1, NAME, 6, report(candidate(1, 5, 'a')));
    checker.onObserved(1, NAME, 12, report(candidate(2, 11, 'c')));
    expect(failures).toHaveLength(1);
    expect(failures[0]).toContain('at revision 8');
  });

  it('fails progress past an unreported change', () => {
    const { checker, failures } = checkerOf(100);
    checker.onObserved(1, NAME, 3, null);
    checker.onLeader(NAME, 7, candidate(1, 7, 'a'));
    checker.onProgress(1, NAME, 6);
    expect(failures).toEqual([]);
    checker.onProgress(1, NAME, 7);
    expect(failures).toHaveLength(1);
  });

  it('fails a report of the wrong leader, of a revision no node applied, or out of order', () => {
    const { checker, failures } = checkerOf(20);
    checker.onLeader(NAME, 5, candidate(1, 5, 'a'));
    checker.onObserved(1, NAME, 6, report(candidate(1, 5, 'stale')));
    checker.onObserved(2, NAME, 21, report(candidate(1, 5, 'a')));
    checker.onObserved(3, NAME, 9, report(candidate(1, 5, 'a')));
    checker.onObserved(3, NAME, 8, report(candidate(1, 5, 'a')));
    expect(failures).toHaveLength(3);
  });
});
