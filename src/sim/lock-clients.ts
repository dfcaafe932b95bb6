import { AspenError } from '../api/errors.ts';
import { lockKey } from '../api/lock-validation.ts';
import { RaftControlClient } from '../node/control-client.ts';
import { assert } from '../base/assert.ts';
import { NodeElectionService } from '../node/election-service.ts';
import { NodeLockService } from '../node/lock-service.ts';
import type { RaftNode } from '../node/raft-node.ts';
import type { WatchHub } from '../node/watch-hub.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { NodeId } from '../raft/types.ts';
import type { EventQueue } from './event-queue.ts';
import { KEEPALIVES_PER_TTL, LEASE_RETRY_MS, sendKeepAlive, type LeaseDirectory } from './lease-clients.ts';
import type { LeaseChecker } from './lease-checker.ts';
import { FENCED_KEY_PREFIX, type LockChecker } from './lock-checker.ts';

export interface LockClientSettings {
  /** Clients that each hold one lease and take, use and release locks on it (0: no lock traffic). */
  readonly lockClientCount: number;
  /** Names the clients contend for (`lk0`, `lk1`, …). */
  readonly lockNameCount: number;
  /** A lock call's `timeout_ms`. */
  readonly lockTimeoutMs: number;
  /** Each request of a lock call (a write, a delete) waits at most this long for its node. */
  readonly lockRequestTimeoutMs: number;
  /** A holder waits 0 to this long between the grant and its fenced write. */
  readonly lockHoldMsMax: number;
  /** Probability that a holder stalls (stops renewing its lease) past its TTL before its fenced write. */
  readonly lockStallProbability: number;
  /** Elections the same clients campaign in (`el0`, …; 0: none): campaign, proclaim, resign. */
  readonly electionNameCount: number;
  /** The share of cycles that campaign rather than lock (when there is an election). */
  readonly campaignFraction: number;
  /** Observers that follow each election's leader (`/election/observe`) from random nodes. */
  readonly observerCount: number;
}

/** The lock names of a run. */
export function lockNames(settings: LockClientSettings): string[] {
  return Array.from({ length: settings.lockNameCount }, (_, index) => `lk${index}`);
}

/** The election names of a run. */
export function electionNames(settings: LockClientSettings): string[] {
  return Array.from({ length: settings.electionNameCount }, (_, index) => `el${index}`);
}

/** The value a campaign starts with, and a leader's proclaimed value (the checker tells them apart). */
export function campaignValue(client: number): string {
  return `c:${client}`;
}
export function proclaimedValue(client: number, token: number): string {
  return `${PROCLAIMED_VALUE_PREFIX}${client}:${token}`;
}
export const PROCLAIMED_VALUE_PREFIX = 'p:';

/** Lock calls one client makes in a run, at most. */
export const LOCK_CALLS_PER_CLIENT_MAX = 500;
/** A client's pause between one lock cycle and the next, at most. */
export const LOCK_THINK_MS_MAX = 30;
/** A stalled holder sleeps this many TTLs (its lease expires meanwhile, unless it is renewed anyway). */
export const LOCK_STALL_TTLS = 1.5;
/** Probability that a candidate also proclaims on its key while its campaign waits. */
export const PREMATURE_PROCLAIM_PROBABILITY = 0.3;

export interface LockDirectory extends LeaseDirectory {
  hub(id: NodeId): WatchHub | undefined;
}

interface LockClient {
  readonly id: number;
  preferredNode: NodeId;
  /** The lease held now (0: none; a grant is on its way or due). */
  leaseId: number;
  /** Bumped for every new lease: renewals of an older lease stop. */
  generation: number;
  /** A stalled client sends no keepalives (a paused process). */
  stalled: boolean;
  lockCalls: number;
}

/**
 * Clients that take a lock on a random live node's NodeLockService (its RaftControlClient, its watch
 * hub, its clock: virtual time throughout), write `fenced/<name>` guarded by the fencing token, and
 * release the lock, each on a lease renewed like the lease clients' — through every fault. A call
 * that never answers (its node crashed) times out on the node's clock: in doubt, and the next cycle
 * goes on. Some cycles campaign in an election instead (NodeElectionService): once elected, the
 * client proclaims a value naming its term's token, then resigns. Every grant and election goes to
 * the LockChecker; the history decides the rest.
 *
 * The calls are promises: the simulation drains microtasks after each event while `busy`.
 */
