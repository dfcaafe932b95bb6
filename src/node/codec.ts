import { Packr } from 'msgpackr';
import type { WriteCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';
import type { Proposal } from './session-apply.ts';
import { isValidSession, type Session } from './sessions.ts';

export type { Proposal } from './session-apply.ts';

/** Proposals travel in the log as msgpack (no JSON on the Raft path). */
const packr = new Packr({ useRecords: false, moreTypes: false });

/** A command entry's data: the command, its client session (or null) and the leader's proposal time. */
export function encodeProposal(proposal: Proposal): Uint8Array {
  assert(proposal.session === null || isValidSession(proposal.session), 'a proposed session is valid');
  assert(Number.isSafeInteger(proposal.proposedAtMs) && proposal.proposedAtMs >= 0, 'a proposal time');
  const { command, session, proposedAtMs } = proposal;
  return packr.pack({ command, session, proposedAtMs });
}

/**
 * A command entry's proposal. An entry written before sessions holds a bare command (whose only
 * field is its variant name, never `command`): it decodes as no session, proposed at time 0.
 */
export function decodeProposal(data: Uint8Array): Proposal {
  const decoded: unknown = packr.unpack(data);
  assert(typeof decoded === 'object' && decoded !== null, 'a log command decodes to an object');
  if (!('command' in decoded && 'proposedAtMs' in decoded)) {
    return { command: decoded as WriteCommand, session: null, proposedAtMs: 0 };
  }
  const { command, session, proposedAtMs } = decoded as {
    command: unknown;
    session: unknown;
    proposedAtMs: unknown;
  };
  assert(typeof command === 'object' && command !== null, 'a proposal carries a command');
  assert(Number.isSafeInteger(proposedAtMs) && (proposedAtMs as number) >= 0, 'a proposal time');
  assert(session === null || isValidSession(session as Session), 'a logged session is valid');
  return {
    command: command as WriteCommand,
    session: session as Session | null,
    proposedAtMs: proposedAtMs as number,
  };
}

/** A bare command entry, as written before sessions (tests of old logs). */
export function encodeCommand(command: WriteCommand): Uint8Array {
  return packr.pack(command);
}
