import { randomBytes } from 'node:crypto';
import { multiaddr } from '@multiformats/multiaddr';
import type { Message } from '@libp2p/gossipsub';
import { afterEach, describe, expect, it } from 'vitest';
import { clusterTopic } from '../../src/cluster/discovery/topic.ts';
import { encodeWireMessage } from '../../src/network/codec.ts';
import { AUTH_PROTOCOL, NONCE_BYTES } from '../../src/network/auth.ts';
import { encodeFrame } from '../../src/network/frame.ts';
import { RAFT_PROTOCOL } from '../../src/network/libp2p-transport.ts';
import {
  aspenNode,
  eventually,
  FrameCollector,
  rawClient,
  rawQuicClient,
  sleep,
  startGossipMember,
  tcpAddressOf,
} from './intruders.ts';

const COOKIE = 'test-cluster';
/** Announcements every 100 ms here (10 s in production), so the stranger's wait spans many. */
const ANNOUNCE_INTERVAL_MS = 100;
/** How long the stranger listens: 15 announce intervals. */
const STRANGER_LISTEN_MS = 15 * ANNOUNCE_INTERVAL_MS;
/** The deadline for these tests (5 s in production); the stranger's observations all happen before it. */
const AUTH_DEADLINE_MS = 3_000;
/** Loopback settles in milliseconds; this bounds a loaded machine. */
const SETTLE_MS = 5_000;
const MESHSUB = '/meshsub/1.1.0';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A member running gossip discovery as aspen-node does, with a short announce interval. */
function gossipMember(nodeId: number): ReturnType<typeof startGossipMember> {
  return startGossipMember(cleanups, {
    nodeId,
    cookie: COOKIE,
    authDeadlineMs: AUTH_DEADLINE_MS,
    announceIntervalMs: ANNOUNCE_INTERVAL_MS,
  });
}

describe('a libp2p peer without the cookie', () => {
  it('learns no protocol, address, version, topic, subscription or announcement through identify or gossipsub', async () => {
    const one = await gossipMember(1);
    const two = await gossipMember(2);
    await two.transport.connect([multiaddr(tcpAddressOf(one.transport))]);
    const topic = clusterTopic(COOKIE);
    // Worst case: the stranger even knows the topic, and listens on it with plain gossipsub.
    const stranger = await rawClient(cleanups);
    const heard: Message[] = [];
    const subscriptions: string[] = [];
    stranger.services.pubsub.subscribe(topic);
    stranger.services.pubsub.addEventListener('message', (event) => {
      heard.push(event.detail);
    });
    stranger.services.pubsub.addEventListener('subscription-change', (event) => {
      subscriptions.push(...event.detail.subscriptions.map((entry) => entry.topic));
    });
    const connection = await stranger.dial(multiaddr(tcpAddressOf(one.transport)));

    await expect(stranger.services.identify.identify(connection)).rejects.toThrow();
    const meshsub = await stranger.dialProtocol(connection.remotePeer, MESHSUB).catch(() => null); // gossipsub itself never gets this far
    await sleep(STRANGER_LISTEN_MS);

    // Meanwhile the member with the cookie heard node 1 announce, HTTP address and all (the control).
    await eventually(
      () => two.directory.peers().some((peer) => peer.nodeId === 1 && peer.httpAddr === '127.0.0.1:8001'),
      SETTLE_MS,
      'node 2 hears node 1',
    );
    expect(one.transport.pubsub?.getPeers().map(String)).toEqual([two.transport.peerId]);
    expect(heard).toEqual([]);
    expect(subscriptions).toEqual([]);
    expect(stranger.services.pubsub.getSubscribers(topic)).toEqual([]);
    const known = await stranger.peerStore.get(connection.remotePeer);
    expect(known.metadata.get('AgentVersion')).toBeUndefined();
    expect(
      known.protocols.filter((protocol) => protocol !== '/ipfs/id/1.0.0' && protocol !== MESHSUB),
    ).toEqual([]); // only what it asked for itself
    const quic = one.transport.listenAddresses.find((address) => address.includes('/quic-v1')) ?? '';
    expect(
      known.addresses
        .map((address) => address.multiaddr.toString())
        .filter((address) => quic.startsWith(address) || address.includes('/quic-v1')),
    ).toEqual([]);
    expect(meshsub === null || meshsub.status !== 'open').toBe(true);
    expect(one.transport.admission.streamsRefused).toBeGreaterThanOrEqual(1);
  });

  it('gets its Raft stream reset unread, and its connection closed at the authentication deadline, over TCP or QUIC', async () => {
    const { transport, received, logs } = await aspenNode(cleanups, {
      nodeId: 2,
      cookie: COOKIE,
      authDeadlineMs: AUTH_DEADLINE_MS,
    });
    const stranger = await rawClient(cleanups);
    const quicStranger = await rawQuicClient(cleanups);
    await quicStranger.dial(
      multiaddr(transport.listenAddresses.find((address) => address.includes('/quic-v1')) ?? ''),
    );
    const connection = await stranger.dial(multiaddr(tcpAddressOf(transport)));
    const stream = await connection.newStream(RAFT_PROTOCOL);
    const collector = new FrameCollector(stream);
    try {
      stream.send(
        encodeFrame(
          encodeWireMessage({ type: 'heartbeat', from: 1, to: 2, term: 9, commitIndex: 0, readRound: 0 }),
        ),
      );
    } catch {
      // Already reset by the listener: that is the refusal.
    }
    await eventually(() => collector.closed, SETTLE_MS, 'the Raft stream is reset');
    expect(received).toEqual([]);
    expect(logs.join('\n')).toMatch(/refused a \S+ stream from unauthenticated/);
    expect(transport.admission.unauthenticated).toBe(2);
    await eventually(
      () => stranger.getConnections().length === 0 && quicStranger.getConnections().length === 0,
      AUTH_DEADLINE_MS + SETTLE_MS,
      'both strangers are cut off',
    );
    expect(transport.admission).toMatchObject({ expired: 2, unauthenticated: 0, streamsRefused: 1 });
    expect(logs.join('\n')).toMatch(/refused a \/aspen\/raft\/1\.0\.0 stream from unauthenticated/);
    expect(transport.connections()).toEqual([]);
  });

  it('dialing in, gets a bare nonce to attack (no MAC), then a refusal, and the connection closed', async () => {
    const { transport, logs } = await aspenNode(cleanups, { nodeId: 2, cookie: COOKIE });
    const stranger = await rawClient(cleanups);
    const connection = await stranger.dial(multiaddr(tcpAddressOf(transport)));
    const stream = await connection.newStream(AUTH_PROTOCOL);
    const collector = new FrameCollector(stream);
    stream.send(encodeFrame(randomBytes(NONCE_BYTES)));
    await eventually(() => collector.frames.length === 1, SETTLE_MS, 'the listener answers the hello');
    expect(collector.frames[0]?.byteLength).toBe(NONCE_BYTES); // a nonce and nothing keyed by the cookie
    stream.send(encodeFrame(randomBytes(32))); // a guessed proof
    await eventually(() => stranger.getConnections().length === 0, SETTLE_MS, 'the listener hangs up');
    expect(collector.frames.slice(1).every((frame) => frame.byteLength === 1)).toBe(true); // at most the refusal byte
    expect(transport.authRefusals).toBe(1);
    expect(logs.join('\n')).toMatch(
      /auth: refused connection from peer \S+ at \S+: it does not know this cluster's cookie \(or the cookie differs\)/,
    );
  });
});
