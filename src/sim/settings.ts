import { SeededPrng } from '../raft/prng.ts';
import {
  DOWNTIME_MS_MAX,
  DOWNTIME_MS_MIN,
  drawFaultWeights,
  FAULTS,
  PARTITION_MS_MAX,
  PARTITION_MS_MIN,
  type FaultWeights,
} from './faults.ts';
import { leaseTtlSecondsMin } from '../base/limits.ts';
import type { LeaseClientSettings } from './lease-clients.ts';
import type { LockClientSettings } from './lock-clients.ts';
import type { NetworkSettings } from './network.ts';
import type { SnapshotFileSettings } from './sim-snapshot-files.ts';
import type { WatcherSettings } from './sim-watchers.ts';
import type { WorkloadSettings } from './workload.ts';

/** Each node's clock runs up to this many percent fast or slow (its readings and its timers). */
export const CLOCK_DRIFT_PERCENT_MAX = 10;

/** Every knob of a run, drawn from the seed and printed first so that a failure can be read and replayed. */
export interface SimSettings {
  readonly seed: number;
  /** Nodes that exist; the first `initialVoters` form the cluster, the rest join by membership changes. */
  readonly nodeCount: number;
  readonly initialVoters: number;
  readonly snapshotThresholdEntries: number;
  readonly snapshotChunkBytes: number;
  readonly tickMs: number;
  readonly tickSkew: readonly number[];
  readonly electionTicksMin: number;
  readonly electionTicksMax: number;
  readonly heartbeatTicks: number;
  readonly inflightAppendsMax: number;
  readonly appendEntriesMax: number;
  readonly network: NetworkSettings;
  readonly diskLatencyMsMin: number;
  readonly diskLatencyMsMax: number;
  /** Probability that a crash leaves a prefix of the batch in flight on disk (a torn last write). */
  readonly tornWriteProbability: number;
  readonly safetyPhaseMs: number;
  readonly livenessLimitMs: number;
  readonly faultIntervalMsMin: number;
  readonly faultIntervalMsMax: number;
  /** The weight of each fault of the table in faults.ts. */
  readonly faults: FaultWeights;
  readonly workload: WorkloadSettings;
  /** Lease clients (issue 15): grants, keys on leases, renewals, lapses and revokes. */
  readonly leases: LeaseClientSettings;
  /** Watchers (issue 15) on random nodes, resuming across crashes. */
  readonly watchers: WatcherSettings;
  /** Lock clients (issue 16): lock, a fenced write, unlock, on leases renewed through every fault. */
  readonly locks: LockClientSettings;
  /** Snapshots as files, streamed and installed with crashes (issue 21), or as bytes: all nodes alike. */
  readonly snapshots: SnapshotFileSettings;
}

/** Every setting from the seed; the order of the draws is part of what a seed means (keep it). */
export function drawSettings(seed: number): SimSettings {
  const prng = new SeededPrng(seed);
  const initialVoters = [1, 3, 3, 3, 5, 5][prng.nextIntInclusive(0, 5)] ?? 3;
  const nodeCount = Math.min(initialVoters + prng.nextIntInclusive(0, 2), 6);
  const heartbeatTicks = prng.nextIntInclusive(1, 3);
  const electionTicksMin = prng.nextIntInclusive(heartbeatTicks * 2 + 4, 20);
  const delayMsMin = prng.nextIntInclusive(0, 3);
  const tickSkew: number[] = [];
  for (let index = 0; index < nodeCount; index += 1)
    tickSkew.push(prng.nextIntInclusive(-CLOCK_DRIFT_PERCENT_MAX, CLOCK_DRIFT_PERCENT_MAX) / 100);
  const base = {
    seed,
    nodeCount,
    initialVoters,
    snapshotThresholdEntries: prng.chance(0.2) ? 10_000 : prng.nextIntInclusive(3, 60),
    snapshotChunkBytes: prng.nextIntInclusive(16, 512),
    tickMs: 10,
    tickSkew,
    electionTicksMin,
    electionTicksMax: electionTicksMin + prng.nextIntInclusive(1, 20),
    heartbeatTicks,
    inflightAppendsMax: prng.nextIntInclusive(1, 16),
    appendEntriesMax: prng.chance(0.5) ? prng.nextIntInclusive(1, 3) : prng.nextIntInclusive(1, 64),
    network: {
      delayMsMin,
      delayMsMax: delayMsMin + prng.nextIntInclusive(1, 30),
      lossProbability: prng.chance(0.3) ? 0 : prng.nextIntInclusive(0, 15) / 100,
      duplicateProbability: prng.nextIntInclusive(0, 5) / 100,
    },
    diskLatencyMsMin: 1,
    diskLatencyMsMax: prng.nextIntInclusive(1, 12),
    tornWriteProbability: prng.nextIntInclusive(0, 50) / 100,
    safetyPhaseMs: prng.nextIntInclusive(2_000, 6_000),
    livenessLimitMs: 20_000,
    faultIntervalMsMin: 10,
    faultIntervalMsMax: prng.chance(0.5) ? prng.nextIntInclusive(20, 150) : prng.nextIntInclusive(150, 1_000),
    faults: drawFaultWeights(prng),
    workload: {
      clientCount: prng.nextIntInclusive(1, 6),
      keyCount: prng.nextIntInclusive(1, 6),
      readFraction: prng.nextIntInclusive(20, 60) / 100,
      deleteFraction: prng.nextIntInclusive(0, 10) / 100,
      opTimeoutMs: prng.nextIntInclusive(200, 2_000),
      thinkMsMax: prng.nextIntInclusive(0, 50),
      opsPerClientMax: 400,
      wanderProbability: prng.nextIntInclusive(0, 40) / 100,
      // Drawn last (issue 14), so every earlier setting of a seed is what it was.
      casFraction: prng.nextIntInclusive(0, 20) / 100,
      txnFraction: prng.nextIntInclusive(0, 15) / 100,
      counterCount: prng.nextIntInclusive(1, 3),
      accountCount: prng.nextIntInclusive(2, 5),
    },
  };
  // Drawn after everything else (issue 15), so every earlier setting of a seed is what it was.
  const leaseAndWatch = drawLeaseAndWatchSettings(prng, base.electionTicksMax * base.tickMs);
  // Drawn after those (issue 16), likewise.
  const locks = drawLockSettings(prng);
  // Drawn last (issue 21), likewise: a seed keeps every earlier setting, in either snapshot mode.
  return { ...base, ...leaseAndWatch, locks, snapshots: drawSnapshotFileSettings(prng) };
}

