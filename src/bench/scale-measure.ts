/**
 * The measurements of npm run bench:scale on one running cluster: the bulk load with samples of
 * every member's memory and data dir at steps, a snapshot, a restart after kill -9, a new learner.
 * Every wait is bounded by a named constant; a phase that fails or times out is reported with its
 * reason, never retried without bound.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { send } from './load.ts';
import type { MemberStatus, ScaleProtocol } from './scale-systems.ts';
import type { BenchMember, ManagedCluster } from './servers.ts';

/** Keys per write: Aspen's batch limit (BATCH_KEYS_MAX), one Raft entry each. */
export const BATCH_KEYS = 100;
export const VALUE_BYTES = 100;
/** The whole load stops after this, whatever is left (reported as keys loaded < requested). */
export const LOAD_DURATION_MS_MAX = 30 * 60_000;
/** A batch that fails is sent again this many times in all, then counted as failed. */
export const BATCH_ATTEMPTS_MAX = 5;
const RETRY_PAUSE_MS = 200;
/** A member catching up (after the load, a restart, as a new learner) is given this long. */
export const CATCH_UP_WAIT_MS_MAX = 5 * 60_000;
/** How often a member's status is asked while waiting for it. */
const STATUS_POLL_MS = 100;
/** POST /trigger-snapshot on the leader may take this long. */
export const SNAPSHOT_CALL_TIMEOUT_MS = 5 * 60_000;
/** `du` of one data dir may take this long. */
const DU_TIMEOUT_MS = 30_000;
/** Samples are taken at these key counts (those below the total), at 10, 25 and 50 % and at the end. */
const STEP_MILESTONES = [100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000];
const STEP_FRACTIONS = [0.1, 0.25, 0.5];
const KEY_PREFIX = 'scale/';
const KEY_DIGITS = 10;
const KIBIBYTE = 1_024;

export interface MemberSample {
  readonly name: string;
  readonly pid: number | null;
  /** VmRSS from /proc/PID/status; 0 when the process could not be read. */
  readonly rssBytes: number;
  readonly heapBytes: number | null;
  /** Disk used by the data dir (du -sk); 0 when du failed. */
  readonly dataBytes: number;
}

export interface StepSample {
  readonly keys: number;
  readonly elapsedMs: number;
  readonly members: readonly MemberSample[];
}

/** A timed phase: its duration, or null and why. */
export interface Timing {
  readonly ms: number | null;
  readonly reason?: string;
  /** The member timed (restart: the one killed; learner: the new one). */
  readonly member?: string;
  /** That member's longest event-loop stall since its start, at the end (Aspen). */
  readonly stallMs?: number | null;
  /** That member's RSS at the end. */
  readonly rssBytes?: number;
  /** How the figure was taken, when not the plain way. */
  readonly note?: string;
  /** Restart: when the process served again (Aspen: its "up" line; etcd: /health), before catching up. */
  readonly servingMs?: number;
}

export interface LoadOutcome {
  readonly keysLoaded: number;
  readonly loadMs: number;
  readonly keysPerSecond: number;
  /** Writes answered with an error or not at all (each sent again, up to BATCH_ATTEMPTS_MAX). */
  readonly failedAttempts: number;
  /** Batches that failed every attempt. */
  readonly failedBatches: number;
}

const VALUE_SOURCE = randomBytes(2_048).toString('hex');

export function keyOf(index: number): string {
  return `${KEY_PREFIX}${String(index).padStart(KEY_DIGITS, '0')}`;
}

/** 100 bytes drawn from random text at an offset the index picks: no two neighbours share a value. */
export function valueOf(index: number): string {
  const offset = (index * 37) % (VALUE_SOURCE.length - VALUE_BYTES);
  return VALUE_SOURCE.slice(offset, offset + VALUE_BYTES);
}

/** The key counts to sample at while loading `keys` (the total itself is sampled after the load). */
export function stepsFor(keys: number): number[] {
  const fractions = STEP_FRACTIONS.map((fraction) => Math.round((keys * fraction) / BATCH_KEYS) * BATCH_KEYS);
  const all = new Set([...STEP_MILESTONES, ...fractions].filter((step) => step > 0 && step < keys));
  return [...all].sort((a, b) => a - b);
}

export const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

function rssOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const line = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return line === undefined ? 0 : Number(line) * KIBIBYTE;
  } catch {
    return 0;
  }
}

function diskBytes(dir: string): Promise<number> {
  return new Promise((resolvePromise) => {
    execFile('du', ['-sk', dir], { timeout: DU_TIMEOUT_MS }, (error, stdout) => {
      const kib = Number(/^(\d+)/.exec(stdout)?.[1]);
      resolvePromise(error === null && Number.isFinite(kib) ? kib * KIBIBYTE : 0);
    });
  });
}

export async function sampleMember(protocol: ScaleProtocol, member: BenchMember): Promise<MemberSample> {
  const status = await protocol.status(member.endpoint);
  return {
    name: member.name,
    pid: member.pid() ?? null,
    rssBytes: rssOf(member.pid()),
    heapBytes: status?.heapBytes ?? null,
    dataBytes: await diskBytes(member.dataDir),
  };
}

function sampleAll(protocol: ScaleProtocol, members: readonly BenchMember[]): Promise<MemberSample[]> {
  return Promise.all(members.map((member) => sampleMember(protocol, member)));
}

/**
 * Loads `keys` keys in batches of BATCH_KEYS from `clients` closed-loop clients spread over the
 * members, sampling the members at every step crossed (samples taken while the load goes on).
 */
