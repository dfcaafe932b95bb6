import { expect } from 'vitest';
import { roleIncludes, ROLES, ROUTE_ACCESS, type Role } from '../../src/http/auth.ts';

/**
 * The roles DESIGN.md §13 gives each route, written out apart from the code's ROUTE_ACCESS (which
 * must name the same routes): `read` reads, scans, watches, state and metrics; `write` adds writes,
 * transactions, leases, locks and elections; `admin` adds membership, snapshots, backups, peers and the
 * cluster ticket; `health` is `read`, or anyone with --open-health.
 */
export const EXPECTED_ACCESS: Readonly<Record<string, Role | 'health'>> = {
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

/** What a call answered: its status, its error code (null: none, or not JSON), its challenge header. */
export interface AuthAnswer {
  readonly status: number;
  readonly code: string | null;
  readonly challenge: string | null;
}

/**
 * `route` ("METHOD /path") with `token` (null: none). A POST carries `{}`: refused by every POST but
 * /trigger-snapshot once past authentication, so the table changes nothing but a snapshot.
 */
export async function authCall(url: string, route: string, token: string | null): Promise<AuthAnswer> {
  const [method = 'GET', path = '/'] = route.split(' ');
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(method === 'POST' ? { 'content-type': 'application/json' } : {}),
    },
    ...(method === 'POST' ? { body: '{}' } : {}),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  let code: string | null = null;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? null;
  } catch {
    code = null; // Prometheus text
  }
  return { status: response.status, code, challenge: response.headers.get('www-authenticate') };
}

/**
 * The table of issue 18: every route × no token, a forged token, and each role's token: 401 with a
 * Bearer challenge, 401, then 403 FORBIDDEN for a role short of the route's and anything but
 * 401/403/429 for the others. Answers how many cells it checked.
 */
export async function checkAuthTable(url: string, tokens: Readonly<Record<Role, string>>): Promise<number> {
  expect(Object.keys(ROUTE_ACCESS).sort()).toEqual(Object.keys(EXPECTED_ACCESS).sort());
  let cells = 0;
  for (const [route, access] of Object.entries(EXPECTED_ACCESS)) {
    const needed: Role = access === 'health' ? 'read' : access;
    const anonymous = await authCall(url, route, null);
    expect([anonymous.status, anonymous.code, anonymous.challenge], `${url} ${route}`).toEqual([
      401,
      'UNAUTHENTICATED',
      'Bearer realm="aspen"',
    ]);
    const forged = await authCall(url, route, 'aspen_not-a-token');
    expect([forged.status, forged.code], `${url} ${route} forged`).toEqual([401, 'UNAUTHENTICATED']);
    cells += 2;
    for (const role of ROLES) {
      const answer = await authCall(url, route, tokens[role]);
      if (roleIncludes(role, needed))
        expect([401, 403, 429], `${url} ${route} as ${role}: ${answer.code ?? answer.status}`).not.toContain(
          answer.status,
        );
      else expect([answer.status, answer.code], `${url} ${route} as ${role}`).toEqual([403, 'FORBIDDEN']);
      cells += 1;
    }
  }
  return cells;
}