/** File snapshots for about half the seeds. */
function drawSnapshotFileSettings(prng: SeededPrng): SnapshotFileSettings {
  return {
    files: prng.chance(0.5),
    fileLatencyMsMax: prng.nextIntInclusive(1, 20),
    installCrashProbability: prng.nextIntInclusive(10, 60) / 100,
  };
}

function drawLockSettings(prng: SeededPrng): LockClientSettings {
  return {
    lockClientCount: prng.nextIntInclusive(0, 3),
    lockNameCount: prng.nextIntInclusive(1, 2),
    lockTimeoutMs: prng.nextIntInclusive(200, 3_000),
    lockRequestTimeoutMs: prng.nextIntInclusive(200, 2_000),
    lockHoldMsMax: prng.nextIntInclusive(0, 100),
    lockStallProbability: prng.nextIntInclusive(0, 10) / 100,
    // Drawn after the lock settings (issue 16, step 2), so the ones above are what they were.
    electionNameCount: prng.nextIntInclusive(0, 1),
    campaignFraction: prng.nextIntInclusive(20, 70) / 100,
    observerCount: prng.nextIntInclusive(0, 2),
  };
}

/** Lease clients and watchers; a TTL is never below what the cluster's election timeout allows. */
function drawLeaseAndWatchSettings(
  prng: SeededPrng,
  electionTimeoutMaxMs: number,
): { leases: LeaseClientSettings; watchers: WatcherSettings } {
  const ttlMin = leaseTtlSecondsMin(electionTimeoutMaxMs);
  return {
    leases: {
      leaseClientCount: prng.nextIntInclusive(0, 3),
      leaseTtlSeconds: ttlMin + prng.nextIntInclusive(0, 1),
      leaseRenewalsMax: prng.nextIntInclusive(0, 12),
      leaseRevokeProbability: prng.nextIntInclusive(0, 30) / 100,
    },
    watchers: {
      watcherCount: prng.nextIntInclusive(0, 4),
      watcherStallProbability: prng.nextIntInclusive(0, 20) / 100,
      watcherProgressIntervalMs: prng.nextIntInclusive(100, 500),
      watchLagRevisionsMax: prng.chance(0.5) ? prng.nextIntInclusive(5, 100) : 10_000,
      watchHistoryRevisionsMax: prng.chance(0.5) ? prng.nextIntInclusive(20, 400) : 100_000,
    },
  };
}

const NAME_COLUMN = 34;

function isRecord(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Every setting, one per line (`network.delayMsMax  27`), generated from the object so that a new
 * setting is printed without touching this; fault weights also show their share of the draws.
 */
export function describeSettings(settings: SimSettings): string[] {
  const lines = [`settings of seed ${settings.seed}:`];
  const total = FAULTS.reduce((sum, fault) => sum + settings.faults[fault.name], 0);
  const print = (name: string, value: unknown): void => {
    let text = JSON.stringify(value);
    if (name.startsWith('faults.') && typeof value === 'number' && total > 0)
      text += ` (${((100 * value) / total).toFixed(0)} % of faults)`;
    lines.push(`  ${name.padEnd(NAME_COLUMN)} ${text}`);
  };
  // Settings nest one level (network, faults, workload).
  for (const [key, value] of Object.entries(settings)) {
    if (!isRecord(value)) print(key, value);
    else for (const [inner, innerValue] of Object.entries(value)) print(`${key}.${inner}`, innerValue);
  }
  lines.push(
    `  (every seed) a partition heals after ${PARTITION_MS_MIN}-${PARTITION_MS_MAX} ms, a crashed node ` +
      `restarts after ${DOWNTIME_MS_MIN}-${DOWNTIME_MS_MAX} ms`,
  );
  return lines;
}
