import { chmodSync, closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Replace the file at `path` with `text`, readable by its owner only (mode 0600), durably: a whole
 * new file is written and synced, then renamed over the old one and the directory synced, so a
 * crash leaves the old file or the new, never half of one.
 */
export function writeSecretFile(path: string, text: string): void {
  const staging = `${path}.${process.pid}.tmp`;
  rmSync(staging, { force: true }); // a leftover of a crashed write would keep its own mode
  const file = openSync(staging, 'wx', 0o600);
  try {
    writeSync(file, text);
    fsyncSync(file);
  } finally {
    closeSync(file);
  }
  chmodSync(staging, 0o600); // whatever the umask
  renameSync(staging, path);
  const directory = openSync(dirname(path), 'r');
  try {
    fsyncSync(directory);
  } finally {
    closeSync(directory);
  }
}
