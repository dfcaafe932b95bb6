import { describe, expect, it } from 'vitest';
import { runCrashTest } from './crash-harness.ts';

/** Rounds in CI; `npm run test:crash -- --rounds 1000` runs the long version. */
const CI_CRASH_ROUNDS = 50;

describe('SIGKILL crash test on LMDB', () => {
  it(`${CI_CRASH_ROUNDS} kill/restart rounds lose no acknowledged write and half-apply nothing`, async () => {
    const report = await runCrashTest(CI_CRASH_ROUNDS, 7);
    expect(report.problems).toEqual([]);
    expect(report.acknowledged).toBeGreaterThan(CI_CRASH_ROUNDS);
    expect(report.sent).toBeGreaterThan(report.acknowledged); // some writes were cut off mid-flight
  }, 300_000);
});
