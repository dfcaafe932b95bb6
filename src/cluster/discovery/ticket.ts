import { blake3 } from '@noble/hashes/blake3.js';
import { base32 } from 'multiformats/bases/base32';
import { toMultiaddrs } from '../../network/multiaddrs.ts';
import { clusterTopic } from './topic.ts';
import { TicketError } from '../errors.ts';

/** Every ticket starts with this; the rest is lowercase base32 (RFC 4648, no padding). */
export const TICKET_PREFIX = 'aspen';
/** 2: the topic is derived from the scrypt key of the cookie (version 1 carried BLAKE3 of the cookie). */
export const TICKET_VERSION = 2;
/** 3: a join ticket, with a single-use join credential instead of the cookie. */
export const JOIN_TICKET_VERSION = 3;
/** Bootstrap addresses a ticket carries (the seed's bound). */
export const TICKET_ADDRESSES_MAX = 16;
export const TICKET_ADDRESS_CHARS_MAX = 256;
export const TICKET_COOKIE_BYTES_MAX = 1_024;
/** Longest ticket accepted, before decoding anything. */
export const TICKET_CHARS_MAX = 16 * 1_024;
const CHECKSUM_BYTES = 4;
/** A join credential: 32 random bytes, as unpadded base64url. */
const CREDENTIAL_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/**
 * What a new node needs to join: the gossip topic, the cluster id (the cookie: a ticket is a secret,
 * like the cookie it carries) and where to find members first.
 */
export interface ClusterTicket {
  readonly topic: string;
  readonly clusterId: string;
  readonly bootstrap: readonly string[];
}

/**
 * A join ticket (version 3): where the minting node listens (each address names its peer id, so
 * the joining node talks to that node and no other) and a single-use credential bound to one node
 * id. No cookie and no topic: the minting node hands the cookie over once the credential is proved.
 */
export interface JoinTicket {
  readonly bootstrap: readonly string[];
  readonly join: {
    readonly nodeId: number;
    /** 32 random bytes as unpadded base64url (a secret until used). */
    readonly credential: string;
    /** Unix time in milliseconds after which the minting node refuses the credential. */
    readonly expiresAtMs: number;
  };
}

export type Ticket = ClusterTicket | JoinTicket;

export function isJoinTicket(ticket: Ticket): ticket is JoinTicket {
  return 'join' in ticket;
}

function checksum(bytes: Uint8Array): Uint8Array {
  return blake3(bytes).subarray(0, CHECKSUM_BYTES);
}

/** 1..16 bootstrap addresses, each a multiaddr; a join ticket's must each name the peer id (`/p2p/…`). */
function validateBootstrap(bootstrap: readonly string[], peerIdRequired: boolean): void {
  if (bootstrap.length === 0 || bootstrap.length > TICKET_ADDRESSES_MAX)
    throw new TicketError(`a ticket carries 1..${TICKET_ADDRESSES_MAX} bootstrap addresses`);
  for (const address of bootstrap) {
    if (address.length > TICKET_ADDRESS_CHARS_MAX)
      throw new TicketError(`a bootstrap address is longer than ${TICKET_ADDRESS_CHARS_MAX} characters`);
    let named: boolean;
    try {
      named = toMultiaddrs(address).every((parsed) =>
        parsed.getComponents().some((component) => component.name === 'p2p'),
      );
    } catch {
      throw new TicketError(`not a bootstrap address: ${address.slice(0, 80)}`);
    }
    if (peerIdRequired && !named)
      throw new TicketError(`a join ticket's bootstrap address names no peer id: ${address.slice(0, 80)}`);
  }
}

function validate(ticket: ClusterTicket): void {
  if (ticket.clusterId.length === 0 || Buffer.byteLength(ticket.clusterId) > TICKET_COOKIE_BYTES_MAX)
    throw new TicketError('the cluster id must be 1..1024 bytes');
  if (ticket.topic !== clusterTopic(ticket.clusterId))
    throw new TicketError('the topic does not belong to the cluster id');
  validateBootstrap(ticket.bootstrap, false);
}

function validateJoin(ticket: JoinTicket): void {
  const { nodeId, credential, expiresAtMs } = ticket.join;
  if (!Number.isSafeInteger(nodeId) || nodeId < 1)
    throw new TicketError('the join node id must be an integer in [1, 2^53 - 1]');
  if (
    !CREDENTIAL_PATTERN.test(credential) ||
    Buffer.from(credential, 'base64url').toString('base64url') !== credential
  )
    throw new TicketError('the join credential must be 32 bytes as base64url');
  if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 1)
    throw new TicketError('the join expiry must be a positive time in milliseconds');
  validateBootstrap(ticket.bootstrap, true);
}

