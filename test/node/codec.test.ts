import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../src/base/assert.ts';
import { decodeProposal, encodeCommand, encodeProposal } from '../../src/node/codec.ts';
import { systemClock } from '../../src/node/local-runtime.ts';

describe('log proposals', () => {
  it('round-trip command, session and proposal time', () => {
    const proposal = {
      command: { Set: { key: 'k', value: 'v' } },
      session: { clientId: 'client-1', sequence: 7 },
      proposedAtMs: 1_700_000_000_000,
    };
    expect(decodeProposal(encodeProposal(proposal))).toEqual(proposal);
    const bare = { ...proposal, session: null };
    expect(decodeProposal(encodeProposal(bare))).toEqual(bare);
  });

  it('read an entry written before sessions as no session at time 0', () => {
    const command = { Transaction: { compare: [], success: [{ Get: { key: 'command' } }], failure: [] } };
    expect(decodeProposal(encodeCommand(command))).toEqual({ command, session: null, proposedAtMs: 0 });
  });

  it('refuse an invalid session', () => {
    const command = { Delete: { key: 'k' } };
    expect(() =>
      encodeProposal({ command, session: { clientId: 'a b', sequence: 1 }, proposedAtMs: 0 }),
    ).toThrow(AssertionError);
  });
});

describe('the production clock', () => {
  it('is epoch time, so proposal times are comparable across processes', () => {
    expect(Math.abs(systemClock.nowMs() - Date.now())).toBeLessThan(1_000);
  });
});
