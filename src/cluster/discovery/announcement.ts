import { createHmac, timingSafeEqual } from 'node:crypto';
import { PEER_ADDRESSES_MAX, toMultiaddrs } from '../../network/multiaddrs.ts';
import { AnnouncementError } from '../errors.ts';

/** Largest announcement accepted or sent (addresses dominate it). */
export const ANNOUNCEMENT_BYTES_MAX = 4 * 1_024;
export const ANNOUNCEMENT_ADDRESS_CHARS_MAX = 256;
export const HTTP_ADDRESS_CHARS_MAX = 256;
/** Announcements older than this (clock skew included) are ignored: no replays of old addresses. */
export const ANNOUNCEMENT_AGE_MS_MAX = 60_000;
/**
 * Announcements dated further ahead than this are ignored. The newest announcement of a node id
 * wins, so one dated a minute ahead (by a peer with the cookie) would outrank the node's own for a
 * minute; nodes' wall clocks must agree within this (NTP).
 */
export const ANNOUNCEMENT_CLOCK_SKEW_MS_MAX = 5_000;

/** What a node tells its cluster about itself every announce interval. */
export interface Announcement {
  readonly node_id: number;
  readonly peer_id: string;
  readonly addrs: readonly string[];
  readonly http_addr: string | null;
  readonly timestamp: number;
}

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update('aspen-announcement-v1\n').update(body).digest('hex');
}

/**
 * JSON of the announcement plus an HMAC keyed by the cookie's auth key: gossip signs every message
 * with the sender's libp2p key (so no one announces for another peer id), and the MAC keeps nodes
 * without the cookie out of the peer map even if they learn the topic.
 */
export function encodeAnnouncement(announcement: Announcement, authKey: Buffer): Uint8Array {
  validateAnnouncement(announcement);
  const body = JSON.stringify(announcement);
  const bytes = new TextEncoder().encode(JSON.stringify({ body, mac: mac(authKey, body) }));
  if (bytes.length > ANNOUNCEMENT_BYTES_MAX)
    throw new AnnouncementError(`an announcement is at most ${ANNOUNCEMENT_BYTES_MAX} bytes`);
  return bytes;
}

/** Decode and check an announcement received from libp2p peer `fromPeer` at `nowMs`. */
export function decodeAnnouncement(
  bytes: Uint8Array,
  authKey: Buffer,
  fromPeer: string,
  nowMs: number,
): Announcement {
  if (bytes.length > ANNOUNCEMENT_BYTES_MAX) throw new AnnouncementError('oversized announcement');
  let envelope: { body?: unknown; mac?: unknown };
  try {
    envelope = JSON.parse(new TextDecoder().decode(bytes)) as { body?: unknown; mac?: unknown };
  } catch {
    throw new AnnouncementError('not JSON');
  }
  if (typeof envelope.body !== 'string' || typeof envelope.mac !== 'string')
    throw new AnnouncementError('no body or mac');
  const expected = Buffer.from(mac(authKey, envelope.body), 'hex');
  const actual = Buffer.from(envelope.mac, 'hex');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected))
    throw new AnnouncementError('bad mac: another cookie');
  let announcement: Announcement;
  try {
    announcement = JSON.parse(envelope.body) as Announcement;
  } catch {
    throw new AnnouncementError('body is not JSON');
  }
  validateAnnouncement(announcement);
  if (announcement.peer_id !== fromPeer)
    throw new AnnouncementError(`peer ${fromPeer} announced for ${announcement.peer_id}`);
  if (nowMs - announcement.timestamp > ANNOUNCEMENT_AGE_MS_MAX)
    throw new AnnouncementError('stale announcement');
  if (announcement.timestamp - nowMs > ANNOUNCEMENT_CLOCK_SKEW_MS_MAX)
    throw new AnnouncementError(
      `announcement dated ${announcement.timestamp - nowMs} ms ahead (more than ${ANNOUNCEMENT_CLOCK_SKEW_MS_MAX} ms of clock skew)`,
    );
  return announcement;
}

function validateAnnouncement(value: Announcement): void {
  const fields = value as Partial<Record<keyof Announcement, unknown>> | null;
  if (fields === null || typeof fields !== 'object') throw new AnnouncementError('not an object');
  if (typeof fields.node_id !== 'number' || !Number.isSafeInteger(fields.node_id) || fields.node_id < 1)
    throw new AnnouncementError('bad node_id');
  if (typeof fields.peer_id !== 'string' || fields.peer_id.length === 0 || fields.peer_id.length > 128)
    throw new AnnouncementError('bad peer_id');
  if (typeof fields.timestamp !== 'number' || !Number.isSafeInteger(fields.timestamp))
    throw new AnnouncementError('bad timestamp');
  if (
    fields.http_addr !== null &&
    (typeof fields.http_addr !== 'string' || fields.http_addr.length > HTTP_ADDRESS_CHARS_MAX)
  )
    throw new AnnouncementError('bad http_addr');
  const addrs = fields.addrs;
  if (!Array.isArray(addrs) || addrs.length === 0 || addrs.length > PEER_ADDRESSES_MAX)
    throw new AnnouncementError('bad addrs');
  for (const address of addrs as unknown[]) {
    if (
      typeof address !== 'string' ||
      address.length > ANNOUNCEMENT_ADDRESS_CHARS_MAX ||
      !address.startsWith('/')
    )
      throw new AnnouncementError('bad address');
  }
  try {
    toMultiaddrs((addrs as string[]).join(','));
  } catch {
    throw new AnnouncementError('an address is not a multiaddr');
  }
}
