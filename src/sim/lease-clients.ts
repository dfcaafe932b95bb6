import type { AspenError } from '../api/errors.ts';
import type { RaftNode } from '../node/raft-node.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';
import type { LeaseChecker } from './lease-checker.ts';

export interface LeaseClientSettings {
  /** Clients that each hold one lease at a time (0: no lease traffic). */
  readonly leaseClientCount: number;
  readonly leaseTtlSeconds: number;
  /** Keepalives a client sends for one lease at most before it lets the lease lapse or revokes it. */
  readonly leaseRenewalsMax: number;
  /** Probability that a client revokes its lease instead of letting it lapse. */
  readonly leaseRevokeProbability: number;
}

/** Keys a client attaches to each lease it holds, at most. */
export const LEASE_KEYS_PER_CLIENT_MAX = 3;
/** Leases one client grants in a run, at most. */
export const LEASES_PER_CLIENT_MAX = 200;
/** Pause before a client tries again after a failed grant or an unreachable node. */
export const LEASE_RETRY_MS = 50;
/** Keepalives per TTL: a client renews every TTL / this (jittered by ±20 %). */
export const KEEPALIVES_PER_TTL = 3;

/** The prefix of every key the lease clients write (the KV workload's keys never start with it). */
export const LEASE_KEY_PREFIX = 'lease-';

export interface LeaseDirectory {
  liveNode(id: NodeId): RaftNode | undefined;
  randomLiveNodeId(): NodeId | undefined;
}

interface LeaseClient {
  readonly id: number;
  preferredNode: NodeId;
  leasesGranted: number;
  /** The lease held now (0: none). */
  leaseId: number;
  renewalsLeft: number;
  /** Bumped for every new lease: answers about an older lease are only reported to the checker. */
  generation: number;
}

/**
 * Clients that grant leases, attach keys to them, renew them through leader changes, crashes and
 * partitions, and then let them lapse or revoke them. Every acknowledgement goes to the LeaseChecker
 * (with the time its request was sent), which holds the cluster to its promises.
 */
export class SimLeaseClients {
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly settings: LeaseClientSettings;
  private readonly directory: LeaseDirectory;
  private readonly checker: LeaseChecker;
  private readonly clients: LeaseClient[] = [];
  private running = false;
  /** Send time of the last grant or keepalive of any client (the healthy-cluster expiry bound starts after it). */
  lastRequestSentMs = 0;
  grants = 0;
  leasesLost = 0;

