import { assert } from '../base/assert.ts';

/**
 * Every connect and stream timeout of the cluster transport, in one place. A dial tries QUIC, then
 * TCP on the same port number, each within ADDRESS_DIAL_TIMEOUT_MS, so a whole dial stays under
 * DIAL_TIMEOUT_MS; a peer that fails is not dialed again for REDIAL_BACKOFF_MS, while Raft's own
 * heartbeats and retries carry on (messages are dropped meanwhile, which Raft tolerates).
 */
/** One address (QUIC or TCP) from socket to an encrypted, multiplexed connection. */
export const ADDRESS_DIAL_TIMEOUT_MS = 2_500;
/** A whole dial of a peer: every address in turn. */
export const DIAL_TIMEOUT_MS = 2 * ADDRESS_DIAL_TIMEOUT_MS;
/** An inbound connection must finish Noise/Yamux within this (a half-open socket holds a slot no longer). */
export const INBOUND_UPGRADE_TIMEOUT_MS = 3_000;
/** Opening a stream and agreeing on its protocol (multistream-select), either side. */
export const STREAM_OPEN_TIMEOUT_MS = 5_000;
/** The cookie challenge-response on the auth protocol, either side, once its stream is open. */
export const AUTH_TIMEOUT_MS = 3_000;
/**
 * A connection that has not proved the cookie this long after it was accepted (inbound: from the
 * first byte of its socket, upgrade included) or opened (outbound) is closed: nothing else frees
 * the slot of a peer that connects and then stays silent.
 */
export const AUTH_DEADLINE_MS = 5_000;
/**
 * A listener that refused a dialer's proof keeps the connection open this long at most, so its
 * refusal reaches the dialer (which hangs up on reading it) before the connection closes.
 */
export const AUTH_REFUSAL_LINGER_MS = 1_000;
/** After a failed dial or authentication, wait this long before dialing that peer again. */
export const REDIAL_BACKOFF_MS = 500;
/** How long closing a connection may wait for its streams before aborting them. */
export const CONNECTION_CLOSE_TIMEOUT_MS = 1_000;
/** libp2p pings every connection this often and aborts one that stops answering. */
export const CONNECTION_PING_INTERVAL_MS = 10_000;
/** Running identify on a freshly authenticated connection (it tells gossipsub the peer's protocols). */
export const IDENTIFY_TIMEOUT_MS = 5_000;
/**
 * When a peer authenticates a new connection, its older ones must answer a probe within this or be
 * closed: a peer that restarted leaves a dead QUIC connection behind for its 10 s idle timeout, and
 * libp2p would keep picking it for Raft, gossipsub would keep its stream to the dead process.
 */
export const STALE_CONNECTION_PROBE_TIMEOUT_MS = 2_000;
/** Older connections of one peer probed at once (two nodes dialing each other make two). */
export const PEER_CONNECTIONS_PROBED_MAX = 8;

/**
 * Connection limits. Unauthenticated means accepted but not yet past the cookie handshake,
 * upgrading (Noise/QUIC) included: only those are capped, and a new one is always admitted by
 * closing the oldest unauthenticated one instead, so a flood of silent sockets or cookie-less peers
 * can delay a real node by at most its own handshake, never lock it out.
 */
/** Open connections a node keeps (a cluster has at most 64 members, plus clients dialing in). */
export const CONNECTIONS_MAX = 256;
/** Unauthenticated inbound connections in all: every member of a 64-node cluster reconnecting at once fits. */
export const UNAUTHENTICATED_CONNECTIONS_MAX = 64;
/** Unauthenticated inbound connections from one IP address: a host may run a few nodes, each dialing QUIC then TCP. */
export const UNAUTHENTICATED_PER_ADDRESS_MAX = 8;
/** libp2p's own cap on upgrading inbound connections, above ours so ours (which evicts the oldest) decides first. */
export const INBOUND_UPGRADES_PENDING_MAX = 2 * UNAUTHENTICATED_CONNECTIONS_MAX;
/** New inbound connections one IP address may open per second (libp2p's rate limiter; its default). */
export const INBOUND_CONNECTIONS_PER_ADDRESS_PER_SECOND = 5;
/** Auth streams one connection may have open at once (each side opens at most one). */
export const AUTH_STREAMS_PER_CONNECTION_MAX = 2;

/** Each handshake phase fits in the authentication deadline (checked once, when a transport is created). */
export function assertHandshakeTimeouts(
  timeouts = { upgradeMs: INBOUND_UPGRADE_TIMEOUT_MS, authMs: AUTH_TIMEOUT_MS, deadlineMs: AUTH_DEADLINE_MS },
): void {
  assert(timeouts.upgradeMs < timeouts.deadlineMs, 'the inbound upgrade fits in the authentication deadline');
  assert(timeouts.authMs < timeouts.deadlineMs, 'the cookie handshake fits in the authentication deadline');
  assert(
    timeouts.authMs + AUTH_REFUSAL_LINGER_MS <= timeouts.deadlineMs,
    'a refusal lingers within the authentication deadline',
  );
}
