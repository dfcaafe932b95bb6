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
/** An inbound connection must finish Noise/Yamux (or QUIC's TLS) within this. */
export const INBOUND_UPGRADE_TIMEOUT_MS = 5_000;
/** Opening a stream and agreeing on its protocol (multistream-select), either side. */
export const STREAM_OPEN_TIMEOUT_MS = 5_000;
/** The cookie challenge-response on /aspen/auth/1.0.0, either side. */
export const AUTH_TIMEOUT_MS = 5_000;
/** After a failed dial or authentication, wait this long before dialing that peer again. */
export const REDIAL_BACKOFF_MS = 500;
/** How long closing a connection may wait for its streams before aborting them. */
export const CONNECTION_CLOSE_TIMEOUT_MS = 1_000;
/** libp2p pings every connection this often and aborts one that stops answering. */
export const CONNECTION_PING_INTERVAL_MS = 10_000;
/** Running identify on a freshly authenticated connection (it tells gossipsub the peer's protocols). */
export const IDENTIFY_TIMEOUT_MS = 5_000;
/** Open connections a node keeps (a cluster has at most 64 members, plus clients dialing in). */
export const CONNECTIONS_MAX = 256;
