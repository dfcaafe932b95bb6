import type { KeyValueStore, LeaseService } from '../api/contracts.ts';
import type { Log } from '../base/log.ts';
import { AspenError, ERROR_STATUS, escalateBrokenInvariant, type AspenErrorCode } from '../api/errors.ts';
import {
  checkedLeaseGrant,
  checkedLeaseId,
  checkedLeaseInfo,
  checkedLeaseRevoke,
} from '../api/lease-validation.ts';
import { checkedSession, validateKey, validateScan, validateWriteCommand } from '../api/limits.ts';
import type {
  ClientSession,
  DeleteRequest,
  DeleteResult,
  LeaseGrantRequest,
  LeaseGrantResult,
  LeaseInfoRequest,
  LeaseInfoResult,
  LeaseKeepAliveRequest,
  LeaseKeepAliveResult,
  LeaseListResult,
  LeaseRevokeRequest,
  LeaseRevokeResult,
  ReadRequest,
  ReadResult,
  ScanRequest,
  ScanResult,
  SessionFields,
  WriteRequest,
  WriteResult,
} from '../api/types.ts';
import type { ClientRequest, ClientResponse, Clock, Transport } from '../node/interfaces.ts';
import { AssertionError } from '../base/assert.ts';
import { WireFormatError } from '../network/errors.ts';
import type { NodeId } from '../raft/types.ts';

/** Forwarded requests waiting for the leader's answer at once; more get OVERLOADED. */
export const FORWARDS_PENDING_MAX = 10_000;
export const FORWARD_TIMEOUT_MS_DEFAULT = 5_000;
/**
 * A forwarded keepalive waits at most this long for the leader (or the forward timeout, if
 * shorter). A keepalive only moves a deadline later and may run twice without harm, so giving up
 * early is safe; when the leader just died, the client hears TIMEOUT within a second and renews
 * through another node, instead of waiting FORWARD_TIMEOUT_MS_DEFAULT, longer than a short TTL.
 * A healthy leader answers one in a ReadIndex round (milliseconds).
 */
export const FORWARD_KEEPALIVE_TIMEOUT_MS = 1_000;

type Operation = ClientRequest['operation'];

/** Forwarded operations that change the state (an answer lost on the way leaves their outcome unknown). */
const MUTATING_KINDS: readonly Operation['kind'][] = ['write', 'delete', 'lease_grant', 'lease_revoke'];

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
export class ForwardingStore implements KeyValueStore, LeaseService {
  private readonly local: KeyValueStore;
  private readonly leases: LeaseService | null;
  private readonly leaseTtlSecondsMin: number;
  private readonly transport: Transport;
  private readonly nodeId: NodeId;
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly knownLeader: () => NodeId;
  private readonly log: Log;
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private stopped = false;

  /**
   * `knownLeader` (0 when unknown) lets a follower forward at once; without it, or when it names
   * this node, the request goes to the local node first and is forwarded on its NOT_LEADER.
   */
  constructor(options: {
    local: KeyValueStore;
    /** The local node's leases (without them, this node serves none and forwards none). */
    leases?: LeaseService;
    /** The shortest TTL of this cluster (leaseTtlSecondsMin of its election timeout): a grant is checked before it is forwarded. */
    leaseTtlSecondsMin?: number;
    transport: Transport;
    nodeId: NodeId;
    clock: Clock;
    timeoutMs?: number;
    knownLeader?: () => NodeId;
    log?: Log;
  }) {
    this.local = options.local;
    this.leases = options.leases ?? null;
    this.leaseTtlSecondsMin = options.leaseTtlSecondsMin ?? 1;
    this.transport = options.transport;
    this.nodeId = options.nodeId;
    this.clock = options.clock;
    this.timeoutMs = options.timeoutMs ?? FORWARD_TIMEOUT_MS_DEFAULT;
    this.knownLeader = options.knownLeader ?? (() => 0);
    this.log = options.log ?? (() => undefined);
  }

  // A request is checked before it is forwarded: a follower answers bad input at once with the error
  // the leader would give (the leader checks again when it decodes the frame). Run locally, the local
  // store checks it.
  write(request: WriteRequest): Promise<WriteResult> {
    return this.withForwarding(
      () => this.local.write(request),
      () => {
        throwIf(validateWriteCommand((request as { command?: unknown } | null)?.command));
        return { kind: 'write', command: request.command, session: checkedSession(request) };
      },
    ) as Promise<WriteResult>;
  }

  read(request: ReadRequest): Promise<ReadResult> {
    return this.withForwarding(
      () => this.local.read(request),
      () => {
        throwIf(validateKey((request as { key?: unknown } | null)?.key));
        return { kind: 'read', key: request.key };
      },
    ) as Promise<ReadResult>;
  }

