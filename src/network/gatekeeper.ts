import type { Connection, StreamHandler } from '@libp2p/interface';
import { assert } from '../raft/assert.ts';
import { AuthError } from './auth.ts';

/** Protocols one node serves behind authentication (Raft, identify, gossipsub's few versions). */
const GATED_PROTOCOLS_MAX = 16;
/** Refusal lines logged per window; past it they are counted and summed up once. */
const LOG_LINES_PER_WINDOW_MAX = 20;
const LOG_WINDOW_MS = 60_000;

export interface GatekeeperOptions {
  readonly log: (line: string) => void;
  /** A connection just proved the cookie (the transport runs identify on it). */
  readonly onAuthenticated: (connection: Connection) => void;
}

export interface GatekeeperStats {
  /** Streams of a gated protocol refused on an unauthenticated connection. */
  readonly streamsRefused: number;
}

/**
 * Who gets served before the cookie handshake: nobody. Keeps which connections proved the cookie
 * (or are proving it) and wraps protocol handlers so that a stream on any other connection is
 * reset unread.
 */
export class Gatekeeper {
  private readonly options: GatekeeperOptions;
  private readonly authenticated = new Set<string>();
  private readonly pending = new Map<string, Promise<boolean>>();
  private readonly refusalLogged = new Set<string>();
  private readonly gated = new Set<string>();
  private windowStartMs = 0;
  private linesInWindow = 0;
  private linesSuppressed = 0;
  private streamsRefusedTotal = 0;
  private stopped = false;

  constructor(options: GatekeeperOptions) {
    this.options = options;
  }

  get stats(): GatekeeperStats {
    return { streamsRefused: this.streamsRefusedTotal };
  }

  /** libp2p's connection:close. */
  closed(connection: Connection): void {
    this.authenticated.delete(connection.id);
    this.pending.delete(connection.id);
    this.refusalLogged.delete(connection.id);
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
    const attempt = run().then((ok) => {
      if (ok) this.markAuthenticated(connection);
      return ok;
    });
    const previous = this.pending.get(id);
    const combined = previous === undefined ? attempt : Promise.all([previous, attempt]).then(([first, second]) => first || second);
    this.pending.set(id, combined);
    void combined.then(() => { if (this.pending.get(id) === combined) this.pending.delete(id); });
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

  private markAuthenticated(connection: Connection): void {
    if (this.stopped || connection.status !== 'open') return;
    this.authenticated.add(connection.id);
    this.options.onAuthenticated(connection);
  }

  /** `handler`, served only on connections that proved the cookie; any other stream is reset unread. */
  serveAuthenticated(protocol: string, handler: StreamHandler): StreamHandler {
    assert(this.gated.size < GATED_PROTOCOLS_MAX || this.gated.has(protocol), 'gated protocols bounded');
    this.gated.add(protocol);
    return async (stream, connection) => {
      if (await this.authorized(connection)) {
        await handler(stream, connection);
        return;
      }
      this.streamsRefusedTotal += 1;
      if (!this.refusalLogged.has(connection.id) && connection.status === 'open') {
        this.refusalLogged.add(connection.id);
        this.note(`auth: refused a ${protocol} stream from unauthenticated ${connection.remotePeer.toString()} at ${connection.remoteAddr.toString()}`);
      }
      stream.abort(new AuthError('authenticate first'));
    };
  }

  /** Whether streams of `protocol` are served only after authentication. */
  gates(protocol: string): boolean {
    return this.gated.has(protocol);
  }

  /** Log a line, at most LOG_LINES_PER_WINDOW_MAX per window; the rest are summed up when the next window opens. */
  note(line: string): void {
    const nowMs = Date.now();
    if (nowMs - this.windowStartMs >= LOG_WINDOW_MS) {
      if (this.linesSuppressed > 0) this.options.log(`auth: ${this.linesSuppressed} more refusal lines were not logged in the last window`);
      this.windowStartMs = nowMs;
      this.linesInWindow = 0;
      this.linesSuppressed = 0;
    }
    if (this.linesInWindow >= LOG_LINES_PER_WINDOW_MAX) {
      this.linesSuppressed += 1;
      return;
    }
    this.linesInWindow += 1;
    this.options.log(line);
  }

  stop(): void {
    this.stopped = true;
  }
}
