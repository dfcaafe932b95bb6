/**
 * npm run bench: a 3-node Aspen cluster on loopback (LMDB, fsync before acknowledging), writes at 1,
 * 16 and 64 clients, linearizable reads at 1 and 64, and CAS increments (read, then compare-and-swap
 * the next counter value; etcd: a txn comparing the value) at 16 and 64 ("kv"); the writer at 64
 * without and with 100 watchers of its keys, and their delivery delay ("watch"); 1,000 leases renewed
 * every second ("keepalive"); one JSON line per run, then tables. `--runs kv,watch,keepalive` picks.
 * npm run bench:etcd: the same load against a 3-member etcd cluster too, side by side with ratios,
 * and a chart in docs/bench/. Both stop everything they started.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { chartSvg } from './chart.ts';
import {
  KEY_SPACE,
  keyOf,
  runLoad,
  VALUE,
  type HttpRequest,
  type LoadTarget,
  type Operation,
  type RunResult,
} from './load.ts';
import {
  runKeepAlive,
  runWatch,
  type CoordinationProtocol,
  type KeepAliveRunResult,
  type WatchRunResult,
} from './coordination-load.ts';
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

function b64(text: string): string {
  return Buffer.from(text).toString('base64');
}

function jsonPost(path: string, body: unknown): HttpRequest {
  return { method: 'POST', path, body: JSON.stringify(body) };
}

function parse(body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return null;
  }
}

function aspenTarget(endpoints: readonly string[]): LoadTarget {
  return {
    name: 'aspen',
    endpoints,
    request: (operation, key, value) =>
      operation === 'write'
        ? jsonPost('/write', { command: { Set: { key, value } } })
        : { method: 'GET', path: `/read?key=${key}`, body: null },
    ok: (status) => status === 200 || status === 404,
    cas: {
      read: (key) => ({ method: 'GET', path: `/read?key=${key}`, body: null }),
      valueOf: (status, body) => {
        const value = status === 200 ? (parse(body) as { value?: unknown } | null)?.value : undefined;
        return typeof value === 'string' ? value : null;
      },
      swap: (key, expected, next) =>
        jsonPost('/write', { command: { CompareAndSwap: { key, expected, new_value: next } } }),
      swapOutcome: (status) => (status === 200 ? 'ok' : status === 409 ? 'conflict' : 'error'),
    },
  };
}

function etcdTarget(endpoints: readonly string[]): LoadTarget {
  return {
    name: 'etcd',
    endpoints,
    // The JSON gateway of etcd 3.4; a range without serializable:true is linearizable.
    request: (operation, key, value) =>
      operation === 'write'
        ? jsonPost('/v3/kv/put', { key: b64(key), value: b64(value) })
        : jsonPost('/v3/kv/range', { key: b64(key) }),
    ok: (status) => status === 200,
    // etcd's compare-and-put: a txn comparing the value read, putting the next one on success.
    cas: {
      read: (key) => jsonPost('/v3/kv/range', { key: b64(key) }),
      valueOf: (status, body) => {
        const kvs = status === 200 ? (parse(body) as { kvs?: { value?: unknown }[] } | null)?.kvs : undefined;
        const value = kvs?.[0]?.value;
        return typeof value === 'string' ? Buffer.from(value, 'base64').toString() : null;
      },
      swap: (key, expected, next) =>
        jsonPost('/v3/kv/txn', {
          compare: [{ key: b64(key), target: 'VALUE', result: 'EQUAL', value: b64(expected) }],
          success: [{ request_put: { key: b64(key), value: b64(next) } }],
        }),
      // proto3 JSON leaves out a false `succeeded`.
      swapOutcome: (status, body) =>
        status !== 200
          ? 'error'
          : (parse(body) as { succeeded?: unknown } | null)?.succeeded === true
            ? 'ok'
            : 'conflict',
    },
  };
}

/** The first number `pattern` (with one group of digits) finds in `body`. */
function numberIn(body: string, pattern: RegExp): number | null {
  const found = pattern.exec(body)?.[1];
  return found === undefined ? null : Number(found);
}

const aspenCoordination: CoordinationProtocol = {
  watch: (prefix) => ({ method: 'GET', path: `/watch?prefix=${encodeURIComponent(prefix)}`, body: null }),
  // Every change's `id:` line (on the last event of its revision) follows the `event:` line.
  revisionMarker: '\nid: ',
  writeRevision: (body) => numberIn(body, /"revision":(\d+)/),
  grant: (ttlSeconds) => jsonPost('/lease/grant', { ttl_seconds: ttlSeconds }),
  leaseId: (status, body) => (status === 200 ? (/"lease_id":(\d+)/.exec(body)?.[1] ?? null) : null),
  keepAlive: (leaseId) => jsonPost('/lease/keepalive', { lease_id: Number(leaseId) }),
  keptAlive: (status) => status === 200,
};

