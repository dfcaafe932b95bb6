import type { Connection, ConnectionGater, MultiaddrConnection, StreamHandler } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { escalateBrokenInvariant } from '../api/errors.ts';
import { assert } from '../base/assert.ts';
import type { Log, LogFields, LogLevel } from '../base/log.ts';
import { AuthError } from './errors.ts';
import { UNAUTHENTICATED_CONNECTIONS_MAX, UNAUTHENTICATED_PER_ADDRESS_MAX } from './timeouts.ts';

/** Protocols one node serves behind authentication (Raft, identify, gossipsub's few versions). */
const GATED_PROTOCOLS_MAX = 16;
/** Admission and refusal lines logged per window; past it they are counted and summed up once. */
const LOG_LINES_PER_WINDOW_MAX = 20;
const LOG_WINDOW_MS = 60_000;

/** A connection not yet authenticated: counted against the caps when inbound, closed at its deadline. */
interface Admitted {
  readonly address: string;
  readonly inbound: boolean;
  abort: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export interface GatekeeperOptions {
  /** Close a connection that has not authenticated this long after it was accepted (inbound) or opened (outbound). */
  readonly deadlineMs: number;
  readonly log: Log;
  /** A connection just proved the cookie (the transport runs identify on it). */
  readonly onAuthenticated: (connection: Connection) => void;
}

export interface GatekeeperStats {
  /** Inbound connections accepted (upgrading or open) and not yet authenticated. */
  readonly unauthenticated: number;
  /** The most of those from one IP address. */
  readonly unauthenticatedPerAddressMax: number;
  /** Closed to make room for a newer one (per-address or total cap). */
  readonly evicted: number;
  /** Closed at the authentication deadline. */
  readonly expired: number;
  /** Streams of a gated protocol refused on an unauthenticated connection. */
  readonly streamsRefused: number;
}

/** The IP address of a multiaddr (the whole multiaddr for anything else). */
export function remoteHost(address: Multiaddr): string {
  const host = address
    .getComponents()
    .find((component) => component.name === 'ip4' || component.name === 'ip6');
  return host?.value ?? address.toString();
}

/**
 * Who gets served before the cookie handshake: nobody. Tracks every connection from the moment
 * libp2p accepts its socket (the connection gater's first hook, before Noise) until it proves the
 * cookie: a connection still unauthenticated at the deadline is closed, and the unauthenticated
 * inbound ones are capped per IP address and in total. A new one is admitted by closing the oldest
 * (of its address, or overall) rather than refused, so silent sockets and cookie-less peers can
 * never lock a real node out: they can only race its handshake, which takes a few round trips.
 *
 * Entries are keyed by the connection's timeline object, which libp2p's Connection shares with the
 * MultiaddrConnection it wraps: the one handle both the gater (before the upgrade) and the
 * connection events (after it) see.
 */
export class Gatekeeper {
  private readonly options: GatekeeperOptions;
  private readonly admitted = new Map<object, Admitted>();
  private readonly perAddress = new Map<string, number>();
  private inbound = 0;
  private readonly authenticated = new Set<string>();
  private readonly pending = new Map<string, Promise<boolean>>();
  private readonly refusalLogged = new Set<string>();
  private readonly gated = new Set<string>();
  private windowStartMs = 0;
  private linesInWindow = 0;
  private linesSuppressed = 0;
  private evictedTotal = 0;
  private expiredTotal = 0;
  private streamsRefusedTotal = 0;
  private stopped = false;

  constructor(options: GatekeeperOptions) {
    assert(options.deadlineMs > 0, 'an authentication deadline is positive');
    this.options = options;
  }

  /** The hooks libp2p calls: every inbound socket (TCP) or QUIC connection is admitted here first. */
  connectionGater(): ConnectionGater {
    return {
      denyInboundConnection: (maConn) => {
        this.admitInbound(maConn);
        return false;
      },
    };
  }

  get stats(): GatekeeperStats {
    let perAddressMax = 0;
    for (const count of this.perAddress.values()) perAddressMax = Math.max(perAddressMax, count);
    return {
      unauthenticated: this.inbound,
      unauthenticatedPerAddressMax: perAddressMax,
      evicted: this.evictedTotal,
      expired: this.expiredTotal,
      streamsRefused: this.streamsRefusedTotal,
    };
  }

