import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { STALE_CONNECTION_PROBE_TIMEOUT_MS } from '../../src/network/timeouts.ts';
import { aspenNode, eventually, tcpAddressOf, tcpPortOf } from './intruders.ts';

/** Heartbeats every 50 ms from node 1 to node 2. */
const SEND_INTERVAL_MS = 50;
/** The probe's timeout plus a few redials; well below libp2p's 10 s ping that would also end it. */
const RECOVERY_MS = STALE_CONNECTION_PROBE_TIMEOUT_MS + 3_000;
const SETTLE_MS = 5_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A TCP relay on loopback that can go silent while keeping its sockets open: a peer that died without a word. */
async function freezableRelay(targetPort: number): Promise<{ port: number; freeze: () => void }> {
  const sockets: Socket[] = [];
  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    for (const socket of [client, upstream]) socket.on('error', () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    sockets.push(client, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no relay port');
  return {
    port: address.port,
    freeze: () => {
      for (const socket of sockets) {
        socket.unpipe();
        socket.pause();
      }
    },
  };
}

describe('a peer that connects again', () => {
  it('gets its older connection probed and closed when it no longer answers, and frames flow on the new one at once', async () => {
    const one = await aspenNode(cleanups, { nodeId: 1 });
    const two = await aspenNode(cleanups, { nodeId: 2 });
    const relay = await freezableRelay(tcpPortOf(one.transport));
    two.transport.addPeer(1, `/ip4/127.0.0.1/tcp/${relay.port}`);
    two.transport.send({ type: 'heartbeat', from: 2, to: 1, term: 1, commitIndex: 0, readRound: 0 });
    await eventually(() => one.received.length > 0, SETTLE_MS, 'node 2 reaches node 1 through the relay');
    // Node 1 knows no address for node 2: it answers over node 2's own (relayed) connection.
    expect(one.transport.peerAddresses().has(2)).toBe(false);
    const sender = setInterval(() => {
      one.transport.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: 0 });
    }, SEND_INTERVAL_MS);
    cleanups.push(() => {
      clearInterval(sender);
    });
    await eventually(
      () => two.received.length > 0,
      SETTLE_MS,
      'node 1 reaches node 2 over the relayed connection',
    );

    relay.freeze(); // the relayed connection stays open on both sides and carries nothing from now on
    const heardBefore = two.received.length;
    two.transport.addPeer(1, tcpAddressOf(one.transport)); // node 2 "comes back" on a direct connection
    two.transport.send({ type: 'heartbeat', from: 2, to: 1, term: 1, commitIndex: 0, readRound: 1 });
    await eventually(() => two.received.length > heardBefore + 1, RECOVERY_MS, 'node 1 reaches node 2 again');
    // Node 1 moved its Raft stream to node 2's new connection as soon as it authenticated.
    expect(one.transport.raftStreamsMovedTotal).toBe(1);
    // Frames flow before the probe ends: the old connection closes once it fails to answer.
    await eventually(
      () => one.transport.staleConnectionsClosed === 1 && two.transport.staleConnectionsClosed === 1,
      RECOVERY_MS,
      'both sides close the frozen connection',
    );
    expect(one.transport.connections()).toHaveLength(1);
  });
});
