import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../../src/node/interfaces.ts';
import { AssertionError } from '../../src/base/assert.ts';
import type { Entry } from '../../src/raft/types.ts';
import { MemoryLogState } from '../../src/storage/memory-log-store.ts';

const blank = (index: number, term: number): Entry => ({ kind: 'blank', index, term });
const config = { voters: [1], votersOutgoing: [], learners: [] };
const snapshotAt = (index: number, term: number): Snapshot => ({
  meta: { index, term, config },
  data: new Uint8Array([index]),
});

describe('the LogStore contract on the in-memory log state', () => {
  it('appends, replaces a conflicting suffix, and keeps the hard state', () => {
    const state = new MemoryLogState();
    state.apply({
      snapshot: null,
      hardState: { term: 1, vote: 1, commit: 0 },
      entries: [blank(1, 1), blank(2, 1), blank(3, 1)],
    });
    state.apply({ snapshot: null, hardState: null, entries: [blank(2, 2)] });
    const { persisted } = state.load();
    expect(persisted.entries).toEqual([blank(1, 1), blank(2, 2)]);
    expect(persisted.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
  });

  it('a snapshot drops the entries it covers and keeps a matching suffix', () => {
    const state = new MemoryLogState();
    state.apply({
      snapshot: null,
      hardState: null,
      entries: [blank(1, 1), blank(2, 1), blank(3, 2), blank(4, 2)],
    });
    state.apply({ snapshot: snapshotAt(3, 2), hardState: null, entries: [] });
    const { persisted, snapshot } = state.load();
    expect(persisted.snapshot?.index).toBe(3);
    expect(snapshot?.data).toEqual(new Uint8Array([3]));
    expect(persisted.entries).toEqual([blank(4, 2)]);
    expect(state.termAt(3)).toBe(2);
    expect(state.holds(1, 1)).toBe(true);
    state.apply({ snapshot: null, hardState: null, entries: [blank(5, 2)] });
    expect(state.load().persisted.entries).toEqual([blank(4, 2), blank(5, 2)]);
  });

  it('a snapshot that does not match the stored log replaces all of it', () => {
    const state = new MemoryLogState();
    state.apply({ snapshot: null, hardState: null, entries: [blank(1, 1), blank(2, 1)] });
    state.apply({ snapshot: snapshotAt(5, 3), hardState: null, entries: [] });
    expect(state.load().persisted.entries).toEqual([]);
    state.apply({ snapshot: null, hardState: null, entries: [blank(6, 3)] });
    expect(state.entry(6)).toEqual(blank(6, 3));
  });

  it('refuses gaps and snapshots that move backwards', () => {
    const state = new MemoryLogState();
    expect(() => {
      state.apply({ snapshot: null, hardState: null, entries: [blank(2, 1)] });
    }).toThrow(AssertionError);
    state.apply({ snapshot: snapshotAt(4, 1), hardState: null, entries: [] });
    expect(() => {
      state.apply({ snapshot: snapshotAt(3, 1), hardState: null, entries: [] });
    }).toThrow(AssertionError);
    expect(() => {
      state.apply({ snapshot: null, hardState: null, entries: [blank(4, 1)] });
    }).toThrow(AssertionError);
  });
});
