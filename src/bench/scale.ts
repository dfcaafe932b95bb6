/**
 * npm run bench:scale: a million keys (--keys N) loaded into a 3-node Aspen cluster on loopback, in
 * writes of 100 keys of 100-byte values from 8 clients, and with --etcd into a 3-member etcd 3.4 the
 * same way (transactions of 100 puts through its JSON gateway). Reports the load rate, RSS (and
 * Aspen's heap) and data dir of every member at steps, the longest event-loop stall of every Aspen
 * member, new terms while loading and snapshotting, the time of a snapshot on the leader, of a
 * follower's restart after kill -9 until caught up, and of a new learner's catch-up. Prints tables,
 * writes the run as JSON (--out), and with --write-docs updates docs/benchmarks.md and its chart.
 * Stops every process and removes every data dir it made, on success, failure or a signal.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { SCRIPT_EXIT_USAGE, scriptOptions } from '../base/script-args.ts';
import {
  BATCH_KEYS,
  loadKeys,
  sampleAtEnd,
  settle,
  stallsOf,
  termAndLeader,
  VALUE_BYTES,
  type StepSample,
} from './scale-measure.ts';
import { learnerPhase, restartPhase, snapshotPhase } from './scale-phases.ts';
import { report, writeDocs, type ScaleResult, type ScaleRun } from './scale-report.ts';
import { aspenScale, etcdScale, type ScaleProtocol } from './scale-systems.ts';
import { ensureEtcd, startAspen, startEtcd, type ManagedCluster } from './servers.ts';

export const KEYS_DEFAULT = 1_000_000;
export const KEYS_MAX = 10_000_000;
export const CLIENTS_DEFAULT = 8;
export const CLIENTS_MAX = 64;
const EXIT_SIGNAL_BASE = 128;

const USAGE = `usage: npm run bench:scale -- [options]   (docs/benchmarks.md, "Scale")
  --keys N        keys to load (default ${KEYS_DEFAULT}, 1..${KEYS_MAX}; --keys 5000000 for the 5M run)
  --clients N     concurrent writers (default ${CLIENTS_DEFAULT}, 1..${CLIENTS_MAX})
  --etcd          the same against a 3-member etcd 3.4 (Debian's etcd-server) after Aspen
  --out FILE      where the run's JSON goes (default: ${join(tmpdir(), 'aspen-bench-scale.json')})
  --write-docs    update the Scale section of docs/benchmarks.md and docs/bench/scale-rss.svg
  -h, --help      this text
`;

/** `value` as an integer in [1, max], or `fallback` when absent; a RangeError names the flag. */
function bounded(name: string, value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1 || parsed > max)
    throw new RangeError(`--${name} must be an integer in [1, ${max}], not ${JSON.stringify(value)}`);
  return parsed;
}

interface Options {
  readonly keys: number;
  readonly clients: number;
}

/** The cluster running now, stopped by the signal handlers. */
let running: ManagedCluster | null = null;

async function stopOnSignal(signal: NodeJS.Signals, code: number): Promise<void> {
  console.error(`bench:scale: ${signal}; stopping the servers`);
  await running?.stop();
  process.exit(EXIT_SIGNAL_BASE + code);
}

