import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterState } from '../../src/api/types.ts';
import { httpUrl, memberHttpUrls } from '../../src/http/member-urls.ts';
import { buildHttpServer, type DiscoveredPeerView } from '../../src/http/server.ts';
import { realNodeParts } from '../client/real-node.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

const node = (id: number, raftAddr: string) => ({ id, addr: `node-${id}`, raft_addr: raftAddr });

describe('httpUrl: an announced host:port as a URL a client can dial', () => {
  it('keeps a host, brackets IPv6, replaces a wildcard host by the raft host, refuses what cannot be dialed', () => {
    expect(httpUrl('127.0.0.1:8001', '127.0.0.1:26001', false)).toBe('http://127.0.0.1:8001');
    expect(httpUrl('db-1.example:8443', '10.0.0.1:26001', true)).toBe('https://db-1.example:8443');
    expect(httpUrl('::1:8001', '/ip6/::1/udp/26001/quic-v1', false)).toBe('http://[::1]:8001');
    expect(httpUrl('[::1]:8001', '/ip6/::1/udp/26001/quic-v1', false)).toBe('http://[::1]:8001');
    expect(httpUrl('0.0.0.0:8001', '10.0.0.5:26001', false)).toBe('http://10.0.0.5:8001');
    expect(httpUrl('0.0.0.0:8001', '/ip4/10.0.0.6/udp/26001/quic-v1/p2p/12D3KooWx', false)).toBe(
      'http://10.0.0.6:8001',
    );
    expect(httpUrl('[::]:8001', '/dns4/db-2.example/tcp/26001', false)).toBe('http://db-2.example:8001');
    // Nothing a client could dial: a wildcard on both, port 0 (any free port), no port, junk.
    expect(httpUrl('0.0.0.0:8001', '0.0.0.0:26001', false)).toBeNull();
    expect(httpUrl('0.0.0.0:8001', '/p2p-circuit/x', false)).toBeNull();
    expect(httpUrl('127.0.0.1:0', '127.0.0.1:26001', false)).toBeNull();
    expect(httpUrl('127.0.0.1', '127.0.0.1:26001', false)).toBeNull();
    expect(httpUrl('a b:80', '127.0.0.1:26001', false)).toBeNull();
  });

  it('lists voters then learners, its own URL with the port it listens on, and leaves out the unknown', () => {
    const state: ClusterState = {
      nodes: [node(1, '127.0.0.1:26001'), node(2, '127.0.0.1:26002'), node(3, '127.0.0.1:26003')],
      members: [1, 2, 3],
      learners: [node(4, '10.0.0.4:26004')],
      leader: 1,
    };
    const announced = new Map<number, string | null>([
      [2, '127.0.0.1:8002'],
      [3, null],
      [4, '0.0.0.0:8004'],
      [9, '127.0.0.1:8009'],
    ]);
    const self = { nodeId: 1, address: '127.0.0.1:0', port: 41_234, secure: true };
    expect(memberHttpUrls(state, self, announced)).toEqual({
      '1': 'https://127.0.0.1:41234',
      '2': 'https://127.0.0.1:8002',
      '4': 'https://10.0.0.4:8004',
    });
    expect(memberHttpUrls(state, { ...self, address: undefined }, new Map())).toEqual({});
  });
});

describe("GET /state names each member's HTTP URL", () => {
  it("its own from --http-addr and its port, another member's from discovery", async () => {
    const parts = realNodeParts();
    const peers: DiscoveredPeerView[] = [
      { node_id: 4, peer_id: '12D3KooWx', addrs: [], http_addr: '127.0.0.1:8004', last_seen_ms_ago: 1 },
    ];
    const app = buildHttpServer({
      controller: parts.control,
      store: parts.control,
      identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
      httpAddress: '127.0.0.1:0',
      network: { addresses: () => [], addPeer: () => undefined, peers: () => peers },
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    stops.push(
      () => {
        parts.node.stop();
      },
      () => app.close(),
    );
    // Two voters, one of them never started: the membership is all /state needs.
    await parts.control.init({ initial_members: [node(1, '127.0.0.1:26001'), node(4, '127.0.0.1:26004')] });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const answer = (await (await fetch(`${url}/state`)).json()) as Record<string, unknown>;
    expect(answer).toMatchObject({ members: [1, 4], learners: [] });
    expect(answer.http_urls).toEqual({ '1': url, '4': 'http://127.0.0.1:8004' });
  }, 20_000);
});
