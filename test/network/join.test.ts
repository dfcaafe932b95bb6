import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { JoinCredentials } from '../../src/cluster/join-credentials.ts';
import { joinService } from '../../src/cluster/join.ts';
import { JoinError } from '../../src/network/errors.ts';
import { encodeFrame } from '../../src/network/frame.ts';
import {
  decodeJoinAnswer,
  decodeJoinRequest,
  encodeJoinAnswer,
  encodeJoinRequest,
  JOIN_PROTOCOL,
  JOIN_STREAMS_MAX,
  JOIN_TIMEOUT_MS,
  requestJoin,
  type JoinRequest,
} from '../../src/network/join.ts';
import { RAFT_PROTOCOL } from '../../src/network/libp2p-transport.ts';
import { AUTH_DEADLINE_MS } from '../../src/network/timeouts.ts';
import { aspenNode, eventually, FrameCollector, rawClient, tcpAddressOf } from './intruders.ts';

const COOKIE = 'the-cluster-cookie-of-the-join-test';
/** Loopback settles in milliseconds; this bounds a loaded machine. */
const SETTLE_MS = 5_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A member serving joins of the credentials it mints. */
async function member(): Promise<{
  credentials: JoinCredentials;
  logs: string[];
  addresses: string[];
  stats: () => { admitted: number; refused: number };
}> {
  const credentials = new JoinCredentials();
  const { transport, logs } = await aspenNode(cleanups, {
    nodeId: 1,
    cookie: COOKIE,
    joinService: joinService(credentials, COOKIE),
  });
  return {
    credentials,
    logs,
    addresses: transport.listenAddresses,
    stats: () => ({ admitted: transport.joinsAdmitted, refused: transport.joinsRefused }),
  };
}

function mint(credentials: JoinCredentials, nodeId: number): Buffer {
  const minted = credentials.mint(nodeId, 60);
  if (minted === null) throw new Error('nothing minted');
  return minted.credential;
}

