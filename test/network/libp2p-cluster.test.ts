import { afterEach, describe, expect, it } from 'vitest';
import type { WireMessage } from '../../src/node/interfaces.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { MemoryKvStateMachine } from '../../src/node/kv-state-machine.ts';
import { systemClock } from '../../src/node/local-runtime.ts';
import { RaftNode } from '../../src/node/raft-node.ts';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import { encodeWireMessage } from '../../src/network/codec.ts';
import { encodeFrame } from '../../src/network/frame.ts';
import { Libp2pTransport, RAFT_PROTOCOL } from '../../src/network/libp2p-transport.ts';
import { toMultiaddr, toMultiaddrs } from '../../src/network/multiaddrs.ts';
import { defaultRaftConfig } from '../../src/raft/config.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { MemoryLogStore } from '../../src/storage/memory-log-store.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function transport(
  nodeId: number,
  onMessage: (message: WireMessage) => void,
  cookie = 'test-cluster',
  log?: (line: string) => void,
): Promise<Libp2pTransport> {
  const created = await Libp2pTransport.create({
    nodeId,
    listen: ['/ip4/127.0.0.1/udp/0/quic-v1', '/ip4/127.0.0.1/tcp/0'],
    onMessage,
    cookie,
    ...(log === undefined ? {} : { log }),
  });
  cleanups.push(() => created.stop());
  return created;
}

async function eventually(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(check()).toBe(true);
}

