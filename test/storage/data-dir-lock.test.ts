import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDirLock, LOCK_PID_FILE } from '../../src/storage/data-dir-lock.ts';
import { DataDirInUseError } from '../../src/storage/errors.ts';
import { LmdbStorage } from '../../src/storage/lmdb-store.ts';
import { LmdbKvStateMachine } from '../../src/storage/lmdb-state-machine.ts';
import { applyPlain } from '../support/apply.ts';

const HOLDER = resolve(import.meta.dirname, 'lock-holder.ts');
const HOLDER_READY_MS_MAX = 20_000;
const directories: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'aspen-lock-'));
  directories.push(directory);
  return directory;
}

/** Inode, size and modification time of every LMDB file: what a second opener must not touch. */
function fingerprint(directory: string): Record<string, string> {
  const prints: Record<string, string> = {};
  for (const name of ['aspen.mdb', 'aspen.mdb-lock', 'state.mdb', 'state.mdb-lock', 'node.key']) {
    const path = join(directory, name);
    if (!existsSync(path)) continue;
    const stats = statSync(path);
    prints[name] = `${stats.ino}/${stats.size}/${stats.mtimeMs}`;
  }
  return prints;
}

/** Start a process that holds `directory` and resolve with it once it says so. */
function holder(directory: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [HOLDER, directory], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      reject(new Error('the holder did not start'));
    }, HOLDER_READY_MS_MAX);
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('HELD ')) return;
      clearTimeout(timer);
      resolvePromise(child);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the holder exited with ${code}`));
    });
  });
}

describe('one process per data directory', () => {
  it('a second open is refused naming the holder, touches nothing in the directory, and works once the first closes', async () => {
    const directory = dataDir();
    const first = LmdbStorage.open(directory);
    const machine = new LmdbKvStateMachine(first);
    applyPlain(machine, 1, { Set: { key: 'k', value: 'v' } });
    const before = fingerprint(directory);
    expect(Object.keys(before)).toEqual(expect.arrayContaining(['aspen.mdb', 'state.mdb']));
    expect(() => LmdbStorage.open(directory)).toThrow(DataDirInUseError);
    expect(() => LmdbStorage.open(directory)).toThrow(
      `data directory in use by pid ${process.pid}: ${directory}`,
    );
    expect(fingerprint(directory)).toEqual(before);
    expect(machine.get('k')?.value).toBe('v'); // the live state machine is intact
    applyPlain(machine, 2, { Set: { key: 'k2', value: 'v2' } });
    await first.close();
    expect(existsSync(join(directory, LOCK_PID_FILE))).toBe(false);
    const second = LmdbStorage.open(directory);
    expect(second.stateRebuilt).toBe(false); // closed cleanly by its only user: trusted
    const reopened = new LmdbKvStateMachine(second);
    expect([reopened.get('k')?.value, reopened.get('k2')?.value, reopened.appliedIndex]).toEqual([
      'v',
      'v2',
      2,
    ]);
    await second.close();
  });

  it('another process holding the directory is named by pid; once it is SIGKILLed the directory opens at once', async () => {
    const directory = dataDir();
    const child = await holder(directory);
    expect(() => DataDirLock.acquire(directory)).toThrow(`data directory in use by pid ${child.pid ?? 0}`);
    const before = fingerprint(directory);
    expect(() => LmdbStorage.open(directory)).toThrow(DataDirInUseError);
    expect(fingerprint(directory)).toEqual(before);
    const exited = new Promise((resolvePromise) => {
      child.once('exit', resolvePromise);
    });
    child.kill('SIGKILL');
    await exited;
    const storage = LmdbStorage.open(directory); // no wait, no stale lock to clean up
    // The holder never closed, but the machine did not reboot: its page cache kept every commit.
    expect(storage.stateRebuilt).toBe(false);
    await storage.close();
  });

  it('release is idempotent and removes the pid file; the lock can be taken again', () => {
    const directory = dataDir();
    const lock = DataDirLock.acquire(directory);
    expect(lock.held).toBe(true);
    expect(existsSync(join(directory, LOCK_PID_FILE))).toBe(true);
    lock.release();
    lock.release();
    expect(lock.held).toBe(false);
    expect(existsSync(join(directory, LOCK_PID_FILE))).toBe(false);
    DataDirLock.acquire(directory).release();
  });
});
