import type { Log } from '../../base/log.ts';
import type { GossipSub, Message } from '@libp2p/gossipsub';
import { deriveAuthKey } from '../../network/auth.ts';
import { type Libp2pTransport } from '../../network/libp2p-transport.ts';
import { PEER_ADDRESSES_MAX } from '../../network/multiaddrs.ts';
import type { NodeId } from '../../raft/types.ts';
import { decodeAnnouncement, encodeAnnouncement } from './announcement.ts';
import { ANNOUNCE_INTERVAL_MS, type PeerDirectory } from './peer-directory.ts';
import { clusterTopic } from './topic.ts';

/** A topic and the key that MACs the announcements on it, both from one cookie. */
interface GossipChannel {
  readonly topic: string;
  readonly key: Buffer;
}

/** An extra announcement (a peer joined the topic, or news arrived) waits at least this long after the last. */
export const ANNOUNCE_GAP_MS_MIN = 1_000;
/** Peers whose refused announcements are logged (once each); later ones are only counted. */
const REFUSALS_LOGGED_MAX = 64;

export interface GossipDiscoveryOptions {
  readonly transport: Libp2pTransport;
  readonly directory: PeerDirectory;
  readonly nodeId: NodeId;
  readonly cookie: string;
  /** During a cookie rotation, the cookie being replaced: its topic is served as well (null: none). */
  readonly previousCookie?: string | null;
  readonly httpAddr: string | null;
  readonly log: Log;
  /** How often to announce (default ANNOUNCE_INTERVAL_MS; tests shorten it). */
  readonly announceIntervalMs?: number;
}

/**
 * Gossip discovery as in the seed: every node announces {node_id, peer_id, addrs, http_addr,
 * timestamp} on the cookie's topic every 10 s (and soon after a peer joins the topic); received
 * announcements that carry the cookie's MAC and match their signer update the peer directory.
 * The transport serves gossipsub only on connections that proved the cookie, so a stranger never
 * sees the topic, a subscription or an announcement; the topic name and the MAC key both come from
 * the cookie's scrypt-derived key.
 *
 * During a cookie rotation a node is on two channels, the current cookie's and the previous one's:
 * it subscribes to both topics, publishes each announcement on both (each MAC'd under its topic's
 * key), and checks a message only under the key of the topic it came on, so nodes holding either
 * cookie hear it, and an announcement MAC'd under one cookie never counts on the other's topic.
 */
export class GossipDiscovery {
  /** The current cookie's topic. */
  readonly topic: string;
  /** Every topic served: the current cookie's first, then the previous one's during a rotation. */
  private readonly channels: readonly GossipChannel[];
  private readonly options: GossipDiscoveryOptions;
  private readonly pubsub: GossipSub;
  private readonly refusalsLogged = new Set<string>();
  private interval: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;
  private lastAnnounceMs = 0;
  announcementsReceived = 0;
  announcementsRefused = 0;

  constructor(options: GossipDiscoveryOptions) {
    const pubsub = options.transport.pubsub;
    if (pubsub === null) throw new Error('gossip discovery needs a transport created with gossip');
    this.options = options;
    this.pubsub = pubsub;
    const previous = options.previousCookie ?? null;
    const cookies = previous === null ? [options.cookie] : [options.cookie, previous];
    this.channels = cookies.map((cookie) => ({ topic: clusterTopic(cookie), key: deriveAuthKey(cookie) }));
    this.topic = clusterTopic(options.cookie);
  }

  /** The topics served (for tests and logs): one, or two during a rotation. */
  get topics(): string[] {
    return this.channels.map((channel) => channel.topic);
  }

  start(): void {
    for (const channel of this.channels) this.pubsub.subscribe(channel.topic);
    this.pubsub.addEventListener('message', (event) => {
      this.receive(event.detail);
    });
    this.pubsub.addEventListener('subscription-change', (event) => {
      if (
        event.detail.subscriptions.some(
          (subscription) => subscription.subscribe && this.channelOf(subscription.topic) !== null,
        )
      )
        this.announceSoon();
    });
    this.interval = setInterval(() => {
      this.announce();
      this.options.directory.expire(Date.now());
    }, this.options.announceIntervalMs ?? ANNOUNCE_INTERVAL_MS);
    this.announce();
  }

  stop(): void {
    if (this.interval !== null) clearInterval(this.interval);
    if (this.soon !== null) clearTimeout(this.soon);
    this.interval = null;
    this.soon = null;
    for (const channel of this.channels) this.pubsub.unsubscribe(channel.topic);
  }

  private channelOf(topic: string): GossipChannel | null {
    return this.channels.find((channel) => channel.topic === topic) ?? null;
  }

  /** Announce now, unless an announcement went out within ANNOUNCE_GAP_MS_MIN (then once after it). */
  announceSoon(): void {
    if (this.soon !== null) return;
    const waitMs = Math.max(0, this.lastAnnounceMs + ANNOUNCE_GAP_MS_MIN - Date.now());
    this.soon = setTimeout(() => {
      this.soon = null;
      this.announce();
    }, waitMs);
  }

  private announce(): void {
    this.lastAnnounceMs = Date.now();
    const { transport, nodeId, httpAddr } = this.options;
    const addrs = transport.listenAddresses.slice(0, PEER_ADDRESSES_MAX);
    if (addrs.length === 0) return;
    const announcement = {
      node_id: nodeId,
      peer_id: transport.peerId,
      addrs,
      http_addr: httpAddr,
      timestamp: Date.now(),
    };
    for (const channel of this.channels) {
      const bytes = encodeAnnouncement(announcement, channel.key);
      this.pubsub.publish(channel.topic, bytes).catch((error: unknown) => {
        this.options.log(
          `gossip: announce failed: ${error instanceof Error ? error.message : String(error)}`,
          'debug',
        );
      });
    }
  }

  private receive(message: Message): void {
    const channel = this.channelOf(message.topic);
    if (channel === null) return;
    if (message.type !== 'signed') {
      this.refuse('an unsigned sender', 'unsigned message');
      return;
    }
    const from = message.from.toString();
    try {
      const announcement = decodeAnnouncement(message.data, channel.key, from, Date.now());
      this.announcementsReceived += 1;
      if (this.options.directory.onAnnouncement(announcement, Date.now())) {
        this.options.log(
          `gossip: node ${announcement.node_id} at ${announcement.addrs[0] ?? ''} (peer ${from})`,
          'debug',
          { peer_id: from },
        );
        this.announceSoon(); // let a newcomer learn about us without waiting a full interval
      }
    } catch (error) {
      this.refuse(from, error instanceof Error ? error.message : String(error));
    }
  }

  private refuse(from: string, reason: string): void {
    this.announcementsRefused += 1;
    if (this.refusalsLogged.has(from) || this.refusalsLogged.size >= REFUSALS_LOGGED_MAX) return;
    this.refusalsLogged.add(from);
    this.options.log(`gossip: refused an announcement from peer ${from}: ${reason}`, 'warn', {
      peer_id: from,
    });
  }
}