/** Every measurement on one running cluster, in order. */
async function measure(
  cluster: ManagedCluster,
  protocol: ScaleProtocol,
  options: Options,
): Promise<ScaleResult> {
  const members = [...cluster.members];
  const log = (text: string) => {
    console.error(`bench:scale: ${protocol.system}: ${text}`);
  };
  const before = await termAndLeader(protocol, members);
  const stallsBefore = await stallsOf(protocol, members);
  const steps: StepSample[] = [];
  log(`loading ${options.keys} keys`);
  const load = await loadKeys(cluster, protocol, options, steps);
  log(`${load.keysLoaded} keys in ${load.loadMs} ms; waiting for every member to catch up`);
  const settleProblem = await settle(protocol, members);
  steps.push(await sampleAtEnd(protocol, members, load.keysLoaded, load.loadMs));
  const afterLoad = await termAndLeader(protocol, members);
  log('snapshot');
  const snapshot = await snapshotPhase(cluster, protocol);
  const afterSnapshot = await termAndLeader(protocol, members);
  const stallsAfter = await stallsOf(protocol, members);
  log('restart after kill -9');
  const restart = await restartPhase(cluster, protocol);
  const afterRestart = await termAndLeader(protocol, members);
  log('a new learner');
  const learner = await learnerPhase(cluster, protocol);
  const afterLearner = await termAndLeader(protocol, cluster.members);
  return {
    system: protocol.system,
    keysRequested: options.keys,
    ...load,
    steps,
    settleProblem,
    stalls: members.map((member, index) => ({
      name: member.name,
      beforeLoadMs: stallsBefore[index] ?? null,
      afterSnapshotMs: stallsAfter[index] ?? null,
    })),
    leaderChanges: {
      load: afterLoad.term - before.term,
      snapshot: afterSnapshot.term - afterLoad.term,
      restart: afterRestart.term - afterSnapshot.term,
      learner: afterLearner.term - afterRestart.term,
    },
    leaderBefore: before.leader,
    leaderAfterSnapshot: afterSnapshot.leader,
    snapshot,
    restart,
    learner,
  };
}

async function runSystem(
  start: () => Promise<ManagedCluster>,
  protocol: ScaleProtocol,
  options: Options,
): Promise<ScaleResult> {
  console.error(`bench:scale: starting ${protocol.system}`);
  const cluster = await start();
  running = cluster;
  try {
    return await measure(cluster, protocol, options);
  } finally {
    running = null;
    await cluster.stop();
  }
}

function commitOf(): string {
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], {
    encoding: 'utf8',
    cwd: import.meta.dirname,
  });
  return git.status === 0 ? git.stdout.trim() : 'unknown';
}

async function main(argv: readonly string[]): Promise<void> {
  const flags = scriptOptions(
    'bench:scale',
    USAGE,
    {
      keys: { type: 'string' },
      clients: { type: 'string' },
      etcd: { type: 'boolean' },
      out: { type: 'string' },
      'write-docs': { type: 'boolean' },
    },
    argv,
  );
  let options: Options;
  try {
    options = {
      keys: bounded('keys', flags.keys, KEYS_DEFAULT, KEYS_MAX),
      clients: bounded('clients', flags.clients, CLIENTS_DEFAULT, CLIENTS_MAX),
    };
  } catch (error) {
    process.stderr.write(`bench:scale: ${(error as Error).message}\n\n${USAGE}`);
    process.exit(SCRIPT_EXIT_USAGE);
  }
  const out = flags.out ?? join(tmpdir(), 'aspen-bench-scale.json');
  const etcdBinary = flags.etcd === true ? ensureEtcd() : null;
  process.once('SIGINT', () => void stopOnSignal('SIGINT', 2));
  process.once('SIGTERM', () => void stopOnSignal('SIGTERM', 15));
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const loadAverageStart = loadavg()[0] ?? 0;
  const results = [await runSystem(startAspen, aspenScale, options)];
  if (etcdBinary !== null) results.push(await runSystem(() => startEtcd(etcdBinary), etcdScale, options));
  const run: ScaleRun = {
    date,
    machine,
    commit: commitOf(),
    command: `npm run bench:scale -- ${argv.join(' ')}`.trim(),
    keys: options.keys,
    batchKeys: BATCH_KEYS,
    valueBytes: VALUE_BYTES,
    clients: options.clients,
    loadAverage: { start: loadAverageStart, end: loadavg()[0] ?? 0 },
    results,
  };
  writeFileSync(out, `${JSON.stringify(run, null, 2)}\n`);
  console.log(report(run));
  console.error(`bench:scale: wrote ${out}`);
  if (flags['write-docs'] === true) {
    writeDocs(run);
    console.error('bench:scale: wrote docs/benchmarks.md (Scale), docs/bench/scale.json and scale-rss.svg');
  }
}

try {
  await main(process.argv.slice(2));
} catch (error) {
  console.error(`bench:scale: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
