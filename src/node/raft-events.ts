import type { LogFields, LogLevel } from '../base/log.ts';
import { isVoter } from '../raft/quorum.ts';
import type { Leadership } from '../raft/status.ts';
import { NODE_NONE, type MembershipConfig, type NodeId } from '../raft/types.ts';

/**
 * What Raft did, as data: the runtime (RaftNode) compares the core's leadership and configuration
 * before and after each turn and each Ready, and tells its owner, which logs them. The core itself
 * never logs: it stays a pure state machine.
 */

/** Why a leader stopped leading, inferred from what changed (see raftEvents). */
export type StepDownReason = 'higher_term' | 'check_quorum' | 'transferred' | 'removed';

export type RaftEvent =
  | {
      readonly kind: 'leader_elected';
      readonly term: number;
      readonly leaderId: NodeId;
      readonly self: boolean;
    }
  | { readonly kind: 'leader_lost'; readonly term: number; readonly previous: NodeId }
  | { readonly kind: 'term_changed'; readonly term: number; readonly previous: number }
  | {
      readonly kind: 'stepped_down';
      readonly term: number;
      readonly newTerm: number;
      readonly reason: StepDownReason;
      /** For `transferred`: the voter leadership was handed to. */
      readonly successor: NodeId;
    }
  | {
      readonly kind: 'membership_changed';
      readonly before: MembershipConfig | null;
      readonly after: MembershipConfig;
    }
  | {
      readonly kind: 'snapshot_taken' | 'snapshot_installed' | 'snapshot_loaded';
      readonly index: number;
      readonly term: number;
      readonly bytes: number;
    };

/** A snapshot's event: its index, term and size. */
export function snapshotEvent(
  kind: 'snapshot_taken' | 'snapshot_installed' | 'snapshot_loaded',
  snapshot: {
    readonly meta: { readonly index: number; readonly term: number };
    readonly data: Uint8Array | null;
  },
): RaftEvent {
  // A snapshot file (data null) is not read to be measured.
  const bytes = snapshot.data?.byteLength ?? 0;
  return { kind, index: snapshot.meta.index, term: snapshot.meta.term, bytes };
}

/** Where a node stands: its leadership and the configuration in effect. */
export interface RaftView {
  readonly leadership: Leadership;
  readonly membership: MembershipConfig | null;
}

/**
 * The events between two views of node `id`, in the order they make sense to read: a step-down,
 * a new term, a new leader (or none), a new configuration. A leader that stops leading:
 * - in a higher term while it was handing leadership over: `transferred`;
 * - in a higher term otherwise: `higher_term` (a vote or a message from a newer leader);
 * - in the same term, no longer a voter of the configuration: `removed`;
 * - in the same term otherwise: `check_quorum` (no quorum answered within an election timeout),
 *   the only other way the core steps a leader down in its own term.
 */
export function raftEvents(id: NodeId, before: RaftView, after: RaftView): RaftEvent[] {
  const events: RaftEvent[] = [];
  const was = before.leadership;
  const now = after.leadership;
  if (was.role === 'leader' && now.role !== 'leader')
    events.push({
      kind: 'stepped_down',
      term: was.term,
      newTerm: now.term,
      reason: stepDownReason(id, was, now, after.membership),
      successor: was.transferTarget,
    });
  if (now.term !== was.term) events.push({ kind: 'term_changed', term: now.term, previous: was.term });
  if (now.leaderId !== NODE_NONE && (now.leaderId !== was.leaderId || now.term !== was.term))
    events.push({
      kind: 'leader_elected',
      term: now.term,
      leaderId: now.leaderId,
      self: now.leaderId === id,
    });
  else if (now.leaderId === NODE_NONE && was.leaderId !== NODE_NONE)
    events.push({ kind: 'leader_lost', term: now.term, previous: was.leaderId });
  if (after.membership !== null && !sameMembers(before.membership, after.membership))
    events.push({ kind: 'membership_changed', before: before.membership, after: after.membership });
  return events;
}

function stepDownReason(
  id: NodeId,
  was: Leadership,
  now: Leadership,
  membership: MembershipConfig | null,
): StepDownReason {
  if (now.term > was.term) return was.transferTarget === NODE_NONE ? 'higher_term' : 'transferred';
  const voter = membership !== null && isVoter(membership, id);
  return voter ? 'check_quorum' : 'removed';
}