/** `aspen` + base32(version ‖ JSON ‖ first 4 bytes of BLAKE3 of both). */
function seal(version: number, fields: unknown): string {
  const json = new TextEncoder().encode(JSON.stringify(fields));
  const body = new Uint8Array(1 + json.length);
  body[0] = version;
  body.set(json, 1);
  const bytes = new Uint8Array(body.length + CHECKSUM_BYTES);
  bytes.set(body);
  bytes.set(checksum(body), body.length);
  const text = `${TICKET_PREFIX}${base32.baseEncode(bytes)}`;
  if (text.length > TICKET_CHARS_MAX)
    throw new TicketError(`the ticket would be longer than ${TICKET_CHARS_MAX} characters`);
  return text;
}

export function encodeTicket(ticket: ClusterTicket): string {
  validate(ticket);
  return seal(TICKET_VERSION, {
    topic: ticket.topic,
    cluster_id: ticket.clusterId,
    bootstrap: ticket.bootstrap,
  });
}

export function encodeJoinTicket(ticket: JoinTicket): string {
  validateJoin(ticket);
  const { nodeId, credential, expiresAtMs } = ticket.join;
  return seal(JOIN_TICKET_VERSION, {
    bootstrap: ticket.bootstrap,
    join: { node_id: nodeId, credential, expires_at: expiresAtMs },
  });
}

/** The version byte and the parsed JSON body of a ticket whose prefix, size and checksum are right. */
function open(text: string): { version: number; fields: unknown } {
  if (text.length > TICKET_CHARS_MAX)
    throw new TicketError(`a ticket is at most ${TICKET_CHARS_MAX} characters`);
  if (!text.startsWith(TICKET_PREFIX)) throw new TicketError(`a ticket starts with "${TICKET_PREFIX}"`);
  let bytes: Uint8Array;
  try {
    bytes = base32.baseDecode(text.slice(TICKET_PREFIX.length));
  } catch {
    throw new TicketError('the ticket is not valid base32 (was it cut or mistyped?)');
  }
  if (bytes.length < 1 + CHECKSUM_BYTES) throw new TicketError('the ticket is too short');
  const body = bytes.subarray(0, bytes.length - CHECKSUM_BYTES);
  const expected = checksum(body);
  const actual = bytes.subarray(bytes.length - CHECKSUM_BYTES);
  if (!expected.every((byte, index) => byte === actual[index]))
    throw new TicketError('the ticket checksum does not match (was it cut or mistyped?)');
  const version = body[0] ?? 0;
  if (version !== TICKET_VERSION && version !== JOIN_TICKET_VERSION)
    throw new TicketError(
      `ticket version ${version} is not supported (this node reads versions ${TICKET_VERSION} and ${JOIN_TICKET_VERSION})`,
    );
  try {
    return { version, fields: JSON.parse(new TextDecoder().decode(body.subarray(1))) };
  } catch {
    throw new TicketError('the ticket body is not valid');
  }
}

function isStrings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

/** A cookie ticket (version 2) or a join ticket (version 3), checked; TicketError otherwise. */
export function decodeTicket(text: string): Ticket {
  const { version, fields } = open(text);
  return version === JOIN_TICKET_VERSION ? joinTicketOf(fields) : clusterTicketOf(fields);
}

function clusterTicketOf(parsed: unknown): ClusterTicket {
  const fields = parsed as { topic?: unknown; cluster_id?: unknown; bootstrap?: unknown } | null;
  if (
    typeof fields?.topic !== 'string' ||
    typeof fields.cluster_id !== 'string' ||
    !isStrings(fields.bootstrap)
  ) {
    throw new TicketError('the ticket body lacks topic, cluster_id or bootstrap');
  }
  const ticket: ClusterTicket = {
    topic: fields.topic,
    clusterId: fields.cluster_id,
    bootstrap: fields.bootstrap,
  };
  validate(ticket);
  return ticket;
}

function joinTicketOf(parsed: unknown): JoinTicket {
  const fields = parsed as { bootstrap?: unknown; join?: unknown } | null;
  const join = fields?.join as { node_id?: unknown; credential?: unknown; expires_at?: unknown } | null;
  if (
    !isStrings(fields?.bootstrap) ||
    typeof join?.node_id !== 'number' ||
    typeof join.credential !== 'string' ||
    typeof join.expires_at !== 'number'
  ) {
    throw new TicketError('the join ticket body lacks bootstrap, node_id, credential or expires_at');
  }
  const ticket: JoinTicket = {
    bootstrap: fields.bootstrap,
    join: { nodeId: join.node_id, credential: join.credential, expiresAtMs: join.expires_at },
  };
  validateJoin(ticket);
  return ticket;
}