  private admitInbound(maConn: MultiaddrConnection): void {
    if (this.stopped) return;
    const address = remoteHost(maConn.remoteAddr);
    this.makeRoom(address);
    const key = maConn.timeline;
    this.track(key, address, true, (error) => {
      maConn.abort(error);
    });
    maConn.addEventListener(
      'close',
      () => {
        this.release(key);
      },
      { once: true },
    );
  }

  /** Close the oldest unauthenticated inbound connection of `address`, then the oldest of all, where a cap is reached. */
  private makeRoom(address: string): void {
    if ((this.perAddress.get(address) ?? 0) >= UNAUTHENTICATED_PER_ADDRESS_MAX)
      this.evict(this.oldestInbound(address), `more than ${UNAUTHENTICATED_PER_ADDRESS_MAX} from ${address}`);
    if (this.inbound >= UNAUTHENTICATED_CONNECTIONS_MAX)
      this.evict(this.oldestInbound(null), `more than ${UNAUTHENTICATED_CONNECTIONS_MAX} in all`);
  }

  /** libp2p's connection:open: an inbound one takes over its admission entry; an outbound one starts its deadline. */
  opened(connection: Connection): void {
    if (this.stopped || this.authenticated.has(connection.id)) return;
    const entry = this.admitted.get(connection.timeline);
    if (entry !== undefined) {
      entry.abort = (error) => {
        connection.abort(error);
      };
      return;
    }
    // Outbound, or inbound without an entry (a transport that skipped the gater, or one evicted mid-upgrade that survived).
    const inbound = connection.direction === 'inbound';
    const address = remoteHost(connection.remoteAddr);
    if (inbound) this.makeRoom(address);
    this.track(connection.timeline, address, inbound, (error) => {
      connection.abort(error);
    });
  }

  closed(connection: Connection): void {
    this.release(connection.timeline);
    this.authenticated.delete(connection.id);
    this.pending.delete(connection.id);
    this.refusalLogged.delete(connection.id);
  }

  private track(key: object, address: string, inbound: boolean, abort: (error: Error) => void): void {
    if (this.admitted.has(key)) return;
    const timer = setTimeout(() => {
      this.expire(key);
    }, this.options.deadlineMs);
    timer.unref();
    this.admitted.set(key, { address, inbound, abort, timer });
    if (inbound) {
      this.inbound += 1;
      this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    }
    assert(this.inbound <= UNAUTHENTICATED_CONNECTIONS_MAX, 'unauthenticated connections within their cap');
    assert(
      (this.perAddress.get(address) ?? 0) <= UNAUTHENTICATED_PER_ADDRESS_MAX,
      'unauthenticated connections per address within their cap',
    );
    // Outbound entries are bounded by our own dials, which libp2p prunes past CONNECTIONS_MAX open connections.
  }

  private release(key: object): Admitted | null {
    const entry = this.admitted.get(key);
    if (entry === undefined) return null;
    this.admitted.delete(key);
    clearTimeout(entry.timer);
    if (entry.inbound) {
      this.inbound -= 1;
      const left = (this.perAddress.get(entry.address) ?? 0) - 1;
      if (left > 0) this.perAddress.set(entry.address, left);
      else this.perAddress.delete(entry.address);
    }
    return entry;
  }

  /** The oldest unauthenticated inbound entry (of `address`, or of any): Map order is admission order. */
  private oldestInbound(address: string | null): object | null {
    for (const [key, entry] of this.admitted) {
      if (entry.inbound && (address === null || entry.address === address)) return key;
    }
    return null;
  }

  private evict(key: object | null, reason: string): void {
    assert(key !== null, 'a full cap has an oldest entry');
    const entry = this.release(key);
    if (entry === null) return;
    this.evictedTotal += 1;
    this.note(
      `admission: closed an unauthenticated connection from ${entry.address} to admit a newer one (${reason})`,
    );
    entry.abort(new AuthError(`closed unauthenticated: ${reason}`));
  }

  private expire(key: object): void {
    const entry = this.release(key);
    if (entry === null) return;
    this.expiredTotal += 1;
    this.note(
      `admission: closed a connection ${entry.inbound ? 'from' : 'to'} ${entry.address} not authenticated within ${this.options.deadlineMs} ms`,
    );
    entry.abort(new AuthError(`not authenticated within ${this.options.deadlineMs} ms`));
  }

  isAuthenticated(connection: Connection): boolean {
    return this.authenticated.has(connection.id);
  }