function sameMembers(a: MembershipConfig | null, b: MembershipConfig): boolean {
  if (a === b) return true;
  if (a === null) return false;
  return (
    sameIds(a.voters, b.voters) &&
    sameIds(a.votersOutgoing, b.votersOutgoing) &&
    sameIds(a.learners, b.learners)
  );
}

function sameIds(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((id, index) => b[index] === id);
}

/** One log line: what it says, how severe, and its fields (with `event`, for jq). */
export interface EventLine {
  readonly line: string;
  readonly level: LogLevel;
  readonly fields: LogFields;
}

const STEP_DOWN_WHY: Readonly<
  Record<StepDownReason, (event: { newTerm: number; successor: NodeId }) => string>
> = {
  higher_term: (event) => `a higher term (${event.newTerm}) was seen`,
  check_quorum: () => 'CheckQuorum: no quorum of voters answered within an election timeout',
  transferred: (event) => `leadership was transferred to node ${event.successor}`,
  removed: () => 'this node was removed from the voters',
};

/** The log line of an event: info for what an operator wants to see, debug for the rest. */
export function describeRaftEvent(event: RaftEvent): EventLine {
  switch (event.kind) {
    case 'leader_elected': {
      const who = event.self ? `node ${event.leaderId} (this node)` : `node ${event.leaderId}`;
      return info(`leader elected: ${who} in term ${event.term}`, {
        event: 'leader_elected',
        term: event.term,
        leader_id: event.leaderId,
      });
    }
    case 'leader_lost':
      return {
        line: `no leader known in term ${event.term} (it was node ${event.previous})`,
        level: 'debug',
        fields: { event: 'leader_lost', term: event.term, previous_leader_id: event.previous },
      };
    case 'term_changed':
      return {
        line: `term ${event.previous} → ${event.term}`,
        level: 'debug',
        fields: { event: 'term_changed', term: event.term, previous_term: event.previous },
      };
    case 'stepped_down':
      return info(`stepped down as leader of term ${event.term}: ${STEP_DOWN_WHY[event.reason](event)}`, {
        event: 'stepped_down',
        term: event.term,
        reason: event.reason,
        ...(event.reason === 'transferred' ? { successor_id: event.successor } : {}),
      });
    case 'membership_changed':
      return info(membershipLine(event.before, event.after), {
        event: 'membership_changed',
        voters: event.after.voters.join(','),
        learners: event.after.learners.join(','),
        joint: event.after.votersOutgoing.length > 0,
      });
    default:
      return snapshotLine(event);
  }
}

function info(line: string, fields: LogFields): EventLine {
  return { line, level: 'info', fields };
}

function members(config: MembershipConfig): string {
  const voters =
    config.votersOutgoing.length > 0
      ? `${list(config.votersOutgoing)} → ${list(config.voters)}`
      : list(config.voters);
  return `voters ${voters}, learners ${list(config.learners)}`;
}

function list(ids: readonly NodeId[]): string {
  return `[${ids.join(', ')}]`;
}

function membershipLine(before: MembershipConfig | null, after: MembershipConfig): string {
  if (before === null) return `membership: ${members(after)}`;
  const joint = after.votersOutgoing.length > 0;
  const wasJoint = before.votersOutgoing.length > 0;
  if (joint && !wasJoint)
    return `membership: entered the joint configuration, ${members(after)} (both majorities decide until it is left)`;
  if (wasJoint && !joint) return `membership: left the joint configuration, ${members(after)}`;
  return `membership changed: ${members(before)} → ${members(after)}`;
}

function snapshotLine(event: Extract<RaftEvent, { index: number }>): EventLine {
  const what = {
    snapshot_taken: 'snapshot taken',
    snapshot_installed: 'snapshot installed from the leader',
    snapshot_loaded: 'snapshot loaded at start',
  }[event.kind];
  return info(`${what} at index ${event.index} term ${event.term} (${event.bytes} bytes)`, {
    event: event.kind,
    index: event.index,
    term: event.term,
    bytes: event.bytes,
  });
}
