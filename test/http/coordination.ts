import { expect } from 'vitest';
import {
  KEY_BYTES_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  TXN_SCAN_LIMIT_MAX,
  VALUE_BYTES_MAX,
} from '../../src/api/limits.ts';

/**
 * Compare-and-swap, compare-and-delete and transactions over HTTP, as a client sees them: one
 * scenario and one bad-input table, run against a single in-process node (test/http/server.test.ts)
 * and through a follower that forwards to its leader (test/cluster/forwarding.test.ts).
 */
export interface Answer {
  readonly status: number;
  readonly json: Record<string, unknown>;
}

export type Send = (method: 'GET' | 'POST', path: string, body?: unknown) => Promise<Answer>;

interface Written {
  readonly log_index: number;
  readonly revision: number;
}

async function write(send: Send, command: unknown): Promise<Answer> {
  return send('POST', '/write', { command });
}

/** A write that must succeed: returns its revision, checked to equal its log index. */
async function applied(send: Send, command: unknown): Promise<number> {
  const answer = await write(send, command);
  expect({ status: answer.status, body: answer.json }).toMatchObject({ status: 200 });
  const { log_index: logIndex, revision } = answer.json as unknown as Written;
  expect(revision).toBe(logIndex);
  return revision;
}

function record(value: string, createIndex: number, modIndex: number, version: number) {
  return { value, create_index: createIndex, mod_index: modIndex, version, lease_id: 0 };
}

/** A failed compare: 409 COMPARE_FAILED, definite, with the record found (or null), and only that. */
function expectCompareFailed(answer: Answer, current: ReturnType<typeof record> | null): void {
  expect(answer.status).toBe(409);
  expect(answer.json).toEqual({
    error: { code: 'COMPARE_FAILED', message: expect.any(String) as string, definite: true, current },
  });
}

/** CompareAndSwap and CompareAndDelete: success, failure with the current record, expected null. */
export async function casScenario(send: Send, prefix: string): Promise<void> {
  const key = `${prefix}a`;
  const created = await applied(send, { CompareAndSwap: { key, expected: null, new_value: '1' } });
  const again = await write(send, { CompareAndSwap: { key, expected: null, new_value: 'x' } });
  expectCompareFailed(again, record('1', created, created, 1));
  const swapped = await applied(send, { CompareAndSwap: { key, expected: '1', new_value: '2' } });
  expect(swapped).toBeGreaterThan(created);
  const stale = await write(send, { CompareAndSwap: { key, expected: '1', new_value: '3' } });
  expectCompareFailed(stale, record('2', created, swapped, 2));
  const read = await send('GET', `/read?key=${encodeURIComponent(key)}`);
  expect(read.json).toEqual({
    key,
    ...record('2', created, swapped, 2),
    revision: expect.any(Number) as number,
  });
  expect(read.json.revision as number).toBeGreaterThanOrEqual(swapped);
  const absent = await write(send, {
    CompareAndSwap: { key: `${prefix}missing`, expected: 'v', new_value: 'w' },
  });
  expectCompareFailed(absent, null);
  const wrongDelete = await write(send, { CompareAndDelete: { key, expected: 'nope' } });
  expectCompareFailed(wrongDelete, record('2', created, swapped, 2));
  expectCompareFailed(
    await write(send, { CompareAndDelete: { key: `${prefix}missing`, expected: 'v' } }),
    null,
  );
  const deleted = await applied(send, { CompareAndDelete: { key, expected: '2' } });
  expect(deleted).toBeGreaterThan(swapped);
  expect((await send('GET', `/read?key=${encodeURIComponent(key)}`)).status).toBe(404);
  // Re-created after a delete, the key starts again at version 1.
  const recreated = await applied(send, { CompareAndSwap: { key, expected: null, new_value: 'again' } });
  expect((await send('POST', '/read', { key })).json).toMatchObject(record('again', recreated, recreated, 1));
}

