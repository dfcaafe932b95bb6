import type { WireMessage } from '../../src/node/interfaces.ts';

export const config = {
  voters: [1, 2, 3],
  votersOutgoing: [],
  learners: [4],
  nodes: [
    {
      id: 1,
      addr: 'node-1',
      raftAddr: '127.0.0.1:26001',
      peerId: '12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR',
    },
    { id: 2, addr: 'node-2', raftAddr: '127.0.0.1:26002' },
  ],
};
/** One message of every wire type, from node 1 or 2 to the other. */
export const samples: readonly WireMessage[] = [
  { type: 'pre_vote', from: 1, to: 2, term: 3, lastLogIndex: 10, lastLogTerm: 2, transfer: false },
  { type: 'vote_response', from: 2, to: 1, term: 3, granted: true },
  {
    type: 'append',
    from: 1,
    to: 2,
    term: 3,
    prevLogIndex: 9,
    prevLogTerm: 2,
    commitIndex: 8,
    entries: [
      { kind: 'blank', term: 3, index: 10 },
      { kind: 'command', term: 3, index: 11, data: new Uint8Array([1, 2, 3]) },
      { kind: 'config', term: 3, index: 12, config },
    ],
  },
  { type: 'append_response', from: 2, to: 1, term: 3, success: false, index: 9, hintIndex: 7, hintTerm: 2 },
  { type: 'heartbeat', from: 1, to: 2, term: 3, commitIndex: 8, readRound: 4 },
  { type: 'heartbeat_response', from: 2, to: 1, term: 3, readRound: 4 },
  { type: 'snapshot', from: 1, to: 2, term: 3, snapshot: { index: 40, term: 3, config } },
  { type: 'timeout_now', from: 1, to: 2, term: 3 },
  {
    type: 'snapshot_chunk',
    from: 1,
    to: 2,
    term: 3,
    snapshot: { index: 40, term: 3, config },
    offsetBytes: 0,
    totalBytes: 3,
    data: new Uint8Array([7, 8, 9]),
    format: 'bytes',
    crc: 0,
  },
  {
    type: 'snapshot_chunk',
    from: 1,
    to: 2,
    term: 3,
    snapshot: { index: 40, term: 3, config },
    offsetBytes: 4,
    totalBytes: 6,
    data: new Uint8Array([1, 2]),
    format: 'file',
    crc: 7,
  },
  {
    type: 'client_request',
    from: 2,
    to: 1,
    term: 0,
    requestId: 5,
    operation: { kind: 'write', command: { Set: { key: 'k', value: 'v' } }, session: null },
  },
  { type: 'client_request', from: 2, to: 1, term: 0, requestId: 6, operation: { kind: 'read', key: 'k' } },
  ...(
    [
      { kind: 'lease_grant', leaseId: 0, ttlSeconds: 10, session: { clientId: 'c', sequence: 1 } },
      { kind: 'lease_revoke', leaseId: 7, session: null },
      { kind: 'lease_keepalive', leaseId: 7 },
      { kind: 'lease_info', leaseId: 7, keys: true, after: null },
      { kind: 'lease_info', leaseId: 7, keys: true, after: 'svc/\u0005\u{10000}' },
      { kind: 'lease_list' },
      {
        kind: 'add_learner',
        learner: {
          id: 4,
          addr: 'node-4',
          raft_addr: '/ip4/127.0.0.1/udp/26004/quic-v1,/ip4/127.0.0.1/tcp/26004',
          peer_id: '12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR',
        },
      },
      { kind: 'add_learner', learner: { id: 5, addr: 'node-5', raft_addr: '127.0.0.1:26005' } },
      { kind: 'change_membership', members: [1, 2, 3], learners: null },
      { kind: 'change_membership', members: [1, 2], learners: [3, 5] },
      { kind: 'remove_learner', learnerId: 5 },
      { kind: 'trigger_snapshot' },
    ] as const
  ).map((operation, position) => ({
    type: 'client_request' as const,
    ...{ from: 2, to: 1, term: 0, requestId: 20 + position },
    operation,
  })),
  {
    type: 'client_response',
    from: 1,
    to: 2,
    term: 0,
    requestId: 5,
    result: { command: { Set: { key: 'k', value: 'v' } }, log_index: 9 },
    error: null,
  },
  {
    type: 'client_response',
    from: 1,
    to: 2,
    term: 0,
    requestId: 6,
    result: null,
    error: { code: 'KEY_NOT_FOUND', message: 'no', leaderId: null, definite: true },
  },
];

/** Compare bytes, not classes (msgpack decodes to Buffer, whose toJSON runs before any replacer). */
export const plain = (value: unknown): unknown =>
  JSON.parse(
    JSON.stringify(value, (_key, item: unknown) => {
      if (item instanceof Uint8Array) return [...item];
      const buffer = item as { type?: unknown; data?: unknown } | null;
      return buffer?.type === 'Buffer' && Array.isArray(buffer.data) ? buffer.data : item;
    }),
  );