  constructor(
    events: EventQueue,
    prng: SeededPrng,
    settings: LeaseClientSettings,
    directory: LeaseDirectory,
    checker: LeaseChecker,
  ) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
    this.directory = directory;
    this.checker = checker;
  }

  start(): void {
    this.running = true;
    for (let id = 1; id <= this.settings.leaseClientCount; id += 1) {
      const client: LeaseClient = {
        id,
        preferredNode: 0,
        leasesGranted: 0,
        leaseId: 0,
        renewalsLeft: 0,
        generation: 0,
      };
      this.clients.push(client);
      this.later(this.prng.nextIntInclusive(0, LEASE_RETRY_MS), () => {
        this.grant(client);
      });
    }
  }

  pause(): void {
    this.running = false;
  }

  private get ttlMs(): number {
    return this.settings.leaseTtlSeconds * 1000;
  }

  private later(delayMs: number, action: () => void): void {
    this.events.after(delayMs, () => {
      if (this.running) action();
    });
  }

  private grant(client: LeaseClient): void {
    if (client.leasesGranted >= LEASES_PER_CLIENT_MAX) return;
    const node = this.pickNode(client);
    if (node === undefined) {
      this.later(LEASE_RETRY_MS, () => {
        this.grant(client);
      });
      return;
    }
    const ttlSeconds = this.settings.leaseTtlSeconds;
    const sentMs = this.events.nowMs;
    this.lastRequestSentMs = sentMs;
    node.write({ LeaseGrant: { lease_id: 0, ttl_seconds: ttlSeconds } }, (outcome) => {
      const lease = outcome.ok ? outcome.value.outcome.lease : undefined;
      if (lease === undefined) {
        if (!outcome.ok) followHint(client, outcome.error);
        this.later(LEASE_RETRY_MS, () => {
          this.grant(client);
        });
        return;
      }
      this.grants += 1;
      this.checker.onGrantAcked(lease.id, ttlSeconds, sentMs);
      client.leasesGranted += 1;
      client.generation += 1;
      client.leaseId = lease.id;
      client.renewalsLeft = this.prng.nextIntInclusive(0, this.settings.leaseRenewalsMax);
      this.attachKeys(client, node);
      this.scheduleRenewal(client);
    });
  }

  private attachKeys(client: LeaseClient, node: RaftNode): void {
    const count = this.prng.nextIntInclusive(1, LEASE_KEYS_PER_CLIENT_MAX);
    for (let n = 0; n < count; n += 1) {
      const key = `${LEASE_KEY_PREFIX}c${client.id}-${n}`;
      const value = `l${client.leaseId}`;
      node.write({ Set: { key, value, lease_id: client.leaseId } }, () => undefined);
    }
  }

  private scheduleRenewal(client: LeaseClient): void {
    const periodMs = this.ttlMs / KEEPALIVES_PER_TTL;
    const jitterMs = Math.floor(periodMs / 5);
    const generation = client.generation;
    this.later(Math.round(periodMs) + this.prng.nextIntInclusive(-jitterMs, jitterMs), () => {
      if (client.generation !== generation) return;
      if (client.renewalsLeft > 0) {
        client.renewalsLeft -= 1;
        this.keepAlive(client);
        this.scheduleRenewal(client);
      } else this.release(client);
    });
  }

  private keepAlive(client: LeaseClient): void {
    const node = this.pickNode(client);
    if (node === undefined) return;
    this.lastRequestSentMs = this.events.nowMs;
    sendKeepAlive(node, client, this.events.nowMs, this.checker, () => {
      this.leasesLost += 1; // expired (or its revoke is in flight): a new lease
      client.generation += 1;
      this.later(LEASE_RETRY_MS, () => {
        this.grant(client);
      });
    });
  }

  /** Done with this lease: revoke it, or let it lapse; then, after a while, a new one. */
  private release(client: LeaseClient): void {
    const leaseId = client.leaseId;
    client.generation += 1;
    const node = this.pickNode(client);
    if (node !== undefined && this.prng.chance(this.settings.leaseRevokeProbability)) {
      node.write({ LeaseRevoke: { lease_id: leaseId } }, (outcome) => {
        if (outcome.ok && outcome.value.outcome.revoked !== undefined) this.checker.onRevokeAcked(leaseId);
      });
    }
    this.later(this.prng.nextIntInclusive(LEASE_RETRY_MS, this.ttlMs), () => {
      this.grant(client);
    });
  }

  private pickNode(client: LeaseClient): RaftNode | undefined {
    const preferred = client.preferredNode === 0 ? undefined : this.directory.liveNode(client.preferredNode);
    if (preferred !== undefined && !this.prng.chance(0.1)) return preferred;
    const nodeId = this.directory.randomLiveNodeId();
    if (nodeId === undefined) return undefined;
    client.preferredNode = nodeId;
    return this.directory.liveNode(nodeId);
  }
}

/** A client's lease as a keepalive sees it: answers about an older lease only go to the checker. */
export interface RenewingClient {
  preferredNode: NodeId;
  readonly leaseId: number;
  readonly generation: number;
}

/**
 * A keepalive of the client's lease on `node`, sent at `sentMs`: an acknowledgement goes to the
 * checker, a refusal moves the client to the leader hint, and `lost` runs when the lease is gone
 * (LEASE_NOT_FOUND: expired, or its revoke in flight) while it is still the client's lease.
 */
export function sendKeepAlive(
  node: RaftNode,
  client: RenewingClient,
  sentMs: number,
  checker: LeaseChecker,
  lost: () => void,
): void {
  const leaseId = client.leaseId;
  const generation = client.generation;
  node.keepAlive(leaseId, (outcome) => {
    if (outcome.ok) {
      checker.onKeepAliveAcked(leaseId, sentMs);
      return;
    }
    followHint(client, outcome.error);
    if (outcome.error.code === 'LEASE_NOT_FOUND' && client.generation === generation) lost();
  });
}

function followHint(client: { preferredNode: NodeId }, error: AspenError): void {
  client.preferredNode = error.leaderId ?? 0;
}
