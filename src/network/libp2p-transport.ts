import type { Connection, PeerId, PrivateKey, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { GossipSub } from '@libp2p/gossipsub';
import type { Identify } from '@libp2p/identify';
import type { Libp2p } from 'libp2p';
import type { ClusterTransport, WireMessage } from '../node/interfaces.ts';
import { assert } from '../base/assert.ts';
import type { Log } from '../base/log.ts';
import type { NodeId } from '../raft/types.ts';
import { CLUSTER_NODES_MAX } from '../raft/quorum.ts';
import { AddressBook, type PeerEvent } from '../node/address-book.ts';
import { AUTH_PROTOCOL, authenticateAsDialer, authenticateAsListener, deriveAuthKey } from './auth.ts';
import { AuthError } from './errors.ts';
import { decodeWireMessage, encodeWireMessage } from './codec.ts';
import { encodeFrame, FrameDecoder } from './frame.ts';
import { Gatekeeper, type GatekeeperStats } from './gatekeeper.ts';
import {
  answerJoin,
  JOIN_PROTOCOL,
  JOIN_STREAMS_MAX,
  JOIN_STREAMS_PER_CONNECTION_MAX,
  type JoinOutcome,
  type JoinService,
} from './join.ts';
import { createLibp2pNode, dialFirst } from './libp2p-services.ts';
import { toMultiaddrs } from './multiaddrs.ts';
import { bareAddress, coalesce, newOutbound, OUTBOUND_FRAMES_QUEUED_MAX, type Outbound } from './outbound.ts';
import {
  assertHandshakeTimeouts,
  AUTH_DEADLINE_MS,
  AUTH_REFUSAL_LINGER_MS,
  AUTH_STREAMS_PER_CONNECTION_MAX,
  IDENTIFY_TIMEOUT_MS,
  PEER_CONNECTIONS_PROBED_MAX,
  REDIAL_BACKOFF_MS,
  STALE_CONNECTION_PROBE_TIMEOUT_MS,
  STREAM_OPEN_TIMEOUT_MS,
} from './timeouts.ts';

// Kept importable from here: the transport's address parsing and limits.
export { GOSSIP_RPC_BYTES_MAX, MDNS_QUERY_INTERVAL_MS } from './libp2p-services.ts';

/** The Raft protocol: length-prefixed msgpack frames on one long-lived stream per peer and direction. */
export const RAFT_PROTOCOL = '/aspen/raft/1.0.0';
/** Never handled by anyone: a live peer answers "na" at once, a dead connection not at all. */
const PROBE_PROTOCOL = '/aspen/probe/1.0.0';

export interface Libp2pTransportOptions {
  readonly nodeId: NodeId;
  /** Listen multiaddrs, e.g. /ip4/127.0.0.1/udp/26001/quic-v1 and /ip4/127.0.0.1/tcp/26001 (port 0 picks one). */
  readonly listen: readonly string[];
  readonly privateKey?: PrivateKey;
  /** The shared cluster cookie: only peers that prove it are served. */
  readonly cookie: string;
  /** During a cookie rotation, the cookie being replaced: accepted too, and proved first when dialing (see dialAuthenticated). */
  readonly previousCookie?: string;
  /** Called for every well-formed message addressed to this node. */
  readonly onMessage: (message: WireMessage) => void;
  /** One line per notable event (authentication refusals on both sides), peers named by node id where known. */
  readonly log?: Log;
  /** Run gossipsub (with identify, which tells peers' protocols) for discovery. */
  readonly gossip?: boolean;
  /** Announce and look for this mDNS service tag on the LAN (null: mDNS off). */
  readonly mdnsServiceTag?: string | null;
  /** Close connections not authenticated this long after they were accepted or opened (default AUTH_DEADLINE_MS; tests shorten it). */
  readonly authDeadlineMs?: number;
  /** Serve JOIN_PROTOCOL (before authentication): decides each join request (none: joins are not served). */
  readonly joinService?: JoinService;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * After sending a refusal: close our side gracefully (the refusal byte is sent, not discarded) and
 * wait for the dialer to hang up on reading it, at most AUTH_REFUSAL_LINGER_MS; then the caller
 * closes the connection. Without this the dialer would only see its stream cut off.
 */
async function lingerAfterRefusal(stream: Stream): Promise<void> {
  const signal = AbortSignal.timeout(AUTH_REFUSAL_LINGER_MS);
  const closed = new Promise<void>((resolve) => {
    if (stream.status !== 'open') resolve();
    stream.addEventListener(
      'close',
      () => {
        resolve();
      },
      { once: true },
    );
    signal.addEventListener(
      'abort',
      () => {
        resolve();
      },
      { once: true },
    );
  });
  await stream.close({ signal }).catch(() => undefined);
  await closed;
  if (stream.status === 'open' || stream.status === 'closing') stream.abort(new AuthError('refused'));
}

/** Node ids bound to peer ids at once: one per member of the largest cluster. */
const MEMBER_BINDINGS_MAX = CLUSTER_NODES_MAX;

/**
 * Raft over libp2p (QUIC preferred; TCP + Noise + Yamux as fallback): outbound frames to a peer share one long-lived stream
 * (opening one costs ~1.5 ms, so never one per RPC); inbound streams are decoded frame by frame and
 * every malformed or misaddressed frame is dropped and counted. Peers are found by the address map,
 * which discovery will keep current (addPeer/removePeer).
 */
export class Libp2pTransport implements ClusterTransport {
  readonly nodeId: NodeId;
  private readonly libp2p: Libp2p;
  private readonly onMessage: (message: WireMessage) => void;
  private readonly peers = new Map<NodeId, Outbound>();
  private readonly addressBook = new AddressBook();
  /** Members' node ids bound to their libp2p peer ids, from the replicated configuration. */
  private readonly memberPeers = new Map<NodeId, string>();
  private identityRefusals = 0;
  /** Admission, deadline and per-connection authentication state: nothing is served before the cookie handshake. */
  private readonly gatekeeper: Gatekeeper;
  private readonly log: Log;
  /** Join exchanges running now (at most JOIN_STREAMS_MAX). */
  private joinStreams = 0;
  joinsAdmitted = 0;
  joinsRefused = 0;
  /** Keys a dialer may prove to us: the cookie's, then the previous cookie's during a rotation. */
  private readonly acceptedKeys: readonly Buffer[];
  /** Keys we prove when dialing, in turn, one per connection: the previous cookie's first (see dialAuthenticated). */
  private readonly dialKeys: readonly Buffer[];
  framesDropped = 0;
  private streamWrites = 0;
  private raftStreamsMoved = 0;
  /** A flush of the peers with flushScheduled is queued (scheduleFlush). */
  private flushPending = false;
  private stopped = false;
  framesRejected = 0;
  authRefusals = 0;
  identifyFailures = 0;
  /** Older connections of a peer closed because they stopped answering once it connected again. */
  staleConnectionsClosed = 0;

  private constructor(options: Libp2pTransportOptions, libp2p: Libp2p, gatekeeper: Gatekeeper) {
    this.nodeId = options.nodeId;
    this.libp2p = libp2p;
    this.gatekeeper = gatekeeper;
    this.onMessage = options.onMessage;
    this.log = options.log ?? (() => undefined);
    const current = deriveAuthKey(options.cookie);
    const previous = options.previousCookie === undefined ? null : deriveAuthKey(options.previousCookie);
    assert(previous === null || !previous.equals(current), 'the previous cookie differs from the cookie');
    this.acceptedKeys = previous === null ? [current] : [current, previous];
    this.dialKeys = previous === null ? [current] : [previous, current];
  }

  static async create(options: Libp2pTransportOptions): Promise<Libp2pTransport> {
    assertHandshakeTimeouts();
    deriveAuthKey(options.cookie); // the slow KDF runs once per cookie, before anything listens
    if (options.previousCookie !== undefined) deriveAuthKey(options.previousCookie);
    let created: Libp2pTransport | null = null;
    const gatekeeper = new Gatekeeper({
      deadlineMs: options.authDeadlineMs ?? AUTH_DEADLINE_MS,
      log: options.log ?? (() => undefined),
      onAuthenticated: (connection) => {
        created?.onAuthenticated(connection);
      },
    });
    const libp2p = await createLibp2pNode(options, gatekeeper);
    const transport = new Libp2pTransport(options, libp2p, gatekeeper);
    created = transport;
    libp2p.addEventListener('connection:open', (event) => {
      gatekeeper.opened(event.detail);
    });
    libp2p.addEventListener('connection:close', (event) => {
      gatekeeper.closed(event.detail);
    });
    await libp2p.handle(
      AUTH_PROTOCOL,
      (stream: Stream, connection: Connection) => {
        transport.acceptAuth(stream, connection);
      },
      { maxInboundStreams: AUTH_STREAMS_PER_CONNECTION_MAX },
    );
    const joinService = options.joinService;
    if (joinService !== undefined)
      await libp2p.handle(
        JOIN_PROTOCOL,
        (stream: Stream, connection: Connection) => {
          transport.acceptJoin(stream, connection, joinService);
        },
        { maxInboundStreams: JOIN_STREAMS_PER_CONNECTION_MAX },
      );
    await libp2p.handle(
      RAFT_PROTOCOL,
      gatekeeper.serveAuthenticated(RAFT_PROTOCOL, (stream, connection) => {
        transport.acceptStream(stream, connection);
      }),
    );
    try {
      await libp2p.start();
    } catch (error) {
      // A listen that fails half-way (a port taken between the check and the bind) leaves part of
      // libp2p running: stop it, so a failed start leaks no socket or timer.
      await transport.stop().catch(() => undefined);
      throw error;
    }
    // Only two protocols are served before authentication: the cookie handshake itself, and join,
    // which answers nothing but a refusal code without a valid single-use credential (join.ts).
    for (const protocol of libp2p.getProtocols()) {
      assert(
        protocol === AUTH_PROTOCOL || protocol === JOIN_PROTOCOL || gatekeeper.gates(protocol),
        `${protocol} would be served before authentication`,
      );
      assert(protocol !== PROBE_PROTOCOL, 'the probe protocol is never handled');
    }
    return transport;
  }

  get listenAddresses(): string[] {
    return this.libp2p.getMultiaddrs().map((address) => address.toString());
  }

  get peerId(): string {
    return this.libp2p.peerId.toString();
  }

  /** The gossipsub service, when created with `gossip`. */
  get pubsub(): GossipSub | null {
    const services = this.libp2p.services as { pubsub?: GossipSub };
    return services.pubsub ?? null;
  }

  /** Peers found on the LAN by mDNS (or any libp2p peer discovery); returns an unsubscribe function. */
  onPeerDiscovered(listener: (peerId: PeerId, addresses: readonly Multiaddr[]) => void): () => void {
    const handler = (event: CustomEvent<{ id: PeerId; multiaddrs: Multiaddr[] }>): void => {
      listener(event.detail.id, event.detail.multiaddrs);
    };
    this.libp2p.addEventListener('peer:discovery', handler);
    return () => {
      this.libp2p.removeEventListener('peer:discovery', handler);
    };
  }

  /** Whether an authenticated connection to this libp2p peer exists. */
  isConnected(peerId: string): boolean {
    return this.libp2p
      .getConnections()
      .some(
        (connection) =>
          connection.remotePeer.toString() === peerId && this.gatekeeper.isAuthenticated(connection),
      );
  }

  /** Open (or reuse) an authenticated connection without sending anything: a first contact for gossip. */
  async connect(addresses: readonly (Multiaddr | PeerId)[]): Promise<string> {
    const connection = await this.dialAuthenticated(addresses);
    return connection.remotePeer.toString();
  }

  addPeer(id: NodeId, address: string): void {
    assert(id !== this.nodeId, 'a node is not its own peer');
    const targets = toMultiaddrs(address); // throws RangeError before anything changes
    if (this.addressBook.get(id) === address && this.peers.has(id)) return;
    this.addressBook.set(id, address);
    const known = this.peers.get(id);
    if (
      known?.streamAddress != null &&
      targets.some((target) => bareAddress(target) === known.streamAddress)
    ) {
      // The same peer said another way (discovery announcing the addresses a join gave as host:port):
      // the stream open to one of them stays, with what it carries (aborting it lost a snapshot's
      // chunks in flight). A peer at an address not listed is dialed afresh.
      known.addresses = targets;
      return;
    }
    this.dropOutbound(id);
    const peer = newOutbound(targets);
    this.peers.set(id, peer);
    // Dial now rather than at the first message: a restarted follower sends nothing until its
    // election timeout, and its leader moves its Raft stream to the new connection (moveRaftStream).
    if (!this.stopped) this.open(id, peer);
  }

  removePeer(id: NodeId): void {
    this.dropOutbound(id);
    this.addressBook.delete(id);
  }

  private dropOutbound(id: NodeId): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    this.peers.delete(id);
    peer.stream?.abort(new Error('peer removed'));
  }

  peerAddresses(): ReadonlyMap<NodeId, string> {
    return this.addressBook.entries();
  }

  onPeerEvent(listener: (event: PeerEvent) => void): () => void {
    return this.addressBook.subscribe(listener);
  }

  /** Raft streams moved to a peer's newer connection (moveRaftStream), for tests and metrics. */
  get raftStreamsMovedTotal(): number {
    return this.raftStreamsMoved;
  }

  /** Stream writes made so far (each carries every frame queued for that peer during a turn). */
  get streamWritesTotal(): number {
    return this.streamWrites;
  }

  get messagesDropped(): number {
    return this.framesDropped;
  }

  backlog(to: NodeId): number {
    return this.peers.get(to)?.queue.length ?? 0;
  }

  send(message: WireMessage): void {
    const peer = this.peers.get(message.to);
    if (peer === undefined || this.stopped) {
      this.framesDropped += 1;
      return;
    }
    if (peer.queue.length >= OUTBOUND_FRAMES_QUEUED_MAX) {
      this.framesDropped += 1;
      return;
    }
    peer.queue.push(encodeFrame(encodeWireMessage(message)));
    if (peer.stream === null) this.open(message.to, peer);
    else this.scheduleFlush(peer);
  }

  /**
   * Frames sent during one event-loop turn (a Ready's appends, a batch of forwarded answers) leave
   * in one stream write per peer: every write is a native call, a hop to the QUIC thread and a
   * packet for both members to handle (the top frame of every member's profile under load). The
   * flush waits for the immediates queued behind its own: a synced Ready answers the forwarded
   * writes it applied and then queues the node's next turn, whose appends to the same peer then join
   * those answers in one write instead of following in a second. One flush serves every peer. The
   * delay is the next check phase, never a timer.
   */
  private scheduleFlush(peer: Outbound): void {
    peer.flushScheduled = true;
    if (this.flushPending) return;
    this.flushPending = true;
    setImmediate(this.flushAfterNextTurn);
  }

  private readonly flushAfterNextTurn = (): void => {
    setImmediate(this.flushScheduledPeers);
  };

  private readonly flushScheduledPeers = (): void => {
    this.flushPending = false;
    for (const peer of this.peers.values()) {
      if (!peer.flushScheduled) continue;
      peer.flushScheduled = false;
      this.flush(peer);
    }
  };

  /**
   * A connection whose peer proved the cookie (authentication is once per connection; a running one
   * is joined). During a rotation each of dialKeys in turn, on a fresh connection (a refusing
   * listener hangs up): the previous key first, which every node of phase 1 accepts, then the
   * current one, which a node of phase 2 (new cookie only) requires. A fake listener gets at most one
   * proof per cookie we hold, each as costly to attack offline as the one proof of a normal dial.
   */
  private async dialAuthenticated(
    addresses: readonly (Multiaddr | PeerId)[],
    nodeId: NodeId | null = null,
  ): Promise<Connection> {
    let refusedBy = 'a peer';
    for (const [index, key] of this.dialKeys.entries()) {
      const connection = await dialFirst(this.libp2p, addresses);
      const last = index === this.dialKeys.length - 1;
      const prove = () => this.proveCookie(connection, key, { last, nodeId });
      if (await this.gatekeeper.authenticateOnce(connection, prove)) return connection;
      refusedBy = this.describePeer(connection.remotePeer.toString(), nodeId);
    }
    throw new AuthError(`connection to ${refusedBy} did not authenticate`);
  }

  /**
   * Dialer side of the handshake with `key`; on failure, close the connection, and log it as a
   * refusal when no other key is left to try (`last`). `nodeId`: the node dialed, when known. Never rejects.
   */
  private async proveCookie(
    connection: Connection,
    key: Buffer,
    dial: { readonly last: boolean; readonly nodeId: NodeId | null },
  ): Promise<boolean> {
    let stream: Stream | null = null;
    try {
      stream = await connection.newStream(AUTH_PROTOCOL, {
        signal: AbortSignal.timeout(STREAM_OPEN_TIMEOUT_MS),
      });
      await authenticateAsDialer(stream, key, this.peerId, connection.remotePeer.toString());
    } catch (error) {
      if (dial.last) this.refused('to', connection, error, dial.nodeId);
      else
        this.gatekeeper.note(
          `auth: the previous cookie failed with ${this.describePeer(connection.remotePeer.toString(), dial.nodeId)} (${asError(error).message}); trying the current one`,
          'info',
        );
      stream?.abort(asError(error));
      await connection.close().catch(() => undefined);
      return false;
    }
    void stream.close().catch(() => undefined); // the handshake is done: never wait on the close
    return true;
  }

  /**
   * A failed handshake, said in plain words on both sides: the listener that refused a proof does not
   * know which cookie is the right one ("it does not know this cluster's cookie (or the cookie
   * differs)"); the dialer whose proof was refused knows the two differ.
   */
  private refused(
    direction: 'to' | 'from',
    connection: Connection,
    error: unknown,
    nodeId: NodeId | null,
  ): void {
    this.authRefusals += 1;
    const peerId = connection.remotePeer.toString();
    const peer = this.describePeer(peerId, nodeId);
    const at = connection.remoteAddr.toString().replace(`/p2p/${peerId}`, '');
    const failure = error instanceof AuthError ? error.failure : 'handshake';
    let line: string;
    if (failure === 'refused_by_peer')
      line = `auth: ${peer} refused our cookie: the cookies differ (at ${at})`;
    else if (failure === 'peer_unproven')
      line = `auth: refused connection ${direction} ${peer} at ${at}: it does not know this cluster's cookie (or the cookie differs)`;
    else line = `auth: refused connection ${direction} ${peer} at ${at}: ${asError(error).message}`;
    this.gatekeeper.note(line, 'warn', {
      peer_id: peerId,
      ...(nodeId === null ? {} : { peer_node_id: nodeId }),
    });
  }

  /** `node 2 (peer 12D3…)` when the node id is known (dialed, or a member bound to that peer id), else `peer 12D3…`. */
  private describePeer(peerId: string, nodeId: NodeId | null): string {
    if (nodeId !== null) return `node ${nodeId} (peer ${peerId})`;
    for (const [member, bound] of this.memberPeers)
      if (bound === peerId) return `node ${member} (peer ${peerId})`;
    return `peer ${peerId}`;
  }

  /**
   * A connection just proved the cookie: close the peer's older connections that no longer answer
   * (it may have restarted), then run identify, only now rather than when the connection opened, so
   * gossipsub learns the peer's protocols and opens its stream on a live connection.
   */
  private onAuthenticated(connection: Connection): void {
    const service = (this.libp2p.services as { identify?: Identify }).identify;
    this.moveRaftStream(connection);
    this.closeDeadConnections(connection)
      .then(() => service?.identify(connection, { signal: AbortSignal.timeout(IDENTIFY_TIMEOUT_MS) }))
      .catch(() => {
        this.identifyFailures += 1;
      });
  }

  private async closeDeadConnections(fresh: Connection): Promise<void> {
    const older = this.libp2p
      .getConnections(fresh.remotePeer)
      .filter((other) => other.id !== fresh.id)
      .slice(0, PEER_CONNECTIONS_PROBED_MAX);
    await Promise.all(
      older.map(async (other) => {
        const signal = AbortSignal.timeout(STALE_CONNECTION_PROBE_TIMEOUT_MS);
        try {
          const stream = await other.newStream(PROBE_PROTOCOL, { signal });
          stream.abort(new Error('probe done')); // not expected: nobody handles the probe protocol
        } catch {
          if (!signal.aborted || other.status !== 'open') return; // "na", or already closing: not ours to close
          this.staleConnectionsClosed += 1;
          other.abort(
            new Error(
              `no answer within ${STALE_CONNECTION_PROBE_TIMEOUT_MS} ms after the peer connected again`,
            ),
          );
        }
      }),
    );
  }

  /**
   * Bind members' node ids to their peer ids (from the replicated configuration): Raft messages,
   * forwarded calls and dials that pair a bound node id with another peer id are refused. A stream
   * already open to another peer for a newly bound id is closed, so the next send dials and checks.
   */
  bindMembers(bindings: ReadonlyMap<NodeId, string>): void {
    assert(bindings.size <= MEMBER_BINDINGS_MAX, 'member bindings are bounded by the cluster size');
    this.memberPeers.clear();
    for (const [id, peerId] of bindings) {
      if (id === this.nodeId) continue;
      this.memberPeers.set(id, peerId);
      const peer = this.peers.get(id);
      if (peer?.stream != null && peer.streamPeer !== peerId)
        peer.stream.abort(new Error(`node ${id} is bound to another peer`));
    }
  }

  /** Messages refused because their node id is bound to another peer id (for tests and metrics). */
  get identityRefusalsTotal(): number {
    return this.identityRefusals;
  }

  /** Whether `remotePeer` may speak for node `id`; a refusal is counted and logged (rate-limited). */
  private speaksFor(id: NodeId, remotePeer: string, what: string): boolean {
    const bound = this.memberPeers.get(id);
    if (bound === undefined || bound === remotePeer) return true;
    this.identityRefusals += 1;
    this.gatekeeper.note(
      `identity: refused ${what} node ${id} at peer ${remotePeer}: member ${id} is peer ${bound}`,
      'warn',
      { peer_id: remotePeer, peer_node_id: id },
    );
    return false;
  }

  /** The long-lived Raft stream to a peer, on an authenticated connection to the peer bound to its id. */
  private async dialRaft(id: NodeId, peer: Outbound): Promise<{ stream: Stream; connection: Connection }> {
    const connection = await this.dialAuthenticated(peer.addresses, id);
    if (!this.speaksFor(id, connection.remotePeer.toString(), 'a dial to'))
      throw new AuthError(`the peer at node ${id}'s address is not node ${id}`);
    const stream = await connection.newStream(RAFT_PROTOCOL, {
      signal: AbortSignal.timeout(STREAM_OPEN_TIMEOUT_MS),
    });
    return { stream, connection };
  }

  private open(id: NodeId, peer: Outbound): void {
    if (peer.opening || Date.now() < peer.retryAtMs) return;
    peer.opening = true;
    this.dialRaft(id, peer)
      .then(({ stream, connection }) => {
        peer.opening = false;
        this.adopt(id, peer, stream, connection);
      })
      .catch(() => {
        peer.opening = false;
        peer.retryAtMs = Date.now() + REDIAL_BACKOFF_MS;
        this.framesDropped += peer.queue.length;
        peer.queue = [];
      });
  }

  /** `stream` (on `connection`) carries the frames for peer `id` from now on; one it replaces is aborted. */
  private adopt(id: NodeId, peer: Outbound, stream: Stream, connection: Connection): void {
    if (this.peers.get(id) !== peer || this.stopped) {
      stream.abort(new Error('peer removed while dialing'));
      return;
    }
    const replaced = peer.stream;
    peer.stream = stream;
    peer.streamPeer = connection.remotePeer.toString();
    peer.streamConnection = connection.id;
    peer.streamAddress = bareAddress(connection.remoteAddr);
    peer.blocked = false;
    replaced?.abort(new Error('the peer connected again: its newer connection carries Raft'));
    stream.addEventListener('close', () => {
      if (peer.stream !== stream) return;
      peer.stream = null;
      peer.streamPeer = null;
      peer.streamConnection = null;
      peer.streamAddress = null;
    });
    stream.addEventListener('drain', () => {
      if (peer.stream !== stream) return;
      peer.blocked = false;
      this.flush(peer);
    });
    this.flush(peer);
  }

  /**
   * A member's peer just authenticated a new connection while our Raft stream to it runs on an older
   * one (or none): the peer has probably restarted, and the old connection may be dead (a killed QUIC peer sends
   * nothing: its connection lingers until the idle timeout). Move the stream to the new connection at
   * once rather than after the stale-connection probe, so a restarted follower hears its leader at once.
   */
  private moveRaftStream(connection: Connection): void {
    const remotePeer = connection.remotePeer.toString();
    for (const [id, peer] of this.peers) {
      if ((peer.streamPeer ?? this.memberPeers.get(id)) !== remotePeer) continue;
      if (peer.streamConnection === connection.id || peer.opening) continue;
      peer.opening = true;
      connection.newStream(RAFT_PROTOCOL, { signal: AbortSignal.timeout(STREAM_OPEN_TIMEOUT_MS) }).then(
        (stream) => {
          peer.opening = false;
          this.raftStreamsMoved += 1;
          this.adopt(id, peer, stream, connection);
        },
        () => {
          peer.opening = false; // the old stream goes on; the probe decides about its connection
        },
      );
    }
  }

  /**
   * Send what queued while the stream was busy, coalesced into writes of up to COALESCED_WRITE_BYTES_MAX:
   * each stream write is a native call and a drain round trip (the top frame of the leader's profile
   * under load when every frame was its own write); the receiver splits frames from any chunking.
   */
  private flush(peer: Outbound): void {
    const stream = peer.stream;
    if (stream === null) return;
    let sent = 0;
    while (sent < peer.queue.length && !peer.blocked) {
      const { write, end } = coalesce(peer.queue, sent);
      sent = end;
      this.streamWrites += 1;
      if (!stream.send(write)) peer.blocked = true; // accepted, but wait for 'drain' before more
    }
    peer.queue = peer.queue.slice(sent);
  }

  private acceptAuth(stream: Stream, connection: Connection): void {
    const remote = connection.remotePeer.toString();
    void this.gatekeeper.authenticate(connection, async () => {
      try {
        await authenticateAsListener(stream, this.acceptedKeys, remote, this.peerId);
      } catch (error) {
        this.refused('from', connection, error, null);
        if (error instanceof AuthError && error.failure === 'peer_unproven') await lingerAfterRefusal(stream);
        else stream.abort(asError(error));
        await connection.close().catch(() => undefined);
        return false;
      }
      void stream.close().catch(() => undefined); // the handshake is done: never wait on the close
      return true;
    });
  }

  /**
   * A join request, served on a connection that has not proved the cookie (it is how a node gets
   * the cookie): at most JOIN_STREAMS_MAX at once, each bounded by answerJoin's frame size and
   * deadline. A refusal is logged through the gatekeeper's rate-limited log, never the credential.
   */
  private acceptJoin(stream: Stream, connection: Connection, service: JoinService): void {
    const remote = connection.remotePeer.toString();
    const where = `${remote} at ${connection.remoteAddr.toString()}`;
    if (this.joinStreams >= JOIN_STREAMS_MAX) {
      this.joinsRefused += 1;
      this.gatekeeper.note(`join: refused a join stream from ${where}: ${JOIN_STREAMS_MAX} joins running`);
      stream.abort(new Error('too many joins running'));
      return;
    }
    this.joinStreams += 1;
    void answerJoin(stream, remote, service).then((outcome) => {
      this.joinStreams -= 1;
      this.logJoin(outcome, where);
    });
  }

  private logJoin(outcome: JoinOutcome, where: string): void {
    if (!outcome.answered) {
      this.joinsRefused += 1;
      this.gatekeeper.note(`join: refused a join from peer ${where}: ${outcome.failure}`);
      return;
    }
    const { nodeId, answer, lost } = outcome;
    const unsent = lost === null ? '' : ` (the answer was lost: ${lost})`;
    if (answer.ok) {
      this.joinsAdmitted += 1;
      this.log(
        `join: node ${nodeId} joined from peer ${where}; its join credential is used up and node ${nodeId} is bound to that peer id${unsent}`,
        'info',
        { peer_node_id: nodeId },
      );
      return;
    }
    this.joinsRefused += 1;
    this.gatekeeper.note(`join: refused node ${nodeId} from peer ${where}: ${answer.reason}${unsent}`);
  }

  /** An inbound Raft stream (only ever reached on an authenticated connection: see serveAuthenticated). */
  private acceptStream(stream: Stream, connection: Connection): void {
    assert(
      this.gatekeeper.isAuthenticated(connection),
      'Raft streams are served on authenticated connections only',
    );
    const decoder = new FrameDecoder();
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      if (decoder.pendingBytes > 0) this.framesRejected += 1; // a frame cut short by the end of the stream
      void stream.close().catch(() => undefined);
    };
    stream.addEventListener('message', (event) => {
      if (ended) return;
      const data = event.data instanceof Uint8Array ? event.data : event.data.subarray();
      let frames: Uint8Array[];
      try {
        frames = decoder.push(data);
      } catch {
        this.framesRejected += 1;
        ended = true;
        stream.abort(new Error('oversized frame'));
        return;
      }
      for (const frame of frames) this.deliver(frame, connection.remotePeer);
    });
    stream.addEventListener('remoteCloseWrite', end);
    stream.addEventListener('close', end);
  }

  private deliver(frame: Uint8Array, remotePeer: PeerId): void {
    let message: WireMessage;
    try {
      message = decodeWireMessage(frame);
    } catch {
      this.framesRejected += 1;
      return;
    }
    if (message.to !== this.nodeId) {
      this.framesRejected += 1;
      return;
    }
    if (!this.speaksFor(message.from, remotePeer.toString(), 'a message from')) return;
    // A node that reached us can be answered over its own connection even before discovery knows it.
    if (message.from !== this.nodeId && !this.peers.has(message.from)) {
      this.peers.set(message.from, newOutbound([remotePeer]));
    }
    this.onMessage(message);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const id of [...this.peers.keys()]) this.dropOutbound(id); // the address book stays: no removal events
    await this.libp2p.stop();
    this.gatekeeper.stop();
  }

  /** Unauthenticated connections and what admission did about them (for tests and metrics). */
  get admission(): GatekeeperStats {
    return this.gatekeeper.stats;
  }

  /** Open connections (for tests and metrics). */
  connections(): Connection[] {
    return this.libp2p.getConnections();
  }
}
