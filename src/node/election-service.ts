import type {
  ElectionService,
  ElectionSink,
  KeyValueStore,
  WatchService,
  WatchSink,
  WatchSubscription,
} from '../api/contracts.ts';
import { checkedCampaign, checkedProclaim } from '../api/election-validation.ts';
import { AspenError } from '../api/errors.ts';
import { checkedLockName, checkedUnlockKey, lockKeyLease } from '../api/lock-validation.ts';
import type {
  CampaignRequest,
  CampaignResult,
  KeyValue,
  LeaderRequest,
  LeaderResult,
  ProclaimRequest,
  ResignRequest,
  ResignResult,
  WatchEvent,
} from '../api/types.ts';
import { assert } from '../base/assert.ts';
import { LOCK_KEY_SUFFIX_CHARS, LOCK_WAITERS_MAX } from '../base/limits.ts';
import type { Clock } from './interfaces.ts';
import { firstOf, OwnerQueue } from './owner-queue.ts';

export interface NodeElectionServiceOptions {
  /** Linearizable and leader-bound (a follower's ForwardingStore forwards each write). */
  readonly store: KeyValueStore;
  /** This node's watch hub: candidates wait and observers watch here. */
  readonly watch: WatchService;
  readonly clock: Clock;
}

/**
 * Elections on any node (docs/api.md "Elections"): a campaign is a lock (OwnerQueue) whose key holds
 * the candidate's value; the leader is the key with the lowest create revision under `<name>/`, and
 * that revision is its term's fencing token.
 */
export class NodeElectionService implements ElectionService {
  private readonly store: KeyValueStore;
  private readonly watch: WatchService;
  private readonly clock: Clock;
  private readonly queue: OwnerQueue;

  constructor(options: NodeElectionServiceOptions) {
    this.store = options.store;
    this.watch = options.watch;
    this.clock = options.clock;
    this.queue = new OwnerQueue(options);
  }

  /** A campaign of the same lease again reuses its key and proclaims the new value on it. */
  async campaign(request: CampaignRequest, signal?: AbortSignal): Promise<CampaignResult> {
    const { name, leaseId, timeoutMs, value } = checkedCampaign(request);
    const deadlineMs = this.clock.nowMs() + timeoutMs;
    const held = await this.queue.enter(name, leaseId, value);
    const timeout = (why: string): AspenError =>
      new AspenError(
        'CAMPAIGN_TIMEOUT',
        `election ${name.slice(0, 64)}: ${why} waiting to lead (a key this call created was removed)`,
      );
    try {
      if (!held.created) await this.setValue(held.key, held.revision, leaseId, value);
      await this.queue.waitUntilFirst(name, held, deadlineMs, timeout, signal);
    } catch (error) {
      throw await this.queue.leave(held, error, 'CAMPAIGN_TIMEOUT');
    }
    return { name, key: held.key, revision: held.revision, value };
  }

  async proclaim(request: ProclaimRequest): Promise<CampaignResult> {
    const { key, value } = checkedProclaim(request);
    const name = nameOf(key);
    const { entries } = await this.queue.scan(name);
    const own = entries.find((entry) => entry.key === key);
    if (own === undefined) throw notFound(key);
    const leader = firstOf(entries);
    if (leader?.key !== key)
      throw new AspenError(
        'NOT_ELECTED',
        `${key.slice(0, 80)} is a candidate, not the leader of ${name.slice(0, 64)}`,
      );
    // Still the leader while the key exists with this create revision: a later key is created after it.
    await this.setValue(key, own.create_index, own.lease_id, value);
    return { name, key, revision: own.create_index, value };
  }

  async resign(request: ResignRequest): Promise<ResignResult> {
    const key = checkedUnlockKey(request);
    if (!(await this.store.delete({ key })).deleted) throw notFound(key);
    return { resigned: true };
  }

  async leader(request: LeaderRequest): Promise<LeaderResult> {
    const name = checkedLockName(request.name);
    const first = firstOf((await this.queue.scan(name)).entries);
    if (first === null) throw new AspenError('NOT_FOUND', `no leader of ${name.slice(0, 64)}`);
    return leaderOf(name, first);
  }

