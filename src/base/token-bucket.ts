import { assert } from './assert.ts';

/**
 * A token bucket told the time by its caller (milliseconds of one monotonic clock): it holds at most
 * `capacity` tokens, gains `ratePerSecond` tokens per second of that clock, starts full, and `take`
 * spends one token if there is one. Nothing here reads a clock or a timer, so the same readings give
 * the same answers (the simulator's virtual time included). A reading earlier than the last one
 * (a clock stepped back) adds nothing. Tokens are counted in thousandths, so whole-millisecond
 * readings refill exactly (no rounding drift).
 */
export class TokenBucket {
  readonly ratePerSecond: number;
  readonly capacity: number;
  /** Thousandths of a token: one millisecond adds `ratePerSecond` of them. */
  private milliTokens: number;
  private lastMs: number;

  constructor(ratePerSecond: number, capacity: number, nowMs: number) {
    assert(
      Number.isSafeInteger(ratePerSecond) && ratePerSecond > 0,
      `a token bucket's rate is a positive integer per second, got ${ratePerSecond}`,
    );
    assert(
      Number.isSafeInteger(capacity) && capacity > 0,
      `a token bucket's capacity is a positive integer, got ${capacity}`,
    );
    assert(Number.isFinite(nowMs), 'a clock reading is a finite number');
    this.ratePerSecond = ratePerSecond;
    this.capacity = capacity;
    this.milliTokens = capacity * 1000;
    this.lastMs = nowMs;
  }

  /** Spend one token at `nowMs`: true if there was one, false (nothing spent) when the bucket is empty. */
  take(nowMs: number): boolean {
    assert(Number.isFinite(nowMs), 'a clock reading is a finite number');
    if (nowMs > this.lastMs) {
      const gained = (nowMs - this.lastMs) * this.ratePerSecond;
      this.milliTokens = Math.min(this.capacity * 1000, this.milliTokens + gained);
      this.lastMs = nowMs;
    }
    assert(
      this.milliTokens >= 0 && this.milliTokens <= this.capacity * 1000,
      'a token bucket holds [0, capacity] tokens',
    );
    if (this.milliTokens < 1000) return false;
    this.milliTokens -= 1000;
    return true;
  }
}
