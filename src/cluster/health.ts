import { evaluateHealth, type HealthObservation, type HealthReport } from '../api/health.ts';
import type { WireMessage } from '../node/interfaces.ts';
import { assert } from '../base/assert.ts';
import { silentLog, type Log } from '../base/log.ts';
import type { RaftStatus } from '../raft/core.ts';
import { NODE_NONE, type NodeId } from '../raft/types.ts';
import type { PeerWatch } from './peer-watch.ts';

/** How often the monitor looks whether a leader is known: the leaderless time is exact to this. */
export const HEALTH_SAMPLE_INTERVAL_MS = 100;

/** What the monitor reads of the node (a RaftNode, or a fake in tests). */
export interface HealthSubject {
  knownLeader(): NodeId;
  status(): Pick<RaftStatus, 'role' | 'leaderId' | 'appliedIndex' | 'membership' | 'term'>;
}

export interface HealthMonitorOptions {
  readonly subject: HealthSubject;
  readonly nowMs: () => number;
  readonly electionTimeoutMaxMs: number;
  /** Whether storage failed (the node is stopping itself). */
  readonly storageFailed: () => boolean;
  /** Where "quorum lost" and "quorum regained" go (once per change). */
  readonly log?: Log;
  /** Told of every message and every sample: members a leader cannot reach. */
  readonly peers?: PeerWatch;
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
  /** Leaderless for longer than the election timeout (logged once when it starts and once when it ends). */
  private quorumLost = false;
  /** Since when the quorum has been missing: a leader was known, or the cluster not yet initialized, until then. */
  private quorumClockAtMs: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: HealthMonitorOptions) {
    assert(options.electionTimeoutMaxMs > 0, 'the election timeout is positive');
    this.options = options;
    this.leaderKnownAtMs = options.nowMs(); // a node that just started has been leaderless no time yet
    this.quorumClockAtMs = this.leaderKnownAtMs;
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
    this.options.peers?.heard(message.from, this.options.nowMs());
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
    const nowMs = this.options.nowMs();
    const leader = this.options.subject.knownLeader();
    if (leader !== NODE_NONE) this.leaderKnownAtMs = nowMs;
    const status = this.options.subject.status();
    this.options.peers?.sample(status.role, status.membership, nowMs);
    this.checkQuorum(leader, status, nowMs);
  }

  /**
   * Say once when the quorum is lost (no leader for longer than the longest election timeout, counted
   * from when a leader was last known or the cluster was initialized) and once when a leader is back.
   */
  private checkQuorum(leader: NodeId, status: Pick<RaftStatus, 'membership' | 'term'>, nowMs: number): void {
    if (leader !== NODE_NONE || status.membership === null) this.quorumClockAtMs = nowMs;
    const leaderlessMs = nowMs - this.quorumClockAtMs;
    const lost = leaderlessMs > this.options.electionTimeoutMaxMs;
    if (lost === this.quorumLost || (!lost && leader === NODE_NONE)) return;
    this.quorumLost = lost;
    const log = this.options.log ?? silentLog;
    if (lost)
      log(
        `quorum lost: no leader known for ${leaderlessMs} ms (longer than the longest election timeout, ${this.options.electionTimeoutMaxMs} ms); writes and linearizable reads fail until one is elected`,
        'warn',
        { event: 'quorum_lost', leaderless_ms: leaderlessMs },
      );
    else
      log(`quorum regained: node ${leader} leads in term ${status.term}`, 'info', {
        event: 'quorum_regained',
        leader_id: leader,
        term: status.term,
      });
  }
}
