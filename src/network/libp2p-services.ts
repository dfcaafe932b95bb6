import { noise } from '@chainsafe/libp2p-noise';
import { quic } from '@chainsafe/libp2p-quic';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { Connection, PeerId, PrivateKey, StreamHandler, StreamHandlerOptions } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { gossipsub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import { mdns } from '@libp2p/mdns';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p, type ServiceFactoryMap } from 'libp2p';
import type { Gatekeeper } from './gatekeeper.ts';
import {
  ADDRESS_DIAL_TIMEOUT_MS,
  CONNECTION_CLOSE_TIMEOUT_MS,
  CONNECTION_PING_INTERVAL_MS,
  CONNECTIONS_MAX,
  DIAL_TIMEOUT_MS,
  IDENTIFY_TIMEOUT_MS,
  INBOUND_CONNECTIONS_PER_ADDRESS_PER_SECOND,
  INBOUND_UPGRADE_TIMEOUT_MS,
  INBOUND_UPGRADES_PENDING_MAX,
  STREAM_OPEN_TIMEOUT_MS,
} from './timeouts.ts';

/** How often mDNS queries the LAN. */
export const MDNS_QUERY_INTERVAL_MS = 2_000;
/** Largest gossip RPC accepted from a peer (announcements are at most 4 KiB). */
export const GOSSIP_RPC_BYTES_MAX = 64 * 1_024;

/** What a libp2p service registers its protocol handlers with (the registrar, as services see it). */
interface HandlerRegistry {
  handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>;
}

/**
 * A service's components with a registrar that serves each of its protocol handlers only on
 * authenticated connections. (libp2p 3.3's stream middleware cannot do this: with a middleware
 * registered, every inbound stream appends its handler to the shared middleware list, so the nth
 * stream runs the handler n times.)
 */
function withGatedHandlers<C extends { readonly registrar: HandlerRegistry }>(
  components: C,
  gatekeeper: Gatekeeper,
): C {
  const registrar = new Proxy(components.registrar, {
    get(target, property): unknown {
      if (property === 'handle') {
        return (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) =>
          target.handle(protocol, gatekeeper.serveAuthenticated(protocol, handler), options);
      }
      const value: unknown = Reflect.get(target, property);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return new Proxy(components, {
    get: (target, property, receiver): unknown =>
      property === 'registrar' ? registrar : Reflect.get(target, property, receiver),
  });
}

/**
 * Gossipsub and identify (which tells gossipsub a peer's protocols) when gossip discovery is on,
 * nothing otherwise. Both serve only authenticated connections, and identify does not run when a
 * connection opens: the transport runs it once the connection has proved the cookie, on both sides.
 */
export function discoveryServices(gossip: boolean, gatekeeper: Gatekeeper): ServiceFactoryMap {
  if (!gossip) return {};
  const identifyService = identify({ runOnConnectionOpen: false, timeout: IDENTIFY_TIMEOUT_MS });
  const pubsubService = gossipsub({
    allowPublishToZeroTopicPeers: true,
    emitSelf: false,
    maxInboundDataLength: GOSSIP_RPC_BYTES_MAX,
  });
  return {
    identify: (components: Parameters<typeof identifyService>[0]) =>
      identifyService(withGatedHandlers(components, gatekeeper)),
    pubsub: (components: Parameters<typeof pubsubService>[0]) =>
      pubsubService(withGatedHandlers(components, gatekeeper)),
  };
}

export interface Libp2pNodeOptions {
  readonly listen: readonly string[];
  readonly privateKey?: PrivateKey;
  readonly gossip?: boolean;
  readonly mdnsServiceTag?: string | null;
}

/**
 * The libp2p node under the transport, not started: QUIC and TCP (Noise, Yamux) on the listen
 * addresses, every connection admitted by the gatekeeper, the connection manager bounded by the
 * named timeouts and limits, and the discovery services asked for.
 */
export function createLibp2pNode(options: Libp2pNodeOptions, gatekeeper: Gatekeeper): Promise<Libp2p> {
  return createLibp2p({
    ...(options.privateKey === undefined ? {} : { privateKey: options.privateKey }),
    start: false, // handlers and connection hooks first: no connection may arrive before them
    addresses: { listen: [...options.listen] },
    transports: [quic(), tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: gatekeeper.connectionGater(),
    connectionManager: {
      dialTimeout: DIAL_TIMEOUT_MS,
      addressDialTimeout: ADDRESS_DIAL_TIMEOUT_MS,
      inboundUpgradeTimeout: INBOUND_UPGRADE_TIMEOUT_MS,
      outboundStreamProtocolNegotiationTimeout: STREAM_OPEN_TIMEOUT_MS,
      inboundStreamProtocolNegotiationTimeout: STREAM_OPEN_TIMEOUT_MS,
      connectionCloseTimeout: CONNECTION_CLOSE_TIMEOUT_MS,
      maxConnections: CONNECTIONS_MAX,
      maxIncomingPendingConnections: INBOUND_UPGRADES_PENDING_MAX,
      inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_ADDRESS_PER_SECOND,
    },
    connectionMonitor: { pingInterval: CONNECTION_PING_INTERVAL_MS },
    services: discoveryServices(options.gossip === true, gatekeeper),
    peerDiscovery:
      options.mdnsServiceTag === undefined || options.mdnsServiceTag === null
        ? []
        : [mdns({ serviceTag: options.mdnsServiceTag, interval: MDNS_QUERY_INTERVAL_MS })],
  });
}

/** Dial (or reuse) a connection to the first address that answers, trying them in order (QUIC, then TCP). */
export async function dialFirst(
  libp2p: Libp2p,
  addresses: readonly (Multiaddr | PeerId)[],
): Promise<Connection> {
  let lastError: unknown = new Error('no address');
  for (const address of addresses) {
    try {
      return await libp2p.dial(address, { signal: AbortSignal.timeout(ADDRESS_DIAL_TIMEOUT_MS) });
    } catch (error) {
      lastError = error; // try the next transport (TCP after QUIC)
    }
  }
  throw lastError;
}
