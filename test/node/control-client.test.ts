import { afterEach, describe, expect, it } from 'vitest';
import { AspenError } from '../../src/api/errors.ts';
import { BATCH_KEYS_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../../src/api/limits.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import type { RaftNode } from '../../src/node/raft-node.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';
import { startMemoryNode } from '../support/memory-node.ts';

const stops: (() => void)[] = [];

afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

function singleNode(
  requestTimeoutMs = 2_000,
  logStore = new MemoryLogStore(),
): { client: RaftControlClient; node: RaftNode } {
  const node = startMemoryNode({}, logStore);
  stops.push(() => {
    node.stop();
  });
  return { client: new RaftControlClient(node, { requestTimeoutMs }), node };
}

const members = (ids: number[]) =>
  ids.map((id) => ({ id, addr: `node-${id}`, raft_addr: `127.0.0.1:${26000 + id}` }));

async function expectCode(promise: Promise<unknown>, code: string): Promise<AspenError> {
  const error: unknown = await promise.then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(AspenError);
  expect((error as AspenError).code).toBe(code);
  return error as AspenError;
}

describe('RaftControlClient on a single in-process node', () => {
  it('initializes, writes and reads back with revisions', async () => {
    const { client } = singleNode();
    const state = await client.init({ initial_members: members([1]) });
    expect(state.members).toEqual([1]);
    expect(state.nodes[0]?.raft_addr).toBe('127.0.0.1:26001');
    const first = await client.write({ command: { Set: { key: 'greeting', value: 'hello' } } });
    const second = await client.write({ command: { Set: { key: 'greeting', value: 'hello world' } } });
    expect(second.log_index).toBeGreaterThan(first.log_index);
    const read = await client.read({ key: 'greeting' });
    expect(read).toEqual({
      key: 'greeting',
      value: 'hello world',
      create_index: first.log_index,
      mod_index: second.log_index,
      version: 2,
      lease_id: 0,
      revision: second.log_index,
    });
    expect(second.revision).toBe(second.log_index);
    const metrics = await client.getMetrics();
    expect(metrics.state).toBe('Leader');
    expect(metrics.current_leader).toBe(1);
    expect(metrics.last_applied).toBeGreaterThanOrEqual(second.log_index);
  });

  it('maps compare outcomes: a failed CAS or CAD is COMPARE_FAILED with the record; a transaction its results', async () => {
    const { client } = singleNode();
    await client.init({ initial_members: members([1]) });
    const created = await client.write({
      command: { CompareAndSwap: { key: 'k', expected: null, new_value: 'a' } },
    });
    expect(created).toEqual({
      command: { CompareAndSwap: { key: 'k', expected: null, new_value: 'a' } },
      log_index: created.revision,
      revision: created.revision,
    });
    const failed = await expectCode(
      client.write({ command: { CompareAndSwap: { key: 'k', expected: 'b', new_value: 'c' } } }),
      'COMPARE_FAILED',
    );
    expect(failed.definite).toBe(true);
    const record = {
      value: 'a',
      create_index: created.revision,
      mod_index: created.revision,
      version: 1,
      lease_id: 0,
    };
    expect(failed.current).toEqual(record);
    const missing = await expectCode(
      client.write({ command: { CompareAndDelete: { key: 'gone', expected: 'a' } } }),
      'COMPARE_FAILED',
    );
    expect(missing.current).toBeNull();
    const result = await client.write({
      command: {
        Transaction: {
          compare: [{ key: 'k', target: 'version', op: 'greater', value: 1 }],
          success: [{ Delete: { key: 'k' } }],
          failure: [{ Get: { key: 'k' } }, { Get: { key: 'gone' } }, { Scan: { prefix: 'k' } }],
        },
      },
    });
    expect(result).toMatchObject({
      succeeded: false,
      results: [
        { Get: { key: 'k', ...record } },
        { Get: null },
        { Scan: { entries: [{ key: 'k', ...record }], is_truncated: false } },
      ],
    });
    const deleted = await client.delete({ key: 'k' });
    expect(deleted).toEqual({ key: 'k', deleted: true, revision: result.revision + 1 });
    expect(await client.scan({ prefix: '' })).toMatchObject({ count: 0, revision: deleted.revision });
  });

  it('applies SetMulti, Delete and DeleteMulti', async () => {
    const { client } = singleNode();
    await client.init({ initial_members: members([1]) });
    await client.write({
      command: {
        SetMulti: {
          pairs: [
            ['a', '1'],
            ['b', '2'],
            ['c', '3'],
          ],
        },
      },
    });
    await client.write({ command: { Delete: { key: 'a' } } });
    await client.write({ command: { DeleteMulti: { keys: ['b', 'zzz'] } } });
    await expectCode(client.read({ key: 'a' }), 'KEY_NOT_FOUND');
    await expectCode(client.read({ key: 'b' }), 'KEY_NOT_FOUND');
    expect((await client.read({ key: 'c' })).value).toBe('3');
  });

  it('rejects writes and reads before init with NOT_INITIALIZED', async () => {
    const { client } = singleNode();
    await expectCode(client.write({ command: { Set: { key: 'k', value: 'v' } } }), 'NOT_INITIALIZED');
    await expectCode(client.read({ key: 'k' }), 'NOT_INITIALIZED');
  });

  it('rejects a second init with ALREADY_INITIALIZED and a bad member list with INVALID_INPUT', async () => {
    const { client } = singleNode();
    await expectCode(client.init({ initial_members: [] }), 'INVALID_INPUT');
    await expectCode(client.init({ initial_members: members([2]) }), 'INVALID_INPUT');
    await client.init({ initial_members: members([1]) });
    await expectCode(client.init({ initial_members: members([1]) }), 'ALREADY_INITIALIZED');
  });

  it('checks every size limit before proposing anything', async () => {
    const { client, node } = singleNode();
    await client.init({ initial_members: members([1]) });
    const before = node.status().lastIndex;
    await expectCode(
      client.write({ command: { Set: { key: 'k'.repeat(KEY_BYTES_MAX + 1), value: 'v' } } }),
      'KEY_TOO_LARGE',
    );
    await expectCode(
      client.write({ command: { Set: { key: 'k', value: 'v'.repeat(VALUE_BYTES_MAX + 1) } } }),
      'VALUE_TOO_LARGE',
    );
    const pairs = Array.from({ length: BATCH_KEYS_MAX + 1 }, (_, index): [string, string] => [
      `k${index}`,
      'v',
    ]);
    await expectCode(client.write({ command: { SetMulti: { pairs } } }), 'BATCH_TOO_LARGE');
    await expectCode(client.write({ command: { Set: { key: '', value: 'v' } } }), 'INVALID_INPUT');
    await expectCode(client.write({ command: { Nope: {} } as never }), 'INVALID_INPUT');
    await expectCode(client.read({ key: 'é'.repeat(KEY_BYTES_MAX) }), 'KEY_TOO_LARGE');
    expect(node.status().lastIndex).toBe(before);
  });

  it('accepts a key of exactly the limit in UTF-8 bytes', async () => {
    const { client } = singleNode();
    await client.init({ initial_members: members([1]) });
    const key = 'é'.repeat(KEY_BYTES_MAX / 2);
    await client.write({ command: { Set: { key, value: 'v' } } });
    expect((await client.read({ key })).value).toBe('v');
  });

  it('rejects a write when no quorum can elect a leader (NO_LEADER, 503)', async () => {
    const { client } = singleNode(300);
    // Node 1 bootstraps a 3-voter cluster whose other members never answer: no leader can be elected.
    await client.init({ initial_members: members([1, 2, 3]) });
    const error = await expectCode(client.write({ command: { Set: { key: 'k', value: 'v' } } }), 'NO_LEADER');
    expect(error.httpStatus).toBe(503);
  });

  it('takes a snapshot on demand and restarts from it with the data intact', async () => {
    const logStore = new MemoryLogStore();
    const first = singleNode(2_000, logStore);
    await first.client.init({ initial_members: members([1]) });
    for (let index = 0; index < 20; index += 1)
      await first.client.write({ command: { Set: { key: `k${index % 5}`, value: `v${index}` } } });
    const { snapshot } = await first.client.triggerSnapshot();
    expect(snapshot.index).toBeGreaterThanOrEqual(21);
    await first.client.write({ command: { Set: { key: 'after', value: 'snapshot' } } });
    expect((await first.client.getMetrics()).snapshot?.index).toBe(snapshot.index);
    expect(first.node.status().firstIndex).toBe(snapshot.index + 1);
    first.node.stop();
    const second = singleNode(2_000, logStore);
    for (let attempt = 0; attempt < 100 && second.node.status().role !== 'leader'; attempt += 1)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await second.client.read({ key: 'k4' })).value).toBe('v19');
    expect((await second.client.read({ key: 'after' })).value).toBe('snapshot');
  });

  it('manages learners and voters only on the leader, with typed errors', async () => {
    const { client } = singleNode();
    await expectCode(
      client.addLearner({ learner: { id: 2, addr: 'node-2', raft_addr: '127.0.0.1:26002' } }),
      'NOT_INITIALIZED',
    );
    await client.init({ initial_members: members([1]) });
    await expectCode(client.changeMembership({ members: [] }), 'INVALID_INPUT');
    await expectCode(client.changeMembership({ members: [1, 2] }), 'INVALID_INPUT'); // 2 is not a learner
    await expectCode(
      client.addLearner({ learner: { id: 1, addr: 'node-1', raft_addr: 'x' } }),
      'INVALID_INPUT',
    ); // already a voter
    await expectCode(client.addLearner({ learner: { id: 0 } } as never), 'INVALID_INPUT');
    const state = await client.changeMembership({ members: [1] });
    expect(state.members).toEqual([1]);
  });

  it('times out adding a learner that never catches up', async () => {
    const node = startMemoryNode();
    stops.push(() => {
      node.stop();
    });
    const client = new RaftControlClient(node, { learnerCatchUpTimeoutMs: 200 });
    await client.init({ initial_members: members([1]) });
    for (let index = 0; index < 100; index += 1)
      await client.write({ command: { Set: { key: 'k', value: String(index) } } });
    const error = await expectCode(
      client.addLearner({ learner: { id: 2, addr: 'node-2', raft_addr: '127.0.0.1:26002' } }),
      'TIMEOUT',
    );
    // It never answered: the call takes it out again and says so (the outcome is definite).
    expect(error.definite).toBe(true);
    expect(error.message).toMatch(/removed again/);
    expect((await client.currentState()).learners).toEqual([]);
    expect((await client.getMetrics()).membership_config).toMatchObject({ voters: [1], learners: [] });
    const changes = await expectCode(client.changeMembership({ members: [1, 3] }), 'INVALID_INPUT');
    expect(changes.message).toMatch(/added as a learner first/);
  });

  it('an add-learner waiting for its learner ends with SHUTTING_DOWN when the node stops, not at its timeout', async () => {
    const { client, node } = singleNode();
    await client.init({ initial_members: members([1]) });
    const waiting = client.addLearner({ learner: { id: 2, addr: 'node-2', raft_addr: '127.0.0.1:26002' } });
    await new Promise((resolve) => setTimeout(resolve, 100)); // the learner is in the configuration; the call polls
    node.stop();
    const error = await expectCode(waiting, 'SHUTTING_DOWN');
    expect(error.definite).toBe(false);
  });

  it('fails waiting requests with SHUTTING_DOWN on stop', async () => {
    const { client, node } = singleNode();
    await client.init({ initial_members: members([1]) });
    const pending = client.write({ command: { Set: { key: 'k', value: 'v' } } });
    node.stop();
    await expectCode(pending, 'SHUTTING_DOWN');
    await expectCode(client.write({ command: { Set: { key: 'k', value: 'v' } } }), 'SHUTTING_DOWN');
  });
});
