import type { ClusterController, KeyValueStore, LeaseService } from '../api/contracts.ts';
import type { Log } from '../base/log.ts';
import { AspenError, ERROR_STATUS, escalateBrokenInvariant, type AspenErrorCode } from '../api/errors.ts';
import {
  checkedLeaseGrant,
  checkedLeaseId,
  checkedLeaseInfo,
  checkedLeaseRevoke,
} from '../api/lease-validation.ts';
import { checkedSession, validateKey, validateScan, validateWriteCommand } from '../api/limits.ts';
import {
  checkedAddLearner,
  checkedChangeMembership,
  checkedLearnerId,
  checkedSnapshotTarget,
} from '../api/membership-validation.ts';
import type {
  AddLearnerRequest,
  ChangeMembershipRequest,
  ClusterState,
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
  InitRequest,
  RaftMetrics,
  ReadRequest,
  ReadResult,
  RemoveLearnerRequest,
  ScanRequest,
  ScanResult,
  SnapshotRequest,
  SnapshotResult,
  WriteRequest,
  WriteResult,
} from '../api/types.ts';
import type { ClientRequest, ClientResponse, Clock, Transport } from '../node/interfaces.ts';
import { WireFormatError } from '../network/errors.ts';
import type { NodeId } from '../raft/types.ts';
import {
  forwardTimeoutMs,
  localController,
  localLeases,
  MUTATING_KINDS,
  runForwarded,
  type LocalServices,
  type Operation,
} from './forwarded-operations.ts';

export { FORWARD_KEEPALIVE_TIMEOUT_MS } from './forwarded-operations.ts';

/** Forwarded requests waiting for the leader's answer at once; more get OVERLOADED. */
export const FORWARDS_PENDING_MAX = 10_000;
export const FORWARD_TIMEOUT_MS_DEFAULT = 5_000;

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: AspenError) => void;
  readonly cancelTimer: () => void;
}

/**
 * Lets a client talk to any node: a request that the local node refuses with NOT_LEADER is sent to
 * the leader over the cluster transport, run there against the leader's local store (never
 * forwarded again), and answered. A lost answer is a TIMEOUT, which for a write is indeterminate.
 * Membership calls and the leader's snapshot are forwarded the same way; /init is not (a node that
 * is not initialized knows no leader).
 */