/** The end of etcd's key range for a prefix: the prefix with its last byte plus one. */
function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix);
  const last = bytes.length - 1;
  bytes[last] = (bytes[last] ?? 0) + 1;
  return bytes.toString();
}

/** etcd 3.4's JSON gateway: int64 fields (revisions, lease ids, TTLs) are JSON strings. */
const etcdCoordination: CoordinationProtocol = {
  watch: (prefix) =>
    jsonPost('/v3/watch', { create_request: { key: b64(prefix), range_end: b64(prefixEnd(prefix)) } }),
  revisionMarker: '"mod_revision":"',
  writeRevision: (body) => numberIn(body, /"revision":"(\d+)"/),
  grant: (ttlSeconds) => jsonPost('/v3/lease/grant', { TTL: ttlSeconds }),
  leaseId: (status, body) => (status === 200 ? (/"ID":"(\d+)"/.exec(body)?.[1] ?? null) : null),
  // One keepalive per POST: the gateway's stream ends with the request body.
  keepAlive: (leaseId) => jsonPost('/v3/lease/keepalive', { ID: leaseId }),
  // An expired lease answers without a TTL (proto3 leaves out 0).
  keptAlive: (status, body) => status === 200 && /"TTL":"[1-9]/.test(body),
};

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
        headers: { 'content-type': 'application/json' },
        body: request.body,
        signal: AbortSignal.timeout(10_000),
      }).catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: POPULATE_CLIENTS }, worker));
}

type RunKind = 'kv' | 'watch' | 'keepalive';
const RUN_KINDS: readonly RunKind[] = ['kv', 'watch', 'keepalive'];

interface SystemResults {
  readonly kv: RunResult[];
  readonly watch: WatchRunResult[];
  readonly keepalive: KeepAliveRunResult[];
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
  const results: SystemResults = { kv: [], watch: [], keepalive: [] };
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
  return results;
}

/** A markdown table of rows whose first row is the header. */
function markdown(rows: readonly (readonly string[])[]): string {
  const width = rows[0]?.length ?? 0;
  return rows
    .map((row) => `| ${row.join(' | ')} |`)
    .join('\n')
    .replace(/\n/, `\n|${Array.from({ length: width }, () => '---').join('|')}|\n`);
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
  try {
    return await benchmark(cluster, makeTarget(cluster.endpoints), coordination, options);
  } finally {
    process.removeListener('SIGINT', stop);
    await cluster.stop();
  }
}

/** `--runs kv,watch,keepalive` (default: all). */
function runKinds(argv: readonly string[]): readonly RunKind[] {
  const index = argv.indexOf('--runs');
  if (index < 0) return RUN_KINDS;
  const named = (argv[index + 1] ?? '').split(',');
  const kinds = RUN_KINDS.filter((kind) => named.includes(kind));
  if (kinds.length !== named.length) throw new RangeError(`--runs takes a list of ${RUN_KINDS.join(', ')}`);
  return kinds;
}

async function main(argv: readonly string[]): Promise<void> {
  const withEtcd = argv.includes('--etcd');
  const durationIndex = argv.indexOf('--duration-ms');
  const durationMs = durationIndex < 0 ? DURATION_MS_DEFAULT : Number(argv[durationIndex + 1]);
  if (!Number.isSafeInteger(durationMs) || durationMs < 1_000 || durationMs > DURATION_MS_MAX)
    throw new RangeError(`--duration-ms must be in [1000, ${DURATION_MS_MAX}]`);
  const options = { durationMs, kinds: runKinds(argv) };
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  console.error(`bench: ${machine}; ${durationMs} ms per run; runs ${options.kinds.join(', ')}`);
  const systems = [await runSystem(startAspen, aspenTarget, aspenCoordination, options)];
  if (withEtcd) {
    const binary = ensureEtcd();
    systems.push(await runSystem(() => startEtcd(binary), etcdTarget, etcdCoordination, options));
  }
  const results = systems.flatMap((system) => system.kv);
  const watch = systems.flatMap((system) => system.watch);
  const keepalive = systems.flatMap((system) => system.keepalive);
  if (results.length > 0) console.log(`\n${table(results)}`);
  if (watch.length > 0) console.log(`\n${watchTable(watch)}`);
  if (keepalive.length > 0) console.log(`\n${keepAliveTable(keepalive)}`);
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
}

await main(process.argv.slice(2));
