import type { Log } from '../../base/log.ts';
import type { ClusterTransport } from '../../node/interfaces.ts';
import { ADDRESS_BOOK_ENTRIES_MAX } from '../../node/address-book.ts';
import type { NodeAddress, NodeId } from '../../raft/types.ts';
import type { Announcement } from './announcement.ts';

/** Announce period (the seed's 10 s); a peer silent for three periods is dropped from discovery. */
export const ANNOUNCE_INTERVAL_MS = 10_000;
export const PEER_SILENCE_MS_MAX = 3 * ANNOUNCE_INTERVAL_MS;
/** Impostors (node id, peer id) whose refused announcements were logged; later ones are only counted. */
const IMPOSTORS_LOGGED_MAX = 64;

export interface DiscoveredPeer {
  readonly nodeId: NodeId;
  readonly peerId: string;
  readonly addrs: readonly string[];
  readonly httpAddr: string | null;
  readonly timestamp: number;
  readonly lastSeenMs: number;
}

/**
 * Merges what a node knows about where its peers are into the transport's address map:
 * static peers and members' raft_addr from the replicated configuration, overridden by fresh
 * gossip announcements (a node knows best where it listens now), which expire after a bounded
 * silence (a member then falls back to its configured address). Raft never waits on it.
 */
export class PeerDirectory {
  private readonly transport: ClusterTransport;
  private readonly selfId: NodeId;
  private readonly selfPeerId: string;
  private readonly log: Log;
  private readonly discovered = new Map<NodeId, DiscoveredPeer>();
  private readonly configured = new Map<NodeId, string>();
  /** Members' peer ids from the replicated configuration: announcements must agree with them. */
  private readonly memberPeers = new Map<NodeId, string>();
  private readonly impostorsLogged = new Set<string>();
  private impostorAnnouncements = 0;

  constructor(options: { transport: ClusterTransport; selfId: NodeId; selfPeerId: string; log: Log }) {
    this.transport = options.transport;
    this.selfId = options.selfId;
    this.selfPeerId = options.selfPeerId;
    this.log = options.log;
  }

  /** A static peer or a member's configured address: used unless gossip knows better. */
  configure(id: NodeId, address: string): void {
    if (id === this.selfId) return;
    this.configured.set(id, address);
    if (!this.discovered.has(id)) this.addPeer(id, address);
  }

  /**
   * The replicated configuration changed: every member's raft_addr is configured and its peer id
   * (when recorded) bound; what gossip said about a member from another peer id is forgotten.
   */
  onMembership(nodes: readonly NodeAddress[]): void {
    this.memberPeers.clear();
    for (const member of nodes) {
      if (member.peerId !== undefined) this.memberPeers.set(member.id, member.peerId);
      const discovered = this.discovered.get(member.id);
      if (discovered !== undefined && !this.agrees(member.id, discovered.peerId))
        this.discovered.delete(member.id);
      this.configure(member.id, member.raftAddr);
    }
  }

  /** Members' node ids and the peer ids recorded for them (the transport binds the same). */
  get memberBindings(): ReadonlyMap<NodeId, string> {
    return this.memberPeers;
  }

  /** Announcements refused because they paired a member's node id with another peer id. */
  get impostorAnnouncementsTotal(): number {
    return this.impostorAnnouncements;
  }

  private agrees(id: NodeId, peerId: string): boolean {
    const bound = this.memberPeers.get(id);
    return bound === undefined || bound === peerId;
  }

  private refuseImpostor(announcement: Announcement): void {
    this.impostorAnnouncements += 1;
    const key = `${announcement.node_id}/${announcement.peer_id}`;
    if (this.impostorsLogged.has(key) || this.impostorsLogged.size >= IMPOSTORS_LOGGED_MAX) return;
    this.impostorsLogged.add(key);
    this.log(
      `discovery: refused an announcement for member ${announcement.node_id} from peer ${announcement.peer_id}: member ${announcement.node_id} is peer ${this.memberPeers.get(announcement.node_id) ?? '?'}`,
      'warn',
      { peer_id: announcement.peer_id },
    );
  }

  /** A verified announcement (see decodeAnnouncement); returns whether it was news. */
  onAnnouncement(announcement: Announcement, nowMs: number): boolean {
    const id = announcement.node_id;
    if (id === this.selfId) {
      if (announcement.peer_id !== this.selfPeerId)
        this.log(`discovery: peer ${announcement.peer_id} claims this node's id ${id}`, 'warn', {
          peer_id: announcement.peer_id,
        });
      return false;
    }
    if (!this.agrees(id, announcement.peer_id)) {
      this.refuseImpostor(announcement);
      return false;
    }
    const previous = this.discovered.get(id);
    if (previous !== undefined && announcement.timestamp <= previous.timestamp) return false;
    if (previous === undefined && this.discovered.size >= ADDRESS_BOOK_ENTRIES_MAX) return false;
    if (previous !== undefined && previous.peerId !== announcement.peer_id) {
      this.log(
        `discovery: node ${id} moved from peer ${previous.peerId} to ${announcement.peer_id} (two nodes with one id?)`,
        'warn',
      );
    }
    this.discovered.set(id, {
      nodeId: id,
      peerId: announcement.peer_id,
      addrs: announcement.addrs,
      httpAddr: announcement.http_addr,
      timestamp: announcement.timestamp,
      lastSeenMs: nowMs,
    });
    return this.addPeer(id, announcement.addrs.join(','));
  }

  /** Drop announcements older than the silence bound; members fall back to their configured address. */
  expire(nowMs: number): void {
    for (const [id, peer] of [...this.discovered]) {
      if (nowMs - peer.lastSeenMs <= PEER_SILENCE_MS_MAX) continue;
      this.discovered.delete(id);
      const configured = this.configured.get(id);
      this.log(`discovery: node ${id} silent for ${nowMs - peer.lastSeenMs} ms`, 'debug');
      if (configured === undefined) this.transport.removePeer(id);
      else this.addPeer(id, configured);
    }
  }

  /** Where discovery would dial `id` (for /add-learner and /init calls that name a node by id only). */
  addressOf(id: NodeId): string | undefined {
    const peer = this.discovered.get(id);
    return peer === undefined ? this.transport.peerAddresses().get(id) : peer.addrs.join(',');
  }

  /** The peer id that announced itself as node `id`, if gossip heard one. */
  announcedPeerOf(id: NodeId): string | undefined {
    return this.discovered.get(id)?.peerId;
  }

  peers(): DiscoveredPeer[] {
    return [...this.discovered.values()].sort((a, b) => a.nodeId - b.nodeId);
  }

  private addPeer(id: NodeId, address: string): boolean {
    const before = this.transport.peerAddresses().get(id);
    try {
      this.transport.addPeer(id, address);
    } catch (error) {
      this.log(
        `discovery: cannot use address "${address.slice(0, 120)}" for node ${id}: ${error instanceof Error ? error.message : String(error)}`,
        'warn',
      );
      return false;
    }
    return before !== address;
  }
}
