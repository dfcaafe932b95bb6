import http from 'node:http';
import { assert } from '../base/assert.ts';
import {
  percentile,
  REQUEST_TIMEOUT_MS,
  runLoad,
  send,
  type HttpRequest,
  type LoadTarget,
  type RunResult,
} from './load.ts';

/** The watch run: one writer at this many clients, and this many watchers of the written keys' prefix. */
export const WATCH_WRITER_CLIENTS = 64;
export const WATCHERS = 100;
/** The prefix every bench key (keyOf) starts with. */
export const WATCH_PREFIX = 'key-';
/** Commit times kept, and delivery delays measured, per run (beyond: not measured, and counted). */
export const COMMITS_MAX = 2_000_000;
export const DELIVERIES_MAX = 8_000_000;
/** Deliveries that came before the writer's answer, kept until the end of the run. */
export const EARLY_DELIVERIES_MAX = 2_000_000;
/** Every watcher must have its stream open within this, and deliver the last commit within this after the run. */
export const WATCH_SETTLE_MS = 15_000;
/** Digits of a revision as the scanner reads it. */
const REVISION_DIGITS_MAX = 16;

/** The keepalive run: this many leases, each renewed once a second. */
export const LEASES = 1_000;
export const LEASE_TTL_SECONDS = 10;
export const KEEPALIVE_INTERVAL_MS = 1_000;
/** Keepalives in flight at once (beyond: the renewal is skipped and counted as an error). */
export const KEEPALIVES_IN_FLIGHT_MAX = 1_000;
const KEEPALIVE_SOCKETS = 64;
const KEEPALIVE_TICK_MS = 5;
/** Server CPU is measured idle for this long first (the cost of renewals is the difference). */
const IDLE_SAMPLE_MS = 2_000;
const GRANT_CLIENTS = 32;

/** The lock hand-off run: this many clients, each with a lease of its own, take and release one name. */
export const LOCK_CLIENTS = 16;
export const LOCK_NAME = 'bench-lock';
/** How long one lock call may wait (below the bench's request timeout: a slower one is an error). */
export const LOCK_WAIT_MS = 9_000;
/** Each client's lease outlives the run by this much (it is never renewed). */
const LOCK_LEASE_MARGIN_SECONDS = 60;
/** Wait times kept per run (beyond it the run stops early: a bound, never a silent drop). */
export const LOCK_WAITS_MAX = 1_000_000;

/** How one system streams changes and renews leases over HTTP. */
export interface CoordinationProtocol {
  /** A streaming request for every change under `prefix`, from the next revision on. */
  watch(prefix: string): HttpRequest;
  /** Text that comes right before each delivered change's revision (decimal digits) in the stream. */
  readonly revisionMarker: string;
  /** The revision of a write, from its answer. */
  writeRevision(body: string): number | null;
  grant(ttlSeconds: number): HttpRequest;
  /** The granted lease's id, from the answer (a string: etcd's ids exceed 2^53). */
  leaseId(status: number, body: string): string | null;
  keepAlive(leaseId: string): HttpRequest;
  keptAlive(status: number, body: string): boolean;
  /** Take the lock `name` on the lease; answered once owned. */
  lock(name: string, leaseId: string, waitMs: number): HttpRequest;
  /** The owned lock key from the answer (as unlock takes it), or null when not owned. */
  lockKey(status: number, body: string): string | null;
  unlock(key: string): HttpRequest;
  unlocked(status: number, body: string): boolean;
}

