import { Packr } from 'msgpackr';
import { AspenError, type CurrentRecord } from '../api/errors.ts';
import {
  ADDRESS_CHARS_MAX,
  isPeerIdText,
  validateKey,
  validateScan,
  validateSession,
  validateValue,
  validateWriteCommand,
} from '../api/limits.ts';
import { checkedLeaseGrant, checkedLeaseId, checkedLeaseInfo } from '../api/lease-validation.ts';
import {
  checkedAddLearner,
  checkedChangeMembership,
  checkedLearnerId,
} from '../api/membership-validation.ts';
import type { ClientSession, WriteCommand } from '../api/types.ts';
import type { ClientRequest, ClientResponse, SnapshotChunk, WireMessage } from '../node/interfaces.ts';
import { SNAPSHOT_CHUNK_BYTES_MAX } from '../node/snapshot-transfer.ts';
import { FRAME_BYTES_MAX } from './frame.ts';
import { APPEND_ENTRIES_MAX } from '../raft/config.ts';
import { CLUSTER_NODES_MAX, validateConfig } from '../raft/quorum.ts';
import type { Entry, MembershipConfig, Message, NodeAddress, SnapshotMeta } from '../raft/types.ts';
import { WireFormatError } from './errors.ts';

/**
 * Raft messages on the wire: msgpack, decoded from untrusted bytes into a checked WireMessage.
 * Anything malformed is refused with a WireFormatError, never passed to the core.
 */
const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * Encode one message for a frame. A message that cannot be encoded or would not fit a frame is a
 * WireFormatError for the sender to handle (a forwarded reply is answered with an error instead);
 * the core never builds one (appends are bounded well below the frame size).
 */