export async function loadKeys(
  cluster: ManagedCluster,
  protocol: ScaleProtocol,
  options: { readonly keys: number; readonly clients: number },
  steps: StepSample[],
): Promise<LoadOutcome> {
  const members = [...cluster.members];
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.clients });
  const endpoints = cluster.endpoints.map((endpoint) => new URL(endpoint));
  const batches = Math.ceil(options.keys / BATCH_KEYS);
  const at = stepsFor(options.keys);
  const started = performance.now();
  const deadline = Date.now() + LOAD_DURATION_MS_MAX;
  const counts = { next: 0, loaded: 0, failedAttempts: 0, failedBatches: 0, step: 0 };
  let sampling = Promise.resolve();
  const writeBatch = async (endpoint: URL, batch: number): Promise<number> => {
    const first = batch * BATCH_KEYS;
    const count = Math.min(BATCH_KEYS, options.keys - first);
    const pairs = Array.from(
      { length: count },
      (_, offset) => [keyOf(first + offset), valueOf(first + offset)] as const,
    );
    const request = protocol.batch(pairs);
    for (let attempt = 0; attempt < BATCH_ATTEMPTS_MAX; attempt += 1) {
      const answer = await send(agent, endpoint, request).catch(() => null);
      if (answer?.status === 200) return count;
      counts.failedAttempts += 1;
      await sleep(RETRY_PAUSE_MS);
    }
    counts.failedBatches += 1;
    return 0;
  };
  const client = async (index: number): Promise<void> => {
    const endpoint = endpoints[index % endpoints.length];
    if (endpoint === undefined) throw new Error('no endpoint');
    while (counts.next < batches && Date.now() < deadline) {
      const batch = counts.next;
      counts.next += 1;
      const written = await writeBatch(endpoint, batch);
      counts.loaded += written;
      for (; counts.step < at.length && counts.loaded >= (at[counts.step] ?? 0); counts.step += 1) {
        const keys = counts.loaded;
        const elapsedMs = Math.round(performance.now() - started);
        sampling = sampling.then(async () => {
          steps.push({ keys, elapsedMs, members: await sampleAll(protocol, members) });
        });
      }
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, index) => client(index)));
  const loadMs = Math.round(performance.now() - started);
  agent.destroy();
  await sampling;
  return {
    keysLoaded: counts.loaded,
    loadMs,
    keysPerSecond: Math.round(counts.loaded / (loadMs / 1_000)),
    failedAttempts: counts.failedAttempts,
    failedBatches: counts.failedBatches,
  };
}

/** The final sample, once every member has caught up with the leader. */
export async function sampleAtEnd(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
  keys: number,
  elapsedMs: number,
): Promise<StepSample> {
  return { keys, elapsedMs, members: await sampleAll(protocol, members) };
}

/** The members' statuses (null: not answering), in the order given. */
function statuses(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
): Promise<(MemberStatus | null)[]> {
  return Promise.all(members.map((member) => protocol.status(member.endpoint)));
}

/** The member that says it leads, with its status; null when none does. */
export async function leaderOf(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
): Promise<{ readonly member: BenchMember; readonly status: MemberStatus } | null> {
  const all = await statuses(protocol, members);
  for (const [index, status] of all.entries()) {
    const member = members[index];
    if (status !== null && member !== undefined && status.leader === status.self) return { member, status };
  }
  return null;
}

/** The highest term any member reports, and the leader's name (null: none). */
export async function termAndLeader(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
): Promise<{ readonly term: number; readonly leader: string | null }> {
  const all = await statuses(protocol, members);
  const leader = await leaderOf(protocol, members);
  return {
    term: Math.max(0, ...all.map((status) => status?.term ?? 0)),
    leader: leader?.member.name ?? null,
  };
}

/**
 * Milliseconds from `startedMs` (performance.now()) until the status of `member` satisfies `done`;
 * null when `limitMs` passes first. A member whose event loop is blocked answers late or not at all
 * (each call bounded by STATUS_TIMEOUT_MS): the poll goes on.
 */
export async function statusReached(
  protocol: ScaleProtocol,
  member: BenchMember,
  done: (status: MemberStatus) => boolean,
  startedMs: number,
  limitMs: number,
): Promise<number | null> {
  const polls = Math.ceil(limitMs / STATUS_POLL_MS);
  for (let poll = 0; poll < polls && performance.now() - startedMs < limitMs; poll += 1) {
    const status = await protocol.status(member.endpoint);
    if (status !== null && done(status)) return Math.round(performance.now() - startedMs);
    await sleep(STATUS_POLL_MS);
  }
  return null;
}

/** Until `member` knows a leader and has applied `target` (bounded by CATCH_UP_WAIT_MS_MAX). */
export function caughtUp(
  protocol: ScaleProtocol,
  member: BenchMember,
  target: number,
  startedMs: number,
): Promise<number | null> {
  const done = (status: MemberStatus) => status.leader !== null && status.applied >= target;
  return statusReached(protocol, member, done, startedMs, CATCH_UP_WAIT_MS_MAX);
}

/** Waits until every member has applied what the leader has; null: in time, or why not. */
export async function settle(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
): Promise<string | null> {
  const leader = await leaderOf(protocol, members);
  if (leader === null) return 'no leader after the load';
  const started = performance.now();
  for (const member of members) {
    const ms = await caughtUp(protocol, member, leader.status.applied, started);
    if (ms === null) return `${member.name} did not catch up within ${CATCH_UP_WAIT_MS_MAX} ms`;
  }
  return null;
}

/** Each member's longest event-loop stall since its start (null: not told, or not answering). */
export async function stallsOf(
  protocol: ScaleProtocol,
  members: readonly BenchMember[],
): Promise<(number | null)[]> {
  return (await statuses(protocol, members)).map((status) => status?.stallMs ?? null);
}
