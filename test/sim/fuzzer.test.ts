import { describe, expect, it } from 'vitest';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { SimViolation } from '../../src/sim/checkers.ts';
import { stateMachineDifference } from '../../src/sim/convergence.ts';
import { FAULTS } from '../../src/sim/faults.ts';
import { EXIT_CODE, statusOfError } from '../../src/sim/outcome.ts';
import { describeSettings, drawSettings } from '../../src/sim/settings.ts';
import { applyPlain } from '../support/apply.ts';

describe('the fuzzer', () => {
  it('draws the fault weights of a seed as it always did (old seeds replay)', () => {
    // Pinned from before the fault table: a change here changes what every seed runs.
    expect(drawSettings(42).faults).toEqual({
      partition: 2,
      oneWay: 1,
      crash: 0,
      heal: 2,
      restart: 4,
      lossChange: 0,
      slow: 1,
      membership: 3,
    });
  });

  it('has one weight per fault of the table, each in its range', () => {
    for (let seed = 1; seed <= 50; seed += 1) {
      const weights = drawSettings(seed).faults;
      expect(Object.keys(weights).sort()).toEqual(FAULTS.map((fault) => fault.name).sort());
      for (const fault of FAULTS) {
        expect(weights[fault.name]).toBeGreaterThanOrEqual(fault.weight.min);
        expect(weights[fault.name]).toBeLessThanOrEqual(fault.weight.max);
      }
    }
  });

  it('prints every setting of a seed, one per line', () => {
    const settings = drawSettings(7);
    const text = describeSettings(settings).join('\n');
    for (const [key, value] of Object.entries(settings)) {
      if (typeof value === 'object' && !Array.isArray(value)) {
        for (const inner of Object.keys(value as object)) expect(text).toContain(`${key}.${inner} `);
      } else {
        expect(text).toContain(`${key} `);
      }
    }
    expect(text).toContain('% of faults');
  });

  it('maps every outcome to its own exit code', () => {
    expect(statusOfError(new SimViolation('liveness', 'x'))).toBe('liveness');
    expect(statusOfError(new SimViolation('safety', 'x'))).toBe('correctness');
    expect(statusOfError(new SimViolation('linearizability', 'x'))).toBe('correctness');
    expect(statusOfError(new Error('x'))).toBe('crash');
    const codes = Object.values(EXIT_CODE);
    expect(new Set(codes).size).toBe(codes.length);
    expect(EXIT_CODE.ok).toBe(0);
  });

  it('compares state machines over every key, not only the workload keys', () => {
    const a = new MemoryKvStateMachine();
    const b = new MemoryKvStateMachine();
    applyPlain(a, 1, { Set: { key: 'k1', value: 'x' } });
    applyPlain(b, 1, { Set: { key: 'k1', value: 'x' } });
    expect(stateMachineDifference(a, b)).toBeNull();
    applyPlain(a, 2, { Set: { key: 'bulk-3', value: 'one' } });
    applyPlain(b, 2, { Set: { key: 'bulk-3', value: 'two' } });
    expect(stateMachineDifference(a, b)).toContain('bulk-3');
    const c = new MemoryKvStateMachine();
    applyPlain(c, 1, { Set: { key: 'k1', value: 'x' } });
    applyPlain(c, 2, { Set: { key: 'other', value: 'one' } });
    expect(stateMachineDifference(a, c)).toContain('record 0');
  });
});
