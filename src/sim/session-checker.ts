import type { LogCommand } from '../api/types.ts';
import { MemoryKvStateMachine, type ApplyOutcome } from '../node/kv-state-machine.ts';
import type { Session } from '../node/sessions.ts';
import type { NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';

/**
 * Exactly-once (issue 14): no `(clientId, sequence)` is ever applied twice, on any node. Every
 * node's state machine reports each session apply with its outcome; a fresh apply (neither
 * `duplicate` nor `sessionExpired`) is remembered with its log index. Another fresh apply of the
 * same pair at another index is a violation (a node replaying the same entry after a restart is
 * not); a duplicate answer must carry the index of the apply it repeats.
 */
export class SessionChecker {
  /** `clientId#sequence` -> the log index that applied it (bounded by the workload's session writes). */
  private readonly appliedAt = new Map<string, number>();
  checks = 0;
  freshApplies = 0;
  duplicateAnswers = 0;

  onApplied(nodeId: NodeId, index: number, session: Session | null, outcome: ApplyOutcome): void {
    if (session === null) return;
    this.checks += 1;
    const pair = `${session.clientId}#${session.sequence}`;
    const first = this.appliedAt.get(pair);
    if (outcome.sessionExpired === true) return;
    if (outcome.duplicate === true) {
      this.duplicateAnswers += 1;
      if (first !== undefined && outcome.index !== first)
        violation(
          `node ${nodeId} answered retry (${pair}) at ${index} with the outcome of ${outcome.index}, but it was applied at ${first}`,
        );
      return;
    }
    if (first === undefined) {
      this.appliedAt.set(pair, index);
      this.freshApplies += 1;
    } else if (first !== index) {
      violation(
        `exactly-once: node ${nodeId} applied (${pair}) again at ${index}, first applied at ${first}`,
      );
    }
  }
}

function violation(message: string): never {
  throw new SimViolation('safety', message);
}

/** The in-memory state machine, reporting every session apply and its outcome to the checker. */
export class ObservedKvStateMachine extends MemoryKvStateMachine {
  private readonly nodeId: NodeId;
  private readonly checker: SessionChecker;

  constructor(nodeId: NodeId, checker: SessionChecker) {
    super();
    this.nodeId = nodeId;
    this.checker = checker;
  }

  override apply(
    index: number,
    command: LogCommand,
    session: Session | null = null,
    proposedAtMs = 0,
    term = 0,
  ): ApplyOutcome {
    const outcome = super.apply(index, command, session, proposedAtMs, term);
    this.checker.onApplied(this.nodeId, index, session, outcome);
    return outcome;
  }
}
