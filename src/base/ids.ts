import { ADDRESS_CHARS_MAX, PEER_ID_CHARS_MAX } from './limits.ts';

/**
 * Node ids are positive safe integers; 0 means "none" (no vote, no known leader). Every layer
 * names nodes by this type: the core, the wire, the API and the operator's flags.
 */
export type NodeId = number;
export const NODE_NONE: NodeId = 0;

/** Whether an untrusted value is a node id (a positive safe integer). */
export function isNodeId(value: unknown): value is NodeId {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;
}

/** A raft_addr is "ipv4:port" (the seed's form) or a multiaddr ("/ip4/…/tcp/…"). */
export function isRaftAddress(text: string): boolean {
  if (text.startsWith('/'))
    return text.length <= ADDRESS_CHARS_MAX && !/\s/.test(text) && text.isWellFormed();
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(text);
  if (match === null) return false;
  const octets = match.slice(1, 5).map(Number);
  return octets.every((octet) => octet <= 255) && Number(match[5]) <= 65_535;
}

/** A libp2p peer id as text: base58btc (no 0, O, I, l), 1..PEER_ID_CHARS_MAX characters. */
export function isPeerIdText(text: string): boolean {
  return text.length <= PEER_ID_CHARS_MAX && /^[1-9A-HJ-NP-Za-km-z]+$/.test(text);
}
