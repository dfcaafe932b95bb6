import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeAnnouncement } from '../../src/cluster/discovery/announcement.ts';
import { clusterTopic } from '../../src/cluster/discovery/topic.ts';
import { deriveAuthKey } from '../../src/network/auth.ts';
import { eventually, sleep, startGossipMember, tcpAddressOf } from './intruders.ts';

/** Gossip during a cookie rotation: a node with two cookies bridges both topics, each under its own key. */
const OLD = 'gossip-rotation-old-cookie';
const NEW = 'gossip-rotation-new-cookie';
/** Announcements every 100 ms here (10 s in production). */
const ANNOUNCE_INTERVAL_MS = 100;
/** Loopback settles in milliseconds; this bounds a loaded machine. */
const SETTLE_MS = 10_000;
/** How long a refused announcement is given to (wrongly) reach a peer map: many announce intervals. */
const REFUSED_WAIT_MS = 10 * ANNOUNCE_INTERVAL_MS;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function member(nodeId: number, cookie: string, previousCookie?: string) {
  return startGossipMember(cleanups, {
    nodeId,
    cookie,
    ...(previousCookie === undefined ? {} : { previousCookie }),
    announceIntervalMs: ANNOUNCE_INTERVAL_MS,
  });
}

function knows(directory: { peers(): readonly { nodeId: number }[] }, nodeId: number): boolean {
  return directory.peers().some((peer) => peer.nodeId === nodeId);
}

describe('gossip during a cookie rotation', () => {
  it('a dual node announces on both topics and hears both; an announcement counts only under its topic’s key', async () => {
    const old = await member(1, OLD);
    const dual = await member(2, NEW, OLD);
    const fresh = await member(3, NEW);
    expect(dual.gossip.topics).toEqual([clusterTopic(NEW), clusterTopic(OLD)]);
    expect(old.gossip.topics).toEqual([clusterTopic(OLD)]);
    await old.transport.connect([multiaddr(tcpAddressOf(dual.transport))]);
    await fresh.transport.connect([multiaddr(tcpAddressOf(dual.transport))]);
    await eventually(
      () => knows(dual.directory, 1) && knows(dual.directory, 3),
      SETTLE_MS,
      'the dual node hears the old topic and the new one',
    );
    await eventually(
      () => knows(old.directory, 2) && knows(fresh.directory, 2),
      SETTLE_MS,
      'nodes of either cookie hear the dual node',
    );
    expect(dual.gossip.announcementsRefused).toBe(0);

    // A node of the new cookie publishing on the old topic under the NEW key: refused by the dual
    // node, which checks the old topic's messages under the old key only.
    const pubsub = fresh.transport.pubsub;
    if (pubsub === null) throw new Error('gossip is on');
    const forged = encodeAnnouncement(
      {
        node_id: 9,
        peer_id: fresh.transport.peerId,
        addrs: [tcpAddressOf(fresh.transport)],
        http_addr: null,
        timestamp: Date.now(),
      },
      deriveAuthKey(NEW),
    );
    await pubsub.publish(clusterTopic(OLD), forged);
    await eventually(() => dual.gossip.announcementsRefused >= 1, SETTLE_MS, 'the dual node refuses it');
    await sleep(REFUSED_WAIT_MS);
    expect(knows(dual.directory, 9)).toBe(false);
    expect(knows(old.directory, 9)).toBe(false);
    expect(dual.logs.join('\n')).toMatch(/gossip: refused an announcement from .*bad mac/);
  });
});
