import { describe, expect, it } from 'vitest';
import type { KeyValueStore } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { WriteResult } from '../../src/api/types.ts';
import { ForwardingStore } from '../../src/cluster/forwarding.ts';
import { WireFormatError } from '../../src/network/errors.ts';
import type { ClientRequest, WireMessage } from '../../src/node/interfaces.ts';

/** A local store that is never the leader: every call is counted and refused with NOT_LEADER (leader 1). */
function followerStore(calls: { count: number }): KeyValueStore {
  const refuse = (): Promise<never> => {
    calls.count += 1;
    return Promise.reject(new AspenError('NOT_LEADER', 'node 1 is the leader', { leaderId: 1 }));
  };
  return { write: refuse, read: refuse, delete: refuse, scan: refuse };
}

function forwardingOn(
  knownLeader: number | undefined,
  calls: { count: number },
  sent: WireMessage[],
): ForwardingStore {
  return new ForwardingStore({
    local: followerStore(calls),
    nodeId: 2,
    timeoutMs: 1_000,
    transport: {
      send: (message) => {
        sent.push(message);
      },
    },
    clock: { nowMs: () => 0, setTimer: () => () => undefined },
    ...(knownLeader === undefined ? {} : { knownLeader: () => knownLeader }),
  });
}

async function flush(): Promise<void> {
  for (let turn = 0; turn < 5; turn += 1) await Promise.resolve();
}

describe('ForwardingStore', () => {
  it('a follower that knows its leader forwards at once, without asking its local node', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    const result = store.write({ command: { Set: { key: 'k', value: 'v' } } });
    const request = sent[0] as ClientRequest | undefined;
    expect(request).toMatchObject({ type: 'client_request', from: 2, to: 1, operation: { kind: 'write' } });
    expect(calls.count).toBe(0);
    const answer: WriteResult = { command: { Set: { key: 'k', value: 'v' } }, revision: 7, log_index: 7 };
    store.handleResponse({
      type: 'client_response',
      from: 1,
      to: 2,
      term: 0,
      requestId: request?.requestId ?? 0,
      result: answer,
      error: null,
    });
    await expect(result).resolves.toEqual(answer);
  });

  it('without a known leader it asks the local node first and forwards on its NOT_LEADER', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(0, calls, sent);
    const result = store.read({ key: 'k' });
    await flush();
    expect(calls.count).toBe(1);
    const request = sent[0] as ClientRequest | undefined;
    expect(request).toMatchObject({ type: 'client_request', to: 1, operation: { kind: 'read', key: 'k' } });
    // The leader's refusal comes back as the same typed error the client would get locally.
    store.handleResponse({
      type: 'client_response',
      from: 1,
      to: 2,
      term: 0,
      requestId: request?.requestId ?? 0,
      result: null,
      error: { code: 'NOT_LEADER', message: 'node 3 is the leader', leaderId: 3, definite: true },
    });
    await expect(result).rejects.toMatchObject({ code: 'NOT_LEADER', leaderId: 3 });
  });

  it('a follower refuses bad input itself: nothing is forwarded', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    await expect(
      store.write({ command: { Set: { key: 'k', value: 'v', extra: 1 } } } as never),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.read({ key: 'k'.repeat(2_000) })).rejects.toMatchObject({ code: 'KEY_TOO_LARGE' });
    await expect(store.delete({ key: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.scan({ prefix: 'a', continuation_token: 'not a token' })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    expect(sent).toEqual([]);
    expect(calls.count).toBe(0);
  });

  it('the leader answers an invalid forwarded request with its error, and a reply that cannot be framed with an error', async () => {
    const sent: WireMessage[] = [];
    let refuseFirst = true;
    const huge = {
      entries: [{ key: 'k', value: 'x' }],
      count: 1,
      is_truncated: false,
      continuation_token: null,
      revision: 3,
    };
    const local: KeyValueStore = {
      write: () => Promise.reject(new Error('unused')),
      read: () => Promise.reject(new Error('unused')),
      delete: () => Promise.reject(new Error('unused')),
      scan: () => Promise.resolve(huge),
    };
    const lines: string[] = [];
    const leader = new ForwardingStore({
      local,
      nodeId: 1,
      clock: { nowMs: () => 0, setTimer: () => () => undefined },
      log: (line) => {
        lines.push(line);
      },
      transport: {
        send: (message) => {
          if (message.type === 'client_response' && message.error === null && refuseFirst) {
            refuseFirst = false;
            throw new WireFormatError(
              'a client_response message of 6291456 bytes exceeds the 5242880-byte frame',
            );
          }
          sent.push(message);
        },
      },
    });
    leader.handleRequest({
      type: 'client_request',
      from: 2,
      to: 1,
      term: 0,
      requestId: 4,
      operation: { kind: 'invalid', code: 'KEY_TOO_LARGE', message: 'key is 2000 bytes' },
    });
    leader.handleRequest({
      type: 'client_request',
      from: 2,
      to: 1,
      term: 0,
      requestId: 5,
      operation: { kind: 'scan', prefix: '', limit: 10, continuationToken: null },
    });
    await flush();
    expect(sent).toMatchObject([
      {
        type: 'client_response',
        to: 2,
        requestId: 4,
        result: null,
        error: { code: 'KEY_TOO_LARGE', definite: true },
      },
      {
        type: 'client_response',
        to: 2,
        requestId: 5,
        result: null,
        error: { code: 'INTERNAL', definite: true },
      },
    ]);
    expect(lines.join('\n')).toMatch(/cannot be sent/);
  });

  it('stop() fails every forward still waiting, as indeterminate, and refuses new ones', async () => {
    const calls = { count: 0 };
    const sent: WireMessage[] = [];
    const store = forwardingOn(1, calls, sent);
    const waiting = store.write({ command: { Set: { key: 'k', value: 'v' } } });
    expect(sent).toHaveLength(1);
    store.stop();
    await expect(waiting).rejects.toMatchObject({ code: 'SHUTTING_DOWN', definite: false });
    await expect(store.read({ key: 'k' })).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    expect(sent).toHaveLength(1);
  });
});
