/**
 * The views of the whole cluster in the aspen CLI: `aspen status`, `aspen health`, `aspen leader`
 * (docs/cli.md). Every member is found through the cluster, not only the given endpoints: the
 * membership (GET /state, from any endpoint) names the voters and learners, each given endpoint's
 * GET /node-info says which member it is, and /state's `http_urls` where the others listen. Each
 * member is then asked on its own, at most FAN_OUT_MAX at a time, each call bounded by
 * PROBE_TIMEOUT_MS_MAX.
 */
import type { AddCommand } from './aspen-command.ts';
import type { RaftMetrics, StateAnswer } from '../api/types.ts';
import { KvError } from '../client/errors.ts';
import type { KvClient } from '../client/kv-client.ts';
import type { CallOptions, HealthResult } from '../client/options.ts';
import { moreTelling } from '../client/retry.ts';
import { endpointUrl } from './aspen-endpoints.ts';

/** `aspen health`: the cluster answered, but not every member is healthy, or no leader is known. */
export const EXIT_UNHEALTHY = 8;
/** Calls to members in flight at once. */
export const FAN_OUT_MAX = 16;
/** Members and endpoints asked at most (the membership's bound, twice: voters and learners, plus --endpoints). */
export const TARGETS_MAX = 192;
/** Bound on each call to one member (never more than --timeout-ms). */
export const PROBE_TIMEOUT_MS_MAX = 3_000;

export interface ClusterContext {
  readonly kv: KvClient;
  readonly json: boolean;
  /** --timeout-ms: the bound on the whole command. */
  readonly timeoutMs: number;
  readonly print: (text: string) => void;
  readonly table: (header: readonly string[], rows: readonly (readonly string[])[]) => string;
}

type Role = 'leader' | 'voter' | 'learner';

/** One node to ask: a member (with its URL when known), or a given endpoint that is not one. */
export interface Target {
  readonly nodeId: number | null;
  /** null: not a member of the cluster (or its id could not be learned). */
  readonly role: Role | null;
  /** null: no HTTP address of this member is known. */
  readonly endpoint: string | null;
}

interface Found {
  readonly cluster: StateAnswer | null;
  /** Why no membership could be read (null when it was). */
  readonly clusterError: KvError | null;
  readonly targets: readonly Target[];
}

/** `work` on each item, at most `limit` at a time, results in order; `work` must not reject. */
async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function probeMs(timeoutMs: number): number {
  return Math.min(timeoutMs, PROBE_TIMEOUT_MS_MAX);
}

/** One attempt, bounded by PROBE_TIMEOUT_MS_MAX. */
function probeOptions(timeoutMs: number): CallOptions {
  return { timeoutMs: probeMs(timeoutMs), retry: { attemptsMax: 1 } };
}

/** A call's failure; anything but a KvError is a bug, and crashes loudly. */
function kvError(error: unknown): KvError {
  if (error instanceof KvError) return error;
  throw error;
}

