import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/base/assert.ts';
import { LEASE_REVOKE_RETRY_MS, Lessor } from '../../src/node/lessor.ts';

describe('Lessor', () => {
  it('tracks nothing without authority', () => {
    const lessor = new Lessor();
    lessor.granted(1, 10, 0);
    expect(lessor.size).toBe(0);
    expect(lessor.renew(1, 0)).toBeNull();
    expect(lessor.due(100_000, 10)).toEqual([]);
    expect(lessor.remaining(1, 0)).toBeNull();
  });

  it('gives every lease its full TTL from the start of authority', () => {
    const lessor = new Lessor();
    lessor.start(
      3,
      [
        [1, 10],
        [2, 20],
      ],
      5_000,
    );
    expect(lessor.term).toBe(3);
    expect(lessor.deadline(1)).toBe(15_000);
    expect(lessor.deadline(2)).toBe(25_000);
    expect(lessor.remaining(1, 5_000)).toBe(10);
    expect(lessor.remaining(1, 14_001)).toBe(1);
    expect(lessor.remaining(1, 20_000)).toBe(0);
    expect(lessor.due(14_999, 10)).toEqual([]);
    expect(lessor.due(15_000, 10)).toEqual([1]);
  });

  it('drops every deadline on losing authority and restarts them at full TTL', () => {
    const lessor = new Lessor();
    lessor.start(1, [[1, 10]], 0);
    lessor.stop();
    expect(lessor.term).toBeNull();
    expect(lessor.size).toBe(0);
    lessor.start(2, [[1, 10]], 9_000);
    expect(lessor.deadline(1)).toBe(19_000);
  });

  it('renews to the given moment + TTL, never earlier than the deadline it had', () => {
    const lessor = new Lessor();
    lessor.start(1, [[1, 10]], 0);
    expect(lessor.renew(1, 4_000, 4_500)).toBe(10);
    expect(lessor.deadline(1)).toBe(14_000);
    // A renewal from an earlier moment, checked later, does not move the deadline back.
    expect(lessor.renew(1, 3_000, 5_000)).toBe(10);
    expect(lessor.deadline(1)).toBe(14_000);
    expect(lessor.renew(2, 5_000)).toBeNull();
  });

  it('refuses to renew a lease whose deadline passed or whose revoke is in flight', () => {
    const lessor = new Lessor();
    lessor.start(
      1,
      [
        [1, 10],
        [2, 10],
      ],
      0,
    );
    // Received before the deadline, answered after it: too late.
    expect(lessor.renew(1, 9_000, 10_000)).toBeNull();
    expect(lessor.due(10_000, 1)).toEqual([1]);
    expect(lessor.renew(1, 10_000)).toBeNull();
    expect(lessor.renew(2, 9_999)).toBe(10);
  });

  it('retries a revoke that has not applied after LEASE_REVOKE_RETRY_MS, at most max per call', () => {
    const lessor = new Lessor();
    lessor.start(
      1,
      [
        [1, 1],
        [2, 1],
        [3, 1],
      ],
      0,
    );
    expect(lessor.due(1_000, 2)).toEqual([1, 2]);
    expect(lessor.due(1_000, 2)).toEqual([3]);
    expect(lessor.due(1_000 + LEASE_REVOKE_RETRY_MS - 1, 10)).toEqual([]);
    lessor.forget(2);
    expect(lessor.due(1_000 + LEASE_REVOKE_RETRY_MS, 10)).toEqual([1, 3]);
  });

  it('starts a grant applied with authority at now + TTL; forget drops it', () => {
    const lessor = new Lessor();
    lessor.start(1, [], 0);
    lessor.granted(7, 5, 2_000);
    expect(lessor.deadline(7)).toBe(7_000);
    lessor.forget(7);
    expect(lessor.deadline(7)).toBeUndefined();
  });

  it('asserts its arguments', () => {
    const lessor = new Lessor();
    expect(() => {
      lessor.start(0, [], 0);
    }).toThrow(AssertionError);
    lessor.start(1, [], 0);
    expect(() => {
      lessor.granted(0, 5, 0);
    }).toThrow(AssertionError);
    expect(() => {
      lessor.granted(1, 0, 0);
    }).toThrow(AssertionError);
    expect(() => {
      lessor.renew(1, 10, 5);
    }).toThrow(AssertionError);
  });

  it('with keepDeadlines (a mutant), old deadlines survive losing and regaining leadership', () => {
    const lessor = new Lessor({ keepDeadlines: true });
    lessor.start(1, [[1, 10]], 0);
    lessor.stop();
    lessor.start(2, [[1, 10]], 9_000);
    expect(lessor.deadline(1)).toBe(10_000);
  });

  it('with trackWhileInactive (a mutant), a follower keeps grant deadlines and uses them as leader', () => {
    const lessor = new Lessor({ trackWhileInactive: true });
    lessor.granted(1, 10, 0);
    lessor.start(2, [[1, 10]], 9_000);
    expect(lessor.deadline(1)).toBe(10_000);
  });
});

