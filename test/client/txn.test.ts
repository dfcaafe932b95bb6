import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TXN_COMPARES_MAX, TXN_OPS_MAX } from '../../src/base/limits.ts';
import { Compare, KvClient, KvError, Op, transactionProblem } from '../../src/client/index.ts';
import { realNode } from './real-node.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Seen {
  readonly path: string;
  readonly body: unknown;
}

/** A scripted JSON server: `answer` gives [status, body] per request (its path and how many came before). */
async function fakeServer(
  answer: (path: string, count: number) => readonly [number, unknown],
): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = request.url ?? '';
      const text = Buffer.concat(chunks).toString('utf8');
      seen.push({ path, body: text.length === 0 ? null : (JSON.parse(text) as unknown) });
      const [status, body] = answer(path, seen.length - 1);
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** Without sessions, so request bodies are exactly the commands (sessions: kv-client.test.ts). */
function client(url: string): KvClient {
  const kv = new KvClient({ endpoints: [url], retry: { backoffMsMin: 1, backoffMsMax: 5 }, sessions: false });
  cleanups.push(() => {
    kv.close();
  });
  return kv;
}

/** A server whose /write answers `write` (discovery calls learn node 1, the leader). */
async function writeServer(write: (count: number) => readonly [number, unknown]) {
  let writes = 0;
  const server = await fakeServer((path) => {
    if (path === '/leader') return [200, { leader: 1 }];
    if (path === '/node-info') return [200, { node_id: 1 }];
    writes += 1;
    return write(writes - 1);
  });
  return { kv: client(server.url), writes: () => server.seen.filter((seen) => seen.path === '/write') };
}

const compareFailed = (current: unknown) =>
  [
    409,
    {
      error: { code: 'COMPARE_FAILED', message: 'the compare did not hold', definite: true, current },
    },
  ] as const;
const record = { value: 'old', create_index: 3, mod_index: 5, version: 2, lease_id: 0 };

