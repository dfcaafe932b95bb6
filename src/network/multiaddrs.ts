import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';

/** "127.0.0.1:26002" (the seed's raft_addr) or a multiaddr string, as a multiaddr (TCP for host:port). */
export function toMultiaddr(address: string): Multiaddr {
  return toMultiaddrs(address).at(-1) ?? multiaddr(address);
}

/** Addresses one peer entry may list (a node announces a few: QUIC and TCP, per interface). */
export const PEER_ADDRESSES_MAX = 16;

/**
 * Where to dial a peer: "host:port" (the seed's raft_addr) means QUIC on that UDP port first, then
 * TCP on the same number; otherwise one multiaddr, or several separated by commas, tried in order.
 */
export function toMultiaddrs(address: string): Multiaddr[] {
  if (address.startsWith('/')) {
    const parts = address.split(',');
    if (parts.length > PEER_ADDRESSES_MAX)
      throw new RangeError(`at most ${PEER_ADDRESSES_MAX} addresses per peer`);
    return parts.map((part) => {
      try {
        return multiaddr(part.trim());
      } catch {
        throw new RangeError(`not a multiaddr: ${part.slice(0, 80)}`);
      }
    });
  }
  const match = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(address);
  if (match === null) throw new RangeError(`not host:port or a multiaddr: ${address.slice(0, 80)}`);
  const host = match[1] ?? '';
  const port = match[2] ?? '';
  return [multiaddr(`/ip4/${host}/udp/${port}/quic-v1`), multiaddr(`/ip4/${host}/tcp/${port}`)];
}