export interface WatchRunResult {
  readonly system: string;
  readonly writerClients: number;
  readonly watchers: number;
  readonly writesPerSecondAlone: number;
  readonly writesPerSecondWatched: number;
  /** How much of its rate the writer lost to the watchers, in percent. */
  readonly writerCostPercent: number;
  /** Deliveries of the run's commits (a watcher's first progress, at an older revision, is none). */
  readonly deliveries: number;
  /** Commits of the run times watchers: every watcher should deliver every commit. */
  readonly deliveriesExpected: number;
  readonly streamsEnded: number;
  /** Watcher's receipt minus the writer's receipt of the answer (negative when the stream came first). */
  readonly deliveryP50Ms: number;
  readonly deliveryP99Ms: number;
  readonly deliveryMaxMs: number;
  /**
   * Watcher's receipt minus the time the writer sent the write: never negative, and an upper bound of
   * the delay from commit to delivery (the commit happens after the send).
   */
  readonly deliveryFromSendP50Ms: number;
  readonly deliveryFromSendP99Ms: number;
  readonly deliveryFromSendMaxMs: number;
  readonly serverCpuUsPerWriteAlone: number;
  readonly serverCpuUsPerWriteWatched: number;
  /** This process's CPU (writer and watchers) in percent of one core, during the watched run. */
  readonly benchCpuPercent: number;
}

export interface KeepAliveRunResult {
  readonly system: string;
  readonly leases: number;
  readonly durationMs: number;
  readonly renewals: number;
  readonly errors: number;
  readonly renewalsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Server CPU (all members) in percent of one core while renewing, and while idle before. */
  readonly serverCpuPercent: number;
  readonly idleCpuPercent: number;
  /** (renewing - idle) CPU per renewal. */
  readonly cpuUsPerRenewal: number;
  /** This process's CPU in percent of one core while renewing. */
  readonly benchCpuPercent: number;
}

export interface LockRunResult {
  readonly system: string;
  readonly clients: number;
  readonly durationMs: number;
  /** Locks taken (each released again): one hand-off each. */
  readonly handoffs: number;
  readonly errors: number;
  readonly handoffsPerSecond: number;
  /** From sending the lock call to its answer (owned): the wait in the queue plus the round trip. */
  readonly waitP50Ms: number;
  readonly waitP99Ms: number;
  readonly waitMaxMs: number;
  /** Server CPU (all members) per hand-off (lock and unlock), in microseconds. */
  readonly serverCpuUsPerHandoff: number;
}

/**
 * Reads revisions out of a byte stream without decoding it: each `marker` followed by digits and a
 * non-digit is one revision; only revisions above the last one count (a progress at a revision
 * already delivered, or a marker read again from the kept tail, is no new delivery).
 */
export class RevisionScanner {
  private readonly marker: Buffer;
  private tail: Buffer = Buffer.alloc(0);
  private last = 0;
  private readonly onRevision: (revision: number) => void;

  constructor(marker: string, onRevision: (revision: number) => void) {
    assert(marker.length > 0, 'a marker');
    this.marker = Buffer.from(marker);
    this.onRevision = onRevision;
  }

  push(chunk: Buffer): void {
    const data = this.tail.length === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    let position = 0;
    let keepFrom = -1;
    for (let found = data.indexOf(this.marker); found >= 0; found = data.indexOf(this.marker, position)) {
      let end = found + this.marker.length;
      let revision = 0;
      for (; end < data.length && end - found - this.marker.length < REVISION_DIGITS_MAX; end += 1) {
        const digit = (data[end] ?? 0) - 48;
        if (digit < 0 || digit > 9) break;
        revision = revision * 10 + digit;
      }
      if (end >= data.length) {
        keepFrom = found; // the digits may go on in the next chunk
        break;
      }
      position = end;
      if (revision > this.last) {
        this.last = revision;
        this.onRevision(revision);
      }
    }
    const from = keepFrom >= 0 ? keepFrom : Math.max(position, data.length - this.marker.length);
    this.tail = Buffer.from(data.subarray(from));
  }
}

/**
 * When the writer sent and received each commit of the run, and the watchers' delays against both
 * (after the answer: may be negative; after the send: an upper bound of commit to delivery).
 */
class DeliveryClock {
  /** Revision → slot in answeredMs / sentMs. */
  readonly commits = new Map<number, number>();
  private readonly answeredMs = new Float64Array(COMMITS_MAX);
  private readonly sentMs = new Float64Array(COMMITS_MAX);
  maxCommit = 0;
  readonly delays = new Float64Array(DELIVERIES_MAX);
  readonly delaysFromSend = new Float64Array(DELIVERIES_MAX);
  delayCount = 0;
  deliveries = 0;
  private readonly early = {
    revisions: new Float64Array(EARLY_DELIVERIES_MAX),
    at: new Float64Array(EARLY_DELIVERIES_MAX),
    count: 0,
  };