describe('the transaction builder', () => {
  it('builds the Transaction body of the /write command from Compare and Op helpers', () => {
    const kv = new KvClient({ endpoints: ['http://127.0.0.1:1'] });
    const built = kv
      .txn()
      .if(
        Compare.value('k', 'equal', 'v'),
        Compare.version('n', 'greater', 3),
        Compare.createIndex('a', 'less', 9),
        Compare.modIndex('a', 'not_equal', 4),
        Compare.leaseId('a', 'equal', 0),
        Compare.absent('new'),
        Compare.exists('old'),
      )
      .then(Op.set('k', 'w'), Op.delete('n'), Op.get('a'), Op.scan('app/', 10), Op.scan('x/'))
      .else(Op.get('k'))
      .build();
    expect(built).toEqual({
      compare: [
        { key: 'k', target: 'value', op: 'equal', value: 'v' },
        { key: 'n', target: 'version', op: 'greater', value: 3 },
        { key: 'a', target: 'create_index', op: 'less', value: 9 },
        { key: 'a', target: 'mod_index', op: 'not_equal', value: 4 },
        { key: 'a', target: 'lease_id', op: 'equal', value: 0 },
        { key: 'new', target: 'version', op: 'equal', value: 0 },
        { key: 'old', target: 'version', op: 'greater', value: 0 },
      ],
      success: [
        { Set: { key: 'k', value: 'w' } },
        { Delete: { key: 'n' } },
        { Get: { key: 'a' } },
        { Scan: { prefix: 'app/', limit: 10 } },
        { Scan: { prefix: 'x/' } },
      ],
      failure: [{ Get: { key: 'k' } }],
    });
    expect(kv.txn().build()).toEqual({ compare: [], success: [], failure: [] });
  });

  it('refuses if/then/else out of order or twice, a second commit, and being awaited', async () => {
    const kv = new KvClient({ endpoints: ['http://127.0.0.1:1'] });
    expect(() => kv.txn().then(Op.get('a')).if(Compare.exists('a'))).toThrow(/if\(\) after then\(\)/);
    expect(() => kv.txn().if().if()).toThrow(TypeError);
    expect(() => kv.txn().else().then()).toThrow(/then\(\) after else\(\)/);
    const builder = kv.txn().if(Compare.exists('')); // refused before sending: the key is empty
    await expect(builder.commit()).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(() => builder.else()).toThrow(/after commit\(\)/);
    await expect(builder.commit()).rejects.toThrow(/commit\(\) after commit\(\)/);
    // A builder is not a promise: awaiting it (JS callers; TypeScript refuses it) rejects loudly.
    const thenable = kv.txn() as unknown as PromiseLike<unknown>;
    await expect((async () => await thenable)()).rejects.toThrow(/call \.commit\(\)/);
  });

  it('finds the obvious mistakes without a round trip', () => {
    const txn = (parts: Partial<Parameters<typeof transactionProblem>[0]>) =>
      transactionProblem({ compare: [], success: [], failure: [], ...parts })?.message ?? null;
    const code = (parts: Partial<Parameters<typeof transactionProblem>[0]>) =>
      transactionProblem({ compare: [], success: [], failure: [], ...parts })?.code;
    expect(txn({})).toBeNull();
    const many = Array.from({ length: TXN_COMPARES_MAX + 1 }, (_, at) => Compare.exists(`k${at}`));
    expect(txn({ compare: many })).toMatch(/65 compares; the limit is 64/);
    expect(code({ compare: many })).toBe('BATCH_TOO_LARGE'); // the server's code for the same bound
    expect(txn({ compare: many.slice(1) })).toBeNull();
    const ops = Array.from({ length: TXN_OPS_MAX + 1 }, (_, at) => Op.get(`k${at}`));
    expect(txn({ failure: ops })).toMatch(/else: 129 ops; the limit is 128/);
    expect(code({ success: ops })).toBe('BATCH_TOO_LARGE');
    expect(txn({ success: ops.slice(1) })).toBeNull();
    expect(txn({ success: [Op.set('a', '1'), Op.get('a'), Op.delete('a')] })).toMatch(
      /then op 3: key "a" is written twice in one branch/,
    );
    // The same key in both branches is fine: only one runs.
    expect(txn({ success: [Op.set('a', '1')], failure: [Op.delete('a')] })).toBeNull();
    expect(code({ success: [Op.set('a', '1'), Op.delete('a')] })).toBe('INVALID_INPUT');
    expect(txn({ success: [Op.scan('p', 0)] })).toMatch(/Scan limit is an integer in \[1, 1000\]/);
    expect(txn({ success: [Op.scan('p', 1001)] })).toMatch(/Scan limit/);
    expect(txn({ success: [Op.scan('p', 1.5)] })).toMatch(/Scan limit/);
    expect(txn({ success: [Op.set('', 'v')] })).toMatch(/then op 1: Set takes a non-empty key/);
    expect(txn({ success: [Op.set('a', 'v', 0)] })).toBeNull(); // lease 0: no lease
    expect(txn({ success: [Op.set('a', 'v', -1)] })).toMatch(/then op 1: a Set lease_id is 0 \(no lease\)/);
    expect(txn({ compare: [Compare.version('a', 'equal', -1)] })).toMatch(/compare 1: a version compare/);
    expect(txn({ compare: [Compare.modIndex('a', 'equal', Number.NaN)] })).toMatch(/non-negative integer/);
    const wrongType = { key: 'a', target: 'value', op: 'equal', value: 3 } as const;
    expect(txn({ compare: [wrongType] })).toMatch(/a value compare takes a string/);
  });
});

