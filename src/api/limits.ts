import { AspenError } from './errors.ts';
import type { WriteCommand } from './types.ts';

/** Size limits of DESIGN.md section 9, checked before anything is proposed. */
export const KEY_BYTES_MAX = 1024;
export const VALUE_BYTES_MAX = 1024 * 1024;
export const BATCH_KEYS_MAX = 100;
/** Scan page size: default and bound (DESIGN.md section 9). */
export const SCAN_LIMIT_DEFAULT = 1_000;
export const SCAN_LIMIT_MAX = 10_000;

const encoder = new TextEncoder();

function utf8Length(text: string): number {
  // Fast path: every UTF-16 unit is at most 3 UTF-8 bytes.
  if (text.length * 3 <= KEY_BYTES_MAX) return text.length;
  return encoder.encode(text).byteLength;
}

function checkKey(key: unknown): AspenError | null {
  if (typeof key !== 'string') return new AspenError('INVALID_INPUT', 'key must be a string');
  if (key.length === 0) return new AspenError('INVALID_INPUT', 'key must not be empty');
  const bytes = utf8Length(key);
  if (bytes > KEY_BYTES_MAX) return new AspenError('KEY_TOO_LARGE', `key is ${bytes} bytes; the limit is ${KEY_BYTES_MAX}`);
  return null;
}

function checkValue(value: unknown): AspenError | null {
  if (typeof value !== 'string') return new AspenError('INVALID_INPUT', 'value must be a string');
  // Each UTF-16 unit is at most 3 UTF-8 bytes; measure exactly only near the limit.
  const bytes = value.length * 3 <= VALUE_BYTES_MAX ? value.length : encoder.encode(value).byteLength;
  if (bytes > VALUE_BYTES_MAX) return new AspenError('VALUE_TOO_LARGE', `value is ${bytes} bytes; the limit is ${VALUE_BYTES_MAX}`);
  return null;
}

function checkBatchSize(count: number): AspenError | null {
  if (count === 0) return new AspenError('INVALID_INPUT', 'a batch needs at least one key');
  if (count > BATCH_KEYS_MAX) return new AspenError('BATCH_TOO_LARGE', `a batch has ${count} keys; the limit is ${BATCH_KEYS_MAX}`);
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validate an untrusted write command; returns the first problem or null. */
export function validateWriteCommand(command: unknown): AspenError | null {
  if (!isRecord(command)) return new AspenError('INVALID_INPUT', 'command must be an object');
  const kinds = Object.keys(command);
  if (kinds.length !== 1) return new AspenError('INVALID_INPUT', 'command must have exactly one of Set, SetMulti, Delete, DeleteMulti');
  const body = command[kinds[0] ?? ''];
  if (!isRecord(body)) return new AspenError('INVALID_INPUT', 'command body must be an object');
  switch (kinds[0]) {
    case 'Set':
      return checkKey(body.key) ?? checkValue(body.value);
    case 'Delete':
      return checkKey(body.key);
    case 'SetMulti':
      return checkPairs(body.pairs);
    case 'DeleteMulti':
      return checkKeys(body.keys);
    default:
      return new AspenError('INVALID_INPUT', `unknown command ${kinds[0] ?? ''}`);
  }
}

function checkPairs(pairs: unknown): AspenError | null {
  if (!Array.isArray(pairs)) return new AspenError('INVALID_INPUT', 'pairs must be an array of [key, value]');
  const sizeProblem = checkBatchSize(pairs.length);
  if (sizeProblem !== null) return sizeProblem;
  for (const pair of pairs as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return new AspenError('INVALID_INPUT', 'each pair must be [key, value]');
    const problem = checkKey(pair[0]) ?? checkValue(pair[1]);
    if (problem !== null) return problem;
  }
  return null;
}

function checkKeys(keys: unknown): AspenError | null {
  if (!Array.isArray(keys)) return new AspenError('INVALID_INPUT', 'keys must be an array of strings');
  const sizeProblem = checkBatchSize(keys.length);
  if (sizeProblem !== null) return sizeProblem;
  for (const key of keys as unknown[]) {
    const problem = checkKey(key);
    if (problem !== null) return problem;
  }
  return null;
}

/** Validate an untrusted key (reads, deletes). */
export function validateKey(key: unknown): AspenError | null {
  return checkKey(key);
}

/** Keys a command touches (for routing and history partitioning). */
export function commandKeys(command: WriteCommand): string[] {
  if ('Set' in command) return [command.Set.key];
  if ('Delete' in command) return [command.Delete.key];
  if ('SetMulti' in command) return command.SetMulti.pairs.map((pair) => pair[0]);
  return [...command.DeleteMulti.keys];
}

/** A raft_addr is "ipv4:port" (the seed's form) or a multiaddr ("/ip4/…/tcp/…"). */
/** Longest raft_addr or addr accepted: host:port, a multiaddr, or a comma-separated few (as discovery finds them). */
export const ADDRESS_CHARS_MAX = 1_024;

export function isRaftAddress(text: string): boolean {
  if (text.startsWith('/')) return text.length <= ADDRESS_CHARS_MAX && !/\s/.test(text);
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(text);
  if (match === null) return false;
  const octets = match.slice(1, 5).map(Number);
  return octets.every((octet) => octet <= 255) && Number(match[5]) <= 65_535;
}
