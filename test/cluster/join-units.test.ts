import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseNodeConfig } from '../../src/cluster/config.ts';
import {
  decodeTicket,
  encodeJoinTicket,
  encodeTicket,
  isJoinTicket,
  TICKET_ADDRESSES_MAX,
  type JoinTicket,
} from '../../src/cluster/discovery/ticket.ts';
import { clusterTopic } from '../../src/cluster/discovery/topic.ts';
import { ConfigError } from '../../src/cluster/errors.ts';
import {
  JOIN_CREDENTIAL_EXPIRED_KEPT_MS,
  JOIN_CREDENTIALS_PENDING_MAX,
  JoinCredentials,
} from '../../src/cluster/join-credentials.ts';
import { expectEditsRefused } from '../support/tickets.ts';

const PEER = '12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR';
const ADDRESSES = [
  `/ip4/127.0.0.1/udp/26001/quic-v1/p2p/${PEER}`,
  `/ip4/127.0.0.1/tcp/26001/p2p/${PEER}`,
  `/ip4/10.0.0.5/udp/26001/quic-v1/p2p/${PEER}`,
  `/ip6/::1/tcp/26001/p2p/${PEER}`,
];

const joinTicket = (overrides: Partial<JoinTicket['join']> = {}): JoinTicket => ({
  bootstrap: ADDRESSES.slice(0, 2),
  join: {
    nodeId: 4,
    credential: randomBytes(32).toString('base64url'),
    expiresAtMs: 1_900_000_000_000,
    ...overrides,
  },
});

describe('join tickets (version 3)', () => {
  it('round-trip (property); a cookie ticket still decodes as one', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.subarray(ADDRESSES, { minLength: 1 }),
        (nodeId, bytes, expiresAtMs, bootstrap) => {
          const ticket: JoinTicket = {
            bootstrap,
            join: { nodeId, credential: Buffer.from(bytes).toString('base64url'), expiresAtMs },
          };
          const text = encodeJoinTicket(ticket);
          expect(text).toMatch(/^aspen[a-z2-7]+$/);
          const decoded = decodeTicket(text);
          expect(isJoinTicket(decoded)).toBe(true);
          expect(decoded).toEqual(ticket);
        },
      ),
      { numRuns: 200 },
    );
    const cookie = { topic: clusterTopic('my-cluster'), clusterId: 'my-cluster', bootstrap: ADDRESSES };
    const decoded = decodeTicket(encodeTicket(cookie));
    expect(isJoinTicket(decoded)).toBe(false);
    expect(decoded).toEqual(cookie);
  });

  it('refuses any single-character change and any cut (property)', () => {
    expectEditsRefused(encodeJoinTicket(joinTicket()));
    expect(() => decodeTicket(`aspen${'a'.repeat(20_000)}`)).toThrow(/at most/);
  });

  it('refuses addresses without a peer id, a credential that is not 32 bytes, and bad ids or expiries', () => {
    const ticket = joinTicket();
    expect(() => encodeJoinTicket({ ...ticket, bootstrap: ['/ip4/127.0.0.1/tcp/26001'] })).toThrow(
      /names no peer id/,
    );
    expect(() => encodeJoinTicket({ ...ticket, bootstrap: ['127.0.0.1:26001'] })).toThrow(/names no peer id/);
    expect(() => encodeJoinTicket({ ...ticket, bootstrap: [] })).toThrow(/1\.\.16/);
    expect(() =>
      encodeJoinTicket({
        ...ticket,
        bootstrap: Array.from({ length: TICKET_ADDRESSES_MAX + 1 }, () => ADDRESSES[0] ?? ''),
      }),
    ).toThrow(/1\.\.16/);
    for (const credential of [
      '',
      'short',
      randomBytes(31).toString('base64url'),
      randomBytes(33).toString('base64url'),
    ])
      expect(() => encodeJoinTicket(joinTicket({ credential }))).toThrow(/32 bytes/);
    for (const nodeId of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1])
      expect(() => encodeJoinTicket(joinTicket({ nodeId }))).toThrow(/node id/);
    for (const expiresAtMs of [0, 2.5])
      expect(() => encodeJoinTicket(joinTicket({ expiresAtMs }))).toThrow(/expiry/);
  });

  it('aspen-node --ticket: a join ticket brings no cookie, and --cookie with one is refused', () => {
    const ticket = joinTicket();
    const text = encodeJoinTicket(ticket);
    // No cookie check at parse time, even off loopback: the cluster's cookie passed it where it was set.
    expect(parseNodeConfig(['--node-id', '4', '--host', '10.0.0.9', '--ticket', text])).toMatchObject({
      cookie: '',
      cookieIsDefault: false,
      ticket: null,
      joinTicket: ticket,
    });
    expect(() =>
      parseNodeConfig(['--node-id', '4', '--ticket', text, '--cookie', 'a-cookie-of-twenty-chars']),
    ).toThrow(ConfigError);
    process.env.ASPEN_COOKIE = 'a-cookie-of-twenty-chars';
    try {
      expect(() => parseNodeConfig(['--node-id', '4', '--ticket', text])).toThrow(/--cookie cannot be given/);
    } finally {
      delete process.env.ASPEN_COOKIE;
    }
    expect(parseNodeConfig(['--node-id', '4']).joinTicket).toBeNull();
  });
});

