import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterController, KeyValueStore } from '../../src/api/contracts.ts';
import { evaluateHealth, HEALTH_LAG_ENTRIES_MAX, type HealthObservation } from '../../src/api/health.ts';
import type { RaftMetrics } from '../../src/api/types.ts';
import { HEALTH_SAMPLE_INTERVAL_MS, HealthMonitor, type HealthSubject } from '../../src/cluster/health.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import type { MembershipConfig, Role } from '../../src/raft/types.ts';
import { eventually, get, ProcessCluster, startFormedCluster } from './process-harness.ts';

const ELECTION_MAX_MS = 1_600;
const MEMBERSHIP: MembershipConfig = { voters: [1, 2, 3], votersOutgoing: [], learners: [] };

const healthy: HealthObservation = {
  initialized: true,
  storageFailed: false,
  isLeader: false,
  leaderKnown: true,
  leaderlessMs: 0,
  leaderContactMsAgo: 100,
  lagEntries: 0,
  electionTimeoutMaxMs: ELECTION_MAX_MS,
};

describe('/health decides healthy, degraded and unhealthy in one function', () => {
  it('each state, and the check that failed', () => {
    const cases: [string, Partial<HealthObservation>, string, Record<string, boolean>][] = [
      ['a follower in touch', {}, 'healthy', {}],
      ['a leader', { isLeader: true, leaderContactMsAgo: null }, 'healthy', {}],
      [
        'not initialized',
        { initialized: false, leaderKnown: false, leaderlessMs: 60_000 },
        'degraded',
        { initialized: false, leader: false },
      ],
      [
        'leaderless, within the election timeout',
        { leaderKnown: false, leaderlessMs: ELECTION_MAX_MS, leaderContactMsAgo: null },
        'degraded',
        { leader: false },
      ],
      [
        'leaderless, past the election timeout',
        { leaderKnown: false, leaderlessMs: ELECTION_MAX_MS + 1, leaderContactMsAgo: null },
        'unhealthy',
        { leader: false },
      ],
      ['storage failed', { storageFailed: true }, 'unhealthy', { storage: false }],
      [
        'no word from the leader for an election timeout',
        { leaderContactMsAgo: ELECTION_MAX_MS + 1 },
        'degraded',
        { leader_contact: false },
      ],
      [
        'applied index far behind the leader',
        { lagEntries: HEALTH_LAG_ENTRIES_MAX + 1 },
        'degraded',
        { log_lag: false },
      ],
      ['applied index just within the bound', { lagEntries: HEALTH_LAG_ENTRIES_MAX }, 'healthy', {}],
    ];
    for (const [what, change, status, failed] of cases) {
      const report = evaluateHealth({ ...healthy, ...change });
      const failedChecks = Object.fromEntries(Object.entries(report.checks).filter(([, passed]) => !passed));
      expect({ what, status: report.status, failedChecks }).toEqual({ what, status, failedChecks: failed });
    }
  });
});

/** A node whose role, leader and applied index the test sets. */
class FakeNode implements HealthSubject {
  role: Role = 'follower';
  leaderId = 2;
  term = 1;
  appliedIndex = 0;
  membership: MembershipConfig | null = MEMBERSHIP;
  knownLeader(): number {
    return this.leaderId;
  }
  status() {
    return {
      role: this.role,
      leaderId: this.leaderId,
      term: this.term,
      appliedIndex: this.appliedIndex,
      membership: this.membership,
    };
  }
}

