/**
 * npm run bench: a 3-node Aspen cluster on loopback (LMDB, fsync before acknowledging), writes at 1,
 * 16 and 64 clients, linearizable reads at 1 and 64, and CAS increments (read, then compare-and-swap
 * the next counter value; etcd: a txn comparing the value) at 16 and 64 ("kv"); the writer at 64
 * without and with 100 watchers of its keys, and their delivery delay ("watch"); 1,000 leases renewed
 * every second ("keepalive"); 16 clients each taking and releasing one lock ("lock": hand-offs per
 * second and the lock call's wait); one JSON line per run, then tables. `--runs kv,watch,keepalive,lock`
 * picks; `--auth` runs "kv" again against Aspen started with --auth-tokens (every request carries a
 * bearer token): what authentication costs; `--auth-rounds N` alternates open and token clusters N
 * times and prints the medians side by side (run-to-run noise on a shared machine dwarfs one pair).
 * npm run bench:etcd: the same load against a 3-member etcd cluster too, side by side with ratios,
 * and a chart in docs/bench/. Both stop everything they started.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { scriptOptions } from '../base/script-args.ts';
import { chartSvg } from './chart.ts';
import { markdown } from './markdown.ts';
import {
  KEY_SPACE,
  keyOf,
  runLoad,
  VALUE,
  withHeaders,
  type LoadTarget,
  type Operation,
  type RunResult,
} from './load.ts';
import {
  runKeepAlive,
  runLockHandoff,
  runWatch,
  type CoordinationProtocol,
  type KeepAliveRunResult,
  type LockRunResult,
  type WatchRunResult,
} from './coordination-load.ts';
import { aspenCoordination, aspenTarget, etcdCoordination, etcdTarget } from './protocols.ts';
import { ensureEtcd, startAspen, startEtcd, type ServerCluster } from './servers.ts';

const RUNS: readonly (readonly [Operation, number])[] = [
  ['write', 1],
  ['write', 16],
  ['write', 64],
  ['read', 1],
  ['read', 64],
  ['cas', 16],
  ['cas', 64],
];
const DURATION_MS_DEFAULT = 10_000;
const DURATION_MS_MAX = 600_000;
const WARMUP_MS = 3_000;
const POPULATE_CLIENTS = 64;
/** Open/token cluster pairs `--auth-rounds` may ask for (each pair is two cluster starts and the kv runs). */
const AUTH_ROUNDS_MAX = 10;

/** Write every key once so that reads find values (bounded: KEY_SPACE writes). */
async function populate(target: LoadTarget): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < KEY_SPACE) {
      const key = keyOf(next);
      next += 1;
      const request = target.request('write', key, VALUE);
      const endpoint = target.endpoints[next % target.endpoints.length] ?? '';
      await fetch(`${endpoint}${request.path}`, {
        method: request.method,
        headers: { ...request.headers, 'content-type': 'application/json' },
        body: request.body,
        signal: AbortSignal.timeout(10_000),
      }).catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: POPULATE_CLIENTS }, worker));
}

type RunKind = 'kv' | 'watch' | 'keepalive' | 'lock';
const RUN_KINDS: readonly RunKind[] = ['kv', 'watch', 'keepalive', 'lock'];

interface SystemResults {
  readonly kv: RunResult[];
  readonly watch: WatchRunResult[];
  readonly keepalive: KeepAliveRunResult[];
  readonly lock: LockRunResult[];
}

async function benchmark(
  cluster: ServerCluster,
  target: LoadTarget,
  coordination: CoordinationProtocol,
  options: { readonly durationMs: number; readonly kinds: readonly RunKind[] },
): Promise<SystemResults> {
  const { durationMs, kinds } = options;
  const cpu = () => cluster.cpuMicros();
  await populate(target);
  await runLoad(target, 'write', 16, WARMUP_MS, cpu);
  const results: SystemResults = { kv: [], watch: [], keepalive: [], lock: [] };
  if (kinds.includes('kv'))
    for (const [operation, clients] of RUNS) {
      const result = await runLoad(target, operation, clients, durationMs, cpu);
      console.log(JSON.stringify(result));
      results.kv.push(result);
    }
  if (kinds.includes('watch')) {
    const { result } = await runWatch(target, coordination, durationMs, cpu);
    console.log(JSON.stringify({ run: 'watch', ...result }));
    results.watch.push(result);
  }
  if (kinds.includes('keepalive')) {
    const result = await runKeepAlive(target, coordination, durationMs, cpu);
    console.log(JSON.stringify({ run: 'keepalive', ...result }));
    results.keepalive.push(result);
  }
  if (kinds.includes('lock')) {
    const result = await runLockHandoff(target, coordination, durationMs, cpu);
    console.log(JSON.stringify({ run: 'lock', ...result }));
    results.lock.push(result);
  }
  return results;
}

