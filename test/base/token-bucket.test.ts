import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/base/assert.ts';
import { TokenBucket } from '../../src/base/token-bucket.ts';

describe('TokenBucket', () => {
  it('starts full, empties, and refills at its rate on the given clock', () => {
    const bucket = new TokenBucket(10, 5, 1_000);
    for (let taken = 0; taken < 5; taken += 1) expect(bucket.take(1_000)).toBe(true);
    expect(bucket.take(1_000)).toBe(false);
    expect(bucket.take(1_099)).toBe(false); // 0.99 of a token
    expect(bucket.take(1_100)).toBe(true);
    expect(bucket.take(1_100)).toBe(false);
    // A long pause fills it to its capacity, not beyond.
    let granted = 0;
    for (let attempt = 0; attempt < 20; attempt += 1) if (bucket.take(60_000)) granted += 1;
    expect(granted).toBe(5);
  });

  it('adds nothing for a clock reading earlier than the last', () => {
    const bucket = new TokenBucket(1_000, 1, 5_000);
    expect(bucket.take(5_000)).toBe(true);
    expect(bucket.take(4_000)).toBe(false);
    expect(bucket.take(5_000)).toBe(false);
    expect(bucket.take(5_001)).toBe(true);
  });

  it('refuses a rate or capacity that is not a positive integer, and a clock reading that is not finite', () => {
    expect(() => new TokenBucket(0, 1, 0)).toThrow(AssertionError);
    expect(() => new TokenBucket(1, 0.5, 0)).toThrow(AssertionError);
    expect(() => new TokenBucket(1, 1, Number.NaN)).toThrow(AssertionError);
    expect(() => new TokenBucket(1, 1, 0).take(Number.POSITIVE_INFINITY)).toThrow(AssertionError);
  });

  it('never grants more than capacity + rate × elapsed time, and is deterministic', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000 }),
        fc.integer({ min: 1, max: 100 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 300 }),
        (rate, capacity, steps) => {
          const run = (): boolean[] => {
            const bucket = new TokenBucket(rate, capacity, 0);
            let now = 0;
            return steps.map((step) => {
              now += step;
              return bucket.take(now);
            });
          };
          const answers = run();
          const elapsedMs = steps.reduce((sum, step) => sum + step, 0);
          const granted = answers.filter(Boolean).length;
          expect(granted).toBeLessThanOrEqual(capacity + Math.floor((rate * elapsedMs) / 1000));
          expect(run()).toEqual(answers);
        },
      ),
    );
  });
});
