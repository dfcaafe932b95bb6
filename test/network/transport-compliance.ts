import { describe, expect, it } from 'vitest';
import type { PeerEvent } from '../../src/node/address-book.ts';
import type { ClusterTransport, WireMessage } from '../../src/node/interfaces.ts';
import type { NodeId } from '../../src/raft/types.ts';
import { plain, samples } from './samples.ts';

/** Messages one burst sends: enough to cross buffers and queues, bounded for CI time. */
const BURST_MESSAGES = 300;

/** A few transports of one kind, connected to one network (simulated or loopback). */
export interface TransportHarness {
  readonly transports: ReadonlyMap<NodeId, ClusterTransport>;
  /** What each node received, in arrival order. */
  received(id: NodeId): readonly WireMessage[];
  /** An address other nodes can reach `id` at. */
  addressOf(id: NodeId): string;
  /** Let the network run until `done()` holds or a bound passes (virtual or real time). */
  settle(done: () => boolean): Promise<void>;
  /** Let whatever is in flight arrive (for checks that something did not). */
  quiet(): Promise<void>;
  stop(): Promise<void>;
}

export type HarnessFactory = (ids: readonly NodeId[]) => Promise<TransportHarness>;

function get(harness: TransportHarness, id: NodeId): ClusterTransport {
  const transport = harness.transports.get(id);
  if (transport === undefined) throw new Error(`no transport ${id}`);
  return transport;
}

function connectAll(harness: TransportHarness): void {
  for (const [id, transport] of harness.transports) {
    for (const peer of harness.transports.keys())
      if (peer !== id) transport.addPeer(peer, harness.addressOf(peer));
  }
}

function addressed(message: WireMessage, from: NodeId, to: NodeId): WireMessage {
  return { ...message, from, to };
}

async function withHarness(
  factory: HarnessFactory,
  ids: readonly NodeId[],
  body: (harness: TransportHarness) => Promise<void>,
): Promise<void> {
  const harness = await factory(ids);
  try {
    await body(harness);
  } finally {
    await harness.stop();
  }
}

/** The contract every ClusterTransport keeps; the simulator's and libp2p's run the same cases. */
export function describeTransportCompliance(name: string, factory: HarnessFactory): void {
  describe(`ClusterTransport compliance: ${name}`, () => {
    it('delivers every message type intact, to its addressee only', async () => {
      await withHarness(factory, [1, 2, 3], async (harness) => {
        connectAll(harness);
        for (const message of samples) get(harness, 1).send(addressed(message, 1, 2));
        await harness.settle(() => harness.received(2).length >= samples.length);
        // The contract is datagram-like: no order promised (the simulator reorders), so compare as sets.
        const expected = plain(samples.map((message) => addressed(message, 1, 2))) as unknown[];
        expect(harness.received(2)).toHaveLength(samples.length);
        expect(plain(harness.received(2))).toEqual(expect.arrayContaining(expected));
        expect(harness.received(3)).toHaveLength(0);
        expect(harness.received(1)).toHaveLength(0);
      });
    });

    it('delivers a burst to several peers, and answers flow back', async () => {
      await withHarness(factory, [1, 2, 3], async (harness) => {
        connectAll(harness);
        for (let round = 1; round <= BURST_MESSAGES; round += 1) {
          for (const to of [2, 3])
            get(harness, 1).send({
              type: 'heartbeat',
              from: 1,
              to,
              term: 1,
              commitIndex: 0,
              readRound: round,
            });
        }
        get(harness, 3).send({ type: 'heartbeat_response', from: 3, to: 1, term: 1, readRound: 9 });
        await harness.settle(
          () =>
            harness.received(2).length + harness.received(3).length >= 2 * BURST_MESSAGES &&
            harness.received(1).length >= 1,
        );
        for (const id of [2, 3]) {
          const rounds = harness
            .received(id)
            .map((message) => (message.type === 'heartbeat' ? message.readRound : 0));
          expect(rounds.slice().sort((a, b) => a - b)).toEqual(
            Array.from({ length: BURST_MESSAGES }, (_, index) => index + 1),
          );
        }
        expect(harness.received(1)).toMatchObject([{ type: 'heartbeat_response', from: 3, readRound: 9 }]);
      });
    });

    it('drops and counts a message to a peer it has no address for, without throwing', async () => {
      await withHarness(factory, [1, 2], async (harness) => {
        const sender = get(harness, 1);
        expect(() => {
          sender.send({ type: 'timeout_now', from: 1, to: 2, term: 1 });
        }).not.toThrow();
        expect(() => {
          sender.send({ type: 'timeout_now', from: 1, to: 99, term: 1 });
        }).not.toThrow();
        expect(sender.messagesDropped).toBe(2);
        await harness.quiet();
        expect(harness.received(2)).toHaveLength(0);
      });
    });

    it('keeps an address map with change events; a removed peer gets nothing more', async () => {
      await withHarness(factory, [1, 2], async (harness) => {
        const sender = get(harness, 1);
        const events: PeerEvent[] = [];
        const unsubscribe = sender.onPeerEvent((event) => events.push(event));
        sender.addPeer(2, harness.addressOf(2));
        sender.addPeer(2, harness.addressOf(2)); // a refresh with the same address is no change
        expect(sender.peerAddresses()).toEqual(new Map([[2, harness.addressOf(2)]]));
        sender.send({ type: 'timeout_now', from: 1, to: 2, term: 1 });
        await harness.settle(() => harness.received(2).length === 1);
        sender.removePeer(2);
        sender.removePeer(2);
        const dropped = sender.messagesDropped;
        sender.send({ type: 'timeout_now', from: 1, to: 2, term: 2 });
        expect(sender.messagesDropped).toBe(dropped + 1);
        sender.addPeer(2, harness.addressOf(2));
        sender.send({ type: 'timeout_now', from: 1, to: 2, term: 3 });
        await harness.settle(() => harness.received(2).length === 2);
        expect(harness.received(2).map((message) => message.term)).toEqual([1, 3]);
        expect(events.map((event) => `${event.kind} ${event.id}`)).toEqual([
          'added 2',
          'removed 2',
          'added 2',
        ]);
        unsubscribe();
        sender.removePeer(2);
        expect(events).toHaveLength(3);
        expect(() => {
          sender.addPeer(2, '');
        }).toThrow(RangeError);
      });
    });

    it('after stop, sends are dropped and nothing reaches the stopped node', async () => {
      await withHarness(factory, [1, 2], async (harness) => {
        connectAll(harness);
        await get(harness, 2).stop();
        const dropped = get(harness, 2).messagesDropped;
        get(harness, 2).send({ type: 'timeout_now', from: 2, to: 1, term: 1 });
        expect(get(harness, 2).messagesDropped).toBe(dropped + 1);
        get(harness, 1).send({ type: 'timeout_now', from: 1, to: 2, term: 1 });
        await harness.quiet();
        expect(harness.received(2)).toHaveLength(0);
        expect(harness.received(1)).toHaveLength(0);
      });
    });
  });
}
