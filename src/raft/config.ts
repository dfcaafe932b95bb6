import { assert } from '../base/assert.ts';
import type { NodeId } from './types.ts';

/** Bounds the core enforces (see docs/api.md for the limits clients see). */
export const APPEND_ENTRIES_MAX = 1024;
export const APPEND_BYTES_MAX = 4 * 1024 * 1024;
export const INFLIGHT_APPENDS_MAX = 64;
export const UNCOMMITTED_ENTRIES_MAX = 10_000;
export const PENDING_READS_MAX = 10_000;
export const APPLY_ENTRIES_MAX = 1024;
/** Messages buffered between two Ready batches; past it a message is dropped (Raft tolerates loss) and counted. */
export const OUTBOX_MESSAGES_MAX = 20_000;

/** Core configuration, in ticks: only the driver knows how long a tick is. */
export interface RaftConfig {
  readonly id: NodeId;
  readonly electionTicksMin: number;
  readonly electionTicksMax: number;
  readonly heartbeatTicks: number;
  readonly inflightAppendsMax: number;
  readonly appendEntriesMax: number;
  readonly appendBytesMax: number;
  readonly uncommittedEntriesMax: number;
  readonly pendingReadsMax: number;
  readonly applyEntriesMax: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
}

export function defaultRaftConfig(id: NodeId): RaftConfig {
  return {
    id,
    electionTicksMin: 10,
    electionTicksMax: 20,
    heartbeatTicks: 1,
    inflightAppendsMax: INFLIGHT_APPENDS_MAX,
    appendEntriesMax: APPEND_ENTRIES_MAX,
    appendBytesMax: APPEND_BYTES_MAX,
    uncommittedEntriesMax: UNCOMMITTED_ENTRIES_MAX,
    pendingReadsMax: PENDING_READS_MAX,
    applyEntriesMax: APPLY_ENTRIES_MAX,
    preVote: true,
    checkQuorum: true,
  };
}

function assertCount(value: number, max: number, what: string): void {
  assert(
    Number.isSafeInteger(value) && value >= 1 && value <= max,
    `${what} must be in [1, ${max}], got ${value}`,
  );
}

export function assertRaftConfig(config: RaftConfig): void {
  assert(Number.isSafeInteger(config.id) && config.id >= 1, `node id must be >= 1, got ${config.id}`);
  assertCount(config.heartbeatTicks, 1_000_000, 'heartbeatTicks');
  assertCount(config.electionTicksMin, 1_000_000, 'electionTicksMin');
  assert(
    config.heartbeatTicks * 2 < config.electionTicksMin,
    'heartbeatTicks * 2 must be < electionTicksMin',
  );
  assert(config.electionTicksMin <= config.electionTicksMax, 'electionTicksMin must be <= electionTicksMax');
  assertCount(config.inflightAppendsMax, INFLIGHT_APPENDS_MAX, 'inflightAppendsMax');
  assertCount(config.appendEntriesMax, APPEND_ENTRIES_MAX, 'appendEntriesMax');
  assertCount(config.appendBytesMax, APPEND_BYTES_MAX, 'appendBytesMax');
  assertCount(config.uncommittedEntriesMax, UNCOMMITTED_ENTRIES_MAX, 'uncommittedEntriesMax');
  assertCount(config.pendingReadsMax, PENDING_READS_MAX, 'pendingReadsMax');
  assertCount(config.applyEntriesMax, APPLY_ENTRIES_MAX, 'applyEntriesMax');
}