  delete(request: DeleteRequest): Promise<DeleteResult> {
    return this.withForwarding(
      () => this.local.delete(request),
      () => {
        throwIf(validateKey((request as { key?: unknown } | null)?.key));
        return { kind: 'delete', key: request.key, session: checkedSession(request) };
      },
    ) as Promise<DeleteResult>;
  }

  scan(request: ScanRequest): Promise<ScanResult> {
    return this.withForwarding(
      () => this.local.scan(request),
      () => {
        const bounds = validateScan(request);
        throwIf(bounds instanceof AspenError ? bounds : null);
        return {
          kind: 'scan',
          prefix: request.prefix ?? '',
          limit: request.limit ?? null,
          continuationToken: request.continuation_token ?? null,
        };
      },
    ) as Promise<ScanResult>;
  }

  grant(request: LeaseGrantRequest): Promise<LeaseGrantResult> {
    return this.withForwarding(
      () => this.localLeases().grant(request),
      () => ({ kind: 'lease_grant', ...checkedLeaseGrant(request, this.leaseTtlSecondsMin) }),
    ) as Promise<LeaseGrantResult>;
  }

  revoke(request: LeaseRevokeRequest): Promise<LeaseRevokeResult> {
    return this.withForwarding(
      () => this.localLeases().revoke(request),
      () => ({ kind: 'lease_revoke', ...checkedLeaseRevoke(request) }),
    ) as Promise<LeaseRevokeResult>;
  }

  // Keepalive, info and list are answered by the leader from its deadlines: forwarded like reads.
  keepAlive(request: LeaseKeepAliveRequest): Promise<LeaseKeepAliveResult> {
    return this.withForwarding(
      () => this.localLeases().keepAlive(request),
      () => ({
        kind: 'lease_keepalive',
        leaseId: checkedLeaseId((request as { lease_id?: unknown } | null)?.lease_id),
      }),
    ) as Promise<LeaseKeepAliveResult>;
  }

  info(request: LeaseInfoRequest): Promise<LeaseInfoResult> {
    return this.withForwarding(
      () => this.localLeases().info(request),
      () => ({ kind: 'lease_info', ...checkedLeaseInfo(request) }),
    ) as Promise<LeaseInfoResult>;
  }

  list(): Promise<LeaseListResult> {
    return this.withForwarding(
      () => this.localLeases().list(),
      () => ({ kind: 'lease_list' }),
    ) as Promise<LeaseListResult>;
  }

  private localLeases(): LeaseService {
    if (this.leases === null)
      throw new AspenError('NOT_FOUND', `node ${this.nodeId} was started without the lease service`);
    return this.leases;
  }

  /** `toForward` checks the request (throwing its AspenError) and says what to send the leader. */
  private async withForwarding(
    runLocally: () => Promise<unknown>,
    toForward: () => Operation,
  ): Promise<unknown> {
    // A follower that knows its leader forwards at once: asking the local node first would cost a
    // mailbox turn and a NOT_LEADER error per request (both in the followers' profiles under load).
    const leader = this.knownLeader();
    if (leader !== 0 && leader !== this.nodeId) return this.forward(leader, toForward());
    try {
      return await runLocally();
    } catch (error) {
      if (
        !(error instanceof AspenError) ||
        error.code !== 'NOT_LEADER' ||
        error.leaderId === null ||
        error.leaderId === this.nodeId
      )
        throw error;
      return this.forward(error.leaderId, toForward());
    }
  }

  /**
   * Stop forwarding: every request still waiting for the leader's answer fails now (its outcome is
   * unknown), instead of holding its HTTP request open until its timeout.
   */
  stop(): void {
    this.stopped = true;
    const error = new AspenError(
      'SHUTTING_DOWN',
      `node ${this.nodeId} is shutting down; a forwarded request may still take effect`,
      { definite: false },
    );
    for (const pending of this.pending.values()) {
      pending.cancelTimer();
      pending.reject(error);
    }
    this.pending.clear();
  }

  private forward(leaderId: NodeId, operation: Operation): Promise<unknown> {
    if (this.stopped)
      return Promise.reject(new AspenError('SHUTTING_DOWN', `node ${this.nodeId} is shutting down`));
    if (this.pending.size >= FORWARDS_PENDING_MAX) {
      return Promise.reject(
        new AspenError('OVERLOADED', `${FORWARDS_PENDING_MAX} forwarded requests are already waiting`),
      );
    }
    const requestId = this.nextRequestId;
    this.nextRequestId += 1;
    const timeoutMs =
      operation.kind === 'lease_keepalive'
        ? Math.min(this.timeoutMs, FORWARD_KEEPALIVE_TIMEOUT_MS)
        : this.timeoutMs;
    return new Promise((resolve, reject) => {
      const cancelTimer = this.clock.setTimer(timeoutMs, () => {
        if (!this.pending.delete(requestId)) return;
        reject(
          new AspenError('TIMEOUT', `the leader (node ${leaderId}) did not answer within ${timeoutMs} ms`, {
            leaderId,
            definite: false,
          }),
        );
      });
      this.pending.set(requestId, { resolve, reject, cancelTimer });
      this.transport.send({
        type: 'client_request',
        from: this.nodeId,
        to: leaderId,
        term: 0,
        requestId,
        operation,
      });
    });
  }

