import type {
  Entry,
  HardState,
  Message,
  ReadFailure,
  ReadState,
  Ready,
  SnapshotMeta,
  SoftState,
} from './types.ts';

/** The empty side of a Ready's message split (shared: never mutated). */
const NO_MESSAGES: readonly Message[] = Object.freeze([]);

/** What the core has for one batch, before the Ready contract's rules split it. */
export interface ReadyDraft {
  readonly softState: SoftState;
  /** The hard state now (the same object as the last one handed out when nothing moved). */
  readonly hardState: HardState;
  readonly snapshot: SnapshotMeta | null;
  readonly entries: readonly Entry[];
  readonly outbox: readonly Message[];
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly readFailures: readonly ReadFailure[];
}

export function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/**
 * The rules of the Ready contract, decided against `synced`, the hard state on disk. A batch with
 * entries, a snapshot, or a new term or vote must be synced; one that only moves the commit index is
 * not (etcd's MustSync): the new commit index is written with the next synced batch, a crash may lose
 * it, and a restarted node re-learns it from the leader.
 */
export function assembleReady(draft: ReadyDraft, synced: HardState): Ready {
  const current = draft.hardState;
  const termOrVoteMoved = current.term !== synced.term || current.vote !== synced.vote;
  const mustSync = draft.snapshot !== null || draft.entries.length > 0 || termOrVoteMoved;
  // A leader sends its appends while its own disk syncs (thesis 10.2.1): followers sync in
  // parallel, and the leader counts itself toward a quorum only once its sync is done (advance).
  // Everything else waits: a vote or an acknowledgement is a promise about what is on disk, and
  // so is a new term or vote (a leader of one voter elects itself in the Ready that stores it).
  const sendEarly = !mustSync || (draft.softState.role === 'leader' && !termOrVoteMoved);
  return {
    softState: draft.softState,
    commitIndex: current.commit,
    snapshot: draft.snapshot,
    mustSync,
    hardState: mustSync && !sameHardState(current, synced) ? current : null,
    entries: draft.entries,
    messages: sendEarly ? draft.outbox : NO_MESSAGES,
    messagesAfterPersist: sendEarly ? NO_MESSAGES : draft.outbox,
    // The committed entries handed out are durable here already (the core releases only stable
    // ones) and on a quorum: a leader applies them and answers their clients while this batch's own
    // entries sync, as etcd's server does (followers answer no one; they keep the plain order).
    applyBeforePersist: sendEarly && draft.snapshot === null,
    committedEntries: draft.committedEntries,
    readStates: draft.readStates,
    readFailures: draft.readFailures,
  };
}
