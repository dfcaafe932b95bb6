import { AspenError } from './errors.ts';
import { assert } from '../base/assert.ts';
import type { ClientSession, CompareOp, CompareTarget, TxnOp, WriteCommand } from './types.ts';

import {
  BATCH_KEYS_MAX,
  JSON_DEPTH_MAX,
  JSON_VALUES_MAX,
  KEY_BYTES_MAX,
  LEASE_ID_MAX,
  SCAN_LIMIT_DEFAULT,
  SCAN_LIMIT_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  TXN_SCAN_LIMIT_MAX,
  VALUE_BYTES_MAX,
} from '../base/limits.ts';

/** The size limits (defined once in src/base) are part of the API's contract. */
export {
  ADDRESS_CHARS_MAX,
  PEER_ID_CHARS_MAX,
  BATCH_KEYS_MAX,
  CLUSTER_NODES_MAX,
  JSON_DEPTH_MAX,
  JSON_VALUES_MAX,
  KEY_BYTES_MAX,
  SCAN_LIMIT_DEFAULT,
  SCAN_LIMIT_MAX,
  SCAN_PAGE_BYTES_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  TXN_SCAN_LIMIT_MAX,
  VALUE_BYTES_MAX,
} from '../base/limits.ts';
export { isPeerIdText, isRaftAddress } from '../base/ids.ts';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Exact UTF-8 length of well-formed text, counted without a copy. */
/** An untrusted request's fields, or none when it is not a JSON object (each field is checked by its caller). */
export function requestFields(request: unknown): Record<string, unknown> {
  return typeof request === 'object' && request !== null && !Array.isArray(request)
    ? (request as Record<string, unknown>)
    : {};
}

export function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** UTF-8 length, measured exactly only when the cheap bound (3 bytes per UTF-16 unit) could exceed `limit`. */
function utf8LengthNear(text: string, limit: number): number {
  return text.length * 3 <= limit ? text.length : utf8Length(text);
}

function checkText(text: string, what: string): AspenError | null {
  // A lone surrogate cannot be stored as UTF-8: it would become U+FFFD and collide with other keys.
  if (!text.isWellFormed())
    return new AspenError('INVALID_INPUT', `${what} is not well-formed Unicode (a lone UTF-16 surrogate)`);
  return null;
}

/**
 * Characters a key may not hold: lmdb-js's ordered key encoding uses U+0000–U+0004 as its own
 * markers and returns keys of 64 or more UTF-16 units holding them altered from range reads (scans,
 * snapshots, restores), while exact gets still work. Refused until the `kv` database stores keys as
 * plain UTF-8 bytes (as `lease_keys` does): never written, so never silently changed.
 */
const KEY_RESERVED_CHAR_MAX = 0x04;

function hasReservedChar(key: string): boolean {
  for (let i = 0; i < key.length; i += 1) if (key.charCodeAt(i) <= KEY_RESERVED_CHAR_MAX) return true;
  return false;
}

function checkKey(key: unknown, what = 'key'): AspenError | null {
  if (typeof key !== 'string') return new AspenError('INVALID_INPUT', `${what} must be a string`);
  if (key.length === 0) return new AspenError('INVALID_INPUT', `${what} must not be empty`);
  if (hasReservedChar(key))
    return new AspenError(
      'INVALID_INPUT',
      `${what} must not contain the control characters U+0000 to U+0004 (the storage engine reserves them)`,
    );
  const bytes = utf8LengthNear(key, KEY_BYTES_MAX);
  if (bytes > KEY_BYTES_MAX)
    return new AspenError('KEY_TOO_LARGE', `${what} is ${bytes} bytes; the limit is ${KEY_BYTES_MAX}`);
  return checkText(key, what);
}

function checkValue(value: unknown, what = 'value'): AspenError | null {
  if (typeof value !== 'string') return new AspenError('INVALID_INPUT', `${what} must be a string`);
  const bytes = utf8LengthNear(value, VALUE_BYTES_MAX);
  if (bytes > VALUE_BYTES_MAX)
    return new AspenError('VALUE_TOO_LARGE', `${what} is ${bytes} bytes; the limit is ${VALUE_BYTES_MAX}`);
  return checkText(value, what);
}

