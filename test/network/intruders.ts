import { connect, type Socket } from 'node:net';
import { noise } from '@chainsafe/libp2p-noise';
import { quic } from '@chainsafe/libp2p-quic';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { identify, type Identify } from '@libp2p/identify';
import type { Stream } from '@libp2p/interface';
import { tcp, type TCPSocketOptions } from '@libp2p/tcp';
import { createLibp2p, type Libp2p } from 'libp2p';
import { expect } from 'vitest';
import { GossipDiscovery } from '../../src/cluster/discovery/gossip.ts';
import { PeerDirectory } from '../../src/cluster/discovery/peer-directory.ts';
import type { WireMessage } from '../../src/node/interfaces.ts';
import { FrameDecoder } from '../../src/network/frame.ts';
import { Libp2pTransport, type Libp2pTransportOptions } from '../../src/network/libp2p-transport.ts';

/** Polling interval of eventually(). */
const POLL_MS = 10;
/** Frames a test reader keeps before it stops listening (the auth exchange has two per side). */
const READER_FRAMES_MAX = 16;

export const LOOPBACK_LISTEN = ['/ip4/127.0.0.1/udp/0/quic-v1', '/ip4/127.0.0.1/tcp/0'];

/** Wait until `check` holds, polling, at most `timeoutMs`; then assert it. */
export async function eventually(check: () => boolean, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await sleep(POLL_MS);
  expect(check(), what).toBe(true);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A real Aspen transport on loopback, stopped by the returned cleanup list. */
export async function aspenNode(
  cleanups: (() => Promise<void> | void)[],
  options: Partial<Libp2pTransportOptions> & { nodeId: number },
): Promise<{ transport: Libp2pTransport; received: WireMessage[]; logs: string[] }> {
  const received: WireMessage[] = [];
  const logs: string[] = [];
  const transport = await Libp2pTransport.create({
    listen: LOOPBACK_LISTEN,
    cookie: 'test-cluster',
    onMessage: (message) => received.push(message),
    log: (line) => logs.push(line),
    ...options,
  });
  cleanups.push(() => transport.stop());
  return { transport, received, logs };
}

/**
 * A member running gossip discovery as aspen-node does (transport, peer directory, announcements),
 * on `cookie` and, during a rotation, `previousCookie` too; stopped by the cleanup list.
 */
export async function startGossipMember(
  cleanups: (() => Promise<void> | void)[],
  options: {
    readonly nodeId: number;
    readonly cookie: string;
    readonly previousCookie?: string;
    readonly authDeadlineMs?: number;
    readonly announceIntervalMs: number;
  },
): Promise<{
  transport: Libp2pTransport;
  directory: PeerDirectory;
  gossip: GossipDiscovery;
  logs: string[];
}> {
  const { nodeId, cookie, previousCookie, authDeadlineMs, announceIntervalMs } = options;
  const { transport, logs } = await aspenNode(cleanups, {
    nodeId,
    cookie,
    ...(previousCookie === undefined ? {} : { previousCookie }),
    gossip: true,
    ...(authDeadlineMs === undefined ? {} : { authDeadlineMs }),
  });
  const log = (line: string): void => {
    logs.push(line);
  };
  const directory = new PeerDirectory({ transport, selfId: nodeId, selfPeerId: transport.peerId, log });
  const gossip = new GossipDiscovery({
    transport,
    directory,
    nodeId,
    cookie,
    previousCookie: previousCookie ?? null,
    httpAddr: `127.0.0.1:${8000 + nodeId}`,
    log,
    announceIntervalMs,
  });
  gossip.start();
  cleanups.push(() => {
    gossip.stop();
  });
  return { transport, directory, gossip, logs };
}

export function tcpAddressOf(transport: Libp2pTransport): string {
  const address = transport.listenAddresses.find((candidate) => candidate.includes('/tcp/'));
  if (address === undefined) throw new Error('no TCP listen address');
  return address.replace(/\/p2p\/.*$/, '');
}

export function tcpPortOf(transport: Libp2pTransport): number {
  return Number(/\/tcp\/(\d+)/.exec(tcpAddressOf(transport))?.[1]);
}

/**
 * A plain libp2p peer without the cookie: TCP + Noise + Yamux, identify and gossipsub as any
 * libp2p application has them, dialing from `sourceAddress` (any 127.0.0.0/8 address).
 */
export async function rawClient(
  cleanups: (() => Promise<void> | void)[],
  sourceAddress = '127.0.0.1',
  listen: readonly string[] = [],
): Promise<Libp2p<{ identify: Identify; pubsub: GossipSub }>> {
  const dialOpts: TCPSocketOptions & { localAddress: string } = { localAddress: sourceAddress };
  const node = await createLibp2p({
    addresses: { listen: [...listen] },
    transports: [tcp({ dialOpts })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }) },
  });
  cleanups.push(() => node.stop());
  return node;
}

/** A plain libp2p peer without the cookie that speaks QUIC only (QUIC connections reach the gater after their TLS handshake). */
export async function rawQuicClient(cleanups: (() => Promise<void> | void)[]): Promise<Libp2p> {
  const node = await createLibp2p({ transports: [quic()] });
  cleanups.push(() => node.stop());
  return node;
}

/** A TCP socket to `port` from `sourceAddress` that never sends a byte (a half-open first contact). */
export function silentSocket(port: number, sourceAddress: string): Socket {
  const socket = connect({ host: '127.0.0.1', port, localAddress: sourceAddress });
  socket.on('error', () => undefined); // refused or reset by the listener: that is its job
  return socket;
}

/** Collects the length-prefixed frames a stream receives (bounded), and whether it was closed or reset. */
export class FrameCollector {
  readonly frames: Uint8Array[] = [];
  closed = false;
  malformed = false;
  private readonly decoder = new FrameDecoder();

  constructor(stream: Stream) {
    this.closed = stream.status !== 'open'; // a reset may come before anyone listens
    stream.addEventListener('message', (event) => {
      try {
        for (const frame of this.decoder.push(
          event.data instanceof Uint8Array ? event.data : event.data.subarray(),
        )) {
          if (this.frames.length < READER_FRAMES_MAX) this.frames.push(frame);
        }
      } catch {
        this.malformed = true;
      }
    });
    stream.addEventListener('close', () => {
      this.closed = true;
    });
  }
}
