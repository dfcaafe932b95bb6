import type { IncomingMessage } from 'node:http';
import type { CampaignResult, LeaderResult } from '../api/types.ts';
import { WATCH_PROGRESS_INTERVAL_MS_DEFAULT } from '../base/limits.ts';
import { KvError } from './errors.ts';
import type { LeaseCaller } from './lease.ts';
import { checkName, type Held, type LockApi, type LockOptions } from './lock.ts';
import { assert, backoff, isAborted, PREFER_LEADER, type Call } from './retry.ts';
import {
  classify,
  connect,
  Rotation,
  sseMessages,
  streamSignal,
  WATCH_HEALTHY_CONNECTION_MS,
  WATCH_SILENT_INTERVALS_MAX,
  WATCH_STREAMS_MAX,
  type SseMessage,
  type WatchOptions,
  type WatchTarget,
} from './watch.ts';

/**
 * Without a byte for this long an observation's stream is taken as dead and reopened: the node's
 * watch under it sends a progress every WATCH_PROGRESS_INTERVAL_MS_DEFAULT while nothing changes.
 */
export const OBSERVE_SILENT_MS = WATCH_SILENT_INTERVALS_MAX * WATCH_PROGRESS_INTERVAL_MS_DEFAULT;

/** As for a lock: the lease's TTL, how long to wait to be elected, a signal that abandons the wait. */
export type CampaignOptions = LockOptions;

/** Leadership won by `kv.campaign`: its key, term (`revision`), value, `lost`, `proclaim`, `resign`. */
export interface Leadership {
  readonly name: string;
  readonly key: string;
  /** The key's create revision: the term's fencing token (compare it as create_index). */
  readonly revision: number;
  readonly leaseId: number;
  /** The value last proclaimed (at first the one campaigned with). */
  readonly value: string;
  /** Aborted (with a KvError reason) when the lease keeper reports the lease lost; never by resign(). */
  readonly lost: AbortSignal;
  /** Set the leader's value; NOT_FOUND (resigned, lease ended) or NOT_ELECTED reject it. */
  proclaim(value: string): Promise<void>;
  /** Resign (the next candidate leads), stop the keeper, revoke the lease. */
  resign(): Promise<void>;
}

/** One step of an observation: the leader (null: none) as of the state at `revision`. */
export interface LeaderChange {
  readonly revision: number;
  readonly leader: LeaderResult | null;
}

export type ObserveOptions = Pick<WatchOptions, 'signal' | 'retry'>;

/**
 * `kv.campaign`, `kv.electionLeader`: POST /election/campaign, /proclaim, /resign and GET
 * /election/leader (docs/api.md "Elections") on a kept lease, exactly as `kv.lock` (lock.ts): a
 * campaign is retried only with the same lease, which the server finds again.
 */
export class ElectionApi {
  private readonly caller: LeaseCaller;
  private readonly locks: LockApi;

  constructor(caller: LeaseCaller, locks: LockApi) {
    this.caller = caller;
    this.locks = locks;
  }

  async campaign(name: string, value: string, options: CampaignOptions): Promise<Leadership> {
    checkName(name, 'election');
    const held = await this.locks.hold<CampaignResult>(options, {
      what: `campaign ${name}`,
      call: (leaseId, leftMs) => ({
        method: 'POST',
        path: '/election/campaign',
        body: { name, lease_id: leaseId, value, timeout_ms: leftMs },
        idempotent: true,
        route: PREFER_LEADER,
      }),
      timedOut: (timeoutMs) =>
        new KvError('CAMPAIGN_TIMEOUT', `campaign ${name}: not elected within ${timeoutMs} ms`, {
          status: 409,
          definite: false,
        }),
    });
    assert(Number.isSafeInteger(held.result.revision) && held.result.revision > 0, 'a term is positive');
    return this.leadership(held);
  }

  /** The leader of `name` now (linearizable), or null when there is none. */
  async leader(name: string): Promise<LeaderResult | null> {
    checkName(name, 'election');
    const query = new URLSearchParams({ name }).toString();
    try {
      return await this.caller<LeaderResult>(
        { method: 'GET', path: `/election/leader?${query}`, idempotent: true, route: PREFER_LEADER },
        undefined,
        false,
      );
    } catch (error) {
      if (error instanceof KvError && error.code === 'NOT_FOUND') return null;
      throw error;
    }
  }

  private leadership(held: Held<CampaignResult>): Leadership {
    const { key, name, revision } = held.result;
    let value = held.result.value;
    let resigned: Promise<void> | null = null;
    const call = (path: string, body: object): Call => ({
      method: 'POST',
      path,
      body,
      idempotent: true,
      route: PREFER_LEADER,
    });
    return {
      name,
      key,
      revision,
      leaseId: held.leaseId,
      lost: held.lost,
      get value() {
        return value;
      },
      proclaim: async (next: string) => {
        const answer = await this.caller<CampaignResult>(
          call('/election/proclaim', { key, value: next }),
          undefined,
          false,
        );
        value = answer.value;
      },
      resign: () => {
        resigned ??= this.locks.end(call('/election/resign', { key }), held);
        return resigned;
      },
    };
  }
}

