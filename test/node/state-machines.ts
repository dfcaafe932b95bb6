import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';
import { MemoryKvStateMachine, type StateMachine } from '../../src/node/kv-state-machine.ts';
import { LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';

/**
 * LMDB state machines for one test file, in fresh data dirs: each closed after its test (or by
 * closeLast, to reopen its dir), every dir removed after the file. Construct at module level.
 */
export class LmdbMachines {
  private readonly prefix: string;
  private readonly directories: string[] = [];
  private readonly open: LmdbStorage[] = [];

  constructor(prefix: string) {
    this.prefix = prefix;
    afterEach(async () => {
      for (const storage of this.open.splice(0)) await storage.close();
    });
    afterAll(() => {
      for (const directory of this.directories) rmSync(directory, { recursive: true, force: true });
    });
  }

  directory(): string {
    const directory = mkdtempSync(join(tmpdir(), this.prefix));
    this.directories.push(directory);
    return directory;
  }

  machine(directory = this.directory()): LmdbKvStateMachine {
    const storage = LmdbStorage.open(directory);
    this.open.push(storage);
    return new LmdbKvStateMachine(storage);
  }

  /** Close the storage of the machine opened last. */
  async closeLast(): Promise<void> {
    await this.open.pop()?.close();
  }

  /** Both kinds of machine, for describe.each. */
  kinds(): readonly [string, () => StateMachine][] {
    return [
      ['memory', () => new MemoryKvStateMachine()],
      ['lmdb', () => this.machine()],
    ];
  }
}
