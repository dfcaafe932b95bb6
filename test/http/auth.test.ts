import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/client/index.ts';
import {
  AUTH_FAILURES_PER_WINDOW_MAX,
  newToken,
  roleIncludes,
  ROLES,
  ROUTE_ACCESS,
  TokenTable,
  type Role,
} from '../../src/http/auth.ts';
import { realNode } from '../client/real-node.ts';
import { authCall, checkAuthTable } from '../support/auth-table.ts';

const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** One token per role, and the table that holds their hashes. */
function tokensForRoles(): { table: TokenTable; tokens: Record<Role, string> } {
  const made = ROLES.map((role) => ({ role, ...newToken(`t-${role}`, role) }));
  const table = TokenTable.parse(made.map((entry) => entry.line).join('\n'));
  const tokens = Object.fromEntries(made.map((entry) => [entry.role, entry.token])) as Record<Role, string>;
  return { table, tokens };
}

/** A real single node (initialized) behind every route, with bearer tokens required. */
async function securedNode(openHealth: boolean, failuresPerWindowMax = AUTH_FAILURES_PER_WINDOW_MAX) {
  const { table, tokens } = tokensForRoles();
  const url = await realNode(stops, {
    network: {
      addresses: () => [],
      addPeer: () => undefined,
      peers: () => [],
      clusterTicket: () => 'aspenticket',
    },
    auth: { tokens: () => table, openHealth, failuresPerWindowMax },
  });
  return { url, tokens };
}

describe('bearer tokens', () => {
  it('a token verifies as its own entry only; anything else verifies as nobody', () => {
    const { table, tokens } = tokensForRoles();
    for (const role of ROLES) expect(table.verify(tokens[role])).toEqual({ name: `t-${role}`, role });
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (guess) => {
        if (!ROLES.some((role) => tokens[role] === guess)) expect(table.verify(guess)).toBeNull();
      }),
    );
    expect(table.verify(`${tokens.admin}x`)).toBeNull();
    expect(table.verify(tokens.admin.slice(0, -1))).toBeNull();
  });

  it('refuses a malformed file by line number, never quoting it, and repeated names', () => {
    const { line } = newToken('ci', 'write');
    expect(TokenTable.parse(`# comment\n\n${line}\n`).size).toBe(1);
    for (const bad of [
      'ci write',
      'ci owner sha256:' + '0'.repeat(64),
      'ci write sha256:xyz',
      `${line} extra`,
    ]) {
      const error = (() => {
        try {
          TokenTable.parse(`# ok\n${bad}`);
        } catch (caught) {
          return caught as Error;
        }
        return null;
      })();
      expect(error?.message).toMatch(/^line 2 of the token file/);
      expect(error?.message).not.toContain('sha256:0');
    }
    expect(() => TokenTable.parse(`${line}\n${line}`)).toThrow(/repeats the name ci/);
  });

  it('roles include the ones below them', () => {
    expect(roleIncludes('admin', 'read')).toBe(true);
    expect(roleIncludes('write', 'write')).toBe(true);
    expect(roleIncludes('read', 'write')).toBe(false);
    expect(roleIncludes('write', 'admin')).toBe(false);
  });
});

describe('every route × every role (one node)', () => {
  it('answers 401 without a valid token, 403 for a weaker role, and lets the right roles through', async () => {
    // Two refusals per route from one address: past the default bound, which its own test covers.
    const { url, tokens } = await securedNode(false, 1_000);
    expect(await checkAuthTable(url, tokens)).toBe(Object.keys(ROUTE_ACCESS).length * (2 + ROLES.length));
  }, 60_000);

  it('--open-health leaves /health and /metrics/prometheus open, and nothing else', async () => {
    const { url } = await securedNode(true);
    expect((await authCall(url, 'GET /health', null)).status).toBe(200);
    expect((await authCall(url, 'GET /metrics/prometheus', null)).status).toBe(200);
    expect((await authCall(url, 'GET /metrics', null)).status).toBe(401);
    expect((await authCall(url, 'GET /nowhere', null)).status).toBe(401);
  });
});

describe('brute force', () => {
  it(`after ${AUTH_FAILURES_PER_WINDOW_MAX} failed authentications an address gets 429 for everything, and the failures are counted`, async () => {
    const { url, tokens } = await securedNode(true);
    for (let attempt = 0; attempt < AUTH_FAILURES_PER_WINDOW_MAX; attempt += 1)
      expect((await authCall(url, 'GET /state', `aspen_guess-${attempt}`)).status).toBe(401);
    expect(await authCall(url, 'GET /state', 'aspen_one-more')).toMatchObject({
      status: 429,
      code: 'TOO_MANY_REQUESTS',
    });
    // A valid token from the same address learns nothing more until the window ends.
    expect((await authCall(url, 'GET /state', tokens.admin)).status).toBe(429);
    const metrics = await (await fetch(`${url}/metrics/prometheus`)).text();
    expect(metrics).toMatch(
      new RegExp(`aspen_auth_failures_total\\{reason="invalid"\\} ${AUTH_FAILURES_PER_WINDOW_MAX}`),
    );
    expect(metrics).toMatch(/aspen_auth_failures_total\{reason="rate_limited"\} 2/);
  });
});

describe('KvClient with a token', () => {
  it('calls and streams with its token; without one it fails at once with UNAUTHENTICATED', async () => {
    const { url, tokens } = await securedNode(false);
    const writer = new KvClient({ endpoints: [url], token: tokens.write });
    await writer.put('a', '1');
    expect((await writer.get('a'))?.value).toBe('1');
    const reader = new KvClient({ endpoints: [url], token: tokens.read });
    const refused = await reader.put('a', '2').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(KvError);
    expect((refused as KvError).code).toBe('FORBIDDEN');
    const anonymous = new KvClient({ endpoints: [url] });
    const started = Date.now();
    const error = await anonymous.get('a').catch((caught: unknown) => caught);
    expect((error as KvError).code).toBe('UNAUTHENTICATED');
    expect(Date.now() - started).toBeLessThan(5_000); // not retried
    const controller = new AbortController();
    const stream = writer.watch('w/', { prefix: true, signal: controller.signal })[Symbol.asyncIterator]();
    const first = stream.next(); // connects: the stream's first update is a progress, or the change
    await writer.put('w/1', 'x');
    let update = (await first).value as { events: readonly unknown[] } | undefined;
    // bounded: a progress or two before the change
    for (let step = 0; step < 5 && update !== undefined && update.events.length === 0; step += 1)
      update = (await stream.next()).value as { events: readonly unknown[] } | undefined;
    expect(update).toMatchObject({ events: [{ key: 'w/1', value: 'x' }] });
    controller.abort();
    expect(() => new KvClient({ endpoints: [url], token: 'has space' })).toThrow(RangeError);
  });
});