/** Transactions: the success branch with Get/Scan results, the failure branch, an empty one. */
export async function transactionScenario(send: Send, prefix: string): Promise<void> {
  const [x, y, z] = [`${prefix}x`, `${prefix}y`, `${prefix}z`];
  const seeded = await applied(send, {
    SetMulti: {
      pairs: [
        [x, '10'],
        [y, '20'],
      ],
    },
  });
  const success = await write(send, {
    Transaction: {
      compare: [
        { key: x, target: 'value', op: 'equal', value: '10' },
        { key: y, target: 'version', op: 'equal', value: 1 },
        { key: y, target: 'mod_index', op: 'less', value: seeded + 1 },
        { key: `${prefix}none`, target: 'create_index', op: 'equal', value: 0 },
        { key: x, target: 'value', op: 'greater', value: '1' }, // byte order: "10" > "1"
      ],
      success: [
        { Set: { key: x, value: '11' } },
        { Get: { key: x } },
        { Delete: { key: y } },
        { Scan: { prefix, limit: 10 } },
        { Get: { key: `${prefix}none` } },
        { Delete: { key: `${prefix}none` } },
      ],
      failure: [{ Get: { key: x } }],
    },
  });
  expect(success.status).toBe(200);
  const revision = success.json.revision as number;
  expect(success.json).toMatchObject({ log_index: revision, succeeded: true });
  expect(revision).toBeGreaterThan(seeded);
  const xNow = { key: x, ...record('11', seeded, revision, 2) };
  expect(success.json.results).toEqual([
    { Set: { key: x } },
    { Get: xNow },
    { Delete: { key: y, deleted: true } },
    { Scan: { entries: [xNow], is_truncated: false } },
    { Get: null },
    { Delete: { key: `${prefix}none`, deleted: false } },
  ]);
  const failed = await write(send, {
    Transaction: {
      compare: [
        { key: x, target: 'value', op: 'equal', value: '10' },
        { key: `${prefix}none`, target: 'value', op: 'not_equal', value: 'anything' }, // absent: false
      ],
      success: [{ Set: { key: x, value: 'never' } }],
      failure: [{ Set: { key: z, value: 'f' } }, { Get: { key: z } }, { Scan: { prefix, limit: 1 } }],
    },
  });
  expect(failed.status).toBe(200);
  const failedAt = failed.json.revision as number;
  expect(failed.json).toMatchObject({ succeeded: false, log_index: failedAt });
  expect(failed.json.results).toEqual([
    { Set: { key: z } },
    { Get: { key: z, ...record('f', failedAt, failedAt, 1) } },
    { Scan: { entries: [xNow], is_truncated: true } },
  ]);
  expect((await send('GET', `/read?key=${encodeURIComponent(x)}`)).json).toMatchObject({ value: '11' });
  // An empty transaction is a no-op revision, as in etcd.
  const empty = await write(send, { Transaction: { compare: [], success: [], failure: [] } });
  expect(empty.json).toMatchObject({ succeeded: true, results: [] });
  const emptyAt = empty.json.revision as number;
  expect(emptyAt).toBeGreaterThan(failedAt); // the next entry (unless a new leader's blank came between)
  const scan = await send('POST', '/scan', { prefix });
  expect(scan.json).toMatchObject({ count: 2, revision: expect.any(Number) as number });
  expect(scan.json.revision as number).toBeGreaterThanOrEqual(emptyAt);
  const deletion = await send('POST', '/delete', { key: z });
  expect(deletion.json).toEqual({ key: z, deleted: true, revision: expect.any(Number) as number });
  expect(deletion.json.revision as number).toBeGreaterThan(emptyAt);
}

const K = 'txn/k';
const compare = (fields: Record<string, unknown>) => ({
  key: K,
  target: 'value',
  op: 'equal',
  value: 'v',
  ...fields,
});
const txn = (fields: Record<string, unknown>) => ({
  command: { Transaction: { compare: [], success: [], failure: [], ...fields } },
});
const sets = (count: number) =>
  Array.from({ length: count }, (_, index) => ({ Set: { key: `t${index}`, value: 'v' } }));

