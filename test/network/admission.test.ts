import type { Socket } from 'node:net';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import type { WireMessage } from '../../src/node/interfaces.ts';
import {
  UNAUTHENTICATED_CONNECTIONS_MAX,
  UNAUTHENTICATED_PER_ADDRESS_MAX,
} from '../../src/network/timeouts.ts';
import {
  aspenNode,
  eventually,
  rawClient,
  silentSocket,
  sleep,
  tcpAddressOf,
  tcpPortOf,
} from './intruders.ts';

/** Source addresses of the silent sockets: 127.0.0.10 .. 127.0.0.29. */
const SILENT_ADDRESSES = Array.from({ length: 20 }, (_, index) => `127.0.0.${10 + index}`);
/** Silent sockets kept open per address: 20 x 4 = 80, past the total cap of 64. */
const SILENT_PER_ADDRESS = 4;
/** One address opens more than its own cap, paced under libp2p's 5 new connections per second per address. */
const GREEDY_ADDRESS = '127.0.0.9';
const GREEDY_SOCKETS = UNAUTHENTICATED_PER_ADDRESS_MAX + 4;
const GREEDY_PACE_MS = 250;
/** An evicted socket's close reaches its client in milliseconds; far below the 3 s upgrade timeout. */
const EVICTION_SEEN_MS = 500;
/** Cookie-less libp2p peers that finish Noise and then sit, one per address 127.0.0.40 ... */
const STRANGERS = 16;
/** A closed silent socket is reopened after this (a sustained attack, bounded in rate). */
const REOPEN_DELAY_MS = 100;
/** The attack runs before the real nodes try, and for at most this long in all. */
const ATTACK_HEAD_START_MS = 2_500;
const ATTACK_MS_MAX = 15_000;
/** "Within a few seconds": a real node's frames arrive in this despite the attack (it takes milliseconds). */
const FIRST_CONTACT_MS = 5_000;
const SEND_INTERVAL_MS = 100;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Keeps `count` silent sockets from `source` open to `port`, reopening closed ones, until stopped. */
function sustain(port: number, source: string, count: number, stopAtMs: number): () => void {
  let stopped = false;
  const sockets = new Set<Socket>();
  const open = (): void => {
    if (stopped || Date.now() > stopAtMs) return;
    const socket = silentSocket(port, source);
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      setTimeout(open, REOPEN_DELAY_MS);
    });
  };
  for (let index = 0; index < count; index += 1) open();
  return () => {
    stopped = true;
    for (const socket of sockets) socket.destroy();
  };
}

describe('admission of unauthenticated connections', () => {
  it('silent sockets and cookie-less peers past every cap cannot keep real nodes out, nor hold their slots', async () => {
    const target = await aspenNode(cleanups, { nodeId: 2 });
    const port = tcpPortOf(target.transport);
    const stopAtMs = Date.now() + ATTACK_MS_MAX;
    const stops = SILENT_ADDRESSES.map((source) => sustain(port, source, SILENT_PER_ADDRESS, stopAtMs));
    stops.push(sustain(port, GREEDY_ADDRESS, SILENT_PER_ADDRESS, stopAtMs));
    cleanups.push(() => {
      for (const stop of stops) stop();
    });
    const strangers = await Promise.all(
      Array.from({ length: STRANGERS }, (_, index) => rawClient(cleanups, `127.0.0.${40 + index}`)),
    );
    const dials = strangers.map((stranger) =>
      stranger.dial(multiaddr(tcpAddressOf(target.transport))).catch(() => null),
    );
    let worst = { unauthenticated: 0, perAddress: 0 };
    const sample = setInterval(() => {
      const { unauthenticated, unauthenticatedPerAddressMax } = target.transport.admission;
      worst = {
        unauthenticated: Math.max(worst.unauthenticated, unauthenticated),
        perAddress: Math.max(worst.perAddress, unauthenticatedPerAddressMax),
      };
    }, 20);
    cleanups.push(() => {
      clearInterval(sample);
    });
    await sleep(ATTACK_HEAD_START_MS);

    // Two real nodes: one dials QUIC first (the default), one TCP only; both keep sending until heard.
    const quicFirst = await aspenNode(cleanups, { nodeId: 1 });
    const tcpOnly = await aspenNode(cleanups, { nodeId: 3 });
    quicFirst.transport.addPeer(2, target.transport.listenAddresses.join(','));
    tcpOnly.transport.addPeer(2, tcpAddressOf(target.transport));
    const heardFrom = (id: number): boolean =>
      target.received.some((message: WireMessage) => message.from === id);
    const sender = setInterval(() => {
      for (const [id, node] of [
        [1, quicFirst],
        [3, tcpOnly],
      ] as const)
        node.transport.send({ type: 'heartbeat', from: id, to: 2, term: 1, commitIndex: 0, readRound: 0 });
    }, SEND_INTERVAL_MS);
    cleanups.push(() => {
      clearInterval(sender);
    });
    await eventually(
      () => heardFrom(1) && heardFrom(3),
      FIRST_CONTACT_MS,
      'both real nodes get through the attack',
    );
    clearInterval(sender);
    expect(target.transport.admission.evicted).toBeGreaterThan(0); // the caps were full and turning over

    for (const stop of stops) stop();
    await Promise.all(dials);
    await eventually(
      () => target.transport.admission.unauthenticated === 0,
      2 * FIRST_CONTACT_MS,
      'every unauthenticated slot is freed',
    );
    clearInterval(sample);
    expect(worst.unauthenticated).toBeLessThanOrEqual(UNAUTHENTICATED_CONNECTIONS_MAX);
    expect(worst.unauthenticated).toBeGreaterThan(UNAUTHENTICATED_CONNECTIONS_MAX / 2);
    expect(worst.perAddress).toBeLessThanOrEqual(UNAUTHENTICATED_PER_ADDRESS_MAX);
    expect(
      target.transport
        .connections()
        .every((connection) =>
          [quicFirst.transport.peerId, tcpOnly.transport.peerId].includes(connection.remotePeer.toString()),
        ),
    ).toBe(true);
    expect(strangers.every((stranger) => stranger.getConnections().length === 0)).toBe(true);
  });

  it('one address holds at most its own cap of unauthenticated connections: each new one closes its oldest', async () => {
    const target = await aspenNode(cleanups, { nodeId: 2 });
    const sockets: Socket[] = [];
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
    });
    let worst = 0;
    for (let index = 0; index < GREEDY_SOCKETS; index += 1) {
      sockets.push(silentSocket(tcpPortOf(target.transport), GREEDY_ADDRESS));
      await sleep(GREEDY_PACE_MS);
      worst = Math.max(worst, target.transport.admission.unauthenticatedPerAddressMax);
    }
    // Well before any upgrade timeout, the oldest sockets of the address have been closed, the newest not.
    const oldest = sockets.slice(0, GREEDY_SOCKETS - UNAUTHENTICATED_PER_ADDRESS_MAX);
    await eventually(
      () => oldest.every((socket) => socket.destroyed),
      EVICTION_SEEN_MS,
      'the oldest sockets are the ones closed',
    );
    expect(sockets.slice(oldest.length).some((socket) => socket.destroyed)).toBe(false);
    expect(worst).toBe(UNAUTHENTICATED_PER_ADDRESS_MAX);
    expect(target.transport.admission).toMatchObject({
      unauthenticated: UNAUTHENTICATED_PER_ADDRESS_MAX,
      evicted: oldest.length,
    });
  });
});
