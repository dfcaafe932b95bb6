/**
 * The phases of npm run bench:scale after the load: a snapshot on the leader, a follower killed
 * with SIGKILL and started again, a new learner; each timed until the member has caught up.
 */
import {
  caughtUp,
  CATCH_UP_WAIT_MS_MAX,
  leaderOf,
  sampleMember,
  SNAPSHOT_CALL_TIMEOUT_MS,
  statusReached,
  type Timing,
} from './scale-measure.ts';
import type { MemberStatus, ScaleProtocol } from './scale-systems.ts';
import type { BenchMember, LearnerStart, ManagedCluster } from './servers.ts';

const ETCD_SNAPSHOT =
  'etcd takes its Raft snapshots by itself every --snapshot-count entries (100,000 by default); no client API asks for one';

function reasonOf(error: unknown): string {
  return error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error);
}

/**
 * POST /trigger-snapshot on the leader, timed. When the call answers 504 TIMEOUT with definite:false
 * (the snapshot goes on after the node's 5 s call timeout), the time runs until the leader's /metrics
 * shows a snapshot at or past the index it had applied when asked.
 */
export async function snapshotPhase(cluster: ManagedCluster, protocol: ScaleProtocol): Promise<Timing> {
  if (protocol.system === 'etcd') return { ms: null, reason: ETCD_SNAPSHOT };
  const leader = await leaderOf(protocol, cluster.members);
  if (leader === null) return { ms: null, reason: 'no leader' };
  const member = leader.member.name;
  const started = performance.now();
  let answer: string;
  try {
    const response = await fetch(`${leader.member.endpoint}/trigger-snapshot`, {
      method: 'POST',
      headers: { ...cluster.headers, 'content-type': 'application/json' },
      body: '{}',
      signal: AbortSignal.timeout(SNAPSHOT_CALL_TIMEOUT_MS),
    });
    answer = `${response.status} ${(await response.text()).slice(0, 200)}`;
    if (response.ok) return { ms: Math.round(performance.now() - started), member };
    if (response.status !== 504 || !answer.includes('"definite":false'))
      return { ms: null, reason: answer, member };
  } catch (error) {
    return { ms: null, reason: reasonOf(error), member };
  }
  const target = leader.status.applied;
  const done = (status: MemberStatus) => (status.snapshotIndex ?? 0) >= target;
  const ms = await statusReached(protocol, leader.member, done, started, SNAPSHOT_CALL_TIMEOUT_MS);
  const how = `the call answered ${answer.split(' ')[0] ?? ''}; timed until the leader's /metrics showed the snapshot`;
  return ms === null
    ? { ms, reason: `${how}: not within ${SNAPSHOT_CALL_TIMEOUT_MS} ms`, member }
    : { ms, member, note: how };
}

/** The timing of `member` catching up to `target` from `startedMs`, with its stall and RSS then. */
async function timedCatchUp(
  protocol: ScaleProtocol,
  member: BenchMember,
  target: number,
  startedMs: number,
): Promise<Timing> {
  const ms = await caughtUp(protocol, member, target, startedMs);
  const status = await protocol.status(member.endpoint);
  const sample = await sampleMember(protocol, member);
  const reason = ms === null ? { reason: `not caught up within ${CATCH_UP_WAIT_MS_MAX} ms` } : {};
  return { ms, ...reason, member: member.name, stallMs: status?.stallMs ?? null, rssBytes: sample.rssBytes };
}

/**
 * A follower killed with SIGKILL and started again on its data dir: the time from its start until it
 * knows a leader and has applied what the leader had applied when it was killed.
 */
export async function restartPhase(cluster: ManagedCluster, protocol: ScaleProtocol): Promise<Timing> {
  const leader = await leaderOf(protocol, cluster.members);
  if (leader === null) return { ms: null, reason: 'no leader' };
  const follower = cluster.members.find((member) => member !== leader.member);
  if (follower === undefined) return { ms: null, reason: 'no follower' };
  await follower.kill9();
  const started = performance.now();
  try {
    await follower.restart();
  } catch (error) {
    return {
      ms: null,
      reason: `${follower.name} did not start again: ${reasonOf(error)}`,
      member: follower.name,
    };
  }
  const servingMs = Math.round(performance.now() - started);
  return { ...(await timedCatchUp(protocol, follower, leader.status.applied, started)), servingMs };
}

/**
 * A new member added as a learner (Aspen: started, then /add-learner; etcd: member add --learner,
 * then started): the time from when its joining began until it has applied what the leader has.
 */
export async function learnerPhase(cluster: ManagedCluster, protocol: ScaleProtocol): Promise<Timing> {
  let learner: LearnerStart;
  try {
    learner = await cluster.addLearner();
  } catch (error) {
    return { ms: null, reason: `adding a learner failed: ${reasonOf(error)}` };
  }
  const leader = await leaderOf(protocol, cluster.members);
  if (leader === null) return { ms: null, reason: 'no leader', member: learner.member.name };
  return timedCatchUp(protocol, learner.member, leader.status.applied, learner.startedMs);
}