  committed(revision: number, answeredMs: number, sentMs: number): void {
    if (this.commits.size >= COMMITS_MAX) return;
    const slot = this.commits.size;
    this.answeredMs[slot] = answeredMs;
    this.sentMs[slot] = sentMs;
    this.commits.set(revision, slot);
    this.maxCommit = Math.max(this.maxCommit, revision);
  }

  delivered(revision: number, atMs: number): void {
    const slot = this.commits.get(revision);
    if (slot !== undefined) this.delay(slot, atMs);
    else if (this.early.count < EARLY_DELIVERIES_MAX) {
      this.early.revisions[this.early.count] = revision;
      this.early.at[this.early.count] = atMs;
      this.early.count += 1;
    }
  }

  /** Delays of the deliveries that came before the writer's answer (negative), now that it came. */
  settle(): void {
    for (let index = 0; index < this.early.count; index += 1) {
      const slot = this.commits.get(this.early.revisions[index] ?? 0);
      if (slot !== undefined) this.delay(slot, this.early.at[index] ?? 0);
    }
    this.early.count = 0;
  }

  private delay(slot: number, atMs: number): void {
    this.deliveries += 1;
    if (this.delayCount >= DELIVERIES_MAX) return;
    this.delays[this.delayCount] = atMs - (this.answeredMs[slot] ?? 0);
    this.delaysFromSend[this.delayCount] = atMs - (this.sentMs[slot] ?? 0);
    this.delayCount += 1;
  }
}

/** One open stream; `first` resolves at its first bytes (the stream is registered by then). */
interface OpenStream {
  readonly first: Promise<undefined>;
  lastRevision: () => number;
  ended: () => boolean;
  close(): void;
}

const noop = (): void => undefined;

/** Percent of one core, one decimal, from a process.cpuUsage() difference over `elapsedMs`. */
function cpuPercent(usage: NodeJS.CpuUsage, elapsedMs: number): number {
  return Math.round(((usage.user + usage.system) / (elapsedMs * 1_000)) * 1_000) / 10;
}

