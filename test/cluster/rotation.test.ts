import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { RaftMetrics } from '../../src/api/types.ts';
import { KvClient } from '../../src/client/index.ts';
import {
  eventually,
  formCluster,
  get,
  peerIdOf,
  ProcessCluster,
  type NodeProcess,
  type StartOptions,
} from './process-harness.ts';

/**
 * Cookie rotation without downtime (docs/operations.md, "Cookie rotation"), on three real aspen-node
 * processes on LMDB: a rolling restart into phase 1 (--cookie NEW --previous-cookie OLD), then into
 * phase 2 (--cookie NEW), one node at a time, under a steady writer; then a process holding only
 * the old cookie is refused by every member.
 *
 * "No downtime" here means: every write the writer issued was acknowledged within its budget
 * (WRITE_BUDGET_MS: KvClient's own retries, then the writer's, none failing for longer), writes were
 * acknowledged while each node was restarting, and every acknowledged write reads back at the end.
 * The writer retries on top of KvClient because a node that is closing its HTTP server answers 503
 * in Fastify's shape, which KvClient does not retry (not a transport matter: the next attempt goes
 * to a live node).
 */
const cluster = new ProcessCluster();
afterAll(() => {
  cluster.cleanup();
});

const OLD = cluster.cookie;
const NEW = `rotated-${randomBytes(12).toString('hex')}`;
/** Writes the writer issues at most (one at a time), and the longest it runs. */
const WRITES_MAX = 5_000;
const WRITER_MS_MAX = 60_000;
/** Pause between two writes, so the log stays small and reading it back is quick. */
const WRITE_PAUSE_MS = 20;
/** KvClient's retries of one attempt: a leader's SIGTERM (handover) or an election fits well within it. */
const WRITE_RETRY = { attemptsMax: 40, totalMsMax: 10_000, backoffMsMin: 20, backoffMsMax: 300 };
/** The writer's attempts at one write, the pause between two, and the time it may take in all (its budget). */
const WRITE_ATTEMPTS_MAX = 50;
const WRITE_RETRY_PAUSE_MS = 200;
const WRITE_BUDGET_MS = 20_000;
/** A SIGTERM'd node exits within this (a leader first hands over, for up to 1 s). */
const STOP_WAIT_MS = 10_000;
/** A restarted node is back (caught up, replicated to by the leader) within this. */
const REJOIN_WAIT_MS = 20_000;
/** The rogue's refusals show in every log within this (it dials its --peers at start, then every 5 s). */
const ROGUE_WAIT_MS = 10_000;

interface Writer {
  readonly acked: Map<string, string>;
  /** Writes not acknowledged within their budget. */
  readonly failures: string[];
  /** Attempts that failed and were made again (each within its write's budget). */
  readonly retried: string[];
  /** Resolves when the writer stopped (asked to, or at its bounds). */
  readonly done: Promise<void>;
  stop(): void;
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Write `key` until acknowledged, at most WRITE_ATTEMPTS_MAX attempts within WRITE_BUDGET_MS (the
 * same value each time, under a session: a repeat applies nothing new); whether it was.
 */
async function writeWithinBudget(
  kv: KvClient,
  key: string,
  value: string,
  retried: string[],
): Promise<boolean> {
  const startedMs = Date.now();
  for (let attempt = 1; attempt <= WRITE_ATTEMPTS_MAX; attempt += 1) {
    try {
      await kv.put(key, value);
      return true;
    } catch (error) {
      retried.push(`${key}: ${describeError(error)}`);
      if (Date.now() - startedMs >= WRITE_BUDGET_MS) return false;
      await new Promise((resolve) => setTimeout(resolve, WRITE_RETRY_PAUSE_MS));
    }
  }
  return false;
}

/** One write at a time until stopped, WRITES_MAX or WRITER_MS_MAX; failures are recorded, never thrown. */
function startWriter(kv: KvClient): Writer {
  const acked = new Map<string, string>();
  const failures: string[] = [];
  const retried: string[] = [];
  let stopped = false;
  const run = async (): Promise<void> => {
    const deadline = Date.now() + WRITER_MS_MAX;
    for (let index = 0; index < WRITES_MAX && !stopped && Date.now() < deadline; index += 1) {
      const key = `rotation/${String(index).padStart(5, '0')}`;
      if (await writeWithinBudget(kv, key, `v${index}`, retried)) acked.set(key, `v${index}`);
      else failures.push(key);
      await new Promise((resolve) => setTimeout(resolve, WRITE_PAUSE_MS));
    }
  };
  return {
    acked,
    failures,
    retried,
    done: run(),
    stop: () => {
      stopped = true;
    },
  };
}

async function metricsOf(node: NodeProcess): Promise<RaftMetrics | null> {
  try {
    const { status, json } = await get(`${node.http}/metrics`);
    return status === 200 ? (json as unknown as RaftMetrics) : null;
  } catch {
    return null; // down or restarting
  }
}

/** SIGTERM: the node shuts down in order (a leader hands over first) and exits 0. */
async function terminate(node: NodeProcess): Promise<void> {
  const exited = new Promise<number | null>((resolve) => {
    node.child.once('exit', resolve);
  });
  node.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      resolve('no exit');
    }, STOP_WAIT_MS);
  });
  const outcome = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  expect(outcome).toBe(0);
}

/**
 * `node` is back in the cluster: it applied everything committed when it came up, and the leader
 * (whoever it is) has replicated that far to every voter, so the leader reaches every node over a
 * connection that passed the cookie handshake.
 */