function checkBatchSize(count: number): AspenError | null {
  if (count === 0) return new AspenError('INVALID_INPUT', 'a batch needs at least one key');
  if (count > BATCH_KEYS_MAX)
    return new AspenError('BATCH_TOO_LARGE', `a batch has ${count} keys; the limit is ${BATCH_KEYS_MAX}`);
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A lease id as the lease endpoints name one: a positive integer up to LEASE_ID_MAX (a Set also
 * takes 0, meaning no lease: see checkSet).
 */
export function checkLeaseId(value: unknown, what = 'lease_id'): AspenError | null {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= LEASE_ID_MAX)
    return null;
  return new AspenError('INVALID_INPUT', `${what} must be an integer in [1, ${LEASE_ID_MAX}]`);
}

/**
 * A Set's key, value and optional lease; `path` names the Set in messages ('' for a command's).
 * `lease_id` 0 means no lease, like an absent one (etcd's clients send lease 0 for none).
 */
function checkSet(body: Record<string, unknown>, path: string): AspenError | null {
  const leaseId = body.lease_id;
  return (
    checkKey(body.key, `${path}key`) ??
    checkValue(body.value, `${path}value`) ??
    (leaseId === undefined || leaseId === 0 || checkLeaseId(leaseId) === null
      ? null
      : new AspenError(
          'INVALID_INPUT',
          `${path}lease_id must be 0 (no lease) or an integer in [1, ${LEASE_ID_MAX}]`,
        ))
  );
}

/** The fields each command takes, exactly: anything else is refused, never carried into the log. */
const COMMAND_FIELDS = {
  Set: ['key', 'value', 'lease_id'],
  Delete: ['key'],
  SetMulti: ['pairs'],
  DeleteMulti: ['keys'],
  CompareAndSwap: ['key', 'expected', 'new_value'],
  CompareAndDelete: ['key', 'expected'],
  Transaction: ['compare', 'success', 'failure'],
} as const satisfies Record<string, readonly string[]>;

/** The fields of a Transaction's compares and ops, exactly (a Scan's `limit` is optional). */
const COMPARE_FIELDS = ['key', 'target', 'op', 'value'] as const;
const TXN_OP_FIELDS = {
  Set: ['key', 'value', 'lease_id'],
  Delete: ['key'],
  Get: ['key'],
  Scan: ['prefix', 'limit'],
} as const satisfies Record<string, readonly string[]>;
/** The optional fields of commands and ops (all others are required). */
const OPTIONAL_FIELDS: readonly string[] = ['limit', 'lease_id'];

const COMPARE_TARGETS: readonly string[] = [
  'value',
  'version',
  'create_index',
  'mod_index',
  'lease_id',
] satisfies CompareTarget[];
const COMPARE_OPS: readonly string[] = ['equal', 'not_equal', 'greater', 'less'] satisfies CompareOp[];

type CommandKind = keyof typeof COMMAND_FIELDS;

function isCommandKind(kind: string): kind is CommandKind {
  return Object.hasOwn(COMMAND_FIELDS, kind);
}

/**
 * Exactly the named fields, all present but the optional ones: the shape check every command body,
 * compare and op passes first. `what` names the object in the message (a path for nested ones).
 */
function checkFields(
  body: Record<string, unknown>,
  what: string,
  fields: readonly string[],
  optional: readonly string[] = [],
): AspenError | null {
  for (const name of Object.keys(body)) {
    if (!fields.includes(name))
      return new AspenError(
        'INVALID_INPUT',
        `${what} takes only ${fields.join(', ')}; unknown field "${name.slice(0, 64)}"`,
      );
  }
  for (const name of fields) {
    if (!Object.hasOwn(body, name) && !optional.includes(name))
      return new AspenError('INVALID_INPUT', `${what} needs ${name}`);
  }
  return null;
}

/** The one variant of a `{"Kind": {...}}` object (a command or a transaction op), or why it is none. */
function singleVariant(
  value: unknown,
  what: string,
  kinds: readonly string[],
): [string, unknown] | AspenError {
  if (!isRecord(value)) return new AspenError('INVALID_INPUT', `${what} must be an object`);
  const names = Object.keys(value);
  const kind = names[0] ?? '';
  if (names.length !== 1)
    return new AspenError('INVALID_INPUT', `${what} must have exactly one of ${kinds.join(', ')}`);
  if (!kinds.includes(kind))
    return new AspenError(
      'INVALID_INPUT',
      `${what}: unknown ${kind.slice(0, 64)} (one of ${kinds.join(', ')})`,
    );
  return [kind, value[kind]];
}

