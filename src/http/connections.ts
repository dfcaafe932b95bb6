import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';

/** HTTP connections a node keeps open at once; past it new ones are closed at once. */
export const HTTP_CONNECTIONS_MAX = 1_024;
/**
 * Connections from one remote address. Clients on one host (or behind one proxy) share an address
 * and HTTP/1.1 needs a connection per concurrent request, so the default leaves the total as the
 * only bound; a deployment may set it lower.
 */
export const HTTP_CONNECTIONS_PER_ADDRESS_MAX = HTTP_CONNECTIONS_MAX;
/**
 * A connection with no request in flight and no bytes for this long is closed (an idle keep-alive
 * connection, or one that never sends a request). A request in flight is bounded by its own
 * timeouts (the longest, add-learner, by ADD_LEARNER_RUN_MS_MAX when a follower forwards it), never by this.
 */
export const HTTP_IDLE_TIMEOUT_MS = 10_000;

export interface ConnectionLimits {
  readonly connectionsMax: number;
  readonly perAddressMax: number;
  readonly idleTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  connectionsMax: HTTP_CONNECTIONS_MAX,
  perAddressMax: HTTP_CONNECTIONS_PER_ADDRESS_MAX,
  idleTimeoutMs: HTTP_IDLE_TIMEOUT_MS,
};

/**
 * Connection hygiene for a node's HTTP server: a cap in total and per remote address, and idle
 * connections closed. Requests in flight are counted per socket so a slow answer is never cut.
 *
 * Over TLS a connection is two sockets: the TCP one ('connection', counted against the caps before
 * any handshake work) and the TLSSocket wrapping it ('secureConnection'), which is the one requests
 * carry, so idleness and requests in flight are tracked on it. A handshake that never completes is
 * bounded by the server's handshakeTimeout (set to the idle timeout by buildHttpServer).
 */
export class ConnectionGuard {
  private readonly limits: ConnectionLimits;
  private readonly perAddress = new Map<string, number>();
  private readonly inFlight = new WeakMap<Socket, number>();
  private open = 0;
  refused = 0;
  closedIdle = 0;

  constructor(server: Server, limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) {
    this.limits = limits;
    const tls = server instanceof TlsServer;
    server.on('connection', (socket: Socket) => {
      if (this.admit(socket) && !tls) this.closeWhenIdle(socket);
    });
    if (tls)
      server.on('secureConnection', (socket: Socket) => {
        this.closeWhenIdle(socket);
      });
    // With a listener here Node leaves a socket's inactivity to us (else it destroys the socket on
    // any timeout, a request in flight included); the socket's own 'timeout' handler below decides.
    server.on('timeout', () => undefined);
  }

  /** Count a new TCP connection, or close it at once when a cap is reached (false). */
  private admit(socket: Socket): boolean {
    const address = socket.remoteAddress ?? '';
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.open >= this.limits.connectionsMax || fromAddress >= this.limits.perAddressMax) {
      this.refused += 1;
      socket.destroy();
      return false;
    }
    this.open += 1;
    this.perAddress.set(address, fromAddress + 1);
    socket.once('close', () => {
      this.open -= 1;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
    });
    return true;
  }

  /** Close the socket requests arrive on after idleTimeoutMs without bytes and without a request in flight. */
  private closeWhenIdle(socket: Socket): void {
    socket.setTimeout(this.limits.idleTimeoutMs);
    socket.on('timeout', () => {
      if ((this.inFlight.get(socket) ?? 0) > 0) return; // waiting for the cluster: the request's own timeout applies
      this.closedIdle += 1;
      socket.destroy();
    });
  }

  /** A request arrived on `socket`; call `requestEnded` once when its response is done or it is aborted. */
  requestStarted(socket: Socket): void {
    this.inFlight.set(socket, (this.inFlight.get(socket) ?? 0) + 1);
  }

  requestEnded(socket: Socket): void {
    this.inFlight.set(socket, Math.max(0, (this.inFlight.get(socket) ?? 0) - 1));
  }

  get openConnections(): number {
    return this.open;
  }
}