async function waitBackInCluster(node: NodeProcess, nodes: readonly NodeProcess[]): Promise<void> {
  const commits = await Promise.all(nodes.map(async (other) => (await metricsOf(other))?.commit_index ?? 0));
  const target = Math.max(...commits);
  await eventually(async () => {
    const own = await metricsOf(node);
    if (own === null || own.current_leader === null || own.last_applied < target) return false;
    const leader = nodes.find((other) => other.id === own.current_leader);
    const led = leader === undefined ? null : await metricsOf(leader);
    const voters = led?.membership_config?.voters ?? [];
    return (
      led?.state === 'Leader' &&
      voters.length === nodes.length &&
      voters.every(
        (id) =>
          id === led.node_id ||
          (led.replication ?? []).some((peer) => peer.node_id === id && peer.matched_index >= target),
      )
    );
  }, REJOIN_WAIT_MS);
}

/** The libp2p peer id a node printed in its "up" line. */

/** What a dialer logs when `peer` refused its proof (`node N (peer …)` once it knows the node id). */
function refusedOurCookie(peer: string): RegExp {
  return new RegExp(`auth: (node \\d+ \\()?peer ${peer}\\)? refused our cookie: the cookies differ`);
}

describe('cookie rotation on real processes', () => {
  it('rolls every node to a new cookie in two phases under writes; a node with only the old cookie is then refused', async () => {
    const dirs = new Map<number, string>([1, 2, 3].map((id) => [id, cluster.tempDir()]));
    // mDNS off: peers find each other by the members' addresses alone, as across hosts.
    const start = (id: number, options: StartOptions): Promise<NodeProcess> =>
      cluster.start(id, {
        dataDir: dirs.get(id) ?? '',
        ...options,
        flags: ['--disable-mdns', ...(options.flags ?? [])],
      });
    const nodes = await Promise.all([1, 2, 3].map((id) => start(id, { cookie: OLD })));
    await formCluster(cluster, nodes);
    const kv = new KvClient({ endpoints: nodes.map((node) => node.http), retry: WRITE_RETRY });
    const writer = startWriter(kv);
    const retired: NodeProcess[] = [];
    const phases: { name: string; options: StartOptions }[] = [
      { name: 'phase 1', options: { cookie: NEW, flags: ['--previous-cookie', OLD] } },
      { name: 'phase 2', options: { cookie: NEW } },
    ];
    try {
      for (const phase of phases) {
        for (const [index, node] of [...nodes].entries()) {
          const ackedBefore = writer.acked.size;
          await terminate(node);
          retired.push(node);
          const restarted = await start(node.id, phase.options);
          nodes[index] = restarted;
          await waitBackInCluster(restarted, nodes);
          // Writes go on (a write forwarded to a leader that stopped waits out the 5 s forward
          // timeout, so none may have landed during the restart itself, but one does within a budget).
          await eventually(() => writer.acked.size > ackedBefore, WRITE_BUDGET_MS);
        }
      }
    } finally {
      writer.stop();
      await writer.done;
    }
    expect(writer.failures, writer.retried.join('\n')).toEqual([]);
    expect(writer.retried.length).toBeLessThanOrEqual(writer.acked.size / 10); // rare, not the norm
    expect(writer.acked.size).toBeGreaterThan(0);
    const stored = new Map((await kv.scanAll('rotation/')).map((entry) => [entry.key, entry.value]));
    for (const [key, value] of writer.acked) expect({ key, value: stored.get(key) }).toEqual({ key, value });

    // No member ever gave up on another for want of a common cookie: a node of phase 1 dialing one
    // of phase 2 was refused the old cookie, then proved the new one (the refusal logged by the
    // listener only). The peer id is the data dir's, kept across restarts.
    const members = nodes.map((node) => ({ node, peer: peerIdOf(node) }));
    const memberLines = [...retired, ...nodes].flatMap((node) => node.log);
    for (const { peer } of members)
      expect(memberLines.filter((line) => refusedOurCookie(peer).test(line))).toEqual([]);

    // A process with only the old cookie and every member's address: refused by each, listed by none.
    const rogue = await cluster.start(4, {
      cookie: OLD,
      flags: ['--disable-mdns', ...members.flatMap(({ node }) => ['--peers', `${node.id}@${node.raftAddr}`])],
    });
    const roguePeer = peerIdOf(rogue);
    await eventually(
      () =>
        members.every(
          ({ node, peer }) =>
            node.log.some((line) => line.includes(`auth: refused connection from peer ${roguePeer}`)) &&
            rogue.log.some((line) => refusedOurCookie(peer).test(line)),
        ),
      ROGUE_WAIT_MS,
    );
    // Gossip lists the other members (fresh announcements on the new topic), never the rogue.
    const peersOf = async (node: NodeProcess): Promise<number[]> => {
      const { json } = await get(`${node.http}/peers`);
      return (json.peers as { node_id: number }[]).map((peer) => peer.node_id).sort();
    };
    const others = (node: NodeProcess): number[] => [1, 2, 3].filter((id) => id !== node.id);
    await eventually(async () => {
      const listed = await Promise.all(members.map(({ node }) => peersOf(node)));
      return members.every(({ node }, index) => listed[index]?.join() === others(node).join());
    }, ROGUE_WAIT_MS);
    for (const { node } of members)
      expect((await metricsOf(node))?.membership_config?.voters).toEqual([1, 2, 3]);
    expect((await get(`${rogue.http}/peers`)).json.peers).toEqual([]);

    // Neither cookie ever reached a log line.
    const lines = [...retired, ...nodes, rogue].flatMap((node) => node.log);
    for (const cookie of [OLD, NEW]) expect(lines.filter((line) => line.includes(cookie))).toEqual([]);
    kv.close();
  }, 120_000);
});