  /**
   * On the leader: run a forwarded request locally and answer it. Whatever happens, the follower gets
   * one answer: an invalid request its error, an unexpected failure INTERNAL (logged), a result too
   * large for a frame an error in its place. Nothing here may throw into the transport.
   */
  handleRequest(request: ClientRequest): void {
    const reply = {
      type: 'client_response',
      from: this.nodeId,
      to: request.from,
      term: 0,
      requestId: request.requestId,
    } as const;
    const fail = (error: AspenError): void => {
      this.transport.send({
        ...reply,
        result: null,
        error: {
          code: error.code,
          message: error.message,
          leaderId: error.leaderId,
          definite: error.definite,
          ...(error.current === undefined ? {} : { current: error.current }),
        },
      });
    };
    let run: Promise<unknown>;
    try {
      run = this.runLocally(request.operation);
    } catch (error) {
      run = Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    run.then(
      (result) => {
        try {
          this.transport.send({ ...reply, result, error: null });
        } catch (error) {
          if (!(error instanceof WireFormatError)) throw error;
          this.log(
            `forwarding: the answer to a ${request.operation.kind} from node ${request.from} cannot be sent: ${error.message}`,
            'error',
          );
          fail(
            new AspenError('INTERNAL', `the leader's answer cannot be sent back: ${error.message}`, {
              definite: !MUTATING_KINDS.includes(request.operation.kind),
            }),
          );
        }
      },
      (error: unknown) => {
        if (error instanceof AspenError) {
          fail(error);
          return;
        }
        escalateBrokenInvariant(error);
        this.log(
          `forwarding: a ${request.operation.kind} from node ${request.from} failed unexpectedly: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
          'error',
        );
        fail(
          new AspenError('INTERNAL', 'the leader failed the request unexpectedly (see its log)', {
            definite: false,
          }),
        );
      },
    );
  }

  private runLocally(operation: Operation): Promise<unknown> {
    switch (operation.kind) {
      case 'write':
        return this.local.write({ command: operation.command, ...sessionFields(operation.session) });
      case 'read':
        return this.local.read({ key: operation.key });
      case 'delete':
        return this.local.delete({ key: operation.key, ...sessionFields(operation.session) });
      case 'scan':
        return this.local.scan({
          prefix: operation.prefix,
          ...(operation.limit === null ? {} : { limit: operation.limit }),
          continuation_token: operation.continuationToken,
        });
      case 'invalid':
        return Promise.reject(new AspenError(operation.code, operation.message));
      default:
        return this.runLeaseLocally(operation);
    }
  }

  private runLeaseLocally(operation: Operation): Promise<unknown> {
    const leases = this.localLeases();
    switch (operation.kind) {
      case 'lease_grant':
        return leases.grant({
          ttl_seconds: operation.ttlSeconds,
          ...(operation.leaseId === 0 ? {} : { lease_id: operation.leaseId }),
          ...sessionFields(operation.session),
        });
      case 'lease_revoke':
        return leases.revoke({ lease_id: operation.leaseId, ...sessionFields(operation.session) });
      case 'lease_keepalive':
        return leases.keepAlive({ lease_id: operation.leaseId });
      case 'lease_info':
        return leases.info({
          lease_id: operation.leaseId,
          keys: operation.keys,
          ...(operation.after === null ? {} : { after: operation.after }),
        });
      case 'lease_list':
        return leases.list();
      default:
        throw new AssertionError(`not a lease operation: ${operation.kind}`);
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
    pending.reject(fromWireError(error));
  }
}

/**
 * The leader's error as the follower answers it. A code this node does not know (a newer leader) is
 * an indeterminate TIMEOUT; a COMPARE_FAILED keeps the record it found (the codec checked it is there).
 */
function fromWireError(error: NonNullable<ClientResponse['error']>): AspenError {
  const known = error.code in ERROR_STATUS ? (error.code as AspenErrorCode) : null;
  if (known === 'COMPARE_FAILED' && error.current !== undefined)
    return new AspenError(known, error.message, { definite: error.definite, current: error.current });
  const code = known === null || known === 'COMPARE_FAILED' ? 'TIMEOUT' : known;
  return new AspenError(code, error.message, { leaderId: error.leaderId, definite: error.definite });
}

function throwIf(problem: AspenError | null): void {
  if (problem !== null) throw problem;
}

/** A forwarded session back as request fields. */
function sessionFields(session: ClientSession | null): SessionFields {
  return session === null ? {} : { client_id: session.clientId, sequence: session.sequence };
}
