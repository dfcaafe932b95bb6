/**
 * npm run bench: a 3-node Aspen cluster on loopback (LMDB, fsync before acknowledging), writes at 1,
 * 16 and 64 clients, linearizable reads at 1 and 64, and CAS increments (read, then compare-and-swap
 * the next counter value; etcd: a txn comparing the value) at 16 and 64, one JSON line per run, then
 * a table.
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

async function benchmark(
  cluster: ServerCluster,
  target: LoadTarget,
  durationMs: number,
): Promise<RunResult[]> {
  await populate(target);
  await runLoad(target, 'write', 16, WARMUP_MS, () => cluster.cpuMicros());
  const results: RunResult[] = [];
  for (const [operation, clients] of RUNS) {
    const result = await runLoad(target, operation, clients, durationMs, () => cluster.cpuMicros());
    console.log(JSON.stringify(result));
    results.push(result);
  }
  return results;
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
  return [header, ...rows]
    .map((row) => `| ${row.join(' | ')} |`)
    .join('\n')
    .replace(/\n/, `\n|${header.map(() => '---').join('|')}|\n`);
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
  return [header, ...rows]
    .map((row) => `| ${row.join(' | ')} |`)
    .join('\n')
    .replace(/\n/, `\n|${header.map(() => '---').join('|')}|\n`);
}

async function runSystem(
  start: () => Promise<ServerCluster>,
  makeTarget: (endpoints: readonly string[]) => LoadTarget,
  durationMs: number,
): Promise<RunResult[]> {
  const cluster = await start();
  const stop = (): void => {
    void cluster.stop().then(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  try {
    return await benchmark(cluster, makeTarget(cluster.endpoints), durationMs);
  } finally {
    process.removeListener('SIGINT', stop);
    await cluster.stop();
  }
}

async function main(argv: readonly string[]): Promise<void> {
  const withEtcd = argv.includes('--etcd');
  const durationIndex = argv.indexOf('--duration-ms');
  const durationMs = durationIndex < 0 ? DURATION_MS_DEFAULT : Number(argv[durationIndex + 1]);
  if (!Number.isSafeInteger(durationMs) || durationMs < 1_000 || durationMs > DURATION_MS_MAX)
    throw new RangeError(`--duration-ms must be in [1000, ${DURATION_MS_MAX}]`);
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  console.error(`bench: ${machine}; ${durationMs} ms per run`);
  const results = await runSystem(startAspen, aspenTarget, durationMs);
  if (withEtcd) {
    const binary = ensureEtcd();
    results.push(...(await runSystem(() => startEtcd(binary), etcdTarget, durationMs)));
  }
  console.log(`\n${table(results)}`);
  if (!withEtcd) return;
  console.log(`\n${sideBySide(results)}`);
  const directory = resolve(import.meta.dirname, '../../docs/bench');
  mkdirSync(directory, { recursive: true });
  const stamp = new Date().toISOString();
  writeFileSync(
    resolve(directory, 'aspen-vs-etcd.json'),
    `${JSON.stringify({ date: stamp, machine, durationMs, results }, null, 2)}\n`,
  );
  writeFileSync(
    resolve(directory, 'aspen-vs-etcd.svg'),
    chartSvg(results, `Aspen vs etcd, 3 members on loopback, fsync on every member (${stamp.slice(0, 10)})`),
  );
  console.error(`bench: wrote docs/bench/aspen-vs-etcd.json and .svg`);
}

await main(process.argv.slice(2));
