import { describe, expect, it } from 'vitest';
import type { KeyValueStore } from '../../src/api/contracts.ts';
import { AspenError } from '../../src/api/errors.ts';
import type { WriteResult } from '../../src/api/types.ts';
import { ForwardingStore } from '../../src/cluster/forwarding.ts';
import type { ClientRequest, WireMessage } from '../../src/node/interfaces.ts';

/** A local store that is never the leader: every call is counted and refused with NOT_LEADER (leader 1). */
function followerStore(calls: { count: number }): KeyValueStore {
  const refuse = (): Promise<never> => {
    calls.count += 1;
    return Promise.reject(new AspenError('NOT_LEADER', 'node 1 is the leader', { leaderId: 1 }));
  };
  return { write: refuse, read: refuse, delete: refuse, scan: refuse };
}

function forwardingOn(knownLeader: number | undefined, calls: { count: number }, sent: WireMessage[]): ForwardingStore {
  return new ForwardingStore({
    local: followerStore(calls), nodeId: 2, timeoutMs: 1_000,
    transport: { send: (message) => { sent.push(message); } },
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
    const answer: WriteResult = { command: { Set: { key: 'k', value: 'v' } }, log_index: 7 };
    store.handleResponse({ type: 'client_response', from: 1, to: 2, term: 0, requestId: request?.requestId ?? 0, result: answer, error: null });
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
    store.handleResponse({ type: 'client_response', from: 1, to: 2, term: 0, requestId: request?.requestId ?? 0, result: null,
      error: { code: 'NOT_LEADER', message: 'node 3 is the leader', leaderId: 3, definite: true } });
    await expect(result).rejects.toMatchObject({ code: 'NOT_LEADER', leaderId: 3 });
  });
});
