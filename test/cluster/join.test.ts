import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeTicket, isJoinTicket } from '../../src/cluster/discovery/ticket.ts';
import { runToExit } from './node-runner.ts';
import { eventually, freePort, get, post, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * Issue 18's join tickets on real aspen-node processes: a node joins with a single-use credential
 * instead of the cookie, is added as a learner by id and replicates; a used, foreign or expired
 * ticket is refused in one line (exit 2) and the minting node logs why; no log line of any node
 * holds the cookie, a ticket or a credential.
 */
const EXIT_CONFIG = 2;
const ASPEN_CLI = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
/** Gossip and a learner catching up on loopback take well under a second; this bounds a slow machine. */
const SETTLE_MS = 20_000;
const NO_MDNS = ['--disable-mdns'];

const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

interface Minted {
  readonly ticket: string;
  readonly node_id: number;
  readonly expires_at: number;
}

async function mint(node: NodeProcess, nodeId: number, ttlSeconds?: number): Promise<Minted> {
  const body = ttlSeconds === undefined ? { node_id: nodeId } : { node_id: nodeId, ttl_seconds: ttlSeconds };
  const { status, json } = await post(`${node.http}/join-ticket`, body);
  expect(status, JSON.stringify(json)).toBe(200);
  return json as unknown as Minted;
}

function credentialOf(ticket: string): string {
  const decoded = decodeTicket(ticket);
  if (!isJoinTicket(decoded)) throw new Error('not a join ticket');
  return decoded.join.credential;
}

/** aspen-node with a join ticket, run until it exits (a refused join), on ports of its own. */
async function joinRefused(
  nodeId: number,
  ticket: string,
  storage: readonly string[],
): Promise<{ code: number | null; lines: string[] }> {
  const [raft, http] = [await freePort(), await freePort()];
  return runToExit([
    ...['--node-id', String(nodeId), '--port', String(raft), '--http-addr', `127.0.0.1:${http}`],
    ...[...storage, ...NO_MDNS, '--ticket', ticket],
  ]);
}

/** The aspen CLI against `node`: its stdout (it must succeed). */
function aspen(node: NodeProcess, args: readonly string[]): string {
  const run = spawnSync(process.execPath, [ASPEN_CLI, '--endpoints', node.http, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
}

async function appliedAtLeast(node: NodeProcess, index: number): Promise<boolean> {
  const { status, json } = await get(`${node.http}/metrics`);
  return status === 200 && Number(json.last_applied) >= index;
}

describe('join tickets on real processes', () => {
  it('a node joins without the cookie, replicates, restarts on its stored cookie; used, foreign and expired tickets are refused; no secret is logged', async () => {
    const one = await cluster.start(1, { flags: NO_MDNS });
    expect((await post(`${one.http}/init`, { initial_members: [{ id: 1 }] })).status).toBe(200);
    const issuedAtMs = Date.now();
    const four = await mint(one, 4);
    expect(four.node_id).toBe(4);
    expect(Math.abs(four.expires_at - (issuedAtMs + 600_000))).toBeLessThan(10_000);
    expect(four.ticket).not.toContain(cluster.cookie);

    // Node 4 joins with the ticket alone (no --cookie), and stores the cookie it was handed.
    const dir = cluster.tempDir();
    const options = { cookie: null, dataDir: dir, flags: [...NO_MDNS, '--ticket', four.ticket] };
    const joined = await cluster.start(4, options);
    expect(readFileSync(join(dir, 'cluster.cookie'), 'utf8')).toBe(cluster.cookie);
    expect(statSync(join(dir, 'cluster.cookie')).mode & 0o777).toBe(0o600);
    await eventually(async () => {
      const peers = (await get(`${one.http}/peers`)).json.peers as { node_id: number }[];
      return peers.some((peer) => peer.node_id === 4);
    }, SETTLE_MS);
    const added = await post(`${one.http}/add-learner`, { learner: { id: 4 } });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    // Bound to the peer id that proved the join credential (the node's own key).
    const learners = added.json.learners as { id: number; peer_id?: string }[];
    const endpointId = (await get(`${joined.http}/node-info`)).json.endpoint_id;
    expect(learners.find((learner) => learner.id === 4)?.peer_id).toBe(endpointId);
    const write = await post(`${one.http}/write`, { command: { Set: { key: 'join/k', value: 'v' } } });
    const index = Number(write.json.log_index);
    await eventually(() => appliedAtLeast(joined, index), SETTLE_MS);

    // Restarted with the same (now used) ticket: the stored cookie is used, the ticket is not.
    await cluster.kill(joined);
    const again = await cluster.start(4, options);
    expect(again.log.join('\n')).toMatch(/join: using the cookie stored in .*cluster\.cookie/);
    const later = await post(`${one.http}/write`, { command: { Set: { key: 'join/k', value: 'w' } } });
    await eventually(() => appliedAtLeast(again, Number(later.json.log_index)), SETTLE_MS);
    // And without --ticket (nor --cookie): the stored cookie, not the public default one.
    await cluster.kill(again);
    const bare = await cluster.start(4, { cookie: null, dataDir: dir, flags: NO_MDNS });
    expect(bare.log.join('\n')).toMatch(/join: using the cookie stored in .*cluster\.cookie"/);
    const last = await post(`${one.http}/write`, { command: { Set: { key: 'join/k', value: 'x' } } });
    await eventually(() => appliedAtLeast(bare, Number(last.json.log_index)), SETTLE_MS);
    // --cookie given (a rotation): it wins, and replaces the stored one.
    await cluster.kill(bare);
    const rotated = `${cluster.cookie}-rotated`;
    const given = await cluster.start(4, { cookie: rotated, dataDir: dir, flags: NO_MDNS });
    expect(given.log.join('\n')).toMatch(
      /join: the cookie stored in .*cluster\.cookie is replaced by the one given/,
    );
    expect(readFileSync(join(dir, 'cluster.cookie'), 'utf8')).toBe(rotated);
    await cluster.kill(given);

    // Memory storage joins too (the cookie is kept in memory); this ticket comes from the CLI.
    const five = JSON.parse(aspen(one, ['--json', 'ticket', '--node-id', '5', '--ttl', '120'])) as Minted;
    expect(five).toMatchObject({ node_id: 5 });
    expect(five.expires_at - Date.now()).toBeLessThanOrEqual(120_000);
    expect(aspen(one, ['ticket', '--node-id', '5']).trim()).toMatch(/^aspen[a-z2-7]+$/);
    const memory = await cluster.start(5, { cookie: null, flags: [...NO_MDNS, '--ticket', five.ticket] });
    expect(memory.log.join('\n')).toMatch(/join: admitted to the cluster; the cookie is kept in memory/);

    // Refusals: one line each, exit 2; the minting node logs each.
    const reused = await joinRefused(4, four.ticket, ['--storage', 'lmdb', '--data-dir', cluster.tempDir()]);
    const six = await mint(one, 6);
    const foreign = await joinRefused(7, six.ticket, ['--storage', 'memory']);
    const eight = await mint(one, 8, 1);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, eight.expires_at - Date.now()) + 100));
    const expired = await joinRefused(8, eight.ticket, ['--storage', 'memory']);
    for (const [run, reason] of [
      [
        reused,
        /the join ticket was used already, or the node that made it restarted since \(ask an admin for a new one: aspen ticket --node-id 4\)$/,
      ],
      [foreign, /the join ticket is for node 6, not node 7 \(start with --node-id 6, or ask an admin/],
      [expired, /the join ticket has expired \(ask an admin for a new one: aspen ticket --node-id 8\)$/],
    ] as const) {
      expect(run.code, run.lines.join('\n')).toBe(EXIT_CONFIG);
      expect(run.lines).toHaveLength(1);
      expect(run.lines[0]).toMatch(/^aspen-node: cannot join: /);
      expect(run.lines[0]).toMatch(reason);
    }
    const minting = one.log.join('\n');
    expect(minting).toMatch(/join: node 4 joined from peer \S+ at \S+; its join credential is used up/);
    expect(minting).toMatch(/join: node 5 joined from peer/);
    expect(minting).toMatch(/join: refused node 4 from peer \S+ at \S+: used_or_unknown/);
    expect(minting).toMatch(/join: refused node 7 from peer \S+ at \S+: wrong_node_id/);
    expect(minting).toMatch(/join: refused node 8 from peer \S+ at \S+: expired/);

    const tickets = [four, five, six, eight].map((minted) => minted.ticket);
    const secrets = [cluster.cookie, `${cluster.cookie}-rotated`, ...tickets, ...tickets.map(credentialOf)];
    const lines = [...one.log, ...joined.log, ...again.log, ...bare.log, ...given.log, ...memory.log];
    for (const run of [reused, foreign, expired]) lines.push(...run.lines);
    expect(lines.length).toBeGreaterThan(10);
    for (const secret of secrets) expect(lines.filter((line) => line.includes(secret))).toEqual([]);
  }, 180_000);

  it('POST /join-ticket checks its body: node id, ttl bounds, and not the node itself', async () => {
    const node = await cluster.start(11, { flags: NO_MDNS });
    for (const body of [
      {},
      { node_id: 0 },
      { node_id: '4' },
      { node_id: 4, ttl_seconds: 0 },
      { node_id: 4, ttl_seconds: 3_601 },
      { node_id: 4, ttl_seconds: 1.5 },
      { node_id: 4, extra: true },
      { node_id: 11 },
    ]) {
      const { status, json } = await post(`${node.http}/join-ticket`, body);
      expect([status, (json.error as { code?: string } | undefined)?.code], JSON.stringify(body)).toEqual([
        400,
        'INVALID_INPUT',
      ]);
    }
    const longest = await mint(node, 4, 3_600);
    expect(longest.expires_at - Date.now()).toBeGreaterThan(3_590_000);
    // The CLI: without --node-id, the cookie ticket as before; --ttl alone or out of bounds is a usage error.
    const cookieTicket = aspen(node, ['ticket']).trim();
    expect(isJoinTicket(decodeTicket(cookieTicket))).toBe(false);
    for (const args of [
      ['ticket', '--ttl', '60'],
      ['ticket', '--node-id', '4', '--ttl', '3601'],
    ]) {
      const run = spawnSync(process.execPath, [ASPEN_CLI, '--endpoints', node.http, ...args], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect([run.status, run.stdout], run.stderr).toEqual([2, '']);
      expect(run.stderr).toMatch(/^aspen: USAGE: --ttl/);
    }
  }, 60_000);
});
