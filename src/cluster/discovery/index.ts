import type { Log } from '../../base/log.ts';
import { ADDRESS_CHARS_MAX } from '../../api/limits.ts';
import { toMultiaddrs } from '../../network/multiaddrs.ts';
import { firstLine } from '../errors.ts';
import type { Libp2pTransport } from '../../network/libp2p-transport.ts';
import type { NodeId } from '../../raft/types.ts';
import type { NodeConfig } from '../config.ts';
import { DNS_REFRESH_MS, FirstContacts, resolveDnsaddr, type TxtResolver } from './contacts.ts';
import { GossipDiscovery } from './gossip.ts';
import { PeerDirectory } from './peer-directory.ts';
import { encodeTicket, TICKET_ADDRESSES_MAX } from './ticket.ts';
import { clusterTopic } from './topic.ts';

export { mdnsServiceTag } from './topic.ts';

/** Own addresses a ticket or a self-resolved raft_addr lists first. */
const OWN_ADDRESSES_LISTED_MAX = 4;

export interface Discovery {
  readonly directory: PeerDirectory;
  readonly gossip: GossipDiscovery | null;
  /** Where `id` can be reached: this node's own addresses, or what discovery and configuration know. */
  resolve(id: NodeId): string | undefined;
  /**
   * The peer id that answers for node `id` at `raftAddr`: this node's own, the one gossip heard
   * announce that id, or the one that proves the cookie when dialed there; undefined if none answers.
   */
  identify(id: NodeId, raftAddr: string): Promise<string | undefined>;
  /** `aspen…`: the (current) cookie's topic and cluster id, and up to 16 bootstrap addresses (this node's first). */
  ticket(): string;
  stop(): void;
}

/** Join a comma-separated address list, dropping entries past the raft_addr length bound. */
function joinAddresses(addresses: readonly string[]): string {
  let joined = '';
  for (const address of addresses) {
    const next = joined.length === 0 ? address : `${joined},${address}`;
    if (next.length > ADDRESS_CHARS_MAX) break;
    joined = next;
  }
  return joined;
}

/**
 * Start discovery as configured: static peers and a ticket's bootstrap addresses as first contacts,
 * DNS `/dnsaddr` records when asked, mDNS on the LAN, and gossip naming every node by its id.
 */
export function startDiscovery(
  config: NodeConfig,
  transport: Libp2pTransport,
  httpAddr: string | null,
  log: Log,
  resolver?: TxtResolver,
): Discovery {
  const directory = new PeerDirectory({
    transport,
    selfId: config.nodeId,
    selfPeerId: transport.peerId,
    log,
  });
  const contacts = new FirstContacts(transport, log);
  for (const peer of config.peers) {
    directory.configure(peer.id, peer.address);
    contacts.add(peer.address, 'static peer');
  }
  for (const address of config.ticket?.bootstrap ?? []) contacts.add(address, 'ticket');
  for (const address of config.joinTicket?.bootstrap ?? []) contacts.add(address, 'join ticket');
  let dnsTimer: NodeJS.Timeout | null = null;
  const domain = config.dnsDiscoveryDomain;
  if (domain !== null) {
    const lookUp = (): void => {
      resolveDnsaddr(domain, resolver)
        .then((addresses) => {
          for (const address of addresses) contacts.add(address, `dns ${domain}`);
        })
        .catch((error: unknown) => {
          log(
            `dns: cannot resolve _dnsaddr.${domain}: ${error instanceof Error ? error.message : String(error)}`,
            'warn',
          );
        });
    };
    lookUp();
    dnsTimer = setInterval(lookUp, DNS_REFRESH_MS);
  }
  const gossip = config.gossip
    ? new GossipDiscovery({
        transport,
        directory,
        nodeId: config.nodeId,
        cookie: config.cookie,
        previousCookie: config.previousCookie,
        httpAddr,
        log,
      })
    : null;
  gossip?.start();
  contacts.start(config.mdns);
  const ownAddresses = (): string[] => transport.listenAddresses.slice(0, OWN_ADDRESSES_LISTED_MAX);
  return {
    directory,
    gossip,
    resolve: (id) => (id === config.nodeId ? joinAddresses(ownAddresses()) : directory.addressOf(id)),
    identify: async (id, raftAddr) => {
      if (id === config.nodeId) return transport.peerId;
      const announced = directory.announcedPeerOf(id);
      if (announced !== undefined) return announced;
      try {
        return await transport.connect(toMultiaddrs(raftAddr));
      } catch (error) {
        log(
          `discovery: cannot tell node ${id}'s peer id at ${raftAddr.slice(0, 120)}: ${firstLine(error)}`,
          'warn',
        );
        return undefined;
      }
    },
    ticket: () => {
      const bootstrap = [...ownAddresses()];
      for (const peer of directory.peers()) {
        const first = peer.addrs[0];
        if (bootstrap.length >= TICKET_ADDRESSES_MAX) break;
        if (first !== undefined) bootstrap.push(first);
      }
      return encodeTicket({ topic: clusterTopic(config.cookie), clusterId: config.cookie, bootstrap });
    },
    stop: () => {
      if (dnsTimer !== null) clearInterval(dnsTimer);
      gossip?.stop();
      contacts.stop();
    },
  };
}