  /**
   * The leader as a linearizable scan saw it, then a prefix watch of `<name>/` from just after that
   * scan: every change of the first key or of its value is passed on.
   */
  async observe(request: LeaderRequest, sink: ElectionSink): Promise<WatchSubscription> {
    const name = checkedLockName(request.name);
    const scan = await this.queue.scan(name);
    const tracker = new LeaderTracker(name, scan.entries);
    let subscription: WatchSubscription | null = null;
    const state = { ended: false };
    const start = (): void => {
      if (!tracker.started && !state.ended) sink.leader(scan.revision, tracker.start());
    };
    const watchSink: WatchSink = {
      events: (revision, events) => {
        start();
        const change = tracker.apply(events);
        if (change === 'overflow') {
          state.ended = true;
          subscription?.close();
          sink.canceled(`more than ${LOCK_WAITERS_MAX} candidates`, revision);
        } else if (change === 'changed') sink.leader(revision, tracker.leader());
      },
      progress: (revision) => {
        start();
        sink.progress(revision);
      },
      canceled: (reason, revision) => {
        state.ended = true;
        sink.canceled(reason, revision);
      },
      ready: () => !state.ended && sink.ready(),
    };
    subscription = this.watch.open({ prefix: `${name}/`, start_revision: scan.revision + 1 }, watchSink);
    start();
    if (state.ended) subscription.close();
    return subscription;
  }

  /** Set the key's value on its lease, if it still has `revision` as its create revision (else NOT_FOUND). */
  private async setValue(key: string, revision: number, leaseId: number, value: string): Promise<void> {
    const result = await this.store.write({
      command: {
        Transaction: {
          compare: [{ key, target: 'create_index', op: 'equal', value: revision }],
          success: [{ Set: { key, value, lease_id: leaseId } }],
          failure: [],
        },
      },
    });
    if (result.succeeded !== true) throw notFound(key);
  }
}

function nameOf(key: string): string {
  const name = key.slice(0, key.length - LOCK_KEY_SUFFIX_CHARS);
  assert(lockKeyLease(key, name) !== null, 'a checked campaign key');
  return name;
}

function notFound(key: string): AspenError {
  return new AspenError(
    'NOT_FOUND',
    `no such campaign key (resigned, or its lease expired): ${key.slice(0, 80)}`,
  );
}

function leaderOf(
  name: string,
  entry: Pick<KeyValue, 'key' | 'value' | 'create_index' | 'lease_id'>,
): LeaderResult {
  return { name, key: entry.key, value: entry.value, revision: entry.create_index, lease_id: entry.lease_id };
}

type Candidate = Pick<KeyValue, 'key' | 'value' | 'create_index' | 'lease_id'>;

/** The candidates of one election as a watch sees them (at most LOCK_WAITERS_MAX), and its leader. */
class LeaderTracker {
  private readonly name: string;
  private readonly candidates = new Map<string, Candidate>();
  private last: Candidate | null = null;
  started = false;

  constructor(name: string, entries: readonly KeyValue[]) {
    assert(entries.length < LOCK_WAITERS_MAX, 'a scan holds fewer than LOCK_WAITERS_MAX keys');
    this.name = name;
    for (const entry of entries) this.candidates.set(entry.key, entry);
  }

  /** The leader at the start (the scan's). */
  start(): LeaderResult | null {
    this.started = true;
    this.last = this.first();
    return this.leader();
  }

  leader(): LeaderResult | null {
    return this.last === null ? null : leaderOf(this.name, this.last);
  }

  /** One revision's events: whether the leader or its value changed (overflow: too many candidates). */
  apply(events: readonly WatchEvent[]): 'changed' | 'same' | 'overflow' {
    for (const event of events) {
      if (lockKeyLease(event.key, this.name) === null) continue; // not a campaign key
      if (event.type === 'delete') this.candidates.delete(event.key);
      else if (!this.candidates.has(event.key) && this.candidates.size >= LOCK_WAITERS_MAX) return 'overflow';
      else {
        const { key, value, create_index, lease_id } = event;
        this.candidates.set(key, { key, value, create_index, lease_id });
      }
    }
    const first = this.first();
    const before = this.last;
    this.last = first;
    const same =
      first === before ||
      (first !== null &&
        before !== null &&
        first.key === before.key &&
        first.create_index === before.create_index &&
        first.value === before.value);
    return same ? 'same' : 'changed';
  }

  private first(): Candidate | null {
    return firstOf(this.candidates.values());
  }
}