describe('Raft over libp2p on loopback (QUIC, and TCP + Noise + Yamux)', () => {
  it('delivers frames between two transports and drops misaddressed or malformed ones', async () => {
    const received: WireMessage[] = [];
    const a = await transport(1, () => undefined);
    const b = await transport(2, (message) => received.push(message));
    a.addPeer(2, b.listenAddresses[0] ?? '');
    for (let round = 1; round <= 100; round += 1)
      a.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: round, readRound: round });
    await eventually(() => received.length === 100, 5_000);
    expect(received.map((message) => (message.type === 'heartbeat' ? message.readRound : 0))).toEqual(
      Array.from({ length: 100 }, (_, index) => index + 1),
    );
    expect(a.connections()).toHaveLength(1); // one connection, one long-lived stream
    expect(a.connections()[0]?.remoteAddr.toString()).toContain('/quic-v1');
    a.send({ type: 'heartbeat', from: 1, to: 3, term: 1, commitIndex: 0, readRound: 0 }); // no such peer
    expect(a.framesDropped).toBe(1);
  });

  /** Transport 1 with its stream to transport 2 open; `received`: what 2 got after the opening frame. */
  async function openedStream(): Promise<{ a: Libp2pTransport; received: WireMessage[] }> {
    const received: WireMessage[] = [];
    const a = await transport(1, () => undefined);
    const b = await transport(2, (message) => received.push(message));
    a.addPeer(2, b.listenAddresses[0] ?? '');
    a.send(heartbeat(0)); // opens the stream
    await eventually(() => received.length === 1, 5_000);
    received.length = 0;
    return { a, received };
  }

  function heartbeat(round: number): WireMessage {
    return { type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: round, readRound: round };
  }

  it('keeps the open stream and its queued frames when the peer is re-announced with addresses that include its own', async () => {
    const received: WireMessage[] = [];
    const a = await transport(1, () => undefined);
    const b = await transport(2, (message) => received.push(message));
    a.addPeer(2, b.listenAddresses[0] ?? ''); // QUIC only, as a join gives it
    a.send(heartbeat(0));
    await eventually(() => received.length === 1, 5_000);
    for (let round = 1; round <= 20; round += 1) a.send(heartbeat(round)); // queued until the next flush
    a.addPeer(2, b.listenAddresses.join(',')); // discovery's announcement: QUIC and TCP
    await eventually(() => received.length === 21, 5_000);
    expect(a.connections()).toHaveLength(1);
    expect(a.messagesDropped).toBe(0);
    // An address the stream does not run to is a peer that moved: dialed afresh.
    a.addPeer(2, b.listenAddresses[1] ?? '');
    a.send(heartbeat(21));
    await eventually(() => received.length === 22, 5_000);
  });

  function rounds(received: readonly WireMessage[]): number[] {
    return received.map((message) => (message.type === 'heartbeat' ? message.readRound : 0));
  }

  it('frames sent in one event-loop turn leave in one stream write, in order', async () => {
    const { a, received } = await openedStream();
    const writesBefore = a.streamWritesTotal;
    for (let round = 1; round <= 200; round += 1) a.send(heartbeat(round));
    await eventually(() => received.length === 200, 5_000);
    expect(a.streamWritesTotal - writesBefore).toBe(1);
    expect(rounds(received)).toEqual(Array.from({ length: 200 }, (_, index) => index + 1));
  });

  it('frames sent by an immediate queued behind the first send join it in the same stream write', async () => {
    const { a, received } = await openedStream();
    const writesBefore = a.streamWritesTotal;
    // As a synced Ready does: answers first, then the node's next turn queued behind them sends its appends.
    a.send(heartbeat(1));
    setImmediate(() => {
      a.send(heartbeat(2));
    });
    await eventually(() => received.length === 2, 5_000);
    expect(a.streamWritesTotal - writesBefore).toBe(1);
    expect(rounds(received)).toEqual([1, 2]);
  });

  it("answers a node it only heard from, over that node's own connection", async () => {
    const received: WireMessage[] = [];
    let b: Libp2pTransport | null = null;
    const a = await transport(1, (message) => received.push(message));
    b = await transport(2, (message) => {
      b?.send({ type: 'heartbeat_response', from: 2, to: message.from, term: 1, readRound: 7 });
    });
    a.addPeer(2, b.listenAddresses[0] ?? ''); // b never learns a's address
    a.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: 7 });
    await eventually(() => received.length === 1, 5_000);
    expect(received[0]).toMatchObject({ type: 'heartbeat_response', from: 2, readRound: 7 });
  });

  it('a node with another cookie can neither send nor receive, and both sides log the refusal', async () => {
    const logsA: string[] = [];
    const logsB: string[] = [];
    const received: WireMessage[] = [];
    const a = await transport(
      1,
      () => undefined,
      'cluster-one',
      (line) => logsA.push(line),
    );
    const b = await transport(
      2,
      (message) => received.push(message),
      'cluster-two',
      (line) => logsB.push(line),
    );
    a.addPeer(2, b.listenAddresses[0] ?? '');
    a.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: 1 });
    await eventually(() => logsA.length > 0 && logsB.length > 0, 5_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(received).toEqual([]);
    // The dialer whose proof was refused knows the cookies differ; the listener cannot tell whose is right.
    expect(logsA.join('\n')).toMatch(
      new RegExp(`auth: node 2 \\(peer ${b.peerId}\\) refused our cookie: the cookies differ`),
    );
    expect(logsB.join('\n')).toMatch(
      new RegExp(
        `auth: refused connection from peer ${a.peerId} at \\S+: it does not know this cluster's cookie \\(or the cookie differs\\)`,
      ),
    );
    expect([...logsA, ...logsB].join('\n')).not.toMatch(/closed during authentication/);
    expect(a.authRefusals + b.authRefusals).toBeGreaterThanOrEqual(2);
  });

  it("a member's node id bound to its peer id: messages and dials pairing it with another peer are refused and logged", async () => {
    const logs: string[] = [];
    const received: WireMessage[] = [];
    const a = await transport(
      1,
      (message) => received.push(message),
      'test-cluster',
      (line) => logs.push(line),
    );
    const real = await transport(2, () => undefined);
    const impostor = await transport(2, () => undefined); // same cookie, same node id, another key
    a.bindMembers(new Map([[2, real.peerId]]));
    impostor.addPeer(1, a.listenAddresses[0] ?? '');
    impostor.send({ type: 'heartbeat', from: 2, to: 1, term: 9, commitIndex: 0, readRound: 1 });
    await eventually(() => a.identityRefusalsTotal === 1, 5_000);
    real.addPeer(1, a.listenAddresses[0] ?? '');
    real.send({ type: 'heartbeat', from: 2, to: 1, term: 1, commitIndex: 0, readRound: 2 });
    await eventually(() => received.length === 1, 5_000);
    expect(received[0]).toMatchObject({ from: 2, readRound: 2 }); // only the bound peer got through

    a.addPeer(2, impostor.listenAddresses[0] ?? ''); // a forged address for member 2
    a.send({ type: 'heartbeat', from: 1, to: 2, term: 1, commitIndex: 0, readRound: 3 });
    await eventually(() => a.identityRefusalsTotal === 2, 5_000);
    expect(logs.join('\n')).toMatch(/identity: refused a message from node 2 at peer .*: member 2 is peer/);
    expect(logs.join('\n')).toMatch(/identity: refused a dial to node 2 at peer .*: member 2 is peer/);
  });

  it('a peer that skips authentication gets no Raft stream served', async () => {
    const logs: string[] = [];
    const received: WireMessage[] = [];
    const b = await transport(
      2,
      (message) => received.push(message),
      'test-cluster',
      (line) => logs.push(line),
    );
    const intruder = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
    cleanups.push(() => intruder.stop());
    const tcpAddress = b.listenAddresses.find((address) => address.includes('/tcp/')) ?? '';
    const stream = await intruder.dialProtocol(toMultiaddr(tcpAddress), RAFT_PROTOCOL);
    try {
      stream.send(
        encodeFrame(
          encodeWireMessage({ type: 'heartbeat', from: 1, to: 2, term: 9, commitIndex: 0, readRound: 0 }),
        ),
      );
    } catch {
      // The listener may already have reset the stream: that is the refusal.
    }
    await eventually(() => logs.some((line) => line.includes('unauthenticated')), 5_000);
    expect(received).toEqual([]);
  });

  it('parses the seed raft_addr form, QUIC first', () => {
    expect(toMultiaddrs('127.0.0.1:26001').map(String)).toEqual([
      '/ip4/127.0.0.1/udp/26001/quic-v1',
      '/ip4/127.0.0.1/tcp/26001',
    ]);
    expect(toMultiaddr('127.0.0.1:26001').toString()).toBe('/ip4/127.0.0.1/tcp/26001');
    expect(() => toMultiaddr('not an address')).toThrow(RangeError);
  });

  it('three RaftNodes elect a leader, replicate a write and serve a linearizable read over libp2p', async () => {
    const nodes = new Map<number, RaftNode>();
    const transports = new Map<number, Libp2pTransport>();
    for (const id of [1, 2, 3]) {
      const created = await transport(id, (message) => {
        nodes.get(id)?.deliver(message);
      });
      transports.set(id, created);
    }
    for (const [id, created] of transports) {
      for (const [peerId, peer] of transports)
        if (peerId !== id) created.addPeer(peerId, peer.listenAddresses[0] ?? '');
      const logStore = new MemoryLogStore();
      const node = new RaftNode({
        config: { ...defaultRaftConfig(id), electionTicksMin: 10, electionTicksMax: 20, heartbeatTicks: 2 },
        prng: new SeededPrng(id),
        persisted: logStore.load().persisted,
        logStore,
        stateMachine: new MemoryKvStateMachine(),
        transport: created,
        clock: systemClock,
        tickMs: 10,
      });
      node.start();
      nodes.set(id, node);
      cleanups.push(() => {
        node.stop();
      });
    }
    const first = new RaftControlClient(nodes.get(1) as RaftNode);
    await first.init({
      initial_members: [1, 2, 3].map((id) => ({
        id,
        addr: `node-${id}`,
        raft_addr: transports.get(id)?.listenAddresses[0] ?? '',
      })),
    });
    await eventually(() => [...nodes.values()].some((node) => node.status().role === 'leader'), 5_000);
    const leader = [...nodes.values()].find((node) => node.status().role === 'leader') as RaftNode;
    const client = new RaftControlClient(leader);
    const written = await client.write({ command: { Set: { key: 'greeting', value: 'hello world' } } });
    await eventually(
      () => [...nodes.values()].every((node) => node.status().appliedIndex >= written.log_index),
      5_000,
    );
    expect((await client.read({ key: 'greeting' })).value).toBe('hello world');
    for (const node of nodes.values()) expect(node.stateMachine.get('greeting')?.value).toBe('hello world');
  });
});