describe('KvClient transactions against a scripted server', () => {
  it('commits once and answers succeeded, revision and results; a false compare is an answer', async () => {
    const results = [{ Set: { key: 'k' } }, { Get: { key: 'n', ...record } }];
    const { kv, writes } = await writeServer((count) => [
      200,
      { command: {}, log_index: 7 + count, revision: 7 + count, succeeded: count === 0, results },
    ]);
    const held = await kv
      .txn()
      .if(Compare.value('k', 'equal', 'v'))
      .then(Op.set('k', 'w'), Op.get('n'))
      .commit();
    expect(held).toEqual({ succeeded: true, revision: 7, results });
    expect(writes()[0]?.body).toEqual({
      command: {
        Transaction: {
          compare: [{ key: 'k', target: 'value', op: 'equal', value: 'v' }],
          success: [{ Set: { key: 'k', value: 'w' } }, { Get: { key: 'n' } }],
          failure: [],
        },
      },
    });
    expect(await kv.txn().if(Compare.absent('k')).commit()).toMatchObject({ succeeded: false, revision: 8 });
    expect(writes()).toHaveLength(2);
  });

  it('sends nothing for a mistake it can see; a server refusal rejects; an answer without results is BAD_RESPONSE', async () => {
    const { kv, writes } = await writeServer((count) =>
      count === 0
        ? [400, { error: { code: 'INVALID_INPUT', message: 'key is not well-formed', definite: true } }]
        : [200, { command: {}, log_index: 9, revision: 9 }],
    );
    const duplicate = kv.txn().then(Op.set('a', '1'), Op.set('a', '2')).commit();
    await expect(duplicate).rejects.toMatchObject({ code: 'INVALID_INPUT', definite: true, status: null });
    expect(writes()).toHaveLength(0);
    await expect(kv.txn().then(Op.set('a', '1')).commit()).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      status: 400,
    });
    await expect(kv.transaction({ compare: [], success: [], failure: [] })).rejects.toMatchObject({
      code: 'BAD_RESPONSE',
      definite: false,
    });
    expect(writes()).toHaveLength(2);
  });

  it('never sends a transaction or a cas again when its outcome is unknown; does when it certainly did not apply', async () => {
    const timeout = [504, { error: { code: 'TIMEOUT', message: 'no answer', definite: false } }] as const;
    const { kv, writes } = await writeServer((count) =>
      count === 2
        ? [503, { error: { code: 'NO_LEADER', message: 'election', definite: true } }]
        : count === 3
          ? [200, { command: {}, log_index: 4, revision: 4 }]
          : timeout,
    );
    await expect(kv.txn().then(Op.set('a', '1')).commit()).rejects.toMatchObject({
      code: 'TIMEOUT',
      definite: false,
    });
    await expect(kv.cas('a', null, '1')).rejects.toMatchObject({ code: 'TIMEOUT', definite: false });
    expect(writes()).toHaveLength(2);
    expect(await kv.cas('a', null, '1')).toEqual({ succeeded: true, revision: 4 }); // NO_LEADER, then sent again
    expect(writes()).toHaveLength(4);
  });
});

describe('KvClient cas and casDelete against a scripted server', () => {
  it('maps 200 to succeeded with the revision, and 409 COMPARE_FAILED to succeeded false with current', async () => {
    const answers = [
      [200, { command: {}, log_index: 12, revision: 12 }],
      compareFailed(record),
      compareFailed(null),
      compareFailed(record),
      [200, { command: {}, log_index: 13, revision: 13 }],
    ] as const;
    const { kv, writes } = await writeServer((count) => answers[count] ?? [500, {}]);
    expect(await kv.cas('k', null, 'v')).toEqual({ succeeded: true, revision: 12 });
    expect(await kv.cas('k', 'stale', 'v')).toEqual({ succeeded: false, current: { key: 'k', ...record } });
    expect(await kv.cas('gone', 'x', 'v')).toEqual({ succeeded: false, current: null });
    expect(await kv.casDelete('k', 'stale')).toEqual({ succeeded: false, current: { key: 'k', ...record } });
    expect(await kv.casDelete('k', 'old')).toEqual({ succeeded: true, revision: 13 });
    expect(writes().map((seen) => seen.body)).toEqual([
      { command: { CompareAndSwap: { key: 'k', expected: null, new_value: 'v' } } },
      { command: { CompareAndSwap: { key: 'k', expected: 'stale', new_value: 'v' } } },
      { command: { CompareAndSwap: { key: 'gone', expected: 'x', new_value: 'v' } } },
      { command: { CompareAndDelete: { key: 'k', expected: 'stale' } } },
      { command: { CompareAndDelete: { key: 'k', expected: 'old' } } },
    ]);
  });

  it('rejects every other error, and a COMPARE_FAILED whose current is malformed; write() throws COMPARE_FAILED', async () => {
    const answers = [
      [400, { error: { code: 'VALUE_TOO_LARGE', message: 'too large', definite: true } }],
      compareFailed({ value: 'x', version: -1 }),
      compareFailed(undefined),
      [200, { command: {}, log_index: 3 }],
      compareFailed(record),
    ] as const;
    const { kv } = await writeServer((count) => answers[count] ?? [500, {}]);
    await expect(kv.cas('k', 'a', 'b')).rejects.toMatchObject({ code: 'VALUE_TOO_LARGE', status: 400 });
    await expect(kv.cas('k', 'a', 'b')).rejects.toMatchObject({ code: 'BAD_RESPONSE', definite: true });
    await expect(kv.casDelete('k', 'a')).rejects.toMatchObject({ code: 'BAD_RESPONSE', status: 409 });
    await expect(kv.cas('k', 'a', 'b')).rejects.toMatchObject({ code: 'BAD_RESPONSE', definite: false });
    const error = await kv.write({ CompareAndSwap: { key: 'k', expected: 'a', new_value: 'b' } }).then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(KvError);
    expect(error).toMatchObject({ code: 'COMPARE_FAILED', status: 409, definite: true, current: record });
  });
});

