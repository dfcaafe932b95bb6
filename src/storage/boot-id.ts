import { readFileSync } from 'node:fs';

/**
 * This boot of the machine (Linux: a random id the kernel picks at boot), or null where there is
 * none: then a state machine written without fsync is trusted only after a clean close.
 */
export function machineBootId(): string | null {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return id.length > 0 ? id : null;
  } catch {
    return null;
  }
}