function openStream(endpoint: URL, request: HttpRequest, marker: string, clock: DeliveryClock): OpenStream {
  let ended = false;
  let last = 0;
  const scanner = new RevisionScanner(marker, (revision) => {
    last = revision;
    clock.delivered(revision, performance.now());
  });
  const opened: { resolve: () => void; reject: (error: Error) => void } = { resolve: noop, reject: noop };
  const first = new Promise<undefined>((resolve, reject) => {
    opened.resolve = () => {
      resolve(undefined);
    };
    opened.reject = reject;
  });
  const outgoing = http.request(
    {
      host: endpoint.hostname,
      port: endpoint.port,
      method: request.method,
      path: request.path,
      agent: false,
      headers: request.body === null ? {} : { 'content-type': 'application/json' },
    },
    (response) => {
      if (response.statusCode !== 200) opened.reject(new Error(`watch: ${String(response.statusCode)}`));
      response.once('data', () => {
        opened.resolve();
      });
      response.on('data', (chunk: Buffer) => {
        scanner.push(chunk);
      });
      response.on('close', () => {
        ended = true;
      });
    },
  );
  outgoing.on('error', (error) => {
    ended = true;
    opened.reject(error);
  });
  outgoing.end(request.body ?? undefined);
  return {
    first,
    lastRevision: () => last,
    ended: () => ended,
    close: () => {
      ended = true;
      outgoing.destroy();
    },
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until `done` holds or `timeoutMs` passes (polling every 10 ms); whether it holds. */
async function waitFor(done: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!done() && performance.now() < deadline) await pause(10);
  return done();
}

/**
 * The writer alone at WATCH_WRITER_CLIENTS for `durationMs`, then again with WATCHERS streams of
 * WATCH_PREFIX spread over the endpoints. A delivery's delay is the watcher's receipt of the change
 * minus the writer's receipt of the answer to the write that made it, both on this process's
 * monotonic clock (negative when the stream beat the answer); and, as an upper bound that is never
 * negative, the receipt minus the time the writer sent that write.
 */
export async function runWatch(
  target: LoadTarget,
  protocol: CoordinationProtocol,
  durationMs: number,
  cpuMicros: () => number,
): Promise<{ result: WatchRunResult; runs: readonly RunResult[] }> {
  const alone = await runLoad(target, 'write', WATCH_WRITER_CLIENTS, durationMs, cpuMicros);
  const clock = new DeliveryClock();
  const endpoints = target.endpoints.map((endpoint) => new URL(endpoint));
  const streams = Array.from({ length: WATCHERS }, (_, index) =>
    openStream(
      endpoints[index % endpoints.length] as URL,
      protocol.watch(WATCH_PREFIX),
      protocol.revisionMarker,
      clock,
    ),
  );
  try {
    await Promise.race([
      Promise.all(streams.map((stream) => stream.first)),
      pause(WATCH_SETTLE_MS).then(() => Promise.reject(new Error('watchers did not open'))),
    ]);
    const benchCpu = process.cpuUsage();
    const watchedStarted = performance.now();
    const watched = await runLoad(
      target,
      'write',
      WATCH_WRITER_CLIENTS,
      durationMs,
      cpuMicros,
      (body, sentMs) => {
        const revision = protocol.writeRevision(body);
        if (revision !== null) clock.committed(revision, performance.now(), sentMs);
      },
    );
    const benchCpuPercent = cpuPercent(process.cpuUsage(benchCpu), performance.now() - watchedStarted);
    await waitFor(
      () => streams.every((stream) => stream.ended() || stream.lastRevision() >= clock.maxCommit),
      WATCH_SETTLE_MS,
    );
    clock.settle();
    const delays = clock.delays.slice(0, clock.delayCount).sort();
    const fromSend = clock.delaysFromSend.slice(0, clock.delayCount).sort();
    const round = (value: number) => Math.round(value * 1_000) / 1_000;
    const result: WatchRunResult = {
      system: target.name,
      writerClients: WATCH_WRITER_CLIENTS,
      watchers: WATCHERS,
      writesPerSecondAlone: alone.opsPerSecond,
      writesPerSecondWatched: watched.opsPerSecond,
      writerCostPercent:
        Math.round(1_000 * (1 - watched.opsPerSecond / Math.max(1, alone.opsPerSecond))) / 10,
      deliveries: clock.deliveries,
      deliveriesExpected: clock.commits.size * WATCHERS,
      streamsEnded: streams.filter((stream) => stream.ended()).length,
      deliveryP50Ms: round(percentile(delays, 0.5)),
      deliveryP99Ms: round(percentile(delays, 0.99)),
      deliveryMaxMs: round(delays[delays.length - 1] ?? 0),
      deliveryFromSendP50Ms: round(percentile(fromSend, 0.5)),
      deliveryFromSendP99Ms: round(percentile(fromSend, 0.99)),
      deliveryFromSendMaxMs: round(fromSend[fromSend.length - 1] ?? 0),
      serverCpuUsPerWriteAlone: alone.serverCpuUsPerOp,
      serverCpuUsPerWriteWatched: watched.serverCpuUsPerOp,
      benchCpuPercent,
    };
    return { result, runs: [alone, watched] };
  } finally {
    for (const stream of streams) stream.close();
  }
}

/** LEASES leases granted through the endpoints in turn, GRANT_CLIENTS at a time. */
async function grantLeases(agent: http.Agent, endpoints: readonly URL[], protocol: CoordinationProtocol) {
  const ids: string[] = [];
  const worker = async (): Promise<void> => {
    while (ids.length < LEASES) {
      const endpoint = endpoints[ids.length % endpoints.length] as URL;
      const answer = await send(agent, endpoint, protocol.grant(LEASE_TTL_SECONDS));
      const id = protocol.leaseId(answer.status, answer.body);
      if (id === null) throw new Error(`lease grant: ${answer.status} ${answer.body}`);
      if (ids.length < LEASES) ids.push(id);
    }
  };
  await Promise.all(Array.from({ length: GRANT_CLIENTS }, worker));
  return ids;
}

/** Renewals sent on the open-loop schedule for `durationMs`; their outcomes and latencies. */
async function renewOnSchedule(
  agent: http.Agent,
  endpoints: readonly URL[],
  protocol: CoordinationProtocol,
  ids: readonly string[],
  durationMs: number,
) {
  const total = Math.floor(durationMs / KEEPALIVE_INTERVAL_MS) * LEASES;
  const latencies = new Float64Array(total);
  const outcome = { renewals: 0, errors: 0, inFlight: 0 };
  const renew = async (index: number): Promise<void> => {
    const sentMs = performance.now();
    outcome.inFlight += 1;
    try {
      const endpoint = endpoints[index % endpoints.length] as URL;
      const answer = await send(agent, endpoint, protocol.keepAlive(ids[index] ?? ''));
      if (protocol.keptAlive(answer.status, answer.body))
        latencies[outcome.renewals++] = performance.now() - sentMs;
      else outcome.errors += 1;
    } catch {
      outcome.errors += 1;
    } finally {
      outcome.inFlight -= 1;
    }
  };
  const started = performance.now();
  let sent = 0;
  while (sent < total) {
    const elapsedMs = performance.now() - started;
    const due = Math.min(total, Math.floor((elapsedMs / KEEPALIVE_INTERVAL_MS) * LEASES));
    for (; sent < due; sent += 1) {
      if (outcome.inFlight >= KEEPALIVES_IN_FLIGHT_MAX) outcome.errors += 1;
      else void renew(sent % LEASES);
    }
    await pause(KEEPALIVE_TICK_MS);
  }
  await waitFor(() => outcome.inFlight === 0, REQUEST_TIMEOUT_MS);
  return {
    ...outcome,
    latencies: latencies.slice(0, outcome.renewals).sort(),
    elapsedMs: performance.now() - started,
  };
}

/** Server CPU over `ms` of nothing asked, in percent of one core. */
async function idleCpuPercent(cpuMicros: () => number, ms: number): Promise<number> {
  const before = cpuMicros();
  const started = performance.now();
  await pause(ms);
  return ((cpuMicros() - before) / ((performance.now() - started) * 1_000)) * 100;
}

/**
 * LEASES leases, each renewed every KEEPALIVE_INTERVAL_MS for `durationMs` (lease i at offset
 * i / LEASES of the interval, through endpoint i mod members): an open loop, so a slow server shows as
 * renewals/s below LEASES and as errors, never as a slower schedule.
 */
export async function runKeepAlive(
  target: LoadTarget,
  protocol: CoordinationProtocol,
  durationMs: number,
  cpuMicros: () => number,
): Promise<KeepAliveRunResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: KEEPALIVE_SOCKETS });
  const endpoints = target.endpoints.map((endpoint) => new URL(endpoint));
  try {
    const ids = await grantLeases(agent, endpoints, protocol);
    const idle = await idleCpuPercent(cpuMicros, IDLE_SAMPLE_MS);
    const cpuBefore = cpuMicros();
    const benchCpu = process.cpuUsage();
    const run = await renewOnSchedule(agent, endpoints, protocol, ids, durationMs);
    const busy = ((cpuMicros() - cpuBefore) / (run.elapsedMs * 1_000)) * 100;
    const round = (value: number) => Math.round(value * 1_000) / 1_000;
    return {
      system: target.name,
      leases: LEASES,
      durationMs: Math.round(run.elapsedMs),
      renewals: run.renewals,
      errors: run.errors,
      renewalsPerSecond: Math.round(run.renewals / (run.elapsedMs / 1_000)),
      p50Ms: round(percentile(run.latencies, 0.5)),
      p99Ms: round(percentile(run.latencies, 0.99)),
      serverCpuPercent: Math.round(busy * 10) / 10,
      idleCpuPercent: Math.round(idle * 10) / 10,
      cpuUsPerRenewal:
        run.renewals === 0 ? 0 : Math.round((((busy - idle) / 100) * run.elapsedMs * 1_000) / run.renewals),
      benchCpuPercent: cpuPercent(process.cpuUsage(benchCpu), run.elapsedMs),
    };
  } finally {
    agent.destroy();
  }
}