describe('the join protocol', () => {
  it('hands the cookie over once to the bound node id, refuses a reuse, a foreign id and an unknown credential, and logs no secret', async () => {
    const { credentials, logs, addresses, stats } = await member();
    const credential = mint(credentials, 4);
    const privateKey = await generateKeyPair('Ed25519');
    const join = (request: JoinRequest) => requestJoin({ privateKey, bootstrap: addresses, request });

    // Another node id first: refused, and the credential stays good for node 4.
    expect(await join({ nodeId: 5, credential })).toEqual({ ok: false, reason: 'wrong_node_id' });
    expect(await join({ nodeId: 4, credential })).toEqual({ ok: true, cookie: COOKIE });
    const peerId = privateKey.publicKey.toString(); // the peer id
    expect(credentials.joinedPeerId(4)).toBe(peerId);
    expect(await join({ nodeId: 4, credential })).toEqual({ ok: false, reason: 'used_or_unknown' });
    expect(await join({ nodeId: 4, credential: randomBytes(32) })).toEqual({
      ok: false,
      reason: 'used_or_unknown',
    });
    expect(stats()).toEqual({ admitted: 1, refused: 3 });
    const text = logs.join('\n');
    expect(text).toContain(`join: node 4 joined from peer ${peerId}`);
    expect(text).toMatch(/join: refused node 5 from peer \S+ at \S+: wrong_node_id/);
    expect(text).toMatch(/join: refused node 4 from peer \S+ at \S+: used_or_unknown/);
    for (const secret of [COOKIE, credential.toString('base64url'), credential.toString('hex')])
      expect(text).not.toContain(secret);
  });

  it('a malformed request is refused unanswered, and a join connection is served nothing else', async () => {
    const { logs, addresses, stats } = await member();
    const stranger = await rawClient(cleanups);
    const address = addresses.find((candidate) => candidate.includes('/tcp/')) ?? '';
    const connection = await stranger.dial(multiaddr(address));
    const stream = await connection.newStream(JOIN_PROTOCOL);
    const collector = new FrameCollector(stream);
    stream.send(encodeFrame(new TextEncoder().encode('{"node_id":4,"credential":"short"}')));
    await eventually(() => collector.closed, SETTLE_MS, 'the join stream is reset');
    expect(collector.frames).toEqual([]);
    expect(stats().refused).toBe(1);
    expect(logs.join('\n')).toMatch(/join: refused a join from peer \S+ at \S+: the join request is not/);
    // The connection never proved the cookie: Raft is refused on it as before.
    const raft = await connection.newStream(RAFT_PROTOCOL).catch(() => null);
    if (raft !== null) {
      const raftCollector = new FrameCollector(raft);
      await eventually(() => raftCollector.closed, SETTLE_MS, 'the Raft stream is reset');
    }
    expect(logs.join('\n')).toMatch(/refused a \/aspen\/raft\/1\.0\.0 stream from unauthenticated/);
  });

  it(`serves at most ${JOIN_STREAMS_MAX} joins at once; a silent one ends at its deadline`, async () => {
    const { credentials, logs, addresses, stats } = await member();
    const tcp = multiaddr(addresses.find((candidate) => candidate.includes('/tcp/')) ?? '');
    // Silent joins from several source addresses (admission keeps at most 8 per address).
    const silent = await Promise.all(
      Array.from({ length: JOIN_STREAMS_MAX }, async (_, index) => {
        const client = await rawClient(cleanups, `127.0.0.${2 + index}`);
        return new FrameCollector(await (await client.dial(tcp)).newStream(JOIN_PROTOCOL));
      }),
    );
    const extra = await rawClient(cleanups, '127.0.0.20');
    const refused = new FrameCollector(await (await extra.dial(tcp)).newStream(JOIN_PROTOCOL));
    await eventually(() => refused.closed, SETTLE_MS, 'the join past the cap is reset');
    expect(logs.join('\n')).toContain(`${JOIN_STREAMS_MAX} joins running`);
    expect(silent.some((collector) => collector.closed)).toBe(false);
    await eventually(
      () => silent.every((collector) => collector.closed),
      JOIN_TIMEOUT_MS + SETTLE_MS,
      'silent joins end at their deadline',
    );
    expect(stats().refused).toBe(JOIN_STREAMS_MAX + 1);
    const privateKey = await generateKeyPair('Ed25519');
    const credential = mint(credentials, 4);
    expect(
      await requestJoin({ privateKey, bootstrap: addresses, request: { nodeId: 4, credential } }),
    ).toEqual({ ok: true, cookie: COOKIE });
  });

  it('a node that serves no joins, or none at the address, is a JoinError', async () => {
    const { transport } = await aspenNode(cleanups, { nodeId: 2, cookie: COOKIE });
    const privateKey = await generateKeyPair('Ed25519');
    const request = { nodeId: 4, credential: randomBytes(32) };
    await expect(requestJoin({ privateKey, bootstrap: [tcpAddressOf(transport)], request })).rejects.toThrow(
      JoinError,
    );
    await expect(requestJoin({ privateKey, bootstrap: ['/ip4/127.0.0.1/tcp/1'], request })).rejects.toThrow(
      JoinError,
    );
  });

  it('frames: exact request and answer shapes; a join fits in the authentication deadline', () => {
    expect(JOIN_TIMEOUT_MS).toBeLessThan(AUTH_DEADLINE_MS);
    const request = { nodeId: 7, credential: randomBytes(32) };
    expect(decodeJoinRequest(encodeJoinRequest(request))).toEqual(request);
    const text = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    const credential = randomBytes(32).toString('base64url');
    for (const bad of [
      text({ node_id: 0, credential }),
      text({ node_id: 1.5, credential }),
      text({ node_id: 7, credential: randomBytes(31).toString('base64url') }),
      text({ node_id: 7, credential: `${credential}=` }),
      text([7, credential]),
      new TextEncoder().encode('not json'),
      new Uint8Array([0xff, 0xfe]),
    ])
      expect(() => decodeJoinRequest(bad)).toThrow(JoinError);
    const cookie = 'ünïcode "quotes" \\ and\nnewlines';
    expect(decodeJoinAnswer(encodeJoinAnswer({ ok: true, cookie }))).toEqual({ ok: true, cookie });
    expect(decodeJoinAnswer(encodeJoinAnswer({ ok: false, reason: 'expired' }))).toEqual({
      ok: false,
      reason: 'expired',
    });
    expect(encodeJoinAnswer({ ok: true, cookie: 'x'.repeat(1_024) }).byteLength).toBeLessThan(2_048);
    for (const bad of [
      text({ ok: false, reason: 'because' }),
      text({ ok: true }),
      text({ ok: true, cookie: '' }),
      text({ ok: 'yes', cookie: 'Y29va2ll' }),
    ])
      expect(() => decodeJoinAnswer(bad)).toThrow(JoinError);
  });
});
