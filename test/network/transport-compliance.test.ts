import { expect } from 'vitest';
import { Libp2pTransport } from '../../src/network/libp2p-transport.ts';
import type { ClusterTransport, WireMessage } from '../../src/node/interfaces.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import type { NodeId } from '../../src/raft/types.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { SimNetwork } from '../../src/sim/network.ts';
import { SimTransport } from '../../src/sim/sim-transport.ts';
import { describeTransportCompliance, type TransportHarness } from './transport-compliance.ts';

/** Virtual time the simulated network may run per settle (messages take at most 20 ms). */
const SIM_SETTLE_MS = 1_000;
/** Real time a loopback network may take to deliver what a case waits for. */
const LIBP2P_SETTLE_MS = 10_000;
const LIBP2P_QUIET_MS = 300;

function inboxes(ids: readonly NodeId[]): Map<NodeId, WireMessage[]> {
  return new Map(ids.map((id) => [id, []]));
}

function inbox(received: Map<NodeId, WireMessage[]>, id: NodeId): WireMessage[] {
  const list = received.get(id);
  if (list === undefined) throw new Error(`no inbox ${id}`);
  return list;
}

describeTransportCompliance('simulated network', (ids) => {
  const events = new EventQueue();
  const network = new SimNetwork(events, new SeededPrng(7), {
    delayMsMin: 1,
    delayMsMax: 20,
    lossProbability: 0,
    duplicateProbability: 0,
  });
  const received = inboxes(ids);
  const transports = new Map<NodeId, ClusterTransport>(
    ids.map((id) => [id, new SimTransport(network, id, (message) => inbox(received, id).push(message))]),
  );
  const runFor = (durationMs: number, done: () => boolean): void => {
    const untilMs = events.nowMs + durationMs;
    while (!done() && events.runNext(untilMs)) {
      /* one event per turn */
    }
  };
  const harness: TransportHarness = {
    transports,
    received: (id) => inbox(received, id),
    addressOf: (id) => `sim-node-${id}`,
    settle: (done) => {
      runFor(SIM_SETTLE_MS, done);
      expect(done()).toBe(true);
      return Promise.resolve();
    },
    quiet: () => {
      runFor(SIM_SETTLE_MS, () => false);
      return Promise.resolve();
    },
    stop: async () => {
      for (const transport of transports.values()) await transport.stop();
    },
  };
  return Promise.resolve(harness);
});

describeTransportCompliance('libp2p on loopback', async (ids) => {
  const received = inboxes(ids);
  const transports = new Map<NodeId, Libp2pTransport>();
  for (const id of ids) {
    transports.set(
      id,
      await Libp2pTransport.create({
        nodeId: id,
        listen: ['/ip4/127.0.0.1/udp/0/quic-v1', '/ip4/127.0.0.1/tcp/0'],
        cookie: 'compliance',
        onMessage: (message) => inbox(received, id).push(message),
      }),
    );
  }
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  return {
    transports,
    received: (id) => inbox(received, id),
    addressOf: (id) => transports.get(id)?.listenAddresses[0] ?? '',
    settle: async (done) => {
      const deadline = Date.now() + LIBP2P_SETTLE_MS;
      while (!done() && Date.now() < deadline) await sleep(10);
      expect(done()).toBe(true);
    },
    quiet: () => sleep(LIBP2P_QUIET_MS),
    stop: async () => {
      for (const transport of transports.values()) await transport.stop();
    },
  };
});