export class SimLockClients {
  private readonly events: EventQueue;
  private readonly prng: SeededPrng;
  private readonly settings: LockClientSettings;
  private readonly ttlSeconds: number;
  private readonly directory: LockDirectory;
  private readonly checker: LockChecker;
  private readonly leaseChecker: LeaseChecker;
  private readonly names: readonly string[];
  private readonly electionNames: readonly string[];
  private running = false;
  /** Lock cycles in flight (promises the simulation must let run). */
  private inFlight = 0;
  /** An error that is not an AspenError (a crash of the code under test), kept for the simulation. */
  failure: Error | null = null;
  /** Send time of the last lease grant or keepalive of any lock client. */
  lastRequestSentMs = 0;
  lockCalls = 0;
  campaigns = 0;
  /** Lock calls and campaigns that timed out waiting. */
  lockTimeouts = 0;

  constructor(
    events: EventQueue,
    prng: SeededPrng,
    settings: LockClientSettings,
    ttlSeconds: number,
    directory: LockDirectory,
    checkers: { locks: LockChecker; leases: LeaseChecker },
  ) {
    this.events = events;
    this.prng = prng;
    this.settings = settings;
    this.ttlSeconds = ttlSeconds;
    this.directory = directory;
    this.checker = checkers.locks;
    this.leaseChecker = checkers.leases;
    this.names = lockNames(settings);
    this.electionNames = electionNames(settings);
  }

  get busy(): boolean {
    return this.inFlight > 0;
  }

  start(): void {
    this.running = true;
    for (let id = 1; id <= this.settings.lockClientCount; id += 1) {
      const client: LockClient = {
        id,
        preferredNode: 0,
        leaseId: 0,
        generation: 0,
        stalled: false,
        lockCalls: 0,
      };
      this.later(this.prng.nextIntInclusive(0, LEASE_RETRY_MS), () => {
        this.grant(client);
      });
      this.later(this.prng.nextIntInclusive(LEASE_RETRY_MS, 2 * LEASE_RETRY_MS), () => {
        this.runCycle(client);
      });
    }
  }

  pause(): void {
    this.running = false;
  }

  private get ttlMs(): number {
    return this.ttlSeconds * 1000;
  }

