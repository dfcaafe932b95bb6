import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  jointAckedIndex,
  jointVoteResult,
  majorityAckedIndex,
  majorityVoteResult,
  validateConfig,
} from '../../src/raft/quorum.ts';
import type { MembershipConfig, NodeId } from '../../src/raft/types.ts';

/** Dumb reference: the largest v such that a strict majority of `voters` acknowledged >= v. */
function referenceMajority(voters: readonly NodeId[], acked: ReadonlyMap<NodeId, number>): number {
  if (voters.length === 0) return Number.MAX_SAFE_INTEGER;
  let best = 0;
  for (const candidate of new Set([0, ...acked.values()])) {
    const count = voters.filter((id) => (acked.get(id) ?? 0) >= candidate).length;
    if (count * 2 > voters.length && candidate > best) best = candidate;
  }
  return best;
}

const arbitraryConfig = fc
  .uniqueArray(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 9 })
  .chain((ids) =>
    fc.record({
      voters: fc.subarray(ids, { minLength: 1 }),
      votersOutgoing: fc.oneof(fc.constant<number[]>([]), fc.subarray(ids, { minLength: 1 })),
    }),
  )
  .map((config): MembershipConfig => ({ ...config, learners: [] }));

const arbitraryAcks = fc
  .dictionary(fc.integer({ min: 1, max: 9 }).map(String), fc.integer({ min: 0, max: 20 }))
  .map((record) => new Map(Object.entries(record).map(([id, value]) => [Number(id), value])));

describe('quorum arithmetic against dumb references', () => {
  it('majorityAckedIndex is the largest index a strict majority acknowledged', () => {
    fc.assert(
      fc.property(arbitraryConfig, arbitraryAcks, (config, acks) => {
        expect(majorityAckedIndex(config.voters, (id) => acks.get(id) ?? 0)).toBe(
          referenceMajority(config.voters, acks),
        );
      }),
    );
  });

  it('joint commit index = min of both majorities (both must acknowledge)', () => {
    fc.assert(
      fc.property(arbitraryConfig, arbitraryAcks, (config, acks) => {
        const expected = Math.min(
          referenceMajority(config.voters, acks),
          referenceMajority(config.votersOutgoing, acks),
        );
        expect(jointAckedIndex(config, (id) => acks.get(id) ?? 0)).toBe(expected);
      }),
    );
  });

  it('a joint election is won only with both majorities, lost once either is impossible', () => {
    const arbitraryVotes = fc
      .dictionary(fc.integer({ min: 1, max: 9 }).map(String), fc.boolean())
      .map((record) => new Map(Object.entries(record).map(([id, vote]) => [Number(id), vote])));
    fc.assert(
      fc.property(arbitraryConfig, arbitraryVotes, (config, votes) => {
        const outcome = (voters: readonly NodeId[]): 'won' | 'lost' | 'pending' => {
          if (voters.length === 0) return 'won';
          const yes = voters.filter((id) => votes.get(id) === true).length;
          const open = voters.filter((id) => !votes.has(id)).length;
          if (yes * 2 > voters.length) return 'won';
          return (yes + open) * 2 > voters.length ? 'pending' : 'lost';
        };
        expect(majorityVoteResult(config.voters, votes)).toBe(outcome(config.voters));
        const incoming = outcome(config.voters);
        const outgoing = outcome(config.votersOutgoing);
        const expected =
          incoming === 'lost' || outgoing === 'lost'
            ? 'lost'
            : incoming === 'won' && outgoing === 'won'
              ? 'won'
              : 'pending';
        expect(jointVoteResult(config, votes)).toBe(expected);
      }),
    );
  });

  it('any quorum of C_old,new intersects any quorum of C_old and of C_new (no two disjoint quorums)', () => {
    fc.assert(
      fc.property(
        arbitraryConfig,
        fc.uniqueArray(fc.integer({ min: 1, max: 9 })),
        fc.uniqueArray(fc.integer({ min: 1, max: 9 })),
        (config, a, b) => {
          const isQuorum = (voters: readonly NodeId[], set: readonly NodeId[]): boolean =>
            voters.length === 0 || voters.filter((id) => set.includes(id)).length * 2 > voters.length;
          const jointQuorum = isQuorum(config.voters, a) && isQuorum(config.votersOutgoing, a);
          for (const side of [config.voters, config.votersOutgoing]) {
            if (side.length === 0 || !jointQuorum || !isQuorum(side, b)) continue;
            expect(a.some((id) => b.includes(id))).toBe(true);
          }
        },
      ),
    );
  });

  it('validateConfig refuses empty voters, duplicates and bad ids', () => {
    expect(validateConfig({ voters: [], votersOutgoing: [], learners: [] })).not.toBeNull();
    expect(validateConfig({ voters: [1, 1], votersOutgoing: [], learners: [] })).not.toBeNull();
    expect(validateConfig({ voters: [1], votersOutgoing: [], learners: [1] })).not.toBeNull();
    expect(validateConfig({ voters: [0], votersOutgoing: [], learners: [] })).not.toBeNull();
    expect(validateConfig({ voters: [1, 2, 3], votersOutgoing: [1], learners: [4] })).toBeNull();
  });
});
