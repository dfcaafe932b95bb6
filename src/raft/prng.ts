import { assert } from '../base/assert.ts';

/** The only source of randomness the core sees: injected, seeded, replayable. */
export interface Prng {
  /** Uniform float in [0, 1). */
  nextFloat(): number;
  /** Uniform integer in [min, max] (both inclusive). */
  nextIntInclusive(min: number, max: number): number;
}

/**
 * sfc32 seeded through splitmix32: small, fast and good enough for simulation and election jitter.
 * Deterministic for a given 32-bit seed on every platform.
 */
export class SeededPrng implements Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    assert(Number.isSafeInteger(seed), `prng seed must be a safe integer, got ${seed}`);
    let state = (seed ^ Math.floor(seed / 0x1_0000_0000)) >>> 0;
    const next = (): number => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let warmup = 0; warmup < 12; warmup += 1) this.nextUint32();
  }

  nextUint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  nextFloat(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  nextIntInclusive(min: number, max: number): number {
    assert(Number.isSafeInteger(min) && Number.isSafeInteger(max), 'prng bounds must be safe integers');
    assert(min <= max, `prng bounds inverted: ${min} > ${max}`);
    const span = max - min + 1;
    assert(span <= 0x1_0000_0000, 'prng span must fit in 32 bits');
    return min + Math.floor(this.nextFloat() * span);
  }

  /** True with probability `probability`. */
  chance(probability: number): boolean {
    assert(probability >= 0 && probability <= 1, `probability out of range: ${probability}`);
    return this.nextFloat() < probability;
  }

  /** A fresh 32-bit seed for a child generator (one stream per component keeps runs replayable). */
  fork(): SeededPrng {
    return new SeededPrng(this.nextUint32());
  }
}
