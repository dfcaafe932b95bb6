import type { RaftRejection } from '../../raft/errors.ts';
import type { RaftStatus } from '../../raft/core.ts';
import type { Entry, MembershipConfig, Message, NodeId, SnapshotMeta } from '../../raft/types.ts';

/**
 * Compact, deterministic one-line forms of what the scripted harness prints: an entry is
 * `index/term kind`, a message `from->to type tTERM fields`, a configuration `v=(..) out=(..) l=(..)`.
 */
const textDecoder = new TextDecoder();

export function formatIds(ids: readonly NodeId[]): string {
  return `(${ids.join(',')})`;
}

export function formatConfig(config: MembershipConfig): string {
  let text = `v=${formatIds(config.voters)}`;
  if (config.votersOutgoing.length > 0) text += ` out=${formatIds(config.votersOutgoing)}`;
  if (config.learners.length > 0) text += ` l=${formatIds(config.learners)}`;
  return text;
}

export function formatEntry(entry: Entry): string {
  const position = `${entry.index}/${entry.term}`;
  switch (entry.kind) {
    case 'blank':
      return `${position} blank`;
    case 'command':
      return `${position} cmd:${textDecoder.decode(entry.data)}`;
    case 'config':
      return `${position} config ${formatConfig(entry.config)}`;
  }
}

export function formatSnapshot(snapshot: SnapshotMeta): string {
  return `${snapshot.index}/${snapshot.term} ${formatConfig(snapshot.config)}`;
}

function messageFields(message: Message): string {
  switch (message.type) {
    case 'pre_vote':
    case 'vote':
      return `last=${message.lastLogIndex}/${message.lastLogTerm}${message.transfer ? ' transfer' : ''}`;
    case 'pre_vote_response':
    case 'vote_response':
      return message.granted ? 'granted' : 'rejected';
    case 'append': {
      const entries = message.entries.map(formatEntry).join(', ');
      return `prev=${message.prevLogIndex}/${message.prevLogTerm} commit=${message.commitIndex} [${entries}]`;
    }
    case 'append_response':
      return message.success
        ? `ok index=${message.index}`
        : `reject index=${message.index} hint=${message.hintIndex}/${message.hintTerm}`;
    case 'heartbeat':
      return `commit=${message.commitIndex} round=${message.readRound}`;
    case 'heartbeat_response':
      return `round=${message.readRound}`;
    case 'snapshot':
      return `snap=${formatSnapshot(message.snapshot)}`;
    case 'timeout_now':
      return '';
  }
}

export function formatMessage(message: Message): string {
  const fields = messageFields(message);
  const head = `${message.from}->${message.to} ${message.type} t${message.term}`;
  return fields === '' ? head : `${head} ${fields}`;
}

export function formatRejection(rejection: RaftRejection): string {
  switch (rejection.code) {
    case 'not_leader':
      return `rejected: not_leader (leader ${rejection.leaderId})`;
    case 'overloaded':
      return `rejected: overloaded (${rejection.what})`;
    case 'invalid_config':
      return `rejected: invalid_config (${rejection.message})`;
    case 'learner_not_caught_up':
      return `rejected: learner_not_caught_up (node ${rejection.nodeId} at ${rejection.matchIndex}, needs ${rejection.requiredIndex} and an answer within an election timeout)`;
    default:
      return `rejected: ${rejection.code}`;
  }
}

/** A node's status: role and term, its log's bounds, its configuration and (leader) its peers. */
export function formatStatus(status: RaftStatus): string[] {
  const snapshot = status.snapshot === null ? 'none' : `${status.snapshot.index}/${status.snapshot.term}`;
  const lines = [
    `${status.id}: ${status.role} term ${status.term} vote ${status.vote} leader ${status.leaderId}`,
    `  log [${status.firstIndex}, ${status.lastIndex}] last term ${status.lastTerm} snapshot ${snapshot}` +
      ` stable ${status.stableIndex} commit ${status.commitIndex} applied ${status.appliedIndex}`,
    `  config ${status.membership === null ? 'none' : formatConfig(status.membership)}`,
  ];
  for (const peer of status.peers)
    lines.push(`  peer ${peer.id}: ${peer.state} match ${peer.matchIndex} next ${peer.nextIndex}`);
  return lines;
}