/** One lease per lock client, long enough for the whole run (never renewed). */
async function grantLockLeases(
  agent: http.Agent,
  endpoints: readonly URL[],
  protocol: CoordinationProtocol,
  durationMs: number,
): Promise<string[]> {
  const ttlSeconds = Math.ceil(durationMs / 1_000) + LOCK_LEASE_MARGIN_SECONDS;
  const ids: string[] = [];
  for (let index = 0; index < LOCK_CLIENTS; index += 1) {
    const answer = await send(agent, endpoints[index % endpoints.length] as URL, protocol.grant(ttlSeconds));
    const id = protocol.leaseId(answer.status, answer.body);
    if (id === null) throw new Error(`lease grant: ${answer.status} ${answer.body}`);
    ids.push(id);
  }
  return ids;
}

/**
 * LOCK_CLIENTS closed-loop clients (spread over the endpoints, each on a lease of its own) take the
 * lock LOCK_NAME and release it at once, again and again for `durationMs`: every lock taken is one
 * hand-off to the next waiter. A lock call's wait runs from its send to its answer.
 */
export async function runLockHandoff(
  target: LoadTarget,
  protocol: CoordinationProtocol,
  durationMs: number,
  cpuMicros: () => number,
): Promise<LockRunResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: LOCK_CLIENTS });
  const endpoints = target.endpoints.map((endpoint) => new URL(endpoint));
  try {
    const leases = await grantLockLeases(agent, endpoints, protocol, durationMs);
    const waits = new Float64Array(LOCK_WAITS_MAX);
    const outcome = { handoffs: 0, errors: 0 };
    const cpuBefore = cpuMicros();
    const started = performance.now();
    const deadline = started + durationMs;
    const client = async (index: number): Promise<void> => {
      const endpoint = endpoints[index % endpoints.length] as URL;
      const lease = leases[index] ?? '';
      while (performance.now() < deadline && outcome.handoffs < LOCK_WAITS_MAX) {
        const sentMs = performance.now();
        try {
          const locked = await send(agent, endpoint, protocol.lock(LOCK_NAME, lease, LOCK_WAIT_MS));
          const key = protocol.lockKey(locked.status, locked.body);
          if (key === null) throw new Error(`lock: ${locked.status} ${locked.body}`);
          const waitMs = performance.now() - sentMs;
          const unlocked = await send(agent, endpoint, protocol.unlock(key));
          if (!protocol.unlocked(unlocked.status, unlocked.body))
            throw new Error(`unlock: ${unlocked.status} ${unlocked.body}`);
          waits[outcome.handoffs++] = waitMs;
        } catch {
          outcome.errors += 1;
        }
      }
    };
    await Promise.all(Array.from({ length: LOCK_CLIENTS }, (_, index) => client(index)));
    const elapsedMs = performance.now() - started;
    const cpuUs = cpuMicros() - cpuBefore;
    const sorted = waits.slice(0, outcome.handoffs).sort();
    const round = (value: number) => Math.round(value * 1_000) / 1_000;
    return {
      system: target.name,
      clients: LOCK_CLIENTS,
      durationMs: Math.round(elapsedMs),
      handoffs: outcome.handoffs,
      errors: outcome.errors,
      handoffsPerSecond: Math.round(outcome.handoffs / (elapsedMs / 1_000)),
      waitP50Ms: round(percentile(sorted, 0.5)),
      waitP99Ms: round(percentile(sorted, 0.99)),
      waitMaxMs: round(sorted[sorted.length - 1] ?? 0),
      serverCpuUsPerHandoff: outcome.handoffs === 0 ? 0 : Math.round(cpuUs / outcome.handoffs),
    };
  } finally {
    agent.destroy();
  }
}