function watchTable(results: readonly WatchRunResult[]): string {
  return markdown([
    [
      'system',
      'watchers',
      'writes/s alone',
      'writes/s watched',
      'writer cost %',
      'deliveries',
      'expected',
      'streams ended',
      'delivery p50 ms',
      'delivery p99 ms',
      'delivery max ms',
      'from send p50 ms',
      'from send p99 ms',
      'from send max ms',
      'cpu µs/write alone',
      'cpu µs/write watched',
      'bench cpu %',
    ],
    ...results.map((result) =>
      [
        result.system,
        result.watchers,
        result.writesPerSecondAlone,
        result.writesPerSecondWatched,
        result.writerCostPercent,
        result.deliveries,
        result.deliveriesExpected,
        result.streamsEnded,
        result.deliveryP50Ms,
        result.deliveryP99Ms,
        result.deliveryMaxMs,
        result.deliveryFromSendP50Ms,
        result.deliveryFromSendP99Ms,
        result.deliveryFromSendMaxMs,
        result.serverCpuUsPerWriteAlone,
        result.serverCpuUsPerWriteWatched,
        result.benchCpuPercent,
      ].map(String),
    ),
  ]);
}

function keepAliveTable(results: readonly KeepAliveRunResult[]): string {
  return markdown([
    [
      'system',
      'leases',
      'renewals/s',
      'renewals',
      'errors',
      'p50 ms',
      'p99 ms',
      'server cpu % (renewing)',
      'server cpu % (idle)',
      'cpu µs/renewal',
      'bench cpu %',
    ],
    ...results.map((result) =>
      [
        result.system,
        result.leases,
        result.renewalsPerSecond,
        result.renewals,
        result.errors,
        result.p50Ms,
        result.p99Ms,
        result.serverCpuPercent,
        result.idleCpuPercent,
        result.cpuUsPerRenewal,
        result.benchCpuPercent,
      ].map(String),
    ),
  ]);
}

function lockTable(results: readonly LockRunResult[]): string {
  return markdown([
    ['system', 'clients', 'hand-offs/s', 'hand-offs', 'errors', 'wait p50 ms', 'wait p99 ms', 'wait max ms'],
    ...results.map((result) =>
      [
        result.system,
        result.clients,
        result.handoffsPerSecond,
        result.handoffs,
        result.errors,
        result.waitP50Ms,
        result.waitP99Ms,
        result.waitMaxMs,
      ].map(String),
    ),
  ]).concat(
    `\n\nserver cpu µs/hand-off: ${results.map((result) => `${result.system} ${result.serverCpuUsPerHandoff}`).join(', ')}`,
  );
}

function table(results: readonly RunResult[]): string {
  const header = [
    'system',
    'op',
    'clients',
    'ops/s',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    'errors',
    'retries',
    'cpu µs/op',
  ];
  const rows = results.map((result) => [
    result.system,
    result.operation,
    String(result.clients),
    String(result.opsPerSecond),
    String(result.p50Ms),
    String(result.p90Ms),
    String(result.p99Ms),
    String(result.p999Ms),
    String(result.maxMs),
    String(result.errors),
    String(result.retries),
    String(result.serverCpuUsPerOp),
  ]);
  return markdown([header, ...rows]);
}

function sideBySide(results: readonly RunResult[]): string {
  const header = [
    'op',
    'clients',
    'aspen ops/s',
    'etcd ops/s',
    'ratio',
    'aspen p50',
    'etcd p50',
    'aspen p99',
    'etcd p99',
    'aspen cpu µs/op',
    'etcd cpu µs/op',
    'aspen retries',
    'etcd retries',
  ];
  const rows = RUNS.flatMap(([operation, clients]) => {
    const aspen = results.find(
      (result) => result.system === 'aspen' && result.operation === operation && result.clients === clients,
    );
    const etcd = results.find(
      (result) => result.system === 'etcd' && result.operation === operation && result.clients === clients,
    );
    if (aspen === undefined || etcd === undefined) return [];
    return [
      [
        operation,
        String(clients),
        String(aspen.opsPerSecond),
        String(etcd.opsPerSecond),
        (aspen.opsPerSecond / Math.max(1, etcd.opsPerSecond)).toFixed(2),
        String(aspen.p50Ms),
        String(etcd.p50Ms),
        String(aspen.p99Ms),
        String(etcd.p99Ms),
        String(aspen.serverCpuUsPerOp),
        String(etcd.serverCpuUsPerOp),
        String(aspen.retries),
        String(etcd.retries),
      ],
    ];
  });
  return markdown([header, ...rows]);
}