/** A stream that breaks the protocol: dropped, and the observation reconnects elsewhere. */
function badResponse(what: string, endpoint: string): KvError {
  return new KvError('BAD_RESPONSE', `observe: ${what} from ${endpoint}`, { endpoint, definite: true });
}

function isLeader(data: unknown, name: string): data is LeaderResult {
  const leader = data as Partial<LeaderResult> | null;
  return (
    leader?.name === name &&
    typeof leader.key === 'string' &&
    typeof leader.value === 'string' &&
    Number.isSafeInteger(leader.revision) &&
    Number.isSafeInteger(leader.lease_id)
  );
}

/** One SSE message of GET /election/observe: a leader change, a progress, or the stream's cancel. */
export function observed(
  message: SseMessage,
  name: string,
  endpoint: string,
): LeaderChange | 'progress' | 'canceled' {
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch {
    throw badResponse(`an SSE ${message.event} event that is not JSON`, endpoint);
  }
  if (message.event === 'progress') return 'progress';
  if (message.event === 'canceled') return 'canceled';
  const revision = Number(message.id ?? Number.NaN);
  if (!Number.isSafeInteger(revision) || revision < 0)
    throw badResponse(`an SSE ${message.event} event without a revision id`, endpoint);
  if (message.event === 'no_leader' && (data as { name?: unknown } | null)?.name === name)
    return { revision, leader: null };
  if (message.event === 'leader' && isLeader(data, name)) return { revision, leader: data };
  throw badResponse(`a malformed SSE ${message.event} event`, endpoint);
}

function sameLeader(a: LeaderResult | null, b: LeaderResult | null): boolean {
  if (a === null || b === null) return a === b;
  return a.key === b.key && a.revision === b.revision && a.value === b.value;
}

/** What an observation has passed on so far: the last leader yielded (undefined: none yet), and when. */
interface Observed {
  last: LeaderResult | null | undefined;
  revision: number;
  /** Messages the streams have sent that the protocol allows (a stream that sent one lived). */
  heard: number;
}

/** The changes of one stream that differ from what was yielded last, never from an older state. */
async function* streamChanges(
  response: IncomingMessage,
  name: string,
  endpoint: string,
  seen: Observed,
  connection: AbortController,
): AsyncGenerator<LeaderChange> {
  for await (const message of sseMessages(response, OBSERVE_SILENT_MS, connection)) {
    const change = observed(message, name, endpoint);
    if (change === 'canceled') return;
    seen.heard += 1;
    if (change === 'progress' || change.revision < seen.revision) continue;
    seen.revision = change.revision;
    if (seen.last !== undefined && sameLeader(seen.last, change.leader)) continue;
    seen.last = change.leader;
    yield change;
  }
}

/**
 * `kv.observe`: the leader of `name`, then each change of it or of its value, from GET
 * /election/observe. A dropped, canceled, silent or broken stream is reopened (on the next endpoint
 * after a failure, with the client's backoff); each new stream starts with the leader at that moment
 * (a linearizable read), so a change missed in between shows as the next one, and a leader already
 * yielded is not yielded again. A run of failed attempts longer than the retry policy rejects with
 * a KvError, as do answers no retry changes (400); `signal` and `break` end it quietly.
 */
export async function* observeLeaders(
  target: WatchTarget,
  name: string,
  options: ObserveOptions = {},
): AsyncGenerator<LeaderChange> {
  checkName(name, 'election');
  const retry = { ...target.retry, ...options.retry };
  const path = `/election/observe?${new URLSearchParams({ name }).toString()}`;
  const rotation = new Rotation(target.endpoints);
  const seen: Observed = { last: undefined, revision: 0, heard: 0 };
  let failures = 0;
  let outageStartMs = Date.now();
  for (let stream = 0; stream < WATCH_STREAMS_MAX; stream += 1) {
    if (isAborted(options.signal)) return;
    const endpoint = rotation.current;
    const connection = new AbortController();
    const signal = streamSignal(options.signal, connection);
    const openedMs = Date.now();
    let failure: KvError | null = null;
    const heardBefore = seen.heard;
    try {
      const response = await connect(target, endpoint, path, signal, connection);
      yield* streamChanges(response, name, endpoint, seen, connection);
    } catch (error) {
      if (isAborted(options.signal)) return;
      failure = classify(error, endpoint, connection.signal);
    } finally {
      connection.abort();
    }
    const lived = seen.heard > heardBefore || Date.now() - openedMs >= WATCH_HEALTHY_CONNECTION_MS;
    if (lived) failures = 0;
    if (failure === null && lived) continue; // it ended or was canceled after a while: reopen at once
    failure ??= new KvError('CONNECTION', `observe: ${endpoint} ended the stream at once`, {
      endpoint,
      definite: true,
    });
    rotation.advance(null);
    if (failures === 0) outageStartMs = Date.now();
    failures += 1;
    if (failures >= retry.attemptsMax || Date.now() - outageStartMs >= retry.totalMsMax) throw failure;
    await backoff(retry, failures, outageStartMs + retry.totalMsMax, options.signal);
  }
  throw new KvError('INVALID_INPUT', `observe: more than ${WATCH_STREAMS_MAX} streams`, { definite: true });
}
