import { blake3 } from '@noble/hashes/blake3.js';
import { base32 } from 'multiformats/bases/base32';
import { toMultiaddrs } from '../../network/multiaddrs.ts';
import { clusterTopic } from './topic.ts';
import { TicketError } from '../errors.ts';

/** Every ticket starts with this; the rest is lowercase base32 (RFC 4648, no padding). */
export const TICKET_PREFIX = 'aspen';
/** 2: the topic is derived from the scrypt key of the cookie (version 1 carried BLAKE3 of the cookie). */
export const TICKET_VERSION = 2;
/** Bootstrap addresses a ticket carries (the seed's bound). */
export const TICKET_ADDRESSES_MAX = 16;
export const TICKET_ADDRESS_CHARS_MAX = 256;
export const TICKET_COOKIE_BYTES_MAX = 1_024;
/** Longest ticket accepted, before decoding anything. */
export const TICKET_CHARS_MAX = 16 * 1_024;
const CHECKSUM_BYTES = 4;

/**
 * What a new node needs to join: the gossip topic, the cluster id (the cookie: a ticket is a secret,
 * like the cookie it carries) and where to find members first.
 */
export interface ClusterTicket {
  readonly topic: string;
  readonly clusterId: string;
  readonly bootstrap: readonly string[];
}

function checksum(bytes: Uint8Array): Uint8Array {
  return blake3(bytes).subarray(0, CHECKSUM_BYTES);
}

function validate(ticket: ClusterTicket): void {
  if (ticket.clusterId.length === 0 || Buffer.byteLength(ticket.clusterId) > TICKET_COOKIE_BYTES_MAX)
    throw new TicketError('the cluster id must be 1..1024 bytes');
  if (ticket.topic !== clusterTopic(ticket.clusterId))
    throw new TicketError('the topic does not belong to the cluster id');
  if (ticket.bootstrap.length === 0 || ticket.bootstrap.length > TICKET_ADDRESSES_MAX)
    throw new TicketError(`a ticket carries 1..${TICKET_ADDRESSES_MAX} bootstrap addresses`);
  for (const address of ticket.bootstrap) {
    if (address.length > TICKET_ADDRESS_CHARS_MAX)
      throw new TicketError(`a bootstrap address is longer than ${TICKET_ADDRESS_CHARS_MAX} characters`);
    try {
      toMultiaddrs(address);
    } catch {
      throw new TicketError(`not a bootstrap address: ${address.slice(0, 80)}`);
    }
  }
}

/** `aspen` + base32(version ‖ JSON ‖ first 4 bytes of BLAKE3 of both). */
export function encodeTicket(ticket: ClusterTicket): string {
  validate(ticket);
  const json = new TextEncoder().encode(
    JSON.stringify({ topic: ticket.topic, cluster_id: ticket.clusterId, bootstrap: ticket.bootstrap }),
  );
  const body = new Uint8Array(1 + json.length);
  body[0] = TICKET_VERSION;
  body.set(json, 1);
  const bytes = new Uint8Array(body.length + CHECKSUM_BYTES);
  bytes.set(body);
  bytes.set(checksum(body), body.length);
  const text = `${TICKET_PREFIX}${base32.baseEncode(bytes)}`;
  if (text.length > TICKET_CHARS_MAX)
    throw new TicketError(`the ticket would be longer than ${TICKET_CHARS_MAX} characters`);
  return text;
}

export function decodeTicket(text: string): ClusterTicket {
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
  if (body[0] !== TICKET_VERSION)
    throw new TicketError(
      `ticket version ${String(body[0])} is not supported (this node reads version ${TICKET_VERSION})`,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(body.subarray(1)));
  } catch {
    throw new TicketError('the ticket body is not valid');
  }
  const fields = parsed as { topic?: unknown; cluster_id?: unknown; bootstrap?: unknown } | null;
  if (
    typeof fields?.topic !== 'string' ||
    typeof fields.cluster_id !== 'string' ||
    !Array.isArray(fields.bootstrap) ||
    !fields.bootstrap.every((item) => typeof item === 'string')
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