/** Validate an untrusted write command: exact shape, sizes, well-formed text. Returns the first problem or null. */
export function validateWriteCommand(command: unknown): AspenError | null {
  const variant = singleVariant(command, 'command', Object.keys(COMMAND_FIELDS));
  if (variant instanceof AspenError) return variant;
  const [kind, body] = variant;
  assert(isCommandKind(kind), 'singleVariant returns a listed kind');
  if (!isRecord(body)) return new AspenError('INVALID_INPUT', `${kind} must be an object`);
  const shape = checkFields(body, kind, COMMAND_FIELDS[kind], OPTIONAL_FIELDS);
  if (shape !== null) return shape;
  switch (kind) {
    case 'Set':
      return checkSet(body, '');
    case 'Delete':
      return checkKey(body.key);
    case 'SetMulti':
      return checkPairs(body.pairs);
    case 'DeleteMulti':
      return checkKeys(body.keys);
    case 'CompareAndSwap':
      return (
        checkKey(body.key) ??
        (body.expected === null ? null : checkValue(body.expected, 'expected')) ??
        checkValue(body.new_value, 'new_value')
      );
    case 'CompareAndDelete':
      return (
        checkKey(body.key) ?? checkValue(body.expected, 'expected (a string: the value the key must hold)')
      );
    case 'Transaction':
      return checkTransaction(body);
  }
}

/** A Transaction: bounded compares and branches, each compare and op exact, no key written twice per branch. */
function checkTransaction(body: Record<string, unknown>): AspenError | null {
  const { compare, success, failure } = body;
  if (!Array.isArray(compare))
    return new AspenError('INVALID_INPUT', 'Transaction.compare must be an array of compares');
  if (compare.length > TXN_COMPARES_MAX)
    return new AspenError(
      'BATCH_TOO_LARGE',
      `a transaction has ${compare.length} compares; the limit is ${TXN_COMPARES_MAX}`,
    );
  for (let index = 0; index < compare.length; index += 1) {
    const problem = checkCompare(compare[index] as unknown, `Transaction.compare[${index}]`);
    if (problem !== null) return problem;
  }
  return checkBranch(success, 'success') ?? checkBranch(failure, 'failure');
}

function checkCompare(item: unknown, what: string): AspenError | null {
  if (!isRecord(item)) return new AspenError('INVALID_INPUT', `${what} must be an object`);
  const shape = checkFields(item, what, COMPARE_FIELDS);
  if (shape !== null) return shape;
  const keyProblem = checkKey(item.key, `${what}.key`);
  if (keyProblem !== null) return keyProblem;
  const { target, op, value } = item;
  if (typeof target !== 'string' || !COMPARE_TARGETS.includes(target))
    return new AspenError('INVALID_INPUT', `${what}.target must be one of ${COMPARE_TARGETS.join(', ')}`);
  if (typeof op !== 'string' || !COMPARE_OPS.includes(op))
    return new AspenError('INVALID_INPUT', `${what}.op must be one of ${COMPARE_OPS.join(', ')}`);
  if (target === 'value') return checkValue(value, `${what}.value (a string for target value)`);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    return new AspenError(
      'INVALID_INPUT',
      `${what}.value must be a non-negative integer for target ${target} (at most 2^53 - 1)`,
    );
  return null;
}

/** One branch: at most TXN_OPS_MAX ops, each exact, and no key Set or Deleted twice. */
function checkBranch(ops: unknown, branch: 'success' | 'failure'): AspenError | null {
  const what = `Transaction.${branch}`;
  if (!Array.isArray(ops)) return new AspenError('INVALID_INPUT', `${what} must be an array of ops`);
  if (ops.length > TXN_OPS_MAX)
    return new AspenError(
      'BATCH_TOO_LARGE',
      `${what} has ${ops.length} ops; the limit is ${TXN_OPS_MAX} per branch`,
    );
  const written = new Set<string>();
  for (let index = 0; index < ops.length; index += 1) {
    const opWhat = `${what}[${index}]`;
    const problem = checkTxnOp(ops[index] as unknown, opWhat);
    if (problem !== null) return problem;
    const key = writtenKey(ops[index] as TxnOp);
    if (key === null) continue;
    if (written.has(key))
      return new AspenError(
        'INVALID_INPUT',
        `${opWhat} writes key ${key.slice(0, 64)} a second time in one branch (one Set or Delete per key)`,
      );
    written.add(key);
  }
  return null;
}

