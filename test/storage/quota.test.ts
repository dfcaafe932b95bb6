import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AspenError } from '../../src/api/errors.ts';
import type { LogCommand } from '../../src/api/types.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { mayAddData } from '../../src/node/quota.ts';
import type { Outcome, RaftNode, WriteApplied } from '../../src/node/raft-node.ts';
import { LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { applyPlain } from '../support/apply.ts';
import { startLmdbNode, untilLeader } from './lmdb-nodes.ts';

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-quota-'));
  directories.push(directory);
  return directory;
}

function propose(node: RaftNode, command: LogCommand): Promise<Outcome<WriteApplied>> {
  return new Promise((resolve) => {
    node.write(command, resolve);
  });
}

/** The code and `definite` of a refused write ('applied' when it was not refused). */
async function refusal(node: RaftNode, command: LogCommand): Promise<string> {
  const outcome = await propose(node, command);
  if (outcome.ok) return 'applied';
  return `${outcome.error.code}${outcome.error.definite ? '' : ' (indefinite)'}`;
}

const QUOTA_BYTES = 512 * 1024;
/** 100 keys of 1,000 characters: about 100 KB a batch, so the quota is reached after a few. */
const VALUE = 'v'.repeat(1_000);
const BATCH_KEYS = 100;
/** Batches written at most before the quota must have refused one (20 × 100 KB is four quotas). */
const BATCHES_MAX = 20;

function batchKeys(batch: number): string[] {
  return Array.from({ length: BATCH_KEYS }, (_, key) => `k${batch}-${key}`);
}

/** Every kind of write that may add data, none of which may be written past the quota. */
const ADDING: [string, LogCommand][] = [
  ['Set', { Set: { key: 'new', value: 'x' } }],
  ['SetMulti', { SetMulti: { pairs: [['new', 'x']] } }],
  ['CompareAndSwap', { CompareAndSwap: { key: 'new', expected: null, new_value: 'x' } }],
  [
    'Transaction with a Set in success',
    { Transaction: { compare: [], success: [{ Set: { key: 'new', value: 'x' } }], failure: [] } },
  ],
  [
    'Transaction with a Set in failure only',
    {
      Transaction: {
        compare: [{ key: 'new', target: 'version', op: 'equal', value: 0 }],
        success: [{ Get: { key: 'new' } }],
        failure: [{ Set: { key: 'new', value: 'x' } }],
      },
    },
  ],
  ['LeaseGrant', { LeaseGrant: { lease_id: 0, ttl_seconds: 60 } }],
];

describe('the state machine quota (--quota-backend-bytes) on a RaftNode on LMDB', () => {
  it('admits writes under the quota; past it refuses every write that may add data, definite and unwritten; deletes pass and bring it back under', async () => {
    const storage = LmdbStorage.open(dataDir());
    const node = startLmdbNode(storage, undefined, { quotaBytes: QUOTA_BYTES });
    try {
      await new Promise((resolve) => {
        node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
      });
      await untilLeader(node);
      const machine = node.stateMachine;
      let batches = 0;
      let refused: AspenError | null = null;
      for (; batches < BATCHES_MAX && refused === null; batches += 1) {
        const sizeBefore = machine.sizeBytes;
        const pairs = batchKeys(batches).map((key): [string, string] => [key, VALUE]);
        const outcome = await propose(node, { SetMulti: { pairs } });
        if (outcome.ok) expect(sizeBefore).toBeLessThan(QUOTA_BYTES);
        else refused = outcome.error;
      }
      // A few batches fit (the quota is about five of them), then one is refused.
      expect(batches).toBeGreaterThan(3);
      if (refused === null) throw new Error(`no write refused in ${BATCHES_MAX} batches`);
      const size = machine.sizeBytes;
      expect(size).toBeGreaterThanOrEqual(QUOTA_BYTES);
      expect(refused.code).toBe('QUOTA_EXCEEDED');
      expect(refused.definite).toBe(true);
      expect(refused.message).toBe(
        `the state machine holds ${size} bytes, at its quota of ${QUOTA_BYTES} (--quota-backend-bytes): delete keys, or raise the quota`,
      );
      expect(machine.get(batchKeys(batches - 1)[0] ?? '')).toBeUndefined(); // the refused batch
      const applied = machine.appliedIndex;
      for (const [what, command] of ADDING)
        expect({ what, result: await refusal(node, command) }).toEqual({ what, result: 'QUOTA_EXCEEDED' });
      expect(machine.appliedIndex).toBe(applied); // nothing was proposed
      expect(machine.get('new')).toBeUndefined();
      expect(machine.leaseCount).toBe(0);

      // Deletes and reads-only transactions pass, and deleting enough lets writes pass again.
      const first = batchKeys(0);
      const freeing: [string, LogCommand][] = [
        ['Delete', { Delete: { key: first[0] ?? '' } }],
        ['CompareAndDelete', { CompareAndDelete: { key: first[1] ?? '', expected: VALUE } }],
        [
          'Transaction of a Get and a Delete',
          {
            Transaction: {
              compare: [],
              success: [{ Get: { key: first[2] ?? '' } }, { Delete: { key: first[2] ?? '' } }],
              failure: [],
            },
          },
        ],
        ['LeaseRevoke', { LeaseRevoke: { lease_id: 7 } }],
      ];
      for (const [what, command] of freeing)
        expect({ what, result: await refusal(node, command) }).toEqual({ what, result: 'applied' });
      expect(machine.get(first[1] ?? '')).toBeUndefined();
      expect(machine.get(first[2] ?? '')).toBeUndefined();
      for (let batch = 0; batch < batches - 1; batch += 1)
        expect(await refusal(node, { DeleteMulti: { keys: batchKeys(batch) } })).toBe('applied');
      expect(machine.sizeBytes).toBeLessThan(QUOTA_BYTES);
      for (const [what, command] of ADDING)
        expect({ what, result: await refusal(node, command) }).toEqual({ what, result: 'applied' });
      expect(machine.get('new')?.value).toBe('x');
    } finally {
      node.stop();
      await storage.close();
    }
  });

  it('a node without a quota admits writes whatever the size', async () => {
    const storage = LmdbStorage.open(dataDir());
    const node = startLmdbNode(storage);
    try {
      await new Promise((resolve) => {
        node.init({ voters: [1], votersOutgoing: [], learners: [] }, resolve);
      });
      await untilLeader(node);
      for (let batch = 0; batch < 8; batch += 1) {
        const pairs = batchKeys(batch).map((key): [string, string] => [key, VALUE]);
        expect(await refusal(node, { SetMulti: { pairs } })).toBe('applied');
      }
      expect(node.stateMachine.sizeBytes).toBeGreaterThan(QUOTA_BYTES);
    } finally {
      node.stop();
      await storage.close();
    }
  });
});

