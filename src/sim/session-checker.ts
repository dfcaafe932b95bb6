import type { LogCommand } from '../api/types.ts';
import { MemoryKvStateMachine, type ApplyOutcome } from '../node/kv-state-machine.ts';
import type { Session } from '../node/sessions.ts';
import type { MembershipConfig, NodeId } from '../raft/types.ts';
import { SimViolation } from './checkers.ts';

/**
 * Exactly-once (issue 14): no `(clientId, sequence)` is ever applied twice, on any node. Every
 * node's state machine reports each session apply with its outcome; a fresh apply (not
 * `duplicate`, `sessionExpired` nor `sessionReused`) is remembered with its log index. Another
 * fresh apply of the same pair at another index is a violation (a node replaying the same entry
 * after a restart is not); a duplicate answer must carry the index of the apply it repeats.
 */
export class SessionChecker {
  /** `clientId#sequence` -> the log index that applied it (bounded by the workload's session writes). */
  private readonly appliedAt = new Map<string, number>();
  checks = 0;
  freshApplies = 0;
  duplicateAnswers = 0;
  /** The checker as an ObservedKvStateMachine's observer. */
  readonly observe: SimApplyObserver = (nodeId, index, _command, session, outcome) => {
    if (outcome !== null) this.onApplied(nodeId, index, session, outcome);
  };

  onApplied(nodeId: NodeId, index: number, session: Session | null, outcome: ApplyOutcome): void {
    if (session === null) return;
    this.checks += 1;
    const pair = `${session.clientId}#${session.sequence}`;
    const first = this.appliedAt.get(pair);
    if (outcome.sessionExpired === true || outcome.sessionReused !== undefined) return;
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

/** What the checkers hear of every apply on every node (a blank or config entry: null command and outcome). */
export type SimApplyObserver = (
  nodeId: NodeId,
  index: number,
  command: LogCommand | null,
  session: Session | null,
  outcome: ApplyOutcome | null,
) => void;

/** The in-memory state machine, reporting every apply and its outcome to the simulator's checkers. */
export class ObservedKvStateMachine extends MemoryKvStateMachine {
  private readonly nodeId: NodeId;
  private readonly observer: SimApplyObserver;

  constructor(nodeId: NodeId, observer: SimApplyObserver) {
    super();
    this.nodeId = nodeId;
    this.observer = observer;
  }

  override apply(
    index: number,
    command: LogCommand,
    session: Session | null,
    proposedAtMs: number,
    term: number,
  ): ApplyOutcome {
    const outcome = super.apply(index, command, session, proposedAtMs, term);
    this.observer(this.nodeId, index, command, session, outcome);
    return outcome;
  }

  override applyNoop(index: number, config?: MembershipConfig): void {
    super.applyNoop(index, config);
    this.observer(this.nodeId, index, null, null, null);
  }
}