function checkTxnOp(op: unknown, what: string): AspenError | null {
  const variant = singleVariant(op, what, Object.keys(TXN_OP_FIELDS));
  if (variant instanceof AspenError) return variant;
  const [kind, body] = variant;
  const opWhat = `${what}.${kind}`;
  if (!isRecord(body)) return new AspenError('INVALID_INPUT', `${opWhat} must be an object`);
  const fields: readonly string[] = TXN_OP_FIELDS[kind as keyof typeof TXN_OP_FIELDS];
  const shape = checkFields(body, opWhat, fields, OPTIONAL_FIELDS);
  if (shape !== null) return shape;
  if (kind === 'Set') return checkSet(body, `${opWhat}.`);
  if (kind !== 'Scan') return checkKey(body.key, `${opWhat}.key`);
  const { prefix, limit } = body;
  if (typeof prefix !== 'string') return new AspenError('INVALID_INPUT', `${opWhat}.prefix must be a string`);
  const prefixProblem = prefix === '' ? null : checkKey(prefix, `${opWhat}.prefix`);
  if (prefixProblem !== null) return prefixProblem;
  if (
    limit !== undefined &&
    (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > TXN_SCAN_LIMIT_MAX)
  )
    return new AspenError(
      'INVALID_INPUT',
      `${opWhat}.limit must be an integer in [1, ${TXN_SCAN_LIMIT_MAX}]`,
    );
  return null;
}

/** The key a checked op writes (Set, Delete), or null for a read. */
function writtenKey(op: TxnOp): string | null {
  if ('Set' in op) return op.Set.key;
  if ('Delete' in op) return op.Delete.key;
  return null;
}

function checkPairs(pairs: unknown): AspenError | null {
  if (!Array.isArray(pairs)) return new AspenError('INVALID_INPUT', 'pairs must be an array of [key, value]');
  const sizeProblem = checkBatchSize(pairs.length);
  if (sizeProblem !== null) return sizeProblem;
  for (const pair of pairs as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2)
      return new AspenError('INVALID_INPUT', 'each pair must be [key, value]');
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

/** Validate an untrusted value (a record that crossed the wire). */
export function validateValue(value: unknown): AspenError | null {
  return checkValue(value);
}

/** Validate an untrusted key (reads, deletes); `what` names it in the message. */
export function validateKey(key: unknown, what = 'key'): AspenError | null {
  return checkKey(key, what);
}

/** A scan as the store runs it: checked prefix and limit, and the key the page starts after. */
export interface ScanBounds {
  readonly prefix: string;
  readonly limit: number;
  readonly afterKey: string | null;
}

/** Longest continuation token: base64url (no padding) of the longest key. */
export const CONTINUATION_TOKEN_CHARS_MAX = Math.ceil((KEY_BYTES_MAX * 4) / 3);

/** The continuation token of a page: the page's last key, base64url (no padding). */
export function encodeContinuationToken(lastKey: string): string {
  return Buffer.from(lastKey, 'utf8').toString('base64url');
}

/**
 * Decode a token this API handed out, or explain why it cannot be one: canonical base64url of a
 * well-formed UTF-8 key of the same prefix. A garbage token is an error, never an empty page.
 */
function decodeContinuationToken(token: string, prefix: string): string | AspenError {
  const refused = new AspenError(
    'INVALID_INPUT',
    'continuation_token is not one this API returned for this prefix (pass it back unchanged)',
  );
  if (token.length === 0 || token.length > CONTINUATION_TOKEN_CHARS_MAX || !/^[A-Za-z0-9_-]+$/.test(token))
    return refused;
  const bytes = Buffer.from(token, 'base64url');
  if (bytes.toString('base64url') !== token) return refused;
  let key: string;
  try {
    key = strictUtf8.decode(bytes);
  } catch {
    return refused;
  }
  if (checkKey(key) !== null || !key.startsWith(prefix)) return refused;
  return key;
}

/** Validate an untrusted scan request (the fields of POST /scan or of a forwarded scan). */
export function validateScan(request: {
  readonly prefix?: unknown;
  readonly limit?: unknown;
  readonly continuation_token?: unknown;
}): ScanBounds | AspenError {
  const prefix = request.prefix ?? '';
  const limit = request.limit ?? SCAN_LIMIT_DEFAULT;
  const token = request.continuation_token ?? null;
  if (typeof prefix !== 'string') return new AspenError('INVALID_INPUT', 'prefix must be a string');
  const prefixProblem = prefix === '' ? null : checkKey(prefix, 'prefix');
  if (prefixProblem !== null) return prefixProblem;
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > SCAN_LIMIT_MAX) {
    return new AspenError('INVALID_INPUT', `limit must be an integer in [1, ${SCAN_LIMIT_MAX}]`);
  }
  if (token === null) return { prefix, limit, afterKey: null };
  if (typeof token !== 'string')
    return new AspenError('INVALID_INPUT', 'continuation_token must be a string or null');
  const afterKey = decodeContinuationToken(token, prefix);
  return afterKey instanceof AspenError ? afterKey : { prefix, limit, afterKey };
}