describe('mayAddData', () => {
  it('is true exactly for the commands that may write a key or a lease', () => {
    for (const [what, command] of ADDING)
      expect({ what, adds: mayAddData(command) }).toEqual({ what, adds: true });
    const freeing: LogCommand[] = [
      { Delete: { key: 'a' } },
      { DeleteMulti: { keys: ['a'] } },
      { CompareAndDelete: { key: 'a', expected: 'x' } },
      { LeaseRevoke: { lease_id: 1 } },
      {
        Transaction: {
          compare: [],
          success: [{ Get: { key: 'a' } }, { Scan: { prefix: 'a' } }],
          failure: [{ Delete: { key: 'a' } }],
        },
      },
    ];
    for (const command of freeing) expect(mayAddData(command)).toBe(false);
  });
});

describe('MemoryKvStateMachine.sizeBytes', () => {
  it('estimates its records (2 bytes per UTF-16 code unit of each key and value), kept through overwrites, deletes, undone transactions and restore', () => {
    const machine = new MemoryKvStateMachine();
    expect(machine.sizeBytes).toBe(0);
    applyPlain(machine, 1, { Set: { key: 'ab', value: 'cde' } });
    expect(machine.sizeBytes).toBe(10);
    applyPlain(machine, 2, { Set: { key: 'ab', value: 'c' } }); // overwrite: the old value no longer counts
    expect(machine.sizeBytes).toBe(6);
    applyPlain(machine, 3, {
      SetMulti: {
        pairs: [
          ['x', 'yy'],
          ['🙂', 'z'],
        ],
      },
    });
    expect(machine.sizeBytes).toBe(6 + 6 + 6);
    applyPlain(machine, 4, { DeleteMulti: { keys: ['x', 'absent'] } });
    expect(machine.sizeBytes).toBe(12);
    // A Set refused for its lease undoes its branch: the estimate is back where it was.
    applyPlain(machine, 5, {
      Transaction: {
        compare: [],
        success: [
          { Set: { key: 'big', value: 'v'.repeat(100) } },
          { Set: { key: 'leased', value: 'v', lease_id: 99 } },
        ],
        failure: [],
      },
    });
    expect(machine.get('big')).toBeUndefined();
    expect(machine.sizeBytes).toBe(12);
    const restored = new MemoryKvStateMachine();
    restored.restore(machine.snapshot(), 5, { voters: [1], votersOutgoing: [], learners: [] });
    expect(restored.sizeBytes).toBe(12);
    applyPlain(restored, 6, { Delete: { key: 'ab' } });
    expect(restored.sizeBytes).toBe(6);
  });
});
