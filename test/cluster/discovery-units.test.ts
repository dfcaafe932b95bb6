import { createHmac } from 'node:crypto';
import { blake3 } from '@noble/hashes/blake3.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { base32 } from 'multiformats/bases/base32';
import { describe, expect, it } from 'vitest';
import {
  ANNOUNCEMENT_AGE_MS_MAX,
  ANNOUNCEMENT_CLOCK_SKEW_MS_MAX,
  decodeAnnouncement,
  encodeAnnouncement,
  type Announcement,
} from '../../src/cluster/discovery/announcement.ts';
import { resolveDnsaddr } from '../../src/cluster/discovery/contacts.ts';
import { PEER_SILENCE_MS_MAX, PeerDirectory } from '../../src/cluster/discovery/peer-directory.ts';
import { decodeTicket, encodeTicket } from '../../src/cluster/discovery/ticket.ts';
import { TicketError, ConfigError } from '../../src/cluster/errors.ts';
import { clusterTopic, mdnsServiceTag } from '../../src/cluster/discovery/topic.ts';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import { deriveAuthKey } from '../../src/network/auth.ts';
import { SeededPrng } from '../../src/raft/prng.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { SimNetwork } from '../../src/sim/network.ts';
import { SimTransport } from '../../src/sim/sim-transport.ts';
import { expectEditsRefused } from '../support/tickets.ts';

const PEER = '12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR';
const addrs = (port: number) => [
  `/ip4/127.0.0.1/udp/${port}/quic-v1/p2p/${PEER}`,
  `/ip4/127.0.0.1/tcp/${port}/p2p/${PEER}`,
];
const announcement = (nodeId: number, port: number, timestamp: number): Announcement => ({
  node_id: nodeId,
  peer_id: PEER,
  addrs: addrs(port),
  http_addr: '127.0.0.1:8001',
  timestamp,
});

describe('cluster tickets', () => {
  const ticket = { topic: clusterTopic('my-cluster'), clusterId: 'my-cluster', bootstrap: addrs(26001) };

  it('round-trips and starts with "aspen"; the topic and mDNS tag come from the scrypt key, not a fast hash of the cookie', () => {
    const text = encodeTicket(ticket);
    expect(text.startsWith('aspen')).toBe(true);
    expect(decodeTicket(text)).toEqual(ticket);
    const key = deriveAuthKey('my-cluster');
    expect(clusterTopic('my-cluster')).toBe(
      createHmac('sha256', key).update('aspen-gossip-topic-v1').digest('hex'),
    );
    expect(clusterTopic('my-cluster')).not.toBe(bytesToHex(blake3(new TextEncoder().encode('my-cluster'))));
    const tag = mdnsServiceTag('my-cluster');
    expect(tag).toBe(
      `_aspen-${createHmac('sha256', key).update('aspen-mdns-tag-v1').digest('hex').slice(0, 16)}._udp.local`,
    );
    expect(clusterTopic('my-cluster').startsWith(tag.slice('_aspen-'.length, '_aspen-'.length + 16))).toBe(
      false,
    ); // the tag tells nothing of the topic
    expect(mdnsServiceTag('my-cluster')).not.toBe(mdnsServiceTag('other'));
  });

  it('refuses a version 1 ticket (BLAKE3 topic) with a clear message', () => {
    const json = new TextEncoder().encode(
      JSON.stringify({
        topic: bytesToHex(blake3(new TextEncoder().encode('my-cluster'))),
        cluster_id: 'my-cluster',
        bootstrap: addrs(26001),
      }),
    );
    const body = new Uint8Array([1, ...json]);
    const old = `aspen${base32.baseEncode(new Uint8Array([...body, ...blake3(body).subarray(0, 4)]))}`;
    expect(() => decodeTicket(old)).toThrow(
      /version 1 is not supported \(this node reads versions 2 and 3\)/,
    );
  });

  it('refuses any single-character change, a cut, another version, or a topic of another cookie (property)', () => {
    const text = encodeTicket(ticket);
    expectEditsRefused(text);
    expect(() => decodeTicket(text.slice(0, -3))).toThrow(TicketError);
    expect(() => decodeTicket(`nope${text}`)).toThrow(/starts with "aspen"/);
    expect(() => encodeTicket({ ...ticket, topic: clusterTopic('other') })).toThrow(/topic/);
    expect(() =>
      encodeTicket({ ...ticket, bootstrap: Array.from({ length: 17 }, () => addrs(1)[0] ?? '') }),
    ).toThrow(/1\.\.16/);
    expect(() => decodeTicket(`aspen${'a'.repeat(20_000)}`)).toThrow(/at most/);
  });
});

