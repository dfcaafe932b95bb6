import { SimViolation } from './checkers.ts';
import type { SimSettings } from './settings.ts';

/**
 * How a run ends, and the exit code of `npm run sim` for it: the one table a failure is mapped
 * through (TigerBeetle's VOPR does the same). `usage` is a bad command line, never a seed's outcome.
 */
export const EXIT_CODE = {
  ok: 0,
  /** An assertion or exception inside the code under test (or the simulator). */
  crash: 1,
  /** No convergence within the liveness limit after the cluster healed. */
  liveness: 2,
  /** A safety invariant, the read freshness check or linearizability broke. */
  correctness: 3,
  usage: 64,
} as const;

export type ExitStatus = keyof typeof EXIT_CODE;
/** The outcome of one seed. */
export type SimStatus = Exclude<ExitStatus, 'usage'>;

/** The status a run that threw `error` ends with. */
export function statusOfError(error: unknown): SimStatus {
  if (!(error instanceof SimViolation)) return 'crash';
  return error.kind === 'liveness' ? 'liveness' : 'correctness';
}

/** A failure's message: a checker's own text, or an exception with its stack. */
export function messageOfError(error: unknown): string {
  if (error instanceof SimViolation) return error.message;
  return error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error);
}

export interface SimStats {
  readonly virtualMs: number;
  readonly events: number;
  readonly committedEntries: number;
  readonly leadersElected: number;
  readonly crashes: number;
  readonly partitions: number;
  readonly opsOk: number;
  readonly opsFailed: number;
  readonly opsUnknown: number;
  /** Acknowledged CAS, CAD and transactions, and how many of them found their compares holding. */
  readonly opsConditional: number;
  readonly opsConditionalSucceeded: number;
  /** Session writes retried after an indeterminate answer, retries answered, SESSION_EXPIRED answers. */
  readonly writeRetries: number;
  readonly retriesAnswered: number;
  readonly sessionsExpired: number;
  /** Session applies the exactly-once checker saw answered as duplicates (on every node). */
  readonly duplicateAnswers: number;
  /** 1 when the linearizability checker reached its search budget or size bound (not decided). */
  readonly historyUndecided: number;
  readonly messagesSent: number;
  readonly messagesDropped: number;
  readonly checks: number;
  readonly convergedAfterMs: number;
  readonly readsDuringNewerLeader: number;
  readonly snapshotsInstalled: number;
  readonly membershipChanges: number;
  readonly tornWrites: number;
  /** File mode (issue 21): received files installed, restarts restored from a file, crashes during an install. */
  readonly fileSnapshotsInstalled: number;
  readonly fileSnapshotsRestored: number;
  readonly installCrashes: number;
  /** Leases (issue 15): granted, expired by the leader, keepalives acknowledged, leases a client found gone. */
  readonly leaseGrants: number;
  readonly leaseExpiries: number;
  readonly leaseKeepAlivesAcked: number;
  readonly leasesLost: number;
  /** Watch (issue 15): events checked, streams resumed, canceled, resumes refused as compacted. */
  readonly watchEvents: number;
  readonly watchResumes: number;
  readonly watchCanceled: number;
  readonly watchCompacted: number;
  readonly lockCalls: number;
  readonly lockGrants: number;
  readonly lockTimeouts: number;
  readonly fencedWrites: number;
  readonly campaigns: number;
  readonly proclaims: number;
  readonly observations: number;
}

export interface SimResult {
  readonly seed: number;
  readonly status: SimStatus;
  readonly message: string;
  readonly settings: SimSettings;
  readonly trace: readonly string[];
  readonly stats: SimStats;
}
