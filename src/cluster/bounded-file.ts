import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { ConfigError } from './errors.ts';

/**
 * A regular file's UTF-8 text, at most `bytesMax` bytes; `what` names it in errors (ConfigError, one
 * line). /dev/zero, a FIFO (opened without blocking) or a directory is refused before anything is
 * read, a larger file after the bound.
 */
export function readBoundedFile(path: string, what: string, bytesMax: number): string {
  let descriptor: number;
  try {
    descriptor = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new ConfigError(
      `cannot read ${what} ${path}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  try {
    const stats = fstatSync(descriptor);
    if (!stats.isFile()) throw new ConfigError(`${what} ${path} is not a regular file`);
    if (stats.size > bytesMax) throw new ConfigError(`${what} ${path} is larger than ${bytesMax} bytes`);
    const buffer = Buffer.alloc(bytesMax + 1);
    let length = 0;
    // Each read moves forward or ends the loop; the buffer bounds the total (a file may grow meanwhile).
    while (length < buffer.length) {
      const read = readSync(descriptor, buffer, length, buffer.length - length, length);
      if (read === 0) break;
      length += read;
    }
    if (length > bytesMax) throw new ConfigError(`${what} ${path} is larger than ${bytesMax} bytes`);
    return new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(
      `cannot read ${what} ${path}: ${error instanceof Error ? error.message : String(error)}`,
    );
  } finally {
    closeSync(descriptor);
  }
}