export function encodeWireMessage(message: WireMessage): Uint8Array {
  let payload: Uint8Array;
  try {
    payload = packr.pack(message);
  } catch (error) {
    throw new WireFormatError(
      `cannot encode a ${message.type} message: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  if (payload.byteLength > FRAME_BYTES_MAX)
    throw new WireFormatError(
      `a ${message.type} message of ${payload.byteLength} bytes exceeds the ${FRAME_BYTES_MAX}-byte frame`,
    );
  return payload;
}

type Fields = Record<string, unknown>;

function fail(message: string): never {
  throw new WireFormatError(message);
}

function isObject(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function integer(fields: Fields, name: string, min = 0): number {
  const value = fields[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min)
    fail(`${name} must be an integer >= ${min}`);
  return value;
}

function boolean(fields: Fields, name: string): boolean {
  const value = fields[name];
  if (typeof value !== 'boolean') fail(`${name} must be a boolean`);
  return value;
}

function bytes(value: unknown, name: string, max: number): Uint8Array {
  if (!(value instanceof Uint8Array)) fail(`${name} must be bytes`);
  if (value.byteLength > max) fail(`${name} exceeds ${max} bytes`);
  return value;
}

function idList(value: unknown, name: string): number[] {
  if (!Array.isArray(value) || value.length > CLUSTER_NODES_MAX)
    fail(`${name} must be a list of at most ${CLUSTER_NODES_MAX} ids`);
  return value.map((id: unknown) => {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) fail(`${name} holds a bad node id`);
    return id;
  });
}

function text(fields: Fields, name: string): string {
  const value = fields[name];
  if (typeof value !== 'string' || value.length > ADDRESS_CHARS_MAX)
    fail(`${name} must be a string of at most ${ADDRESS_CHARS_MAX} characters`);
  return value;
}

function nodeAddresses(value: unknown): NodeAddress[] {
  if (!Array.isArray(value) || value.length > CLUSTER_NODES_MAX)
    fail(`nodes must be a list of at most ${CLUSTER_NODES_MAX}`);
  return value.map((node: unknown) => {
    if (!isObject(node)) fail('a node address must be an object');
    const address = {
      id: integer(node, 'id', 1),
      addr: text(node, 'addr'),
      raftAddr: text(node, 'raftAddr'),
    };
    if (node.peerId === undefined) return address;
    const peerId = text(node, 'peerId');
    if (!isPeerIdText(peerId)) fail('peerId must be a libp2p peer id');
    return { ...address, peerId };
  });
}

function membership(value: unknown): MembershipConfig {
  if (!isObject(value)) fail('config must be an object');
  const base = {
    voters: idList(value.voters, 'voters'),
    votersOutgoing: idList(value.votersOutgoing, 'votersOutgoing'),
    learners: idList(value.learners, 'learners'),
  };
  const config: MembershipConfig =
    value.nodes === undefined ? base : { ...base, nodes: nodeAddresses(value.nodes) };
  const problem = validateConfig(config);
  if (problem !== null) fail(`bad config: ${problem}`);
  return config;
}

function entry(value: unknown): Entry {
  if (!isObject(value)) fail('entry must be an object');
  const base = { term: integer(value, 'term'), index: integer(value, 'index', 1) };
  switch (value.kind) {
    case 'blank':
      return { kind: 'blank', ...base };
    case 'command':
      return {
        kind: 'command',
        ...base,
        data: bytes(value.data, 'entry data', SNAPSHOT_CHUNK_BYTES_MAX * 4),
      };
    case 'config':
      return { kind: 'config', ...base, config: membership(value.config) };
    default:
      return fail('unknown entry kind');
  }
}

function snapshotMeta(value: unknown): SnapshotMeta {
  if (!isObject(value)) fail('snapshot must be an object');
  return {
    index: integer(value, 'index', 1),
    term: integer(value, 'term'),
    config: membership(value.config),
  };
}

function coreMessage(fields: Fields, base: { from: number; to: number; term: number }): Message {
  switch (fields.type) {
    case 'pre_vote':
    case 'vote':
      return {
        type: fields.type,
        ...base,
        lastLogIndex: integer(fields, 'lastLogIndex'),
        lastLogTerm: integer(fields, 'lastLogTerm'),
        transfer: boolean(fields, 'transfer'),
      };
    case 'pre_vote_response':
    case 'vote_response':
      return { type: fields.type, ...base, granted: boolean(fields, 'granted') };
    case 'append': {
      const entries = fields.entries;
      if (!Array.isArray(entries) || entries.length > APPEND_ENTRIES_MAX)
        fail(`entries must be a list of at most ${APPEND_ENTRIES_MAX}`);
      return {
        type: 'append',
        ...base,
        prevLogIndex: integer(fields, 'prevLogIndex'),
        prevLogTerm: integer(fields, 'prevLogTerm'),
        entries: entries.map(entry),
        commitIndex: integer(fields, 'commitIndex'),
      };
    }
    case 'append_response':
      return {
        type: 'append_response',
        ...base,
        success: boolean(fields, 'success'),
        index: integer(fields, 'index'),
        hintIndex: integer(fields, 'hintIndex'),
        hintTerm: integer(fields, 'hintTerm'),
      };
    case 'heartbeat':
      return {
        type: 'heartbeat',
        ...base,
        commitIndex: integer(fields, 'commitIndex'),
        readRound: integer(fields, 'readRound'),
      };
    case 'heartbeat_response':
      return { type: 'heartbeat_response', ...base, readRound: integer(fields, 'readRound') };
    case 'snapshot':
      return { type: 'snapshot', ...base, snapshot: snapshotMeta(fields.snapshot) };
    case 'timeout_now':
      return { type: 'timeout_now', ...base };
    default:
      return fail('unknown message type');
  }
}

function snapshotChunk(fields: Fields, base: { from: number; to: number; term: number }): SnapshotChunk {
  const data = bytes(fields.data, 'chunk data', SNAPSHOT_CHUNK_BYTES_MAX);
  const offsetBytes = integer(fields, 'offsetBytes');
  const totalBytes = integer(fields, 'totalBytes');
  if (offsetBytes + data.byteLength > totalBytes) fail('chunk runs past the snapshot end');
  // Absent on chunks from nodes before snapshot files: snapshot bytes, unchecked.
  const format = fields.format ?? 'bytes';
  if (format !== 'bytes' && format !== 'file') fail('chunk format must be bytes or file');
  const crc = fields.crc === undefined ? null : integer(fields, 'crc');
  if (format === 'file' && crc === null) fail('a chunk of a snapshot file carries its crc');
  return {
    type: 'snapshot_chunk',
    ...base,
    snapshot: snapshotMeta(fields.snapshot),
    offsetBytes,
    totalBytes,
    data,
    format,
    crc,
  };
}

/** Error codes a refused forwarded operation may carry (the validators' codes). */
const INVALID_CODES = ['INVALID_INPUT', 'KEY_TOO_LARGE', 'VALUE_TOO_LARGE', 'BATCH_TOO_LARGE'] as const;

function invalidOperation(problem: AspenError): ClientRequest['operation'] {
  const code = INVALID_CODES.find((known) => known === problem.code) ?? 'INVALID_INPUT';
  return { kind: 'invalid', code, message: problem.message };
}

/**
 * A forwarded request: the envelope (ids) must be sound or the frame is dropped; an operation that
 * fails the API's own validation still decodes, as 'invalid', so the leader answers with the error
 * at once instead of leaving the follower to time out.
 */
function clientRequest(fields: Fields, base: { from: number; to: number; term: number }): ClientRequest {
  const requestId = integer(fields, 'requestId');
  return { type: 'client_request', ...base, requestId, operation: clientOperation(fields.operation) };
}

function clientOperation(operation: unknown): ClientRequest['operation'] {
  if (!isObject(operation))
    return invalidOperation(new AspenError('INVALID_INPUT', 'operation must be an object'));
  switch (operation.kind) {
    case 'write': {
      const problem = validateWriteCommand(operation.command);
      const session = wireSession(operation.session);
      if (problem !== null) return invalidOperation(problem);
      if (session instanceof AspenError) return invalidOperation(session);
      return { kind: 'write', command: operation.command as WriteCommand, session };
    }
    case 'scan': {
      const { prefix, limit, continuationToken } = operation;
      const bounds = validateScan({
        prefix,
        limit: limit ?? undefined,
        continuation_token: continuationToken,
      });
      if (bounds instanceof AspenError) return invalidOperation(bounds);
      return {
        kind: 'scan',
        prefix: bounds.prefix,
        limit: bounds.limit,
        continuationToken: continuationToken as string | null,
      };
    }
    case 'read': {
      const problem = validateKey(operation.key);
      return problem === null ? { kind: 'read', key: operation.key as string } : invalidOperation(problem);
    }
    case 'delete': {
      const problem = validateKey(operation.key);
      const session = wireSession(operation.session);
      if (problem !== null) return invalidOperation(problem);
      if (session instanceof AspenError) return invalidOperation(session);
      return { kind: 'delete', key: operation.key as string, session };
    }
    default:
      return leaseOperation(operation);
  }
}

/**
 * A forwarded lease call, checked as the API checks it (a grant's TTL only against its absolute
 * bounds here: the leader's control client checks its cluster's minimum).
 */
function leaseOperation(operation: Fields): ClientRequest['operation'] {
  try {
    switch (operation.kind) {
      case 'lease_grant': {
        const grant = checkedLeaseGrant(
          { ttl_seconds: operation.ttlSeconds, lease_id: operation.leaseId },
          1,
        );
        return { kind: 'lease_grant', ...grant, session: throwIfError(wireSession(operation.session)) };
      }
      case 'lease_revoke':
        return {
          kind: 'lease_revoke',
          leaseId: checkedLeaseId(operation.leaseId),
          session: throwIfError(wireSession(operation.session)),
        };
      case 'lease_keepalive':
        return { kind: 'lease_keepalive', leaseId: checkedLeaseId(operation.leaseId) };
      case 'lease_info':
        return {
          kind: 'lease_info',
          ...checkedLeaseInfo({
            lease_id: operation.leaseId,
            keys: operation.keys,
            after: operation.after === null ? undefined : operation.after,
          }),
        };
      case 'lease_list':
        return { kind: 'lease_list' };
      default:
        return membershipOperation(operation);
    }
  } catch (error) {
    if (!(error instanceof AspenError)) throw error;
    return invalidOperation(error);
  }
}

/** A forwarded membership call or snapshot, checked as the API checks it (throws its AspenError). */
function membershipOperation(operation: Fields): ClientRequest['operation'] {
  switch (operation.kind) {
    case 'add_learner':
      return { kind: 'add_learner', learner: checkedAddLearner({ learner: operation.learner }) };
    case 'change_membership': {
      const { members, learners } = operation;
      if (learners !== null && !Array.isArray(learners))
        throw new AspenError('INVALID_INPUT', 'learners must be an array of node ids or null');
      return {
        kind: 'change_membership',
        ...checkedChangeMembership(learners === null ? { members } : { members, learners }),
      };
    }
    case 'remove_learner':
      return { kind: 'remove_learner', learnerId: checkedLearnerId({ learner_id: operation.learnerId }) };
    case 'trigger_snapshot':
      return { kind: 'trigger_snapshot' };
    default:
      throw new AspenError('INVALID_INPUT', 'unknown operation');
  }
}

function throwIfError<T>(value: T | AspenError): T {
  if (value instanceof AspenError) throw value;
  return value;
}

/** A forwarded write's client session: absent or null for none, else validated as the API does. */
function wireSession(value: unknown): ClientSession | null | AspenError {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) return new AspenError('INVALID_INPUT', 'session must be an object or null');
  const session = validateSession({ client_id: value.clientId, sequence: value.sequence });
  return session ?? new AspenError('INVALID_INPUT', 'a session needs clientId and sequence');
}

function clientResponse(fields: Fields, base: { from: number; to: number; term: number }): ClientResponse {
  const requestId = integer(fields, 'requestId');
  const error = fields.error;
  if (error === null || error === undefined)
    return { type: 'client_response', ...base, requestId, result: fields.result, error: null };
  if (
    !isObject(error) ||
    typeof error.code !== 'string' ||
    typeof error.message !== 'string' ||
    typeof error.definite !== 'boolean'
  )
    fail('bad error');
  const leaderId =
    error.leaderId === null || error.leaderId === undefined ? null : integer(error, 'leaderId', 1);
  return {
    type: 'client_response',
    ...base,
    requestId,
    result: null,
    error: {
      code: error.code,
      message: error.message.slice(0, ADDRESS_CHARS_MAX * 4),
      leaderId,
      definite: error.definite,
      // COMPARE_FAILED needs the record it found; any other code carries none.
      ...(error.code === 'COMPARE_FAILED' ? { current: currentRecord(error.current) } : {}),
    },
  };
}

/** The record a COMPARE_FAILED found: null (absent) or a value with its revisions. */
function currentRecord(value: unknown): CurrentRecord | null {
  if (value === null) return null;
  if (!isObject(value)) fail('a COMPARE_FAILED needs current: null or a record');
  const text = value.value;
  if (typeof text !== 'string' || validateValue(text) !== null) fail('current.value must be a valid value');
  return {
    value: text,
    create_index: integer(value, 'create_index'),
    mod_index: integer(value, 'mod_index'),
    version: integer(value, 'version'),
    lease_id: integer(value, 'lease_id'),
  };
}

/** Decode and check one frame's payload. */
export function decodeWireMessage(payload: Uint8Array): WireMessage {
  let decoded: unknown;
  try {
    decoded = packr.unpack(payload);
  } catch (error) {
    throw new WireFormatError(`not msgpack: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!isObject(decoded)) fail('a message must be an object');
  const base = {
    from: integer(decoded, 'from', 1),
    to: integer(decoded, 'to', 1),
    term: integer(decoded, 'term'),
  };
  if (decoded.type === 'snapshot_chunk') return snapshotChunk(decoded, base);
  if (decoded.type === 'client_request') return clientRequest(decoded, base);
  if (decoded.type === 'client_response') return clientResponse(decoded, base);
  return coreMessage(decoded, base);
}
