import type { ApplyOutcome, KvChange, KvRecord } from '../../src/node/kv-state-machine.ts';

/** Apply outcomes built by hand, to feed a WatchHub the changes a state machine would report. */
export const record = (value: string, index: number, version = 1): KvRecord => ({
  value,
  createIndex: index,
  modIndex: index,
  version,
  leaseId: 0,
});

export const put = (key: string, value: string, index: number, prev: KvRecord | null = null): KvChange => ({
  key,
  record: record(value, index),
  prev,
});

export const del = (key: string, prev: KvRecord | null): KvChange => ({ key, record: null, prev });

export const outcome = (index: number, changes: readonly KvChange[]): ApplyOutcome => ({
  index,
  deleted: [],
  succeeded: true,
  changes,
});