export class ForwardingStore implements KeyValueStore, LeaseService, ClusterController {
  private readonly local: LocalServices;
  private readonly leaseTtlSecondsMin: number;
  private readonly transport: Transport;
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
    /** The local node's membership calls (without them, this node serves none and forwards none). */
    controller?: ClusterController;
    /** The shortest TTL of this cluster (leaseTtlSecondsMin of its election timeout): a grant is checked before it is forwarded. */
    leaseTtlSecondsMin?: number;
    transport: Transport;
    nodeId: NodeId;
    clock: Clock;
    timeoutMs?: number;
    knownLeader?: () => NodeId;
    log?: Log;
  }) {
    this.local = {
      nodeId: options.nodeId,
      store: options.local,
      leases: options.leases ?? null,
      controller: options.controller ?? null,
    };
    this.leaseTtlSecondsMin = options.leaseTtlSecondsMin ?? 1;
    this.transport = options.transport;
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
      () => this.local.store.write(request),
      () => {
        throwIf(validateWriteCommand((request as { command?: unknown } | null)?.command));
        return { kind: 'write', command: request.command, session: checkedSession(request) };
      },
    ) as Promise<WriteResult>;
  }

  read(request: ReadRequest): Promise<ReadResult> {
    return this.withForwarding(
      () => this.local.store.read(request),
      () => {
        throwIf(validateKey((request as { key?: unknown } | null)?.key));
        return { kind: 'read', key: request.key };
      },
    ) as Promise<ReadResult>;
  }

  delete(request: DeleteRequest): Promise<DeleteResult> {
    return this.withForwarding(
      () => this.local.store.delete(request),
      () => {
        throwIf(validateKey((request as { key?: unknown } | null)?.key));
        return { kind: 'delete', key: request.key, session: checkedSession(request) };
      },
    ) as Promise<DeleteResult>;
  }

  scan(request: ScanRequest): Promise<ScanResult> {
    return this.withForwarding(
      () => this.local.store.scan(request),
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
      () => localLeases(this.local).grant(request),
      () => ({ kind: 'lease_grant', ...checkedLeaseGrant(request, this.leaseTtlSecondsMin) }),
    ) as Promise<LeaseGrantResult>;
  }

  revoke(request: LeaseRevokeRequest): Promise<LeaseRevokeResult> {
    return this.withForwarding(
      () => localLeases(this.local).revoke(request),
      () => ({ kind: 'lease_revoke', ...checkedLeaseRevoke(request) }),
    ) as Promise<LeaseRevokeResult>;
  }

  // Keepalive, info and list are answered by the leader from its deadlines: forwarded like reads.
  keepAlive(request: LeaseKeepAliveRequest): Promise<LeaseKeepAliveResult> {
    return this.withForwarding(
      () => localLeases(this.local).keepAlive(request),
      () => ({
        kind: 'lease_keepalive',
        leaseId: checkedLeaseId((request as { lease_id?: unknown } | null)?.lease_id),
      }),
    ) as Promise<LeaseKeepAliveResult>;
  }

  info(request: LeaseInfoRequest): Promise<LeaseInfoResult> {
    return this.withForwarding(
      () => localLeases(this.local).info(request),
      () => ({ kind: 'lease_info', ...checkedLeaseInfo(request) }),
    ) as Promise<LeaseInfoResult>;
  }

  list(): Promise<LeaseListResult> {
    return this.withForwarding(
      () => localLeases(this.local).list(),
      () => ({ kind: 'lease_list' }),
    ) as Promise<LeaseListResult>;
  }

  // Membership calls are checked here as the leader checks them, and forwarded like writes (their
  // forward timeout is as long as they may run on the leader: forwardTimeoutMs).
  addLearner(request: AddLearnerRequest): Promise<ClusterState> {
    return this.withForwarding(
      () => localController(this.local).addLearner(request),
      () => ({ kind: 'add_learner', learner: checkedAddLearner(request) }),
    ) as Promise<ClusterState>;
  }

  changeMembership(request: ChangeMembershipRequest): Promise<ClusterState> {
    return this.withForwarding(
      () => localController(this.local).changeMembership(request),
      () => ({ kind: 'change_membership', ...checkedChangeMembership(request) }),
    ) as Promise<ClusterState>;
  }

  removeLearner(request: RemoveLearnerRequest): Promise<ClusterState> {
    return this.withForwarding(
      () => localController(this.local).removeLearner(request),
      () => ({ kind: 'remove_learner', learnerId: checkedLearnerId(request) }),
    ) as Promise<ClusterState>;
  }

  /** "leader" (the default) is forwarded to the leader; "local" snapshots this node. */
  async triggerSnapshot(request: SnapshotRequest = {}): Promise<SnapshotResult> {
    const controller = localController(this.local);
    if (checkedSnapshotTarget(request) === 'local') return controller.triggerSnapshot({ node: 'local' });
    return (await this.withForwarding(
      () => controller.triggerSnapshot({ node: 'leader' }),
      () => ({ kind: 'trigger_snapshot' }),
    )) as SnapshotResult;
  }

  // Never forwarded: /init starts a cluster on the node asked; state and metrics are this node's.
  init(request: InitRequest): Promise<ClusterState> {
    return localController(this.local).init(request);
  }

  currentState(): Promise<ClusterState> {
    return localController(this.local).currentState();
  }

  getMetrics(): Promise<RaftMetrics> {
    return localController(this.local).getMetrics();
  }

  /** `toForward` checks the request (throwing its AspenError) and says what to send the leader. */
  private async withForwarding(
    runLocally: () => Promise<unknown>,
    toForward: () => Operation,
  ): Promise<unknown> {
    // A follower that knows its leader forwards at once: asking the local node first would cost a
    // mailbox turn and a NOT_LEADER error per request (both in the followers' profiles under load).
    const leader = this.knownLeader();
    if (leader !== 0 && leader !== this.local.nodeId) return this.forward(leader, toForward());
    try {
      return await runLocally();
    } catch (error) {
      if (
        !(error instanceof AspenError) ||
        error.code !== 'NOT_LEADER' ||
        error.leaderId === null ||
        error.leaderId === this.local.nodeId
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
      `node ${this.local.nodeId} is shutting down; a forwarded request may still take effect`,
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
      return Promise.reject(new AspenError('SHUTTING_DOWN', `node ${this.local.nodeId} is shutting down`));
    if (this.pending.size >= FORWARDS_PENDING_MAX) {
      return Promise.reject(
        new AspenError('OVERLOADED', `${FORWARDS_PENDING_MAX} forwarded requests are already waiting`),
      );
    }
    const requestId = this.nextRequestId;
    this.nextRequestId += 1;
    const timeoutMs = forwardTimeoutMs(operation.kind, this.timeoutMs);
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
        from: this.local.nodeId,
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
      from: this.local.nodeId,
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
      run = runForwarded(this.local, request.operation);
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
