import { describe, expect, it } from 'vitest';
import { AspenError } from '../../src/api/errors.ts';
import {
  checkJsonBody,
  JSON_DEPTH_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  TXN_SCAN_LIMIT_MAX,
  validateScan,
  validateWriteCommand,
} from '../../src/api/limits.ts';
import { LEASE_ID_MAX } from '../../src/base/limits.ts';

const txn = (fields: Record<string, unknown>) => ({
  Transaction: { compare: [], success: [], failure: [], ...fields },
});

/** Nesting depth of a JSON value as checkJsonBody counts it (the root object is level 1). */
function depth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [node, level] = item;
    if (typeof node !== 'object' || node === null) continue;
    deepest = Math.max(deepest, level);
    for (const child of Object.values(node)) stack.push([child, level + 1]);
  }
  return deepest;
}

describe('validateWriteCommand: CompareAndSwap, CompareAndDelete, Transaction', () => {
  it('accepts the edges of what is valid', () => {
    const valid: unknown[] = [
      { CompareAndSwap: { key: 'k', expected: null, new_value: '' } },
      { CompareAndSwap: { key: 'k', expected: '', new_value: 'v' } },
      { CompareAndDelete: { key: 'k', expected: '' } },
      txn({}),
      txn({ compare: [{ key: 'k', target: 'version', op: 'equal', value: 0 }] }),
      txn({ compare: [{ key: 'k', target: 'lease_id', op: 'less', value: Number.MAX_SAFE_INTEGER }] }),
      txn({ compare: [{ key: 'k', target: 'value', op: 'not_equal', value: '' }] }),
      // The same key in both branches, read twice, or read after a write: all fine.
      txn({ success: [{ Set: { key: 'k', value: '1' } }], failure: [{ Delete: { key: 'k' } }] }),
      txn({ success: [{ Get: { key: 'k' } }, { Set: { key: 'k', value: '1' } }, { Get: { key: 'k' } }] }),
      txn({ success: [{ Scan: { prefix: '' } }, { Scan: { prefix: 'p', limit: TXN_SCAN_LIMIT_MAX } }] }),
    ];
    for (const command of valid)
      expect({ command, problem: validateWriteCommand(command) }).toEqual({
        command,
        problem: null,
      });
  });

  it('names where the problem is, and uses the size codes for sizes', () => {
    const problem = (command: unknown): { code: string; message: string } => {
      const error = validateWriteCommand(command);
      expect(error).toBeInstanceOf(AspenError);
      return { code: (error as AspenError).code, message: (error as AspenError).message };
    };
    expect(
      problem(txn({ success: [{ Get: { key: 'a' } }, { Scan: { prefix: 'p', limit: 0 } }] })).message,
    ).toContain('Transaction.success[1].Scan.limit');
    expect(problem(txn({ compare: [{ key: 'k', target: 'version', op: 'equal', value: '1' }] }))).toEqual({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('Transaction.compare[0].value') as string,
    });
    expect(
      problem(txn({ failure: [{ Set: { key: 'k', value: '1' } }, { Delete: { key: 'k' } }] })).message,
    ).toMatch(/Transaction\.failure\[1\] writes key k a second time/);
    expect(problem(txn({ compare: Array.from({ length: TXN_COMPARES_MAX + 1 }, () => ({})) })).code).toBe(
      'BATCH_TOO_LARGE',
    );
    expect(problem(txn({ failure: Array.from({ length: TXN_OPS_MAX + 1 }, () => ({})) })).code).toBe(
      'BATCH_TOO_LARGE',
    );
    expect(problem({ CompareAndSwap: { key: 'k', expected: 'v', new_value: 'v', client_id: 'c' } })).toEqual({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('unknown field "client_id"') as string,
    });
  });

  it('the deepest and the largest transaction body pass the JSON bounds', () => {
    const compare = Array.from({ length: TXN_COMPARES_MAX }, (_, index) => ({
      key: `k${index}`,
      target: 'value',
      op: 'equal',
      value: 'v',
    }));
    const ops = Array.from({ length: TXN_OPS_MAX }, (_, index) => ({
      Scan: { prefix: `p${index}`, limit: 1 },
    }));
    const body = { command: txn({ compare, success: ops, failure: ops }) };
    expect(depth(body)).toBe(6);
    expect(depth(body)).toBeLessThan(JSON_DEPTH_MAX);
    expect(checkJsonBody(body)).toBeNull();
    expect(validateWriteCommand(body.command)).toBeNull();
  });
});