/** Malformed and oversized CAS, CAD and Transaction bodies for POST /write: [name, body, status, code]. */
export function coordinationBadInputs(): [string, unknown, number, string][] {
  const bigKey = 'k'.repeat(KEY_BYTES_MAX + 1);
  const bigValue = 'v'.repeat(VALUE_BYTES_MAX + 1);
  const cas = (fields: Record<string, unknown>) => ({
    command: { CompareAndSwap: { key: K, expected: 'a', new_value: 'b', ...fields } },
  });
  return [
    [
      'CAS without new_value',
      { command: { CompareAndSwap: { key: K, expected: null } } },
      400,
      'INVALID_INPUT',
    ],
    [
      'CAS without expected',
      { command: { CompareAndSwap: { key: K, new_value: 'b' } } },
      400,
      'INVALID_INPUT',
    ],
    ['CAS expected a number', cas({ expected: 5 }), 400, 'INVALID_INPUT'],
    ['CAS new_value null', cas({ new_value: null }), 400, 'INVALID_INPUT'],
    ['CAS with an extra field', cas({ lease: 1 }), 400, 'INVALID_INPUT'],
    ['CAS key over the limit', cas({ key: bigKey }), 400, 'KEY_TOO_LARGE'],
    ['CAS empty key', cas({ key: '' }), 400, 'INVALID_INPUT'],
    ['CAS new_value over the limit', cas({ new_value: bigValue }), 400, 'VALUE_TOO_LARGE'],
    ['CAS expected over the limit', cas({ expected: bigValue }), 400, 'VALUE_TOO_LARGE'],
    [
      'CAD expected null',
      { command: { CompareAndDelete: { key: K, expected: null } } },
      400,
      'INVALID_INPUT',
    ],
    ['CAD without expected', { command: { CompareAndDelete: { key: K } } }, 400, 'INVALID_INPUT'],
    [
      'CAD with new_value',
      { command: { CompareAndDelete: { key: K, expected: 'a', new_value: 'b' } } },
      400,
      'INVALID_INPUT',
    ],
    [
      'Transaction without failure',
      { command: { Transaction: { compare: [], success: [] } } },
      400,
      'INVALID_INPUT',
    ],
    ['Transaction with an extra field', txn({ timeout: 1 }), 400, 'INVALID_INPUT'],
    ['compare not an array', txn({ compare: {} }), 400, 'INVALID_INPUT'],
    ['success not an array', txn({ success: { Get: { key: K } } }), 400, 'INVALID_INPUT'],
    ['a compare that is a string', txn({ compare: ['k == v'] }), 400, 'INVALID_INPUT'],
    ['compare target unknown', txn({ compare: [compare({ target: 'ttl' })] }), 400, 'INVALID_INPUT'],
    ['compare op unknown', txn({ compare: [compare({ op: 'greater_or_equal' })] }), 400, 'INVALID_INPUT'],
    [
      'compare without value',
      txn({ compare: [{ key: K, target: 'value', op: 'equal' }] }),
      400,
      'INVALID_INPUT',
    ],
    ['compare with an extra field', txn({ compare: [compare({ range_end: 'z' })] }), 400, 'INVALID_INPUT'],
    ['value compare with a number', txn({ compare: [compare({ value: 5 })] }), 400, 'INVALID_INPUT'],
    [
      'version compare with a string',
      txn({ compare: [compare({ target: 'version', value: '5' })] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'mod_index compare negative',
      txn({ compare: [compare({ target: 'mod_index', value: -1 })] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'version compare a fraction',
      txn({ compare: [compare({ target: 'version', value: 1.5 })] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'version compare past 2^53',
      txn({ compare: [compare({ target: 'version', value: 2 ** 60 })] }),
      400,
      'INVALID_INPUT',
    ],
    ['value compare null', txn({ compare: [compare({ value: null })] }), 400, 'INVALID_INPUT'],
    ['compare empty key', txn({ compare: [compare({ key: '' })] }), 400, 'INVALID_INPUT'],
    ['compare key over the limit', txn({ compare: [compare({ key: bigKey })] }), 400, 'KEY_TOO_LARGE'],
    [
      'compare value over the limit',
      txn({ compare: [compare({ value: bigValue })] }),
      400,
      'VALUE_TOO_LARGE',
    ],
    ['an unknown op', txn({ success: [{ Put: { key: K, value: 'v' } }] }), 400, 'INVALID_INPUT'],
    ['two ops in one', txn({ success: [{ Get: { key: K }, Delete: { key: K } }] }), 400, 'INVALID_INPUT'],
    ['an op that is a string', txn({ failure: ['Get'] }), 400, 'INVALID_INPUT'],
    ['Set without value', txn({ success: [{ Set: { key: K } }] }), 400, 'INVALID_INPUT'],
    ['Set value a number', txn({ success: [{ Set: { key: K, value: 1 } }] }), 400, 'INVALID_INPUT'],
    [
      'Set with a negative lease_id (0 is no lease)',
      txn({ success: [{ Set: { key: K, value: 'v', lease_id: -1 } }] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'Set with lease_id a string',
      txn({ success: [{ Set: { key: K, value: 'v', lease_id: '7' } }] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'Set value over the limit',
      txn({ success: [{ Set: { key: K, value: bigValue } }] }),
      400,
      'VALUE_TOO_LARGE',
    ],
    [
      'Delete with an extra field',
      txn({ failure: [{ Delete: { key: K, prev_kv: true } }] }),
      400,
      'INVALID_INPUT',
    ],
    ['Get of an empty key', txn({ success: [{ Get: { key: '' } }] }), 400, 'INVALID_INPUT'],
    ['Get key over the limit', txn({ success: [{ Get: { key: bigKey } }] }), 400, 'KEY_TOO_LARGE'],
    ['Scan without prefix', txn({ success: [{ Scan: { limit: 5 } }] }), 400, 'INVALID_INPUT'],
    ['Scan prefix a number', txn({ success: [{ Scan: { prefix: 5 } }] }), 400, 'INVALID_INPUT'],
    ['Scan prefix over the limit', txn({ success: [{ Scan: { prefix: bigKey } }] }), 400, 'KEY_TOO_LARGE'],
    ['Scan limit 0', txn({ success: [{ Scan: { prefix: 'p', limit: 0 } }] }), 400, 'INVALID_INPUT'],
    [
      'Scan limit over the bound',
      txn({ success: [{ Scan: { prefix: 'p', limit: TXN_SCAN_LIMIT_MAX + 1 } }] }),
      400,
      'INVALID_INPUT',
    ],
    ['Scan limit a string', txn({ success: [{ Scan: { prefix: 'p', limit: '5' } }] }), 400, 'INVALID_INPUT'],
    ['Scan limit null', txn({ success: [{ Scan: { prefix: 'p', limit: null } }] }), 400, 'INVALID_INPUT'],
    [
      `${TXN_COMPARES_MAX + 1} compares`,
      txn({ compare: Array.from({ length: TXN_COMPARES_MAX + 1 }, () => compare({})) }),
      400,
      'BATCH_TOO_LARGE',
    ],
    [`${TXN_OPS_MAX + 1} ops in success`, txn({ success: sets(TXN_OPS_MAX + 1) }), 400, 'BATCH_TOO_LARGE'],
    [`${TXN_OPS_MAX + 1} ops in failure`, txn({ failure: sets(TXN_OPS_MAX + 1) }), 400, 'BATCH_TOO_LARGE'],
    [
      'a key Set twice in one branch',
      txn({ success: [{ Set: { key: K, value: '1' } }, { Set: { key: K, value: '2' } }] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'a key Set and Deleted in one branch',
      txn({ failure: [{ Set: { key: K, value: '1' } }, { Get: { key: K } }, { Delete: { key: K } }] }),
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id without sequence',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1' },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence without client_id',
      { command: { Set: { key: K, value: 'v' } }, sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id empty',
      { command: { Set: { key: K, value: 'v' } }, client_id: '', sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id of 65 characters',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c'.repeat(65), sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id with a space',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c 1', sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id a number',
      { command: { Set: { key: K, value: 'v' } }, client_id: 7, sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'client_id null',
      { command: { Set: { key: K, value: 'v' } }, client_id: null, sequence: 1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence 0',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1', sequence: 0 },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence negative',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1', sequence: -1 },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence fractional',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1', sequence: 1.5 },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence a string',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1', sequence: '1' },
      400,
      'INVALID_INPUT',
    ],
    [
      'sequence past the safe integers',
      { command: { Set: { key: K, value: 'v' } }, client_id: 'c1', sequence: 2 ** 53 },
      400,
      'INVALID_INPUT',
    ],
    ['client_id inside a transaction', txn({ client_id: 'c1', sequence: 1 }), 400, 'INVALID_INPUT'],
  ];
}

/** A client id from a test prefix (a client id is [A-Za-z0-9_-] only). */
function clientIdOf(prefix: string): string {
  return `client-${prefix.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/**
 * Exactly-once writes: a retried sequence (a Set, a CompareAndSwap, a Transaction, a delete, a
 * failed compare) is applied once and answers exactly as the first time; a sequence whose outcome
 * was discarded, and an unknown client not starting at 1, answer 409 SESSION_EXPIRED (not definite).
 */
export async function sessionScenario(send: Send, prefix: string, resultsKept: number): Promise<void> {
  const key = `${prefix}k`;
  const client = clientIdOf(prefix);
  let sequence = 0;
  /** Send a body with the next sequence twice: the second answer must equal the first. */
  const twice = async (path: string, body: Record<string, unknown>): Promise<Answer> => {
    sequence += 1;
    const sent = { ...body, client_id: client, sequence };
    const first = await send('POST', path, sent);
    const retry = await send('POST', path, sent);
    expect(retry).toEqual(first);
    return first;
  };
  const set = await twice('/write', { command: { Set: { key, value: 'v1' } } });
  expect(set.status).toBe(200);
  expect((await send('GET', `/read?key=${encodeURIComponent(key)}`)).json).toMatchObject({ version: 1 });
  const cas = await twice('/write', {
    command: { CompareAndSwap: { key, expected: 'v1', new_value: 'v2' } },
  });
  expect(cas.status).toBe(200); // applied twice, the retry would have been COMPARE_FAILED
  const txn = await twice('/write', {
    command: {
      Transaction: {
        compare: [{ key, target: 'version', op: 'equal', value: 2 }],
        success: [{ Set: { key, value: 'v3' } }, { Get: { key } }],
        failure: [],
      },
    },
  });
  expect(txn.json).toMatchObject({ succeeded: true });
  const failedCas = await twice('/write', {
    command: { CompareAndSwap: { key, expected: 'x', new_value: 'y' } },
  });
  expect(failedCas.json).toMatchObject({ error: { code: 'COMPARE_FAILED', definite: true } });
  const deleted = await twice('/delete', { key });
  expect(deleted.json).toMatchObject({ key, deleted: true });
  expect((await send('GET', `/read?key=${encodeURIComponent(key)}`)).status).toBe(404);
  for (let more = 0; more < resultsKept; more += 1)
    await twice('/write', { command: { Set: { key, value: 'n' } } });
  const expired = await send('POST', '/write', {
    command: { Set: { key, value: 'late' } },
    client_id: client,
    sequence: 1,
  });
  expectSessionExpired(expired);
  const stranger = { client_id: `${client}-new`, sequence: 7 };
  expectSessionExpired(await send('POST', '/delete', { key, ...stranger }));
  expect((await send('GET', `/read?key=${encodeURIComponent(key)}`)).json).toMatchObject({ value: 'n' });
}

function expectSessionExpired(answer: Answer): void {
  expect(answer.status).toBe(409);
  expect(answer.json).toEqual({
    error: { code: 'SESSION_EXPIRED', message: expect.any(String) as string, definite: false },
  });
}