/** A member URL as the cluster reported it, when it is one a client can call (else null). */
function reportedUrl(state: StateAnswer | null, id: number): string | null {
  const text: unknown = state?.http_urls?.[String(id)];
  if (typeof text !== 'string' || !/^https?:\/\//.test(text)) return null;
  try {
    return endpointUrl(text, false);
  } catch {
    return null;
  }
}

/** The membership and every node to ask: the members (voters, then learners), then given endpoints that are none. */
export async function findTargets({ kv, timeoutMs }: ClusterContext): Promise<Found> {
  const probe = probeOptions(timeoutMs);
  const [cluster, ids] = await Promise.all([
    kv.state({ timeoutMs: probeMs(timeoutMs), retry: { totalMsMax: timeoutMs } }).then(
      (state) => ({ state, error: null }),
      (error: unknown) => ({ state: null, error: kvError(error) }),
    ),
    mapBounded(kv.endpointList, FAN_OUT_MAX, (endpoint) =>
      kv.nodeInfo(endpoint, probe).then(
        (info) => (Number.isSafeInteger(info.node_id) ? info.node_id : null),
        (error: unknown) => {
          kvError(error); // a bug rethrows; a failed call leaves the endpoint's id unknown
          return null;
        },
      ),
    ),
  ]);
  const endpointOf = new Map<number, string>();
  for (const [index, id] of ids.entries()) {
    const endpoint = kv.endpointList[index];
    if (id !== null && endpoint !== undefined && !endpointOf.has(id)) endpointOf.set(id, endpoint);
  }
  const state = cluster.state;
  const member = (id: number, role: Role): Target => ({
    nodeId: id,
    role,
    endpoint: endpointOf.get(id) ?? reportedUrl(state, id),
  });
  const members =
    state === null
      ? []
      : [
          ...state.nodes.map((node) => member(node.id, node.id === state.leader ? 'leader' : 'voter')),
          ...state.learners.map((node) => member(node.id, 'learner')),
        ];
  const asked = new Set(members.map((member) => member.endpoint));
  const others = kv.endpointList
    .map((endpoint, index): Target => ({ nodeId: ids[index] ?? null, role: null, endpoint }))
    .filter((target) => !asked.has(target.endpoint));
  return {
    cluster: state,
    clusterError: cluster.error,
    targets: [...members, ...others].slice(0, TARGETS_MAX),
  };
}

/** One node's answer to one view, or why there is none (both null: no HTTP address of it is known). */
interface Probed<T> {
  readonly target: Target;
  readonly answer: T | null;
  readonly error: KvError | null;
}

/** Ask every target with an address, FAN_OUT_MAX at a time. */
function probeAll<T>(
  targets: readonly Target[],
  ask: (endpoint: string) => Promise<T>,
): Promise<Probed<T>[]> {
  return mapBounded(targets, FAN_OUT_MAX, async (target): Promise<Probed<T>> => {
    if (target.endpoint === null) return { target, answer: null, error: null };
    try {
      return { target, answer: await ask(target.endpoint), error: null };
    } catch (error) {
      return { target, answer: null, error: kvError(error) };
    }
  });
}

/** Nothing answered at all: the most telling failure (exit 4 for CONNECTION and the like). */
function noAnswer(found: Found, rows: readonly Probed<unknown>[]): KvError | null {
  if (found.cluster !== null || rows.some((row) => row.answer !== null)) return null;
  let telling: KvError | null = found.clusterError;
  for (const row of rows) if (row.error !== null) telling = moreTelling(telling, row.error);
  return telling ?? new KvError('CONNECTION', 'no endpoint answered', { definite: true });
}

function targetCells(target: Target): string[] {
  return [
    target.nodeId === null ? '-' : String(target.nodeId),
    target.role ?? (target.nodeId === null ? '?' : 'not a member'),
    target.endpoint ?? '-',
  ];
}

function failureCell(error: KvError | null): string {
  return error === null ? 'no HTTP address known' : `unreachable (${error.code})`;
}

function targetJson(target: Target): Record<string, unknown> {
  return { node_id: target.nodeId, role: target.role, endpoint: target.endpoint };
}

function summary(cluster: StateAnswer | null): string {
  if (cluster === null) return 'cluster: no answer';
  const learners = cluster.learners.map((node) => node.id).join(', ') || 'none';
  return `leader ${cluster.leader ?? 'none'}; voters ${cluster.members.join(', ') || 'none'}; learners ${learners}`;
}

/** `aspen status`: the membership, then role, term, leader and log positions of every member; exit 4 when nothing answers. */
export async function status(context: ClusterContext): Promise<void> {
  const { kv, json, print, table, timeoutMs } = context;
  const found = await findTargets(context);
  const rows = await probeAll(found.targets, (endpoint) => kv.metrics(endpoint, probeOptions(timeoutMs)));
  if (json) {
    const endpoints = rows.map(({ target, answer, error }) => ({
      ...targetJson(target),
      metrics: answer,
      error: error?.code ?? null,
    }));
    print(JSON.stringify({ cluster: found.cluster, endpoints }));
  } else {
    const header = ['NODE', 'ROLE', 'ENDPOINT', 'STATE', 'TERM', 'LEADER', 'LAST_LOG', 'COMMIT', 'APPLIED'];
    print(`${summary(found.cluster)}\n\n${table(header, rows.map(statusRow))}`);
  }
  const failure = noAnswer(found, rows);
  if (failure !== null) throw failure;
}

function statusRow({ target, answer, error }: Probed<RaftMetrics>): string[] {
  const cells = targetCells(answer === null ? target : { ...target, nodeId: answer.node_id });
  if (answer === null) return [...cells, failureCell(error)];
  return [
    ...cells,
    answer.state,
    String(answer.current_term),
    String(answer.current_leader ?? '-'),
    String(answer.last_log_index),
    String(answer.commit_index),
    String(answer.last_applied),
  ];
}

/** One member's health, and whom it follows (null: it does not say). */
interface HealthView {
  readonly health: HealthResult;
  readonly leader: number | null;
}

/**
 * `aspen health`: every member's GET /health; exit 0 only when every member (and every given
 * endpoint) answered healthy and a leader is known; EXIT_UNHEALTHY otherwise; exit 4 when nothing
 * answered at all.
 */
export async function health(context: ClusterContext): Promise<number> {
  const { kv, json, print, table, timeoutMs } = context;
  const found = await findTargets(context);
  const probe = probeOptions(timeoutMs);
  const rows = await probeAll(found.targets, async (endpoint): Promise<HealthView> => {
    const [report, metrics] = await Promise.all([
      kv.health(endpoint, probe),
      kv.metrics(endpoint, probe).catch((error: unknown) => {
        kvError(error); // health without the leader column when only /metrics fails (a token's role)
        return null;
      }),
    ]);
    return { health: report, leader: metrics?.current_leader ?? null };
  });
  const failure = noAnswer(found, rows);
  if (failure !== null) throw failure;
  const problems = healthProblems(found, rows);
  if (json) {
    const members = rows.map(({ target, answer, error }) => ({
      ...targetJson(target),
      health: answer?.health ?? null,
      leader: answer?.leader ?? null,
      error: error?.code ?? null,
    }));
    print(
      JSON.stringify({
        healthy: problems.length === 0,
        leader: found.cluster?.leader ?? null,
        members,
        problems,
      }),
    );
  } else {
    const header = ['NODE', 'ROLE', 'ENDPOINT', 'STATUS', 'LEADER', 'CHECKS'];
    const verdict =
      problems.length === 0
        ? `healthy: ${rows.length} members answered healthy; leader ${found.cluster?.leader ?? '?'}`
        : `unhealthy: ${problems.join('; ')}`;
    print(`${table(header, rows.map(healthRow))}\n\n${verdict}`);
  }
  return problems.length === 0 ? 0 : EXIT_UNHEALTHY;
}

/** The names of the failed checks, "ok" when none failed. */
function failedChecks(report: HealthResult): string {
  const failed = Object.entries(report.checks)
    .filter(([, passed]) => passed === false)
    .map(([name]) =>
      name === 'leader' && report.leaderless_ms !== null
        ? `leader (none for ${report.leaderless_ms} ms)`
        : name,
    );
  return failed.length === 0 ? 'ok' : failed.join(', ');
}

function healthRow({ target, answer, error }: Probed<HealthView>): string[] {
  const cells = targetCells(answer === null ? target : { ...target, nodeId: answer.health.node_id });
  if (answer === null) return [...cells, failureCell(error)];
  return [...cells, answer.health.status, String(answer.leader ?? '-'), failedChecks(answer.health)];
}

/** Why the cluster is not healthy, one phrase each; empty when it is. */
function healthProblems(found: Found, rows: readonly Probed<HealthView>[]): string[] {
  const problems: string[] = [];
  const { cluster } = found;
  if (cluster === null) problems.push(`no membership could be read (${found.clusterError?.code ?? '?'})`);
  else if (cluster.nodes.length === 0) problems.push('the cluster is not initialized (aspen init)');
  else if (cluster.leader === null) problems.push('no leader is known');
  for (const { target, answer, error } of rows) {
    const who = target.nodeId === null ? (target.endpoint ?? '?') : `node ${target.nodeId}`;
    if (answer === null) problems.push(`${who}: ${failureCell(error)}`);
    else if (answer.health.status !== 'healthy')
      problems.push(`${who}: ${answer.health.status} (${failedChecks(answer.health)})`);
  }
  return problems;
}

/** `aspen leader`: the leader's id and HTTP URL; NO_LEADER (exit 4) when none is known. */
export async function leader(context: ClusterContext): Promise<void> {
  const found = await findTargets(context);
  if (found.cluster === null)
    throw found.clusterError ?? new KvError('CONNECTION', 'no endpoint answered', { definite: true });
  const id = found.cluster.leader;
  if (id === null)
    throw new KvError(
      'NO_LEADER',
      'no leader is known: an election may be in progress, or a quorum is lost',
      {
        definite: true,
      },
    );
  const endpoint = found.targets.find((target) => target.nodeId === id)?.endpoint ?? null;
  context.print(
    context.json
      ? JSON.stringify({ leader: id, endpoint })
      : `${id} ${endpoint ?? '(no HTTP address known)'}`,
  );
}

export function addClusterCommands(add: AddCommand): void {
  add(
    'status',
    'the membership, then role, term, leader and log positions of every member (found through the cluster) and endpoint',
  );
  add(
    'health',
    `every member's /health: exit 0 only when all are healthy and a leader is known, ${EXIT_UNHEALTHY} otherwise (4: nothing answered)`,
  );
  add('leader', "the leader's node id and HTTP address (exit 4 when no leader is known)");
}