describe('the health monitor', () => {
  it('times the leaderless spell from the last moment a leader was known, and reads contact and lag from the messages it sees', () => {
    let nowMs = 1_000;
    const node = new FakeNode();
    let storageFailed = false;
    const lines: string[] = [];
    const monitor = new HealthMonitor({
      subject: node,
      nowMs: () => nowMs,
      electionTimeoutMaxMs: ELECTION_MAX_MS,
      storageFailed: () => storageFailed,
      log: (line, level) => lines.push(`${level ?? 'info'} ${line}`),
    });
    const append = (commitIndex: number) => {
      monitor.observe({
        type: 'append',
        from: 2,
        to: 1,
        term: 1,
        prevLogIndex: 0,
        prevLogTerm: 0,
        entries: [],
        commitIndex,
      });
    };
    append(10);
    node.appliedIndex = 10;
    expect(monitor.report()).toMatchObject({ status: 'healthy', log_lag_entries: 0, leaderless_ms: 0 });

    append(10 + HEALTH_LAG_ENTRIES_MAX + 1); // the leader is far ahead of what this node applied
    expect(monitor.report()).toMatchObject({ status: 'degraded', checks: { log_lag: false } });
    node.appliedIndex = 10 + HEALTH_LAG_ENTRIES_MAX + 1;
    nowMs += ELECTION_MAX_MS + 1; // no word from the leader since
    expect(monitor.report()).toMatchObject({
      status: 'degraded',
      checks: { leader_contact: false, log_lag: true },
    });

    node.leaderId = 0; // it campaigns: no leader known from now
    node.role = 'pre_candidate';
    expect(monitor.report()).toMatchObject({
      status: 'degraded',
      leaderless_ms: 0,
      checks: { leader: false },
    });
    nowMs += ELECTION_MAX_MS;
    expect(monitor.report()).toMatchObject({ status: 'degraded', leaderless_ms: ELECTION_MAX_MS });
    expect(lines).toEqual([]); // within the election timeout: no quorum lost yet
    nowMs += 1;
    expect(monitor.report()).toMatchObject({
      status: 'unhealthy',
      leaderless_ms: ELECTION_MAX_MS + 1,
      checks: { leader: false },
    });
    nowMs += ELECTION_MAX_MS;
    monitor.report(); // still leaderless: said once, not once per sample
    expect(lines).toEqual([
      `warn quorum lost: no leader known for ${ELECTION_MAX_MS + 1} ms (longer than the longest election timeout, ${ELECTION_MAX_MS} ms); writes and linearizable reads fail until one is elected`,
    ]);

    node.leaderId = 1; // elected
    node.role = 'leader';
    node.term = 2;
    expect(monitor.report()).toMatchObject({ status: 'healthy', leaderless_ms: 0, log_lag_entries: 0 });
    monitor.report();
    expect(lines.slice(1)).toEqual(['info quorum regained: node 1 leads in term 2']);
    storageFailed = true;
    expect(monitor.report()).toMatchObject({ status: 'unhealthy', checks: { storage: false } });
  });

  it('counts a lost quorum from the initialization: a node waiting for /init has lost nothing', () => {
    let nowMs = 0;
    const node = new FakeNode();
    node.leaderId = 0;
    node.membership = null;
    const lines: string[] = [];
    const monitor = new HealthMonitor({
      subject: node,
      nowMs: () => nowMs,
      electionTimeoutMaxMs: ELECTION_MAX_MS,
      storageFailed: () => false,
      log: (line) => lines.push(line),
    });
    nowMs += 10 * ELECTION_MAX_MS;
    monitor.report();
    node.membership = MEMBERSHIP; // initialized now: the first election may take up to a timeout
    monitor.report();
    nowMs += ELECTION_MAX_MS;
    monitor.report();
    expect(lines).toEqual([]);
    nowMs += 1;
    monitor.report();
    expect(lines).toEqual([
      `quorum lost: no leader known for ${ELECTION_MAX_MS + 1} ms (longer than the longest election timeout, ${ELECTION_MAX_MS} ms); writes and linearizable reads fail until one is elected`,
    ]);
  });

  it('samples on a timer, so the leaderless time is known between requests', async () => {
    const node = new FakeNode();
    const monitor = new HealthMonitor({
      subject: node,
      nowMs: () => Date.now(),
      electionTimeoutMaxMs: 10_000,
      storageFailed: () => false,
    });
    monitor.start();
    try {
      await new Promise((resolve) => setTimeout(resolve, HEALTH_SAMPLE_INTERVAL_MS * 2));
      node.leaderId = 0;
      await new Promise((resolve) => setTimeout(resolve, HEALTH_SAMPLE_INTERVAL_MS * 3));
      const leaderless = monitor.report().leaderless_ms ?? 0;
      expect(leaderless).toBeGreaterThanOrEqual(HEALTH_SAMPLE_INTERVAL_MS * 2);
      expect(leaderless).toBeLessThanOrEqual(HEALTH_SAMPLE_INTERVAL_MS * 5);
    } finally {
      monitor.stop();
    }
  });
});

describe('GET /health', () => {
  it('answers 503 when unhealthy and 200 otherwise, with the checks and the raft state', async () => {
    const metrics = {
      node_id: 1,
      state: 'Candidate',
      current_leader: null,
      membership_config: {},
    } as RaftMetrics;
    let report = evaluateHealth({
      ...healthy,
      leaderKnown: false,
      leaderlessMs: ELECTION_MAX_MS + 1,
      leaderContactMsAgo: null,
    });
    const app = buildHttpServer({
      controller: { getMetrics: () => Promise.resolve(metrics) } as ClusterController,
      store: {} as KeyValueStore,
      identity: { nodeId: 1, endpointId: 'peer', startedAtMs: 0, nowMs: () => 12_000 },
      health: () => report,
    });
    try {
      const unhealthy = await app.inject({ method: 'GET', url: '/health' });
      expect(unhealthy.statusCode).toBe(503);
      expect(unhealthy.json()).toEqual({
        status: 'unhealthy',
        checks: {
          initialized: true,
          storage: true,
          leader: false,
          leader_contact: true,
          log_lag: true,
          raft_state: 'Candidate',
        },
        leaderless_ms: ELECTION_MAX_MS + 1,
        log_lag_entries: 0,
        node_id: 1,
        raft_node_id: 1,
        endpoint_id: 'peer',
        uptime_seconds: 12,
      });
      report = evaluateHealth({ ...healthy, lagEntries: HEALTH_LAG_ENTRIES_MAX + 1 });
      const degraded = await app.inject({ method: 'GET', url: '/health' });
      expect([degraded.statusCode, degraded.json<{ status: string }>().status]).toEqual([200, 'degraded']);
    } finally {
      await app.close();
    }
  });
});

describe('a real follower whose peers died', () => {
  const cluster = new ProcessCluster();
  afterAll(() => {
    cluster.cleanup();
  });

  it('reports 503 unhealthy once it has known no leader for longer than the election timeout', async () => {
    const { nodes, follower } = await startFormedCluster(cluster);
    await eventually(async () => (await get(`${follower.http}/health`)).json.status === 'healthy', 10_000);
    for (const node of nodes) if (node !== follower) await cluster.kill(node);
    const killedAtMs = Date.now();
    await eventually(async () => (await get(`${follower.http}/health`)).status === 503, 15_000);
    // It first waited out an election timeout without word from the leader, then one more without a leader.
    expect(Date.now() - killedAtMs).toBeGreaterThan(ELECTION_MAX_MS);
    expect((await get(`${follower.http}/health`)).json).toMatchObject({
      status: 'unhealthy',
      checks: { leader: false, storage: true, initialized: true },
    });
  }, 60_000);
});
