import type { NodeId } from './types.ts';

/** Operating errors of the core: returned as values, never thrown. */
export type RaftRejection =
  | { readonly code: 'not_leader'; readonly leaderId: NodeId }
  | { readonly code: 'not_initialized' }
  | { readonly code: 'already_initialized' }
  | { readonly code: 'membership_change_in_progress' }
  | { readonly code: 'overloaded'; readonly what: 'uncommitted_entries' | 'pending_reads' }
  | { readonly code: 'invalid_config'; readonly message: string }
  | {
      readonly code: 'learner_not_caught_up';
      readonly nodeId: NodeId;
      readonly matchIndex: number;
      readonly requiredIndex: number;
    };

export type RaftResult<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: RaftRejection };

export function ok<T>(value: T): RaftResult<T> {
  return { ok: true, value };
}

export function rejected<T>(error: RaftRejection): RaftResult<T> {
  return { ok: false, error };
}
