import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { AspenError } from '../api/errors.ts';
import { assert } from '../base/assert.ts';
import { AUTH_FAILURES_PER_WINDOW_MAX } from '../base/limits.ts';

/** What a token may do; each role includes the ones before it (docs/operations.md, "Securing a cluster"). */
export const ROLES = ['read', 'write', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who a request may come from: a role, or anyone (`health`: anyone only with --open-health). */
type Access = Role | 'health';

/**
 * The role every route needs, by `METHOD path`. A route missing here cannot be registered (the
 * onRoute check), so no route is ever open by omission; an unknown path needs `read` (a 404 is
 * shown only to a caller who may read).
 */
export const ROUTE_ACCESS: Readonly<Record<string, Access>> = {
  'GET /read': 'read',
  'POST /read': 'read',
  'POST /scan': 'read',
  'GET /watch': 'read',
  'GET /state': 'read',
  'GET /leader': 'read',
  'GET /metrics': 'read',
  'GET /node-info': 'read',
  'GET /lease/info': 'read',
  'GET /leases': 'read',
  'GET /election/leader': 'read',
  'GET /election/observe': 'read',
  'GET /health': 'health',
  'GET /metrics/prometheus': 'health',
  'POST /write': 'write',
  'POST /delete': 'write',
  'POST /lease/grant': 'write',
  'POST /lease/keepalive': 'write',
  'POST /lease/revoke': 'write',
  'POST /lock': 'write',
  'POST /unlock': 'write',
  'POST /election/campaign': 'write',
  'POST /election/proclaim': 'write',
  'POST /election/resign': 'write',
  'POST /init': 'admin',
  'POST /add-learner': 'admin',
  'POST /change-membership': 'admin',
  'POST /remove-learner': 'admin',
  'POST /trigger-snapshot': 'admin',
  'GET /backup': 'admin',
  'POST /add-peer': 'admin',
  'GET /peers': 'admin',
  'GET /cluster-ticket': 'admin',
  'POST /join-ticket': 'admin',
};

/** Tokens a file may hold, and its size bound (read whole at start and on SIGHUP). */
export const TOKENS_MAX = 1_000;
export const TOKEN_FILE_BYTES_MAX = 256 * 1024;
/** A presented bearer token longer than this is refused unread (real ones are 49 characters). */
export const BEARER_CHARS_MAX = 256;
/** Random bytes in a new token (256 bits: SHA-256 of it needs no salt or stretching). */
export const TOKEN_RANDOM_BYTES = 32;
export const TOKEN_PREFIX = 'aspen_';
/** A token's name: letters, digits, `.`, `_`, `-`. */
export const TOKEN_NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
// Defined in src/base so that parsing the node's flags does not load this module (and the rate limiter).
export { AUTH_FAILURES_PER_WINDOW_MAX };
export const AUTH_FAILURE_WINDOW_MS = 60_000;
/** Source addresses whose failures are remembered at once (least recently seen forgotten first). */
export const AUTH_FAILURE_ADDRESSES_MAX = 10_000;

interface TokenEntry {
  readonly name: string;
  readonly role: Role;
  readonly digest: Buffer;
}

/** A caller a token identified. */
export interface Caller {
  readonly name: string;
  readonly role: Role;
}

export function roleIncludes(held: Role, needed: Role): boolean {
  return ROLES.indexOf(held) >= ROLES.indexOf(needed);
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** A new token (shown once) and the line that stores only its hash. */
export function newToken(name: string, role: Role): { token: string; line: string } {
  assert(TOKEN_NAME_PATTERN.test(name), 'a checked token name');
  const token = `${TOKEN_PREFIX}${randomBytes(TOKEN_RANDOM_BYTES).toString('base64url')}`;
  return { token, line: `${name} ${role} sha256:${sha256(token).toString('hex')}` };
}

/**
 * The tokens of an `--auth-tokens` file: one `NAME ROLE sha256:HEX` per line (`#` starts a
 * comment). Only hashes are kept; a presented token is hashed and compared with every entry in
 * constant time, so neither a match's position nor a near miss shows in the timing.
 */
export class TokenTable {
  private readonly entries: readonly TokenEntry[];

  private constructor(entries: readonly TokenEntry[]) {
    this.entries = entries;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Parse a file's text; a malformed line is an Error naming its line number (never its content). */
  static parse(text: string): TokenTable {
    if (Buffer.byteLength(text, 'utf8') > TOKEN_FILE_BYTES_MAX)
      throw new Error(`the token file is larger than ${TOKEN_FILE_BYTES_MAX} bytes`);
    const entries: TokenEntry[] = [];
    const names = new Set<string>();
    const lines = text.split('\n');
    for (const [index, raw] of lines.entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const [name = '', role = '', hash = '', ...rest] = line.split(/\s+/);
      const digest = /^sha256:[0-9a-f]{64}$/.exec(hash) === null ? null : Buffer.from(hash.slice(7), 'hex');
      if (!TOKEN_NAME_PATTERN.test(name) || !isRole(role) || digest === null || rest.length > 0)
        throw new Error(
          `line ${index + 1} of the token file is not "NAME read|write|admin sha256:<64 hex digits>"`,
        );
      if (names.has(name)) throw new Error(`line ${index + 1} of the token file repeats the name ${name}`);
      if (entries.length >= TOKENS_MAX)
        throw new Error(`the token file holds more than ${TOKENS_MAX} tokens`);
      names.add(name);
      entries.push({ name, role, digest });
    }
    return new TokenTable(entries);
  }

  /** The caller `token` identifies, or null. */
  verify(token: string): Caller | null {
    if (token.length === 0 || token.length > BEARER_CHARS_MAX) return null;
    const digest = sha256(token);
    let found: TokenEntry | null = null;
    // bounded: at most TOKENS_MAX entries; every one is compared (no early exit)
    for (const entry of this.entries)
      if (timingSafeEqual(digest, entry.digest) && found === null) found = entry;
    return found === null ? null : { name: found.name, role: found.role };
  }

  hasName(name: string): boolean {
    return this.entries.some((entry) => entry.name === name);
  }
}

export function isRole(text: string): text is Role {
  return (ROLES as readonly string[]).includes(text);
}

export interface AuthOptions {
  /** The current token table (swapped on SIGHUP by its owner). */
  readonly tokens: () => TokenTable;
  /** /health and /metrics/prometheus answer without a token (--open-health). */
  readonly openHealth: boolean;
  /** Failed authentications per source address and window before 429 (default AUTH_FAILURES_PER_WINDOW_MAX). */
  readonly failuresPerWindowMax?: number;
  /** Counts a refusal (for aspen_auth_failures_total). */
  readonly onFailure: (reason: 'missing' | 'invalid' | 'forbidden' | 'rate_limited') => void;
}

/** The bearer token of an Authorization header, or null when there is none of that scheme. */
function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return match === null ? null : (match[1] ?? null);
}

/**
 * Bearer-token authentication and roles on every route: 401 UNAUTHENTICATED without a valid token,
 * 403 FORBIDDEN when its role is short of the route's, 429 TOO_MANY_REQUESTS for a source address
 * past AUTH_FAILURES_PER_WINDOW_MAX failed authentications in the window (counted by
 * @fastify/rate-limit; while over it every call from the address is refused, so further guesses
 * learn nothing). Runs before bodies are parsed: a refused caller's body is never read.
 */
export function installAuth(app: FastifyInstance, options: AuthOptions): void {
  void app.register(rateLimit, {
    global: false,
    max: options.failuresPerWindowMax ?? AUTH_FAILURES_PER_WINDOW_MAX,
    timeWindow: AUTH_FAILURE_WINDOW_MS,
    cache: AUTH_FAILURE_ADDRESSES_MAX,
  });
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat())
      if (method !== 'HEAD')
        assert(
          ROUTE_ACCESS[`${method} ${route.url}`] !== undefined,
          `route ${method} ${route.url} has a role`,
        );
  });
  const failed = new RecentFailures(AUTH_FAILURE_ADDRESSES_MAX, AUTH_FAILURE_WINDOW_MS);
  let limiter: ReturnType<FastifyInstance['createRateLimit']> | null = null;
  // Synchronous for a valid token from an address without recent failures (every good caller's
  // call); the rate limiter is consulted only otherwise.
  app.addHook('onRequest', (request, reply, done) => {
    const access = accessOf(request);
    if (access === 'health' && options.openHealth) {
      done();
      return;
    }
    const needed: Role = access === 'health' ? 'read' : access;
    const token = bearerToken(request.headers.authorization);
    const caller = token === null ? null : options.tokens().verify(token);
    if (caller !== null && !failed.has(request.ip, Date.now())) {
      done(forbidden(caller, needed, request, options) ?? undefined);
      return;
    }
    limiter ??= app.createRateLimit();
    refuseOrAdmit(limiter, request, caller, token !== null, options).then(
      (error) => {
        if (error?.code === 'UNAUTHENTICATED') {
          failed.add(request.ip, Date.now());
          challenge(reply);
        }
        done(error ?? forbidden(caller, needed, request, options) ?? undefined);
      },
      (error: unknown) => {
        done(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/**
 * The slow path: 429 while the address is over its bound (whatever the token: guessing on learns
 * nothing), else 401 for no valid token (counted), else admitted (null).
 */
async function refuseOrAdmit(
  limiter: ReturnType<FastifyInstance['createRateLimit']>,
  request: FastifyRequest,
  caller: Caller | null,
  presented: boolean,
  options: AuthOptions,
): Promise<AspenError | null> {
  const status = await limiter(request, { increment: false });
  // Exceeded once the window's failures reach the bound (a peek does not count this request).
  if (!status.isAllowed && status.remaining <= 0) {
    options.onFailure('rate_limited');
    return new AspenError(
      'TOO_MANY_REQUESTS',
      `too many failed authentications from this address; try again in ${status.ttlInSeconds} s`,
    );
  }
  if (caller !== null) return null;
  await limiter(request);
  options.onFailure(presented ? 'invalid' : 'missing');
  return new AspenError(
    'UNAUTHENTICATED',
    presented
      ? 'the bearer token is not valid'
      : 'this node requires a bearer token (Authorization: Bearer <token>; aspen --token, ASPEN_TOKEN)',
  );
}

/** 403 when the caller's role is short of the route's (null: allowed). */
function forbidden(
  caller: Caller | null,
  needed: Role,
  request: FastifyRequest,
  options: AuthOptions,
): AspenError | null {
  if (caller === null || roleIncludes(caller.role, needed)) return null;
  options.onFailure('forbidden');
  return new AspenError(
    'FORBIDDEN',
    `token ${caller.name} has the ${caller.role} role; ${request.method} ${routeOf(request)} needs ${needed}`,
  );
}

/**
 * Addresses with a failed authentication in the last window (at most `max`, the oldest forgotten
 * first): a valid token from any other address skips the rate limiter.
 */
class RecentFailures {
  private readonly lastMs = new Map<string, number>();
  private readonly max: number;
  private readonly windowMs: number;

  constructor(max: number, windowMs: number) {
    this.max = max;
    this.windowMs = windowMs;
  }

  has(address: string, nowMs: number): boolean {
    const last = this.lastMs.get(address);
    return last !== undefined && nowMs - last < this.windowMs;
  }

  add(address: string, nowMs: number): void {
    this.lastMs.delete(address);
    if (this.lastMs.size >= this.max) {
      const oldest = this.lastMs.keys().next();
      if (oldest.done !== true) this.lastMs.delete(oldest.value);
    }
    this.lastMs.set(address, nowMs);
  }
}

function routeOf(request: FastifyRequest): string {
  return request.routeOptions.url ?? (request.url.split('?')[0] ?? '').slice(0, 200);
}

function accessOf(request: FastifyRequest): Access {
  const url = request.routeOptions.url;
  if (url === undefined) return 'read';
  return ROUTE_ACCESS[`${request.method === 'HEAD' ? 'GET' : request.method} ${url}`] ?? 'read';
}

function challenge(reply: FastifyReply): void {
  void reply.header('www-authenticate', 'Bearer realm="aspen"');
}
