import type { KeyValueStore } from '../api/contracts.ts';
import { AspenError, ERROR_STATUS, type AspenErrorCode } from '../api/errors.ts';
import type { DeleteRequest, DeleteResult, ReadRequest, ReadResult, ScanRequest, ScanResult, WriteRequest, WriteResult } from '../api/types.ts';
import type { ClientRequest, ClientResponse, Clock, Transport } from '../node/interfaces.ts';
import type { NodeId } from '../raft/types.ts';

/** Forwarded requests waiting for the leader's answer at once; more get OVERLOADED. */
export const FORWARDS_PENDING_MAX = 10_000;
export const FORWARD_TIMEOUT_MS_DEFAULT = 5_000;

type Operation = ClientRequest['operation'];

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: AspenError) => void;
  readonly cancelTimer: () => void;
}

/**
 * Lets a client talk to any node: a request that the local node refuses with NOT_LEADER is sent to
 * the leader over the cluster transport, run there against the leader's local store (never
 * forwarded again), and answered. A lost answer is a TIMEOUT, which for a write is indeterminate.
 */
export class ForwardingStore implements KeyValueStore {
  private readonly local: KeyValueStore;
  private readonly transport: Transport;
  private readonly nodeId: NodeId;
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly knownLeader: () => NodeId;
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;

  /**
   * `knownLeader` (0 when unknown) lets a follower forward at once; without it, or when it names
   * this node, the request goes to the local node first and is forwarded on its NOT_LEADER.
   */
  constructor(options: { local: KeyValueStore; transport: Transport; nodeId: NodeId; clock: Clock; timeoutMs?: number; knownLeader?: () => NodeId }) {
    this.local = options.local;
    this.transport = options.transport;
    this.nodeId = options.nodeId;
    this.clock = options.clock;
    this.timeoutMs = options.timeoutMs ?? FORWARD_TIMEOUT_MS_DEFAULT;
    this.knownLeader = options.knownLeader ?? (() => 0);
  }

  write(request: WriteRequest): Promise<WriteResult> {
    return this.withForwarding(() => this.local.write(request), { kind: 'write', command: request.command }) as Promise<WriteResult>;
  }

  read(request: ReadRequest): Promise<ReadResult> {
    return this.withForwarding(() => this.local.read(request), { kind: 'read', key: request.key }) as Promise<ReadResult>;
  }

  delete(request: DeleteRequest): Promise<DeleteResult> {
    return this.withForwarding(() => this.local.delete(request), { kind: 'delete', key: request.key }) as Promise<DeleteResult>;
  }

  scan(request: ScanRequest): Promise<ScanResult> {
    const operation = { kind: 'scan', prefix: request.prefix ?? '', limit: request.limit ?? null, continuationToken: request.continuation_token ?? null } as const;
    return this.withForwarding(() => this.local.scan(request), operation) as Promise<ScanResult>;
  }

  private async withForwarding(runLocally: () => Promise<unknown>, operation: Operation): Promise<unknown> {
    // A follower that knows its leader forwards at once: asking the local node first would cost a
    // mailbox turn and a NOT_LEADER error per request (both in the followers' profiles under load).
    const leader = this.knownLeader();
    if (leader !== 0 && leader !== this.nodeId) return this.forward(leader, operation);
    try {
      return await runLocally();
    } catch (error) {
      if (!(error instanceof AspenError) || error.code !== 'NOT_LEADER' || error.leaderId === null || error.leaderId === this.nodeId) throw error;
      return this.forward(error.leaderId, operation);
    }
  }

  private forward(leaderId: NodeId, operation: Operation): Promise<unknown> {
    if (this.pending.size >= FORWARDS_PENDING_MAX) {
      return Promise.reject(new AspenError('OVERLOADED', `${FORWARDS_PENDING_MAX} forwarded requests are already waiting`));
    }
    const requestId = this.nextRequestId;
    this.nextRequestId += 1;
    return new Promise((resolve, reject) => {
      const cancelTimer = this.clock.setTimer(this.timeoutMs, () => {
        if (!this.pending.delete(requestId)) return;
        reject(new AspenError('TIMEOUT', `the leader (node ${leaderId}) did not answer within ${this.timeoutMs} ms`, { leaderId, definite: false }));
      });
      this.pending.set(requestId, { resolve, reject, cancelTimer });
      this.transport.send({ type: 'client_request', from: this.nodeId, to: leaderId, term: 0, requestId, operation });
    });
  }

  /** On the leader: run a forwarded request locally and answer it. */
  handleRequest(request: ClientRequest): void {
    const operation = request.operation;
    const run = this.runLocally(operation);
    const reply = { type: 'client_response', from: this.nodeId, to: request.from, term: 0, requestId: request.requestId } as const;
    run.then(
      (result) => { this.transport.send({ ...reply, result, error: null }); },
      (error: unknown) => {
        const aspen = error instanceof AspenError ? error : new AspenError('TIMEOUT', 'the leader failed the request', { definite: false });
        this.transport.send({ ...reply, result: null, error: { code: aspen.code, message: aspen.message, leaderId: aspen.leaderId, definite: aspen.definite } });
      },
    );
  }

  private runLocally(operation: Operation): Promise<unknown> {
    switch (operation.kind) {
      case 'write':
        return this.local.write({ command: operation.command });
      case 'read':
        return this.local.read({ key: operation.key });
      case 'delete':
        return this.local.delete({ key: operation.key });
      case 'scan':
        return this.local.scan({ prefix: operation.prefix, ...(operation.limit === null ? {} : { limit: operation.limit }), continuation_token: operation.continuationToken });
    }
  }

  /** On the follower: the leader's answer to one of our forwarded requests. */
  handleResponse(response: ClientResponse): void {
    const pending = this.pending.get(response.requestId);
    if (pending === undefined) return; // timed out already
    this.pending.delete(response.requestId);
    pending.cancelTimer();
    const error = response.error;
    if (error === null) {
      pending.resolve(response.result);
      return;
    }
    const code: AspenErrorCode = error.code in ERROR_STATUS ? (error.code as AspenErrorCode) : 'TIMEOUT';
    pending.reject(new AspenError(code, error.message, { leaderId: error.leaderId, definite: error.definite }));
  }
}
