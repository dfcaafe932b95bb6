import type { LeaseService } from '../api/contracts.ts';
import {
  checkedLeaseGrant,
  checkedLeaseId,
  checkedLeaseInfo,
  checkedLeaseRevoke,
} from '../api/lease-validation.ts';
import type {
  LeaseGrantRequest,
  LeaseGrantResult,
  LeaseInfoRequest,
  LeaseInfoResult,
  LeaseKeepAliveRequest,
  LeaseKeepAliveResult,
  LeaseListResult,
  LeaseRevokeRequest,
  LeaseRevokeResult,
} from '../api/types.ts';
import { leaseTtlSecondsMin } from '../base/limits.ts';
import { checkedRequestTimeout } from './control-client.ts';
import { callNode } from './node-call.ts';
import type { RaftNode } from './raft-node.ts';
import type { Callback, WriteApplied } from './request-tracker.ts';
import { leaseGrantResult, leaseRevokeResult } from './write-results.ts';

export interface RaftLeaseClientOptions {
  readonly requestTimeoutMs?: number;
  /** The cluster's longest election timeout (the shortest TTL follows from it); default: the node's own. */
  readonly electionTimeoutMaxMs?: number;
}

/**
 * The lease calls (docs/api.md "Leases") on the local RaftNode, each bounded by the request
 * timeout: grant and revoke are log entries (with optional sessions, like /write); keepalive, info
 * and list are answered by the leader from its deadlines after a ReadIndex barrier.
 */
export class RaftLeaseClient implements LeaseService {
  private readonly node: RaftNode;
  private readonly requestTimeoutMs: number;
  private readonly ttlSecondsMin: number;

  constructor(node: RaftNode, options: RaftLeaseClientOptions = {}) {
    this.node = node;
    this.requestTimeoutMs = checkedRequestTimeout(options.requestTimeoutMs);
    this.ttlSecondsMin = leaseTtlSecondsMin(options.electionTimeoutMaxMs ?? node.electionTimeoutMaxMs);
  }

  /** A lease: one log entry; `lease_id` absent or 0 lets the cluster choose one. */
  async grant(request: LeaseGrantRequest): Promise<LeaseGrantResult> {
    const { leaseId, ttlSeconds, session } = checkedLeaseGrant(request, this.ttlSecondsMin);
    const applied = await this.call<WriteApplied>('lease grant', (callback) => {
      this.node.write({ LeaseGrant: { lease_id: leaseId, ttl_seconds: ttlSeconds } }, callback, session);
    });
    return leaseGrantResult(applied);
  }

  /** Revoke a lease and delete its keys, in one entry (one revision). */
  async revoke(request: LeaseRevokeRequest): Promise<LeaseRevokeResult> {
    const { leaseId, session } = checkedLeaseRevoke(request);
    const applied = await this.call<WriteApplied>('lease revoke', (callback) => {
      this.node.write({ LeaseRevoke: { lease_id: leaseId } }, callback, session);
    });
    return leaseRevokeResult(applied);
  }

  async keepAlive(request: LeaseKeepAliveRequest): Promise<LeaseKeepAliveResult> {
    const leaseId = checkedLeaseId((request as { lease_id?: unknown } | null)?.lease_id);
    return await this.call('lease keepalive', (callback) => {
      this.node.keepAlive(leaseId, callback);
    });
  }

  async info(request: LeaseInfoRequest): Promise<LeaseInfoResult> {
    const { leaseId, keys, after } = checkedLeaseInfo(request);
    return await this.call('lease info', (callback) => {
      this.node.leaseInfo(leaseId, keys ? { after } : null, callback);
    });
  }

  async list(): Promise<LeaseListResult> {
    return await this.call('lease list', (callback) => {
      this.node.leaseList(callback);
    });
  }

  private call<T>(what: string, submit: (callback: Callback<T>) => void): Promise<T> {
    return callNode(this.node, this.requestTimeoutMs, what, submit);
  }
}