describe('validateWriteCommand: lease_id on Set', () => {
  const set = (lease: unknown) => ({ Set: { key: 'k', value: 'v', lease_id: lease } });
  const txnSet = (lease: unknown) => txn({ success: [{ Set: { key: 'k', value: 'v', lease_id: lease } }] });

  it('accepts a positive safe integer on a Set and a transaction Set, 0 (no lease), and its absence', () => {
    for (const command of [
      set(1),
      set(LEASE_ID_MAX),
      set(0),
      txnSet(7),
      txnSet(0),
      { Set: { key: 'k', value: 'v' } },
    ])
      expect(validateWriteCommand(command)).toBeNull();
  });

  it('refuses negatives, fractions, strings and ids past LEASE_ID_MAX, naming the field', () => {
    for (const bad of [-1, 1.5, '7', null, '0', -0.5, LEASE_ID_MAX + 1, Number.POSITIVE_INFINITY]) {
      expect(validateWriteCommand(set(bad))).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringMatching(/^lease_id must be 0 \(no lease\) or an integer in \[1, /) as string,
      });
      expect(validateWriteCommand(txnSet(bad))).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining('Transaction.success[0].Set.lease_id') as string,
      });
    }
  });

  it('refuses lease_id on other commands and ops, and lease commands in /write', () => {
    const others: unknown[] = [
      { SetMulti: { pairs: [['k', 'v']], lease_id: 1 } },
      { CompareAndSwap: { key: 'k', expected: null, new_value: 'v', lease_id: 1 } },
      txn({ success: [{ Delete: { key: 'k', lease_id: 1 } }] }),
    ];
    for (const command of others)
      expect(validateWriteCommand(command)?.message).toContain('unknown field "lease_id"');
    expect(validateWriteCommand({ LeaseGrant: { lease_id: 0, ttl_seconds: 10 } })?.message).toContain(
      'unknown LeaseGrant',
    );
    expect(validateWriteCommand({ LeaseRevoke: { lease_id: 1 } })?.code).toBe('INVALID_INPUT');
  });
});

describe('keys the storage engine reserves', () => {
  it('refuses U+0000 to U+0004 in keys, batch keys, compare keys, transaction ops and scan prefixes', () => {
    // lmdb-js returns keys of 64+ UTF-16 units holding these altered from range reads.
    const long = (char: string) => `${'k'.repeat(70)}${char}`;
    const refused: unknown[] = [
      { Set: { key: long('\u0000'), value: 'v' } },
      { Set: { key: '\u0004', value: 'v' } },
      {
        SetMulti: {
          pairs: [
            ['ok', 'v'],
            [long('\u0001'), 'v'],
          ],
        },
      },
      { Delete: { key: long('\u0002') } },
      txn({ compare: [{ key: long('\u0003'), target: 'version', op: 'equal', value: 0 }] }),
      txn({ success: [{ Scan: { prefix: `p\u0000` } }] }),
    ];
    for (const command of refused) {
      const problem = validateWriteCommand(command);
      expect(problem, JSON.stringify(command)).toBeInstanceOf(AspenError);
      expect(problem?.code).toBe('INVALID_INPUT');
      expect(problem?.message).toMatch(/U\+0000 to U\+0004/);
    }
    expect(validateWriteCommand({ Set: { key: long('\u0005'), value: 'v' } })).toBeNull();
    expect(validateScan({ prefix: 'a\u0001' })).toBeInstanceOf(AspenError);
    expect(validateScan({ prefix: 'a\u0005' })).not.toBeInstanceOf(AspenError);
  });
});