describe('JoinCredentials', () => {
  type Op =
    | { readonly kind: 'mint'; readonly nodeId: number; readonly ttlSeconds: number }
    | { readonly kind: 'redeem'; readonly which: number; readonly nodeId: number }
    | { readonly kind: 'forge'; readonly nodeId: number }
    | { readonly kind: 'advance'; readonly ms: number };
  const nodeId = fc.integer({ min: 1, max: 3 });
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('mint' as const), nodeId, ttlSeconds: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ kind: fc.constant('redeem' as const), which: fc.nat(), nodeId }),
    fc.record({ kind: fc.constant('forge' as const), nodeId }),
    fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3_000 }) }),
  );

  it('a credential verifies at most once, never after its expiry, never for another node id, and always when none of these holds (property)', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        let nowMs = 1_000_000;
        const credentials = new JoinCredentials(() => nowMs);
        const minted: { credential: Buffer; nodeId: number; expiresAtMs: number; used: boolean }[] = [];
        for (const step of ops) {
          if (step.kind === 'advance') nowMs += step.ms;
          else if (step.kind === 'forge')
            expect(credentials.redeem({ nodeId: step.nodeId, credential: randomBytes(32) }, 'p')).toEqual({
              ok: false,
              reason: 'used_or_unknown',
            });
          else if (step.kind === 'mint') {
            const result = credentials.mint(step.nodeId, step.ttlSeconds);
            if (result === null) throw new Error('the bound is far');
            expect(result.expiresAtMs).toBe(nowMs + step.ttlSeconds * 1_000);
            minted.push({ ...result, nodeId: step.nodeId, used: false });
          } else {
            const entry = minted[step.which % Math.max(1, minted.length)];
            if (entry === undefined) continue;
            const verdict = credentials.redeem(
              { nodeId: step.nodeId, credential: entry.credential },
              `peer-${step.nodeId}`,
            );
            const expected = entry.used
              ? 'used_or_unknown'
              : nowMs >= entry.expiresAtMs
                ? 'expired'
                : step.nodeId !== entry.nodeId
                  ? 'wrong_node_id'
                  : null;
            expect(verdict).toEqual(expected === null ? { ok: true } : { ok: false, reason: expected });
            if (verdict.ok) {
              entry.used = true;
              expect(credentials.joinedPeerId(step.nodeId)).toBe(`peer-${step.nodeId}`);
            }
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it(`keeps at most ${JOIN_CREDENTIALS_PENDING_MAX} pending; expired ones make room, and are forgotten after a while`, () => {
    let nowMs = 0;
    const credentials = new JoinCredentials(() => nowMs);
    const first = credentials.mint(9, 1);
    for (let index = 1; index < JOIN_CREDENTIALS_PENDING_MAX; index += 1)
      expect(credentials.mint(9, 3_600)).not.toBeNull();
    expect(credentials.mint(9, 3_600)).toBeNull();
    expect(credentials.size).toBe(JOIN_CREDENTIALS_PENDING_MAX);
    nowMs = 1_000; // the first one expired: it makes room
    expect(credentials.mint(9, 3_600)).not.toBeNull();
    expect(credentials.mint(9, 3_600)).toBeNull();
    expect(credentials.size).toBe(JOIN_CREDENTIALS_PENDING_MAX);
    if (first === null) throw new Error('minted');
    expect(credentials.redeem({ nodeId: 9, credential: first.credential }, 'p')).toEqual({
      ok: false,
      reason: 'used_or_unknown',
    });

    const late = new JoinCredentials(() => nowMs);
    const expiring = late.mint(3, 1);
    if (expiring === null) throw new Error('minted');
    nowMs += 1_000 + JOIN_CREDENTIAL_EXPIRED_KEPT_MS - 1;
    expect(late.redeem({ nodeId: 3, credential: expiring.credential }, 'p')).toEqual({
      ok: false,
      reason: 'expired',
    });
    nowMs += 1;
    expect(late.redeem({ nodeId: 3, credential: expiring.credential }, 'p')).toEqual({
      ok: false,
      reason: 'used_or_unknown',
    });
    expect(late.size).toBe(0);
  });
});
