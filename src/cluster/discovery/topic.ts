import { blake3 } from '@noble/hashes/blake3.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';

/** The gossip topic of a cluster: hex BLAKE3 of its cookie (as in the seed), so nodes of one cookie meet. */
export function clusterTopic(cookie: string): string {
  return bytesToHex(blake3(utf8ToBytes(cookie)));
}

/** The mDNS service tag of a cluster: nodes with another cookie never even answer each other. */
export function mdnsServiceTag(cookie: string): string {
  return `_aspen-${clusterTopic(cookie).slice(0, 16)}._udp.local`;
}