/**
 * Bound the shape of any parsed JSON body: nesting depth, number of values, and well-formed Unicode
 * in every string and property name. Iterative (no recursion), so depth cannot overflow the stack.
 */
export function checkJsonBody(root: unknown): AspenError | null {
  const stack: { readonly value: unknown; readonly depth: number }[] = [{ value: root, depth: 1 }];
  let values = 0;
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    values += 1;
    if (values > JSON_VALUES_MAX)
      return new AspenError('INVALID_INPUT', `a body holds at most ${JSON_VALUES_MAX} JSON values`);
    const { value, depth } = item;
    if (typeof value === 'string') {
      if (!value.isWellFormed())
        return new AspenError(
          'INVALID_INPUT',
          'a string is not well-formed Unicode (a lone UTF-16 surrogate)',
        );
      continue;
    }
    if (typeof value !== 'object' || value === null) continue;
    if (depth > JSON_DEPTH_MAX)
      return new AspenError('INVALID_INPUT', `JSON nested deeper than ${JSON_DEPTH_MAX} levels`);
    if (Array.isArray(value)) {
      for (const element of value as unknown[]) stack.push({ value: element, depth: depth + 1 });
      continue;
    }
    for (const [name, element] of Object.entries(value)) {
      if (!name.isWellFormed())
        return new AspenError('INVALID_INPUT', 'a property name is not well-formed Unicode');
      stack.push({ value: element, depth: depth + 1 });
    }
  }
  return null;
}

/** Keys a command names (compares and ops; a Scan's prefix is not a key), for history partitioning. */
export function commandKeys(command: WriteCommand): string[] {
  if ('Set' in command) return [command.Set.key];
  if ('Delete' in command) return [command.Delete.key];
  if ('SetMulti' in command) return command.SetMulti.pairs.map((pair) => pair[0]);
  if ('DeleteMulti' in command) return [...command.DeleteMulti.keys];
  if ('CompareAndSwap' in command) return [command.CompareAndSwap.key];
  if ('CompareAndDelete' in command) return [command.CompareAndDelete.key];
  const { compare, success, failure } = command.Transaction;
  const keys = new Set(compare.map((item) => item.key));
  for (const op of [...success, ...failure]) if (!('Scan' in op)) keys.add(txnOpKey(op));
  return [...keys];
}

function txnOpKey(op: Exclude<TxnOp, { readonly Scan: unknown }>): string {
  if ('Set' in op) return op.Set.key;
  if ('Delete' in op) return op.Delete.key;
  return op.Get.key;
}

/** A join ticket's lifetime (POST /join-ticket `ttl_seconds`): ten minutes unless asked, at most an hour. */
export const JOIN_TTL_SECONDS_DEFAULT = 600;
export const JOIN_TTL_SECONDS_MIN = 1;
export const JOIN_TTL_SECONDS_MAX = 3_600;

/** A client id of exactly-once writes: 1–64 characters of [A-Za-z0-9_-]. */
export const CLIENT_ID_CHARS_MAX = 64;
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The session of a /write or /delete body: both `client_id` and `sequence`, or neither (null).
 * INVALID_INPUT for one without the other, a malformed client id, or a sequence that is not a
 * positive safe integer.
 */
export function validateSession(request: unknown): ClientSession | null | AspenError {
  const body = isRecord(request) ? request : {};
  const clientId = body.client_id;
  const sequence = body.sequence;
  if (clientId === undefined && sequence === undefined) return null;
  if (clientId === undefined || sequence === undefined)
    return new AspenError('INVALID_INPUT', 'client_id and sequence go together: give both or neither');
  if (typeof clientId !== 'string' || !CLIENT_ID_PATTERN.test(clientId))
    return new AspenError(
      'INVALID_INPUT',
      `client_id must be 1-${CLIENT_ID_CHARS_MAX} characters of A-Z, a-z, 0-9, _ and -`,
    );
  if (typeof sequence !== 'number' || !Number.isSafeInteger(sequence) || sequence < 1)
    return new AspenError('INVALID_INPUT', 'sequence must be a positive integer');
  return { clientId, sequence };
}

/** A request's session as validateSession reads it, with INVALID_INPUT thrown for a malformed one. */
export function checkedSession(request: unknown): ClientSession | null {
  const session = validateSession(request);
  if (session instanceof AspenError) throw session;
  return session;
}