describe('gossip announcements', () => {
  const key = deriveAuthKey('my-cluster');

  it('decode what was encoded, from the announcing peer', () => {
    const sent = announcement(2, 26002, 1_000);
    expect(decodeAnnouncement(encodeAnnouncement(sent, key), key, PEER, 1_000)).toEqual(sent);
  });

  it('refuse another cookie, another signer, stale or malformed announcements', () => {
    const bytes = encodeAnnouncement(announcement(2, 26002, 1_000), key);
    expect(() => decodeAnnouncement(bytes, deriveAuthKey('other-cluster'), PEER, 1_000)).toThrow(
      /another cookie/,
    );
    expect(() => decodeAnnouncement(bytes, key, '12D3KooWSomebodyElse', 1_000)).toThrow(/announced for/);
    expect(() => decodeAnnouncement(bytes, key, PEER, 1_000 + ANNOUNCEMENT_AGE_MS_MAX + 1)).toThrow(/stale/);
    expect(decodeAnnouncement(bytes, key, PEER, 1_000 + ANNOUNCEMENT_AGE_MS_MAX).timestamp).toBe(1_000);
    // From the future: within the clock skew bound it counts, beyond it (a forged, far-ahead date) not.
    expect(decodeAnnouncement(bytes, key, PEER, 1_000 - ANNOUNCEMENT_CLOCK_SKEW_MS_MAX).timestamp).toBe(
      1_000,
    );
    expect(() => decodeAnnouncement(bytes, key, PEER, 1_000 - ANNOUNCEMENT_CLOCK_SKEW_MS_MAX - 1)).toThrow(
      /ahead/,
    );
    expect(() =>
      decodeAnnouncement(new TextEncoder().encode('{"body":"{}","mac":"00"}'), key, PEER, 1_000),
    ).toThrow(/mac/);
    expect(() => decodeAnnouncement(new Uint8Array(5_000), key, PEER, 1_000)).toThrow(/oversized/);
    expect(() => encodeAnnouncement({ ...announcement(2, 1, 1), addrs: ['not a multiaddr'] }, key)).toThrow();
  });
});