describe('KvClient cas and transactions against a real node', () => {
  it('cas, casDelete and txn answer what the state machine did, with revisions', async () => {
    const kv = client(await realNode(cleanups));
    const created = await kv.cas('lock', null, 'me');
    assertSucceeded(created);
    expect(await kv.get('lock')).toMatchObject({ value: 'me', create_index: created.revision, version: 1 });
    expect(await kv.cas('lock', null, 'you')).toEqual({
      succeeded: false,
      current: {
        key: 'lock',
        value: 'me',
        create_index: created.revision,
        mod_index: created.revision,
        version: 1,
        lease_id: 0,
      },
    });
    const swapped = await kv.cas('lock', 'me', 'you');
    assertSucceeded(swapped);
    expect(swapped.revision).toBeGreaterThan(created.revision);
    expect(await kv.casDelete('lock', 'me')).toMatchObject({ succeeded: false, current: { value: 'you' } });
    expect(await kv.casDelete('lock', 'you')).toMatchObject({ succeeded: true });
    expect(await kv.cas('lock', 'you', 'x')).toEqual({ succeeded: false, current: null });

    await kv.write({
      SetMulti: {
        pairs: [
          ['acct/a', '10'],
          ['acct/b', '0'],
        ],
      },
    });
    const move = () =>
      kv
        .txn()
        .if(Compare.value('acct/a', 'equal', '10'), Compare.exists('acct/b'))
        .then(Op.set('acct/a', '5'), Op.set('acct/b', '5'), Op.get('acct/a'), Op.scan('acct/'))
        .else(Op.get('acct/a'), Op.get('acct/none'))
        .commit();
    const moved = await move();
    const at = { mod_index: moved.revision, lease_id: 0 };
    expect(moved).toEqual({
      succeeded: true,
      revision: expect.any(Number) as number,
      results: [
        { Set: { key: 'acct/a' } },
        { Set: { key: 'acct/b' } },
        { Get: { key: 'acct/a', value: '5', version: 2, create_index: expect.any(Number) as number, ...at } },
        {
          Scan: {
            entries: [
              expect.objectContaining({ key: 'acct/a', value: '5', ...at }),
              expect.objectContaining({ key: 'acct/b', value: '5', ...at }),
            ],
            is_truncated: false,
          },
        },
      ],
    });
    const again = await move(); // acct/a is 5 now: the failure branch runs, nothing is written
    expect(again).toMatchObject({ succeeded: false, results: [{ Get: { value: '5' } }, { Get: null }] });
    expect(again.revision).toBeGreaterThan(moved.revision);
    expect(await kv.get('acct/a')).toMatchObject({ mod_index: moved.revision });
    // The server is the authority on what the builder does not check: a body sent as it is.
    const twice = { compare: [], success: [Op.set('x', '1'), Op.delete('x')], failure: [] };
    await expect(kv.transaction(twice)).rejects.toMatchObject({ code: 'INVALID_INPUT', status: 400 });
  });
});

function assertSucceeded(
  result: Awaited<ReturnType<KvClient['cas']>>,
): asserts result is { succeeded: true; revision: number } {
  expect(result).toMatchObject({ succeeded: true, revision: expect.any(Number) as number });
}