  private later(delayMs: number, action: () => void): void {
    this.events.after(delayMs, () => {
      if (this.running) action();
    });
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => {
      this.events.after(delayMs, resolve);
    });
  }

  // ---------------------------------------------------------------- the lease

  private grant(client: LockClient): void {
    const node = this.pickNode(client);
    if (node === undefined) {
      this.later(LEASE_RETRY_MS, () => {
        this.grant(client);
      });
      return;
    }
    const sentMs = this.events.nowMs;
    this.lastRequestSentMs = sentMs;
    node.write({ LeaseGrant: { lease_id: 0, ttl_seconds: this.ttlSeconds } }, (outcome) => {
      const lease = outcome.ok ? outcome.value.outcome.lease : undefined;
      if (lease === undefined) {
        if (!outcome.ok) client.preferredNode = outcome.error.leaderId ?? 0;
        this.later(LEASE_RETRY_MS, () => {
          this.grant(client);
        });
        return;
      }
      this.leaseChecker.onGrantAcked(lease.id, this.ttlSeconds, sentMs);
      client.generation += 1;
      client.leaseId = lease.id;
      this.scheduleRenewal(client);
    });
  }

  private scheduleRenewal(client: LockClient): void {
    const periodMs = this.ttlMs / KEEPALIVES_PER_TTL;
    const jitterMs = Math.floor(periodMs / 5);
    const generation = client.generation;
    this.later(Math.round(periodMs) + this.prng.nextIntInclusive(-jitterMs, jitterMs), () => {
      if (client.generation !== generation) return;
      if (!client.stalled) this.keepAlive(client);
      this.scheduleRenewal(client);
    });
  }

  private keepAlive(client: LockClient): void {
    const node = this.pickNode(client);
    if (node === undefined) return;
    this.lastRequestSentMs = this.events.nowMs;
    sendKeepAlive(node, client, this.events.nowMs, this.leaseChecker, () => {
      this.leaseLost(client);
    });
  }

  /** The lease ended (expired, or its revoke is in flight): a new one. */
  private leaseLost(client: LockClient): void {
    client.generation += 1;
    client.leaseId = 0;
    this.later(LEASE_RETRY_MS, () => {
      this.grant(client);
    });
  }

  // ---------------------------------------------------------------- lock, fenced write, unlock

  private runCycle(client: LockClient): void {
    if (client.lockCalls >= LOCK_CALLS_PER_CLIENT_MAX) return;
    this.track(this.cycle(client), client, () => {
      this.later(this.prng.nextIntInclusive(1, LOCK_THINK_MS_MAX), () => {
        this.runCycle(client);
      });
    });
  }

  /**
   * Count a call in flight (the simulation lets its continuations run while any is), keep what it
   * failed with, then run `after` (still counted in flight).
   */
  private track(call: Promise<unknown>, client: LockClient, after: () => void = () => undefined): void {
    this.inFlight += 1;
    void call
      .catch((error: unknown) => {
        this.onCycleError(client, error);
      })
      .finally(() => {
        this.inFlight -= 1;
        after();
      });
  }

  private async cycle(client: LockClient): Promise<void> {
    const nodeId = this.pickNodeId(client);
    const node = nodeId === undefined ? undefined : this.directory.liveNode(nodeId);
    const hub = nodeId === undefined ? undefined : this.directory.hub(nodeId);
    if (node === undefined || hub === undefined || client.leaseId === 0) return;
    const store = new RaftControlClient(node, { requestTimeoutMs: this.settings.lockRequestTimeoutMs });
    const services = { store, watch: hub, clock: node.clock };
    client.lockCalls += 1;
    if (this.electionNames.length > 0 && this.prng.chance(this.settings.campaignFraction)) {
      this.campaigns += 1;
      await this.campaignCycle(client, new NodeElectionService(services), this.pick(this.electionNames));
      return;
    }
    this.lockCalls += 1;
    await this.lockCycle(client, new NodeLockService(services), store, this.pick(this.names));
  }

  private async lockCycle(
    client: LockClient,
    locks: NodeLockService,
    store: RaftControlClient,
    name: string,
  ): Promise<void> {
    const leaseId = client.leaseId;
    const grant = await locks.lock({ name, lease_id: leaseId, timeout_ms: this.settings.lockTimeoutMs });
    this.checker.onGranted(client.id, name, grant.key, grant.fencing_token, this.events.nowMs);
    await this.hold(client);
    const token = grant.fencing_token;
    await store.write({
      command: {
        Transaction: {
          compare: [{ key: grant.key, target: 'create_index', op: 'equal', value: token }],
          success: [{ Set: { key: `${FENCED_KEY_PREFIX}${name}`, value: `${client.id}:${token}` } }],
          failure: [],
        },
      },
    });
    await locks.unlock({ key: grant.key });
  }

  /**
   * Campaign; once elected, hold, proclaim a value naming the term's token, and resign. Some
   * candidates also proclaim on their key while they wait (a client that acts before it is elected):
   * the node must refuse that (NOT_ELECTED) unless the key leads by then.
   */
  private async campaignCycle(
    client: LockClient,
    elections: NodeElectionService,
    name: string,
  ): Promise<void> {
    if (this.prng.chance(PREMATURE_PROCLAIM_PROBABILITY)) {
      const key = lockKey(name, client.leaseId);
      this.later(this.prng.nextIntInclusive(0, this.settings.lockTimeoutMs), () => {
        this.track(elections.proclaim({ key, value: proclaimedValue(client.id, 0) }), client);
      });
    }
    const elected = await elections.campaign({
      name,
      lease_id: client.leaseId,
      value: campaignValue(client.id),
      timeout_ms: this.settings.lockTimeoutMs,
    });
    this.checker.onGranted(client.id, name, elected.key, elected.revision, this.events.nowMs);
    await this.hold(client);
    await elections.proclaim({ key: elected.key, value: proclaimedValue(client.id, elected.revision) });
    await elections.resign({ key: elected.key });
  }

  /** A holder's use of what it was granted: a short pause, or a stall past its lease's TTL. */
  private async hold(client: LockClient): Promise<void> {
    if (this.prng.chance(this.settings.lockStallProbability)) {
      client.stalled = true;
      await this.sleep(Math.round(this.ttlMs * LOCK_STALL_TTLS));
      client.stalled = false;
    } else await this.sleep(this.prng.nextIntInclusive(0, this.settings.lockHoldMsMax));
  }

  private pick(names: readonly string[]): string {
    const name = names[this.prng.nextIntInclusive(0, names.length - 1)];
    assert(name !== undefined, 'a run has at least one name of each kind it picks from');
    return name;
  }

  private onCycleError(client: LockClient, error: unknown): void {
    if (!(error instanceof AspenError)) {
      this.failure ??= error instanceof Error ? error : new Error(String(error));
      return;
    }
    if (error.leaderId !== null) client.preferredNode = error.leaderId;
    if (error.code === 'LOCK_TIMEOUT' || error.code === 'CAMPAIGN_TIMEOUT') this.lockTimeouts += 1;
  }

  private pickNodeId(client: LockClient): NodeId | undefined {
    const preferred = client.preferredNode === 0 ? undefined : this.directory.liveNode(client.preferredNode);
    if (preferred !== undefined && !this.prng.chance(0.1)) return client.preferredNode;
    const nodeId = this.directory.randomLiveNodeId();
    client.preferredNode = nodeId ?? 0;
    return nodeId;
  }

  private pickNode(client: LockClient): RaftNode | undefined {
    const nodeId = this.pickNodeId(client);
    return nodeId === undefined ? undefined : this.directory.liveNode(nodeId);
  }
}
