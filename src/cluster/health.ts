import { evaluateHealth, type HealthObservation, type HealthReport } from '../api/health.ts';
import type { WireMessage } from '../node/interfaces.ts';
import { assert } from '../base/assert.ts';
import type { RaftStatus } from '../raft/core.ts';
import { NODE_NONE, type NodeId } from '../raft/types.ts';

/** How often the monitor looks whether a leader is known: the leaderless time is exact to this. */
export const HEALTH_SAMPLE_INTERVAL_MS = 100;

/** What the monitor reads of the node (a RaftNode, or a fake in tests). */
export interface HealthSubject {
  knownLeader(): NodeId;
  status(): Pick<RaftStatus, 'role' | 'leaderId' | 'appliedIndex' | 'membership'>;
}

export interface HealthMonitorOptions {
  readonly subject: HealthSubject;
  readonly nowMs: () => number;
  readonly electionTimeoutMaxMs: number;
  /** Whether storage failed (the node is stopping itself). */
  readonly storageFailed: () => boolean;
}

/**
 * What /health needs that the core does not keep: since when no leader has been known (sampled
 * every HEALTH_SAMPLE_INTERVAL_MS), and, from the appends and heartbeats the endpoint delivers,
 * when the leader was last heard from and the highest commit index it announced.
 */
export class HealthMonitor {
  private readonly options: HealthMonitorOptions;
  private leaderKnownAtMs: number;
  private contactFrom: NodeId = NODE_NONE;
  private contactAtMs = 0;
  private leaderCommitIndex = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: HealthMonitorOptions) {
    assert(options.electionTimeoutMaxMs > 0, 'the election timeout is positive');
    this.options = options;
    this.leaderKnownAtMs = options.nowMs(); // a node that just started has been leaderless no time yet
  }

  start(): void {
    assert(this.timer === null, 'the health monitor starts once');
    this.sample();
    this.timer = setInterval(() => {
      this.sample();
    }, HEALTH_SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Every message the endpoint delivers passes here first: only a leader sends appends, heartbeats and snapshots. */
  observe(message: WireMessage): void {
    if (message.type !== 'append' && message.type !== 'heartbeat' && message.type !== 'snapshot') return;
    if (message.from !== this.contactFrom) {
      this.contactFrom = message.from;
      this.leaderCommitIndex = 0;
    }
    this.contactAtMs = this.options.nowMs();
    // A heartbeat carries min(match, commit): a lower bound; an append carries the leader's commit.
    if (message.type !== 'snapshot' && message.commitIndex > this.leaderCommitIndex)
      this.leaderCommitIndex = message.commitIndex;
  }

  observation(): HealthObservation {
    this.sample();
    const nowMs = this.options.nowMs();
    const status = this.options.subject.status();
    const isLeader = status.role === 'leader';
    const leaderKnown = status.leaderId !== NODE_NONE;
    const heard = !isLeader && leaderKnown && this.contactFrom === status.leaderId;
    let lagEntries: number | null = null;
    if (isLeader) lagEntries = 0;
    else if (heard) lagEntries = Math.max(0, this.leaderCommitIndex - status.appliedIndex);
    return {
      initialized: status.membership !== null,
      storageFailed: this.options.storageFailed(),
      isLeader,
      leaderKnown,
      leaderlessMs: leaderKnown ? 0 : Math.max(0, nowMs - this.leaderKnownAtMs),
      leaderContactMsAgo: heard ? Math.max(0, nowMs - this.contactAtMs) : null,
      lagEntries,
      electionTimeoutMaxMs: this.options.electionTimeoutMaxMs,
    };
  }

  report(): HealthReport {
    return evaluateHealth(this.observation());
  }

  private sample(): void {
    if (this.options.subject.knownLeader() !== NODE_NONE) this.leaderKnownAtMs = this.options.nowMs();
  }
}
