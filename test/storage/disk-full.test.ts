import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { PersistBatch } from '../../src/node/interfaces.ts';
import { StorageError } from '../../src/storage/errors.ts';
import { WalLogStore, LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { Tmpfs } from './tmpfs.ts';
import { applyPlain } from '../support/apply.ts';

/** Room on the small file system, and what one write puts there. */
const TMPFS_BYTES = 4 * 1024 * 1024;
const VALUE_BYTES = 16 * 1024;
/** More writes than fit: the loops end at the first failure. */
const WRITES_MAX = 1_000;

const mounts: Tmpfs[] = [];
afterAll(() => {
  for (const mount of mounts) mount.cleanup();
});

function persist(store: WalLogStore, batch: PersistBatch): Promise<Error | null> {
  return new Promise((resolve) => {
    store.persist(batch, resolve);
  });
}

describe('LMDB on a full disk', () => {
  it('a log batch that does not fit is reported once as a StorageError naming the full disk, with no unhandled rejection', async () => {
    const tmpfs = new Tmpfs(TMPFS_BYTES);
    mounts.push(tmpfs);
    const directory = join(tmpfs.path, 'node');
    const storage = LmdbStorage.open(directory);
    const store = new WalLogStore(storage);
    const data = new Uint8Array(VALUE_BYTES).fill(7);
    let failure: Error | null = null;
    let index = 1;
    for (; index <= WRITES_MAX && failure === null; index += 1) {
      failure = await persist(store, {
        snapshot: null,
        hardState: { term: 1, vote: 1, commit: index - 1 },
        entries: [{ kind: 'command', term: 1, index, data }],
      });
    }
    expect(failure).toBeInstanceOf(StorageError);
    expect(failure?.message).toMatch(
      new RegExp(
        `^storage failed: no space left on device \\(ENOSPC; \\d+ bytes free; .+\\) in ${directory} while writing the log$`,
      ),
    );
    expect(index).toBeGreaterThan(10); // it did write until the disk was full
    await new Promise((resolve) => setTimeout(resolve, 50)); // an unhandled rejection would surface here and fail the run
    await storage.abandon(); // bounded, whatever state LMDB is in
    // What is on the disk is read from a copy, as a restart would find it.
    tmpfs.grow(TMPFS_BYTES * 4);
    const copy = join(tmpfs.path, 'copy');
    cpSync(directory, copy, { recursive: true });
    const reopened = LmdbStorage.open(copy);
    const { persisted } = new WalLogStore(reopened).load();
    expect(persisted.entries.length).toBe(index - 2); // every batch reported durable is there, the failed one is not
    await reopened.close();
  });

  it('a state-machine batch that does not fit throws a StorageError and leaves the applied index where it was', async () => {
    const tmpfs = new Tmpfs(TMPFS_BYTES);
    mounts.push(tmpfs);
    const directory = join(tmpfs.path, 'node');
    const storage = LmdbStorage.open(directory);
    const machine = new LmdbKvStateMachine(storage);
    const value = 'v'.repeat(VALUE_BYTES);
    let failure: unknown = null;
    for (let index = 1; index <= WRITES_MAX && failure === null; index += 1) {
      try {
        machine.batch(() => {
          applyPlain(machine, index, { Set: { key: `k${index}`, value } });
        });
      } catch (error) {
        failure = error;
      }
    }
    expect(failure).toBeInstanceOf(StorageError);
    expect((failure as StorageError).message).toMatch(
      /^storage failed: no space left on device \(ENOSPC; \d+ bytes free; .+\) in .+ while applying to the state machine$/,
    );
    const applied = machine.appliedIndex;
    expect(applied).toBeGreaterThan(10);
    expect(machine.get(`k${applied + 1}`)).toBeUndefined();
    await storage.abandon();
  });
});
