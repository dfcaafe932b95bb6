import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A small tmpfs to fill up: a real "no space left on device" for LMDB. Mounting needs root (the
 * tests run as root here); without it the test fails with this reason, it is never skipped.
 */
export class Tmpfs {
  readonly path: string;
  private mounted = false;

  constructor(sizeBytes: number) {
    this.path = mkdtempSync(join(tmpdir(), 'aspen-tmpfs-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', this.path], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    } catch (error) {
      rmSync(this.path, { recursive: true, force: true });
      const reason =
        error instanceof Error && 'stderr' in error ? String(error.stderr).trim() : String(error);
      throw new Error(
        `this test fills a small tmpfs and must mount one (run it as root, or in a container with CAP_SYS_ADMIN): mount failed: ${reason}`,
      );
    }
    this.mounted = true;
  }

  /** Give the file system more room, keeping its files (tmpfs resizes in place). */
  grow(sizeBytes: number): void {
    execFileSync('mount', ['-o', `remount,size=${sizeBytes}`, this.path]);
  }

  cleanup(): void {
    if (this.mounted) execFileSync('umount', ['--lazy', this.path]);
    this.mounted = false;
    rmSync(this.path, { recursive: true, force: true });
  }
}