  /**
   * Run one cookie handshake on `connection` (`run` resolves true when it succeeded and never
   * rejects). Concurrent handshakes on one connection (both sides dialing at once) may all run;
   * the connection counts as authorized once any succeeds.
   */
  authenticate(connection: Connection, run: () => Promise<boolean>): Promise<boolean> {
    const id = connection.id;
    if (this.authenticated.has(id)) return Promise.resolve(true);
    // A handshake counts only if the connection is marked (it may have closed, or we stopped, meanwhile).
    const attempt = run().then((ok) => ok && this.markAuthenticated(connection));
    const previous = this.pending.get(id);
    const combined = previous === undefined ? attempt : firstSuccess(previous, attempt);
    this.pending.set(id, combined);
    void combined.then(() => {
      if (this.pending.get(id) === combined) this.pending.delete(id);
    });
    return attempt;
  }

  /** The handshake already running on `connection` if any (a dialer joins it), else a new one. */
  authenticateOnce(connection: Connection, run: () => Promise<boolean>): Promise<boolean> {
    if (this.authenticated.has(connection.id)) return Promise.resolve(true);
    return this.pending.get(connection.id) ?? this.authenticate(connection, run);
  }

  /** Whether a stream on `connection` may be served: yes once it proved the cookie; a running handshake is awaited. */
  async authorized(connection: Connection): Promise<boolean> {
    if (this.authenticated.has(connection.id)) return true;
    const pending = this.pending.get(connection.id);
    return pending === undefined ? false : pending;
  }

  /** Record a proved connection; false when it is no longer open or the gatekeeper stopped. */
  private markAuthenticated(connection: Connection): boolean {
    if (this.stopped || connection.status !== 'open') return false;
    this.authenticated.add(connection.id);
    this.release(connection.timeline);
    this.options.onAuthenticated(connection);
    return true;
  }

  /** `handler`, served only on connections that proved the cookie; any other stream is reset unread. */
  serveAuthenticated(protocol: string, handler: StreamHandler): StreamHandler {
    assert(this.gated.size < GATED_PROTOCOLS_MAX || this.gated.has(protocol), 'gated protocols bounded');
    this.gated.add(protocol);
    return async (stream, connection) => {
      if (await this.authorized(connection)) {
        try {
          await handler(stream, connection);
        } catch (error) {
          // libp2p would only abort the stream: a broken invariant must stop the process instead.
          if (!escalateBrokenInvariant(error)) throw error;
        }
        return;
      }
      this.streamsRefusedTotal += 1;
      if (!this.refusalLogged.has(connection.id) && connection.status === 'open') {
        this.refusalLogged.add(connection.id);
        this.note(
          `auth: refused a ${protocol} stream from unauthenticated ${connection.remotePeer.toString()} at ${connection.remoteAddr.toString()}`,
        );
      }
      stream.abort(new AuthError('authenticate first'));
    };
  }

  /** Whether streams of `protocol` are served only after authentication. */
  gates(protocol: string): boolean {
    return this.gated.has(protocol);
  }

  /** Log a line, at most LOG_LINES_PER_WINDOW_MAX per window; the rest are summed up when the next window opens. */
  note(line: string, level: LogLevel = 'warn', fields?: LogFields): void {
    const nowMs = Date.now();
    if (nowMs - this.windowStartMs >= LOG_WINDOW_MS) {
      if (this.linesSuppressed > 0)
        this.options.log(
          `admission: ${this.linesSuppressed} more admission or auth lines were not logged in the last window`,
          'warn',
        );
      this.windowStartMs = nowMs;
      this.linesInWindow = 0;
      this.linesSuppressed = 0;
    }
    if (this.linesInWindow >= LOG_LINES_PER_WINDOW_MAX) {
      this.linesSuppressed += 1;
      return;
    }
    this.linesInWindow += 1;
    this.options.log(line, level, fields);
  }

  stop(): void {
    this.stopped = true;
    for (const entry of this.admitted.values()) clearTimeout(entry.timer);
    this.admitted.clear();
    this.perAddress.clear();
    this.inbound = 0;
  }
}

/** True as soon as either handshake succeeds; false once both have failed. Neither rejects. */
function firstSuccess(first: Promise<boolean>, second: Promise<boolean>): Promise<boolean> {
  return new Promise((resolve) => {
    let failures = 0;
    const settle = (ok: boolean): void => {
      if (ok) resolve(true);
      else if ((failures += 1) === 2) resolve(false);
    };
    void first.then(settle);
    void second.then(settle);
  });
}
