import { deriveAuthKey, deriveLabel } from '../../network/auth.ts';

/**
 * The gossip topic of a cluster: an HMAC of a fixed label under the cookie's scrypt-derived key, so
 * a guess of the cookie costs as much to check against the topic as against an auth proof (a fast
 * hash of the cookie, as the seed used, can be checked at ~10^5 guesses per second per core).
 * Gossip is only served on authenticated connections anyway; this keeps the name from leaking more.
 */
export function clusterTopic(cookie: string): string {
  return deriveLabel(deriveAuthKey(cookie), 'aspen-gossip-topic-v1');
}

/** The mDNS service tag of a cluster (public on the LAN, derived like the topic): nodes with another cookie never even answer each other. */
export function mdnsServiceTag(cookie: string): string {
  return `_aspen-${deriveLabel(deriveAuthKey(cookie), 'aspen-mdns-tag-v1').slice(0, 16)}._udp.local`;
}