describe('peer directory', () => {
  function directory() {
    const network = new SimNetwork(new EventQueue(), new SeededPrng(1), {
      delayMsMin: 1,
      delayMsMax: 1,
      lossProbability: 0,
      duplicateProbability: 0,
    });
    const transport = new SimTransport(network, 1, () => undefined);
    const lines: string[] = [];
    return {
      transport,
      lines,
      peers: new PeerDirectory({ transport, selfId: 1, selfPeerId: 'self', log: (line) => lines.push(line) }),
    };
  }

  it('lets a fresh announcement override a configured address, and falls back to it after silence', () => {
    const { transport, peers } = directory();
    peers.onMembership([
      { id: 1, addr: 'node-1', raftAddr: '127.0.0.1:26001' },
      { id: 2, addr: 'node-2', raftAddr: '127.0.0.1:26002' },
    ]);
    expect(transport.peerAddresses()).toEqual(new Map([[2, '127.0.0.1:26002']]));
    expect(peers.onAnnouncement(announcement(2, 27002, 100), 0)).toBe(true);
    expect(transport.peerAddresses().get(2)).toBe(addrs(27002).join(','));
    peers.onMembership([{ id: 2, addr: 'node-2', raftAddr: '127.0.0.1:26002' }]); // configuration does not undo fresher gossip
    expect(transport.peerAddresses().get(2)).toBe(addrs(27002).join(','));
    expect(peers.onAnnouncement(announcement(2, 28002, 50), 10)).toBe(false); // older than what we have
    expect(peers.onAnnouncement(announcement(3, 27003, 100), 0)).toBe(true);
    peers.expire(PEER_SILENCE_MS_MAX);
    expect(peers.peers().map((peer) => peer.nodeId)).toEqual([2, 3]);
    peers.expire(PEER_SILENCE_MS_MAX + 1);
    expect(peers.peers()).toEqual([]);
    expect(transport.peerAddresses()).toEqual(new Map([[2, '127.0.0.1:26002']])); // 3 was only discovered: gone
  });

  it('ignores announcements for its own id and logs a node id that changed peers', () => {
    const { transport, peers, lines } = directory();
    expect(peers.onAnnouncement(announcement(1, 27001, 100), 0)).toBe(false);
    expect(lines.join('\n')).toMatch(/claims this node's id 1/);
    peers.onAnnouncement(announcement(2, 27002, 100), 0);
    peers.onAnnouncement({ ...announcement(2, 27002, 200), peer_id: '12D3KooWOther' }, 0);
    expect(lines.join('\n')).toMatch(/two nodes with one id/);
    expect(transport.peerAddresses().size).toBe(1);
  });

  it("a member's peer id binds its node id: an announcement from another peer changes no address, is logged once and counted", () => {
    const { transport, peers, lines } = directory();
    const impostor = '12D3KooWImpostorImpostorImpostorImpostorImpostorAbc';
    peers.onAnnouncement({ ...announcement(2, 29002, 50), peer_id: impostor }, 0); // before membership: believed
    expect(transport.peerAddresses().get(2)).toBe(addrs(29002).join(','));
    peers.onMembership([{ id: 2, addr: 'node-2', raftAddr: '127.0.0.1:26002', peerId: PEER }]);
    expect(transport.peerAddresses().get(2)).toBe('127.0.0.1:26002'); // what the impostor said is forgotten
    for (let round = 1; round <= 3; round += 1) {
      const forged = { ...announcement(2, 29002, 100 + round), peer_id: impostor };
      expect(peers.onAnnouncement(forged, round)).toBe(false);
    }
    expect(transport.peerAddresses().get(2)).toBe('127.0.0.1:26002');
    expect(peers.impostorAnnouncementsTotal).toBe(3);
    expect(lines.filter((line) => line.includes('refused an announcement for member 2'))).toHaveLength(1);
    expect(peers.onAnnouncement(announcement(2, 27002, 200), 5)).toBe(true); // the member itself still moves
    expect(transport.peerAddresses().get(2)).toBe(addrs(27002).join(','));
    expect(peers.onAnnouncement(announcement(3, 27003, 200), 5)).toBe(true); // no binding: not a member
  });
});

describe('DNS discovery and discovery flags', () => {
  it('reads dnsaddr TXT records into bootstrap addresses, skipping others', async () => {
    const resolver = (name: string) =>
      Promise.resolve(
        name === '_dnsaddr.cluster.example'
          ? [
              [`dnsaddr=${addrs(26001)[0] ?? ''}`],
              ['v=spf1 -all'],
              ['dnsaddr=', 'not-a-multiaddr'],
              ['dnsaddr=/ip4/127.0.0.1', '/tcp/26002'],
            ]
          : [],
      );
    expect(await resolveDnsaddr('cluster.example', resolver)).toEqual([
      addrs(26001)[0],
      '/ip4/127.0.0.1/tcp/26002',
    ]);
  });

  it('parses discovery flags; a ticket brings its cookie and conflicts with another', () => {
    expect(parseNodeConfig(['--node-id', '1'])).toMatchObject({
      gossip: true,
      mdns: true,
      dnsDiscoveryDomain: null,
      ticket: null,
    });
    expect(
      parseNodeConfig([
        '--node-id',
        '1',
        '--disable-gossip',
        '--disable-mdns',
        '--enable-dns-discovery',
        '--dns-discovery-domain',
        'c.example',
      ]),
    ).toMatchObject({ gossip: false, mdns: false, dnsDiscoveryDomain: 'c.example' });
    expect(() => parseNodeConfig(['--node-id', '1', '--enable-dns-discovery'])).toThrow(
      /--dns-discovery-domain/,
    );
    for (const [text, mdns] of [
      ['false', true],
      ['0', true],
      ['true', false],
      ['1', false],
    ] as const) {
      process.env.ASPEN_DISABLE_MDNS = text;
      try {
        expect(parseNodeConfig(['--node-id', '1']).mdns, `ASPEN_DISABLE_MDNS=${text}`).toBe(mdns);
      } finally {
        delete process.env.ASPEN_DISABLE_MDNS;
      }
    }
    const ticket = encodeTicket({
      topic: clusterTopic('secret-cookie-of-the-test'),
      clusterId: 'secret-cookie-of-the-test',
      bootstrap: addrs(26001),
    });
    expect(parseNodeConfig(['--node-id', '4', '--ticket', ticket])).toMatchObject({
      cookie: 'secret-cookie-of-the-test',
      ticket: { bootstrap: addrs(26001) },
    });
    expect(
      parseNodeConfig(['--node-id', '4', '--ticket', ticket, '--cookie', 'secret-cookie-of-the-test']).cookie,
    ).toBe('secret-cookie-of-the-test');
    expect(() => parseNodeConfig(['--node-id', '4', '--ticket', ticket, '--cookie', 'other'])).toThrow(
      ConfigError,
    );
    expect(() => parseNodeConfig(['--node-id', '4', '--ticket', `${ticket}x`])).toThrow(/--ticket/);
    expect(() => parseNodeConfig(['--node-id', '4', '--peers', '2@nowhere'])).toThrow(/--peers 2@nowhere/);
  });
});