async function runSystem(
  start: () => Promise<ServerCluster>,
  makeTarget: (endpoints: readonly string[]) => LoadTarget,
  coordination: CoordinationProtocol,
  options: { readonly durationMs: number; readonly kinds: readonly RunKind[] },
): Promise<SystemResults> {
  const cluster = await start();
  const stop = (): void => {
    void cluster.stop().then(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  const target = makeTarget(cluster.endpoints);
  try {
    return await benchmark(
      cluster,
      cluster.headers === undefined ? target : withHeaders(target, cluster.name, cluster.headers),
      coordination,
      options,
    );
  } finally {
    process.removeListener('SIGINT', stop);
    await cluster.stop();
  }
}

/** `--runs kv,watch,keepalive,lock` (default: all). */
function runKinds(argv: readonly string[]): readonly RunKind[] {
  const index = argv.indexOf('--runs');
  if (index < 0) return RUN_KINDS;
  const named = (argv[index + 1] ?? '').split(',');
  const kinds = RUN_KINDS.filter((kind) => named.includes(kind));
  if (kinds.length !== named.length) throw new RangeError(`--runs takes a list of ${RUN_KINDS.join(', ')}`);
  return kinds;
}

/** `--NAME N` as an integer in [1, max], or `fallback` when the flag is absent. */
function argvCount(argv: readonly string[], name: string, fallback: number, max: number): number {
  const index = argv.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(argv[index + 1]);
  if (!Number.isSafeInteger(value) || value < 1 || value > max)
    throw new RangeError(`${name} must be in [1, ${max}]`);
  return value;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/**
 * What authentication costs: `rounds` times an open cluster then one with --auth-tokens (every
 * request carrying a token), the kv runs on each; medians per run and their difference, for ops/s
 * and for server CPU per operation (the steadier of the two on a shared machine).
 */
async function compareAuth(rounds: number, durationMs: number): Promise<void> {
  const open: RunResult[] = [];
  const withTokens: RunResult[] = [];
  const options = { durationMs, kinds: ['kv'] as const };
  const runOpen = async () => {
    open.push(...(await runSystem(startAspen, aspenTarget, aspenCoordination, options)).kv);
  };
  const runTokens = async () => {
    const start = () => startAspen({ auth: true });
    withTokens.push(...(await runSystem(start, aspenTarget, aspenCoordination, options)).kv);
  };
  // ABBA: the second cluster of a pair ran measurably faster than the first (a warmer machine), so
  // every other round starts with the token cluster.
  for (let round = 1; round <= rounds; round += 1) {
    console.error(`bench: auth round ${round} of ${rounds}`);
    const [first, second] = round % 2 === 1 ? [runOpen, runTokens] : [runTokens, runOpen];
    await first();
    await second();
  }
  const pick = (results: readonly RunResult[], operation: Operation, clients: number) =>
    results.filter((result) => result.operation === operation && result.clients === clients);
  const delta = (base: number, other: number) => `${(((other - base) / base) * 100).toFixed(1)} %`;
  const rows = RUNS.map(([operation, clients]) => {
    const a = pick(open, operation, clients);
    const b = pick(withTokens, operation, clients);
    const [opsA, opsB] = [median(a.map((r) => r.opsPerSecond)), median(b.map((r) => r.opsPerSecond))];
    const [cpuA, cpuB] = [median(a.map((r) => r.serverCpuUsPerOp)), median(b.map((r) => r.serverCpuUsPerOp))];
    return [operation, String(clients), opsA.toFixed(0), opsB.toFixed(0), delta(opsA, opsB)].concat([
      cpuA.toFixed(0),
      cpuB.toFixed(0),
      delta(cpuA, cpuB),
    ]);
  });
  const header = ['op', 'clients', 'open ops/s', 'tokens ops/s', 'Δ ops/s'];
  const cpuHeader = ['open cpu µs/op', 'tokens cpu µs/op', 'Δ cpu/op'];
  console.log(`\nmedians of ${rounds} alternating rounds, ${durationMs} ms per run\n`);
  console.log(markdown([[...header, ...cpuHeader], ...rows]));
}

const USAGE = `usage: npm run bench -- [options]   (npm run bench:etcd: the same against etcd too; docs/benchmarks.md)
  --runs LIST         which runs, comma-separated: ${RUN_KINDS.join(', ')} (default: all)
  --duration-ms N     each run's length (default ${DURATION_MS_DEFAULT}, 1000..${DURATION_MS_MAX})
  --auth              run "kv" again against Aspen with --auth-tokens: what authentication costs
  --auth-rounds N     alternate open and token clusters N times (1..${AUTH_ROUNDS_MAX}), medians side by side
  --etcd              also against a 3-member etcd cluster (what npm run bench:etcd does)
  -h, --help          this text
`;

async function main(argv: readonly string[]): Promise<void> {
  // Every flag checked (and --help answered) before anything starts; the values are read below.
  scriptOptions(
    'bench',
    USAGE,
    {
      runs: { type: 'string' },
      'duration-ms': { type: 'string' },
      auth: { type: 'boolean' },
      'auth-rounds': { type: 'string' },
      etcd: { type: 'boolean' },
    },
    argv,
  );
  const withEtcd = argv.includes('--etcd');
  const durationIndex = argv.indexOf('--duration-ms');
  const durationMs = durationIndex < 0 ? DURATION_MS_DEFAULT : Number(argv[durationIndex + 1]);
  if (!Number.isSafeInteger(durationMs) || durationMs < 1_000 || durationMs > DURATION_MS_MAX)
    throw new RangeError(`--duration-ms must be in [1000, ${DURATION_MS_MAX}]`);
  const options = { durationMs, kinds: runKinds(argv) };
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  console.error(`bench: ${machine}; ${durationMs} ms per run; runs ${options.kinds.join(', ')}`);
  const authRounds = argvCount(argv, '--auth-rounds', argv.includes('--auth') ? 1 : 0, AUTH_ROUNDS_MAX);
  if (authRounds > 0) {
    await compareAuth(authRounds, durationMs);
    return;
  }
  const systems = [await runSystem(startAspen, aspenTarget, aspenCoordination, options)];
  if (withEtcd) {
    const binary = ensureEtcd();
    systems.push(await runSystem(() => startEtcd(binary), etcdTarget, etcdCoordination, options));
  }
  const results = systems.flatMap((system) => system.kv);
  const watch = systems.flatMap((system) => system.watch);
  const keepalive = systems.flatMap((system) => system.keepalive);
  const lock = systems.flatMap((system) => system.lock);
  if (results.length > 0) console.log(`\n${table(results)}`);
  if (watch.length > 0) console.log(`\n${watchTable(watch)}`);
  if (keepalive.length > 0) console.log(`\n${keepAliveTable(keepalive)}`);
  if (lock.length > 0) console.log(`\n${lockTable(lock)}`);
  if (!withEtcd) return;
  if (results.length > 0) console.log(`\n${sideBySide(results)}`);
  const directory = resolve(import.meta.dirname, '../../docs/bench');
  mkdirSync(directory, { recursive: true });
  const stamp = new Date().toISOString();
  if (results.length > 0) {
    writeFileSync(
      resolve(directory, 'aspen-vs-etcd.json'),
      `${JSON.stringify({ date: stamp, machine, durationMs, results }, null, 2)}\n`,
    );
    writeFileSync(
      resolve(directory, 'aspen-vs-etcd.svg'),
      chartSvg(
        results,
        `Aspen vs etcd, 3 members on loopback, fsync on every member (${stamp.slice(0, 10)})`,
      ),
    );
    console.error(`bench: wrote docs/bench/aspen-vs-etcd.json and .svg`);
  }
  if (watch.length + keepalive.length > 0) {
    writeFileSync(
      resolve(directory, 'watch-and-leases.json'),
      `${JSON.stringify({ date: stamp, machine, durationMs, watch, keepalive }, null, 2)}\n`,
    );
    console.error(`bench: wrote docs/bench/watch-and-leases.json`);
  }
  if (lock.length > 0) {
    writeFileSync(
      resolve(directory, 'locks.json'),
      `${JSON.stringify({ date: stamp, machine, durationMs, lock }, null, 2)}\n`,
    );
    console.error(`bench: wrote docs/bench/locks.json`);
  }
}

await main(process.argv.slice(2));
