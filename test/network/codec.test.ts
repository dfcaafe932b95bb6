import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { CLUSTER_NODES_MAX, validateKey, validateWriteCommand } from '../../src/api/limits.ts';
import {
  checkedAddLearner,
  checkedChangeMembership,
  checkedLearnerId,
} from '../../src/api/membership-validation.ts';
import type { WriteCommand } from '../../src/api/types.ts';
import { decodeWireMessage, encodeWireMessage } from '../../src/network/codec.ts';
import type { ClientRequest, WireMessage } from '../../src/node/interfaces.ts';
import { WireFormatError } from '../../src/network/errors.ts';
import { config, plain, samples } from './samples.ts';

/** A decoded membership operation passes the API's own checks (anything else is not one). */
function passesMembershipChecks(operation: ClientRequest['operation']): boolean {
  try {
    if (operation.kind === 'add_learner') checkedAddLearner({ learner: operation.learner });
    else if (operation.kind === 'change_membership')
      checkedChangeMembership(
        operation.learners === null
          ? { members: operation.members }
          : { members: operation.members, learners: operation.learners },
      );
    else if (operation.kind === 'remove_learner') checkedLearnerId({ learner_id: operation.learnerId });
    return true;
  } catch {
    return false;
  }
}

describe('wire codec', () => {
  it('round-trips every message type', () => {
    for (const message of samples)
      expect(plain(decodeWireMessage(encodeWireMessage(message)))).toEqual(plain(message));
  });

  it('refuses malformed messages with WireFormatError (never a crash)', () => {
    const packr = new Packr({ useRecords: false });
    const bad: unknown[] = [
      null,
      42,
      'text',
      [],
      {},
      {
        type: 'append',
        from: 1,
        to: 2,
        term: 3,
        prevLogIndex: 0,
        prevLogTerm: 0,
        commitIndex: 0,
        entries: 'nope',
      },
      {
        type: 'append',
        from: 1,
        to: 2,
        term: 3,
        prevLogIndex: 0,
        prevLogTerm: 0,
        commitIndex: 0,
        entries: [{ kind: 'weird', term: 1, index: 1 }],
      },
      { type: 'vote', from: 0, to: 2, term: 3, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
      { type: 'vote', from: 1, to: 2, term: -1, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
      { type: 'heartbeat', from: 1, to: 2, term: 2 ** 60, commitIndex: 0, readRound: 0 },
      {
        type: 'snapshot',
        from: 1,
        to: 2,
        term: 3,
        snapshot: { index: 4, term: 1, config: { voters: [], votersOutgoing: [], learners: [] } },
      },
      {
        type: 'snapshot_chunk',
        from: 1,
        to: 2,
        term: 3,
        snapshot: { index: 4, term: 1, config },
        offsetBytes: 2,
        totalBytes: 3,
        data: new Uint8Array(5),
      },
      {
        type: 'snapshot',
        from: 1,
        to: 2,
        term: 3,
        snapshot: {
          index: 4,
          term: 1,
          config: { ...config, nodes: [{ id: 1, addr: 'a', raftAddr: 'b', peerId: 'not/a peer' }] },
        },
      },
      { type: 'mystery', from: 1, to: 2, term: 3 },
      { type: 'client_request', from: 2, to: 1, term: 0, operation: { kind: 'read', key: 'k' } },
      { type: 'client_response', from: 1, to: 2, term: 0, requestId: 1, error: { code: 5 } },
    ];
    for (const value of bad) expect(() => decodeWireMessage(packr.pack(value))).toThrow(WireFormatError);
    expect(() => decodeWireMessage(new Uint8Array([0xc1]))).toThrow(WireFormatError);
  });

  it('decodes a forwarded request that fails validation as "invalid", with the error the leader answers', () => {
    const packr = new Packr({ useRecords: false });
    const request = (operation: unknown) =>
      packr.pack({ type: 'client_request', from: 2, to: 1, term: 0, requestId: 9, operation });
    const cases: [unknown, string][] = [
      [{ kind: 'write', command: { Set: { key: 'k'.repeat(2_000), value: 'v' } } }, 'KEY_TOO_LARGE'],
      [{ kind: 'write', command: { Set: { key: 'k', value: 'v', x: [[[1]]] } } }, 'INVALID_INPUT'],
      [
        {
          kind: 'write',
          command: { SetMulti: { pairs: Array.from({ length: 101 }, (_, index) => [`k${index}`, 'v']) } },
        },
        'BATCH_TOO_LARGE',
      ],
      [{ kind: 'read', key: '' }, 'INVALID_INPUT'],
      [{ kind: 'delete', key: ['a'] }, 'INVALID_INPUT'],
      [{ kind: 'scan', prefix: 'a', limit: 0, continuationToken: null }, 'INVALID_INPUT'],
      [{ kind: 'scan', prefix: 'a', limit: null, continuationToken: '!!not-base64!!' }, 'INVALID_INPUT'],
      [{ kind: 'drop-table' }, 'INVALID_INPUT'],
      [{ kind: 'add_learner' }, 'INVALID_INPUT'],
      [{ kind: 'add_learner', learner: { id: 4, addr: 'a', raft_addr: 'nowhere' } }, 'INVALID_INPUT'],
      [
        { kind: 'add_learner', learner: { id: 4, addr: 'a', raft_addr: '127.0.0.1:1', peer_id: 'x/y' } },
        'INVALID_INPUT',
      ],
      [{ kind: 'add_learner', learner: { id: 0, addr: 'a', raft_addr: '127.0.0.1:1' } }, 'INVALID_INPUT'],
      [{ kind: 'change_membership', members: [], learners: null }, 'INVALID_INPUT'],
      [{ kind: 'change_membership', members: [1, 1], learners: null }, 'INVALID_INPUT'],
      [{ kind: 'change_membership', members: [1], learners: 'x' }, 'INVALID_INPUT'],
      [{ kind: 'change_membership', members: [1] }, 'INVALID_INPUT'],
      [{ kind: 'change_membership', members: [1], learners: [2.5] }, 'INVALID_INPUT'],
      [
        { kind: 'change_membership', members: Array.from({ length: 65 }, (_, i) => i + 1), learners: null },
        'INVALID_INPUT',
      ],
      [{ kind: 'remove_learner', learnerId: 0 }, 'INVALID_INPUT'],
      [{ kind: 'remove_learner', learnerId: '5' }, 'INVALID_INPUT'],
      ['write', 'INVALID_INPUT'],
    ];
    for (const [operation, code] of cases) {
      const decoded = decodeWireMessage(request(operation));
      expect(decoded.type).toBe('client_request');
      if (decoded.type !== 'client_request') continue;
      expect(decoded.requestId).toBe(9);
      expect(decoded.operation).toMatchObject({ kind: 'invalid', code });
    }
    const valid = decodeWireMessage(
      request({ kind: 'scan', prefix: 'a', limit: null, continuationToken: null }),
    );
    expect(valid).toMatchObject({
      operation: { kind: 'scan', prefix: 'a', limit: 1_000, continuationToken: null },
    });
  });

  it('carries CAS, CAD and Transaction requests, their results, and COMPARE_FAILED with its current record', () => {
    const base = { from: 2, to: 1, term: 0, requestId: 3 } as const;
    const commands: WriteCommand[] = [
      { CompareAndSwap: { key: 'k', expected: null, new_value: 'v' } },
      { CompareAndSwap: { key: 'k', expected: 'old', new_value: 'v' } },
      { CompareAndDelete: { key: 'k', expected: 'old' } },
      {
        Transaction: {
          compare: [
            { key: 'k', target: 'value', op: 'equal', value: 'v' },
            { key: 'k', target: 'mod_index', op: 'greater', value: 7 },
          ],
          success: [{ Set: { key: 'k', value: 'w' } }, { Get: { key: 'k' } }, { Scan: { prefix: '' } }],
          failure: [{ Delete: { key: 'k' } }, { Scan: { prefix: 'a', limit: 5 } }],
        },
      },
    ];
    for (const [position, command] of commands.entries()) {
      const session = position % 2 === 0 ? null : { clientId: `c-${position}`, sequence: position };
      const message: WireMessage = {
        type: 'client_request',
        ...base,
        operation: { kind: 'write', command, session },
      };
      expect(plain(decodeWireMessage(encodeWireMessage(message)))).toEqual(plain(message));
    }
    const badSessions = [{ clientId: 'a b', sequence: 1 }, { clientId: 'a', sequence: 0 }, 'c1', {}];
    for (const session of badSessions) {
      const operation = { kind: 'delete', key: 'k', session } as unknown as {
        kind: 'delete';
        key: string;
        session: null;
      };
      const decoded = decodeWireMessage(encodeWireMessage({ type: 'client_request', ...base, operation }));
      expect(decoded.type === 'client_request' && decoded.operation).toMatchObject({
        kind: 'invalid',
        code: 'INVALID_INPUT',
      });
    }
    const reply = { type: 'client_response', from: 1, to: 2, term: 0, requestId: 3 } as const;
    const current = { value: 'v', create_index: 4, mod_index: 9, version: 3, lease_id: 0 };
    const result = {
      command: commands[3],
      log_index: 12,
      revision: 12,
      succeeded: true,
      results: [
        { Set: { key: 'k' } },
        { Get: { key: 'k', ...current } },
        { Scan: { entries: [], is_truncated: false } },
      ],
    };
    const responses: WireMessage[] = [
      { ...reply, result, error: null },
      {
        ...reply,
        result: null,
        error: { code: 'COMPARE_FAILED', message: 'm', leaderId: null, definite: true, current },
      },
      {
        ...reply,
        result: null,
        error: { code: 'COMPARE_FAILED', message: 'm', leaderId: null, definite: true, current: null },
      },
    ];
    for (const message of responses)
      expect(plain(decodeWireMessage(encodeWireMessage(message)))).toEqual(plain(message));
    // Another code carries no current, even when a sender put one in.
    const stray = {
      ...reply,
      result: null,
      error: { code: 'TIMEOUT', message: 'm', leaderId: null, definite: false, current },
    };
    expect(decodeWireMessage(encodeWireMessage(stray))).toEqual({
      ...reply,
      result: null,
      error: { code: 'TIMEOUT', message: 'm', leaderId: null, definite: false },
    });
    const packr = new Packr({ useRecords: false });
    const bad = [
      undefined,
      'v',
      { ...current, version: -1 },
      { ...current, value: 5 },
      { ...current, lease_id: 1.5 },
    ];
    for (const value of bad) {
      const error = { code: 'COMPARE_FAILED', message: 'm', leaderId: null, definite: true, current: value };
      expect(() => decodeWireMessage(packr.pack({ ...reply, result: null, error }))).toThrow(WireFormatError);
    }
  });

  it('refuses to encode what cannot be a frame with WireFormatError, never an assertion or a RangeError', () => {
    const reply = { type: 'client_response', from: 1, to: 2, term: 0, requestId: 1, error: null } as const;
    expect(() => encodeWireMessage({ ...reply, result: { value: 'x'.repeat(6 * 1024 * 1024) } })).toThrow(
      WireFormatError,
    );
    let deep: unknown = 'leaf';
    for (let depth = 0; depth < 20_000; depth += 1) deep = [deep];
    expect(() => encodeWireMessage({ ...reply, result: deep })).toThrow(WireFormatError);
    expect(
      decodeWireMessage(encodeWireMessage({ ...reply, result: { value: 'x'.repeat(4 * 1024 * 1024) } })),
    ).toMatchObject({ type: 'client_response' });
  });

  it('never throws anything but WireFormatError on mutated frames, and lets through only requests that pass validation (property)', () => {
    const frames = samples.map((message) => encodeWireMessage(message));
    fc.assert(
      fc.property(
        fc.nat(frames.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat(),
        (pick, flips, cut) => {
          const frame = Uint8Array.from(frames[pick] ?? new Uint8Array(0));
          for (const [position, byte] of flips) if (frame.length > 0) frame[position % frame.length] = byte;
          let decoded;
          try {
            decoded = decodeWireMessage(frame.subarray(0, frame.length - (cut % 4)));
          } catch (error) {
            return error instanceof WireFormatError;
          }
          if (decoded.type !== 'client_request') return true;
          const operation = decoded.operation;
          if (operation.kind === 'write') return validateWriteCommand(operation.command) === null;
          if (operation.kind === 'read' || operation.kind === 'delete')
            return validateKey(operation.key) === null;
          return passesMembershipChecks(operation);
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('round-trips any valid membership operation, and turns it into "invalid" once a field breaks a rule (property)', () => {
    const nodeId = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
    const ids = fc.uniqueArray(nodeId, { minLength: 1, maxLength: CLUSTER_NODES_MAX });
    const learner = fc.record(
      {
        id: nodeId,
        addr: fc.string({ maxLength: 40 }),
        raft_addr: fc
          .tuple(fc.nat(255), fc.integer({ min: 1, max: 65_535 }))
          .map(([a, port]) => `10.0.0.${a}:${port}`),
        peer_id: fc.constant('12D3KooWQG8uKmyztjqUy4Ja8sDprXZhkpeyqwyYAMPW4r4jsckR'),
      },
      { requiredKeys: ['id', 'addr', 'raft_addr'] },
    );
    const operation = fc.oneof(
      learner.map((node) => ({ kind: 'add_learner' as const, learner: node })),
      fc.tuple(ids, fc.option(fc.uniqueArray(nodeId, { maxLength: 8 }))).map(([members, learners]) => ({
        kind: 'change_membership' as const,
        members: [...members].sort((a, b) => a - b),
        learners: learners === null ? null : [...learners].sort((a, b) => a - b),
      })),
      nodeId.map((learnerId) => ({ kind: 'remove_learner' as const, learnerId })),
      fc.constant({ kind: 'trigger_snapshot' as const }),
    );
    const breakage = fc.constantFrom<unknown>(0, -1, 1.5, '1 ', null, [], {}, 'x'.repeat(2_000));
    fc.assert(
      fc.property(operation, breakage, fc.nat(), (valid, bad, pick) => {
        const message: WireMessage = {
          type: 'client_request',
          from: 2,
          to: 1,
          term: 0,
          requestId: 1,
          operation: valid,
        };
        expect(plain(decodeWireMessage(encodeWireMessage(message)))).toEqual(plain(message));
        // One field (of the operation, or of its learner) replaced by a value its rule refuses.
        const target: Record<string, unknown> =
          valid.kind === 'add_learner' ? { ...valid.learner } : { ...valid };
        const names = Object.keys(target).filter(
          (name) => name !== 'kind' && name !== 'learners' && name !== 'addr',
        );
        if (names.length === 0) return;
        const name = names[pick % names.length] ?? '';
        if (name === 'peer_id' && bad === null) return; // absent and null differ only on the wire
        target[name] = bad;
        const broken = valid.kind === 'add_learner' ? { ...valid, learner: target } : target;
        const packr = new Packr({ useRecords: false });
        const decoded = decodeWireMessage(packr.pack({ ...message, operation: broken }));
        expect(decoded.type === 'client_request' && decoded.operation.kind).toBe('invalid');
      }),
      { numRuns: 1_000 },
    );
  });

  it('never throws anything but WireFormatError on random bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (payload) => {
        try {
          decodeWireMessage(payload);
        } catch (error) {
          return error instanceof WireFormatError;
        }
        return true;
      }),
      { numRuns: 2_000 },
    );
  });
});