/** One step of a leader's life: time passes, then one event. */
type Step =
  | { readonly kind: 'start'; readonly advanceMs: number }
  | { readonly kind: 'stop'; readonly advanceMs: number }
  | { readonly kind: 'grant'; readonly advanceMs: number; readonly id: number; readonly ttl: number }
  | { readonly kind: 'renew'; readonly advanceMs: number; readonly id: number; readonly delayMs: number }
  | { readonly kind: 'due'; readonly advanceMs: number; readonly max: number }
  | { readonly kind: 'forget'; readonly advanceMs: number; readonly id: number };

const IDS = [1, 2, 3, 4];
const advance = fc.integer({ min: 0, max: 4_000 });
const id = fc.constantFrom(...IDS);
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('start' as const), advanceMs: advance }),
  fc.record({ kind: fc.constant('stop' as const), advanceMs: advance }),
  fc.record({
    kind: fc.constant('grant' as const),
    advanceMs: advance,
    id,
    ttl: fc.integer({ min: 1, max: 5 }),
  }),
  fc.record({
    kind: fc.constant('renew' as const),
    advanceMs: advance,
    id,
    delayMs: fc.integer({ min: 0, max: 2_000 }),
  }),
  fc.record({ kind: fc.constant('due' as const), advanceMs: advance, max: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ kind: fc.constant('forget' as const), advanceMs: advance, id }),
);

describe('Lessor properties', () => {
  it('no lease is due before TTL after the start, its grant, or its last renewal; renewals only move deadlines later', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const lessor = new Lessor();
        /** The applied state: lease id → TTL seconds. */
        const leases = new Map<number, number>();
        /** Per lease: the earliest time it may be due (the model). */
        const earliestDue = new Map<number, number>();
        let nowMs = 0;
        let term = 0;
        for (const event of steps) {
          nowMs += event.advanceMs;
          switch (event.kind) {
            case 'start':
              term += 1;
              lessor.start(term, leases, nowMs);
              for (const [lease, ttl] of leases) earliestDue.set(lease, nowMs + ttl * 1000);
              break;
            case 'stop':
              lessor.stop();
              earliestDue.clear();
              break;
            case 'grant':
              if (leases.has(event.id)) break;
              leases.set(event.id, event.ttl);
              lessor.granted(event.id, event.ttl, nowMs);
              if (lessor.term !== null) earliestDue.set(event.id, nowMs + event.ttl * 1000);
              break;
            case 'renew': {
              const before = lessor.deadline(event.id);
              const ttl = lessor.renew(event.id, nowMs, nowMs + event.delayMs);
              const after = lessor.deadline(event.id);
              if (before !== undefined) expect(after).toBeGreaterThanOrEqual(before);
              if (ttl !== null) {
                expect(ttl).toBe(leases.get(event.id));
                const previous = earliestDue.get(event.id) ?? 0;
                earliestDue.set(event.id, Math.max(previous, nowMs + ttl * 1000));
                // The renewal was answered after delayMs: the deadline was still ahead then.
                expect(after).toBeGreaterThan(nowMs + event.delayMs);
              }
              nowMs += event.delayMs;
              break;
            }
            case 'due':
              for (const lease of lessor.due(nowMs, event.max)) {
                expect(leases.has(lease)).toBe(true);
                expect(nowMs).toBeGreaterThanOrEqual(earliestDue.get(lease) ?? Number.POSITIVE_INFINITY);
              }
              break;
            case 'forget':
              leases.delete(event.id);
              earliestDue.delete(event.id);
              lessor.forget(event.id);
              break;
          }
          for (const lease of IDS) {
            const deadline = lessor.deadline(lease);
            if (deadline !== undefined) expect(deadline).toBeGreaterThanOrEqual(earliestDue.get(lease) ?? 0);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('every lease past its deadline is handed out within one retry interval of checks', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 20 }), (ttls) => {
        const lessor = new Lessor();
        lessor.start(
          1,
          ttls.map((ttl, index) => [index + 1, ttl] as const),
          0,
        );
        const seen = new Set<number>();
        // Up to 20 leases of the longest TTL (30 s) come out 3 per check: the last by 33 s.
        for (let nowMs = 0; nowMs <= 35_000; nowMs += 500) {
          for (const lease of lessor.due(nowMs, 3)) {
            expect(nowMs).toBeGreaterThanOrEqual((ttls[lease - 1] ?? 0) * 1000);
            seen.add(lease);
          }
        }
        expect(seen.size).toBe(ttls.length);
      }),
      // The example CI's random run found when the loop ended at 31 s: 20 leases of 30 s.
      { numRuns: 100, examples: [[Array.from({ length: 20 }, () => 30)]] },
    );
  });
});
