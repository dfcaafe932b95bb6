import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NodeMetrics } from '../api/types.ts';

const ROLE_VALUES = { Follower: 0, Candidate: 1, Leader: 2, Learner: 3 } as const;
/** Latency buckets in seconds: sub-millisecond to the request timeout. */
const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Prometheus text for /metrics/prometheus: Raft gauges read at scrape time, request counters as they happen. */
export class PrometheusMetrics {
  readonly registry = new Registry();
  private readonly leader = new Gauge({
    name: 'aspen_current_leader',
    help: 'Id of the leader this node knows (0: none)',
    registers: [this.registry],
  });
  private readonly term = new Gauge({
    name: 'aspen_current_term',
    help: 'Current Raft term',
    registers: [this.registry],
  });
  private readonly state = new Gauge({
    name: 'aspen_state',
    help: 'Raft role: 0 follower, 1 candidate, 2 leader, 3 learner',
    registers: [this.registry],
  });
  private readonly lastLogIndex = new Gauge({
    name: 'aspen_last_log_index',
    help: 'Index of the last log entry',
    registers: [this.registry],
  });
  private readonly commitIndex = new Gauge({
    name: 'aspen_commit_index',
    help: 'Index of the last entry this node knows is committed',
    registers: [this.registry],
  });
  private readonly lastApplied = new Gauge({
    name: 'aspen_last_applied_index',
    help: 'Index of the last applied entry',
    registers: [this.registry],
  });
  private readonly lag = new Gauge({
    name: 'aspen_replication_lag',
    help: 'Entries a peer is behind the leader (on the leader)',
    labelNames: ['peer'],
    registers: [this.registry],
  });
  private readonly quorumAckAge = new Gauge({
    name: 'aspen_quorum_ack_age_seconds',
    help: 'On the leader: seconds since a quorum last acknowledged it (absent elsewhere)',
    registers: [this.registry],
  });
  private readonly eventLoopDelayMax = new Gauge({
    name: 'aspen_event_loop_delay_max_seconds',
    help: 'Longest event-loop stall since the process started (10 ms sampling)',
    registers: [this.registry],
  });
  private readonly eventLoopDelayRecentMax = new Gauge({
    name: 'aspen_event_loop_delay_recent_max_seconds',
    help: 'Longest event-loop stall in the last one to two minutes (10 ms sampling)',
    registers: [this.registry],
  });
  private readonly heapUsed = new Gauge({
    name: 'aspen_heap_used_bytes',
    help: 'V8 heap in use',
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: 'aspen_errors_total',
    help: 'API errors by code',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly authFailures = new Counter({
    name: 'aspen_auth_failures_total',
    help: 'Calls refused by authentication: missing or invalid token, role too weak, address rate-limited',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly writeLatency = new Histogram({
    name: 'aspen_write_latency_seconds',
    help: 'Latency of /write',
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });
  readonly readLatency = new Histogram({
    name: 'aspen_read_latency_seconds',
    help: 'Latency of /read',
    buckets: LATENCY_BUCKETS_S,
    registers: [this.registry],
  });

  /** Refresh the gauges from a metrics snapshot and render the text format. */
  async render(metrics: NodeMetrics): Promise<string> {
    this.leader.set(metrics.current_leader ?? 0);
    this.term.set(metrics.current_term);
    this.state.set(ROLE_VALUES[metrics.state]);
    this.lastLogIndex.set(metrics.last_log_index);
    this.commitIndex.set(metrics.commit_index);
    this.lastApplied.set(metrics.last_applied);
    this.eventLoopDelayMax.set(metrics.event_loop_delay_max_ms / 1_000);
    this.eventLoopDelayRecentMax.set(metrics.event_loop_delay_recent_max_ms / 1_000);
    this.heapUsed.set(metrics.heap_used_bytes);
    this.quorumAckAge.reset();
    if (metrics.millis_since_quorum_ack !== null)
      this.quorumAckAge.set(metrics.millis_since_quorum_ack / 1_000);
    this.lag.reset();
    for (const peer of metrics.replication ?? [])
      this.lag.set({ peer: String(peer.node_id) }, Math.max(0, metrics.last_log_index - peer.matched_index));
    return this.registry.metrics();
  }
}
