import http from 'node:http';

/** Keys drawn from this space, each 16 bytes; values are 128 bytes (the workload). */
export const KEY_SPACE = 10_000;
export const KEY_BYTES = 16;
export const VALUE_BYTES = 128;
/** Latency samples kept per run (beyond it the run stops early: a bound, never a silent drop). */
export const LATENCY_SAMPLES_MAX = 4_000_000;
export const CLIENTS_MAX = 1_024;
/** One request may take at most this long; a slower one counts as an error. */
export const REQUEST_TIMEOUT_MS = 10_000;

export type Operation = 'write' | 'read';

/** How one system is spoken to: the request for an operation on a key, and what counts as success. */
export interface LoadTarget {
  readonly name: string;
  readonly endpoints: readonly string[];
  request(
    operation: Operation,
    key: string,
    value: string,
  ): { method: 'GET' | 'POST'; path: string; body: string | null };
  ok(status: number, body: string): boolean;
}

export interface RunResult {
  readonly system: string;
  readonly operation: Operation;
  readonly clients: number;
  readonly durationMs: number;
  readonly ops: number;
  readonly errors: number;
  readonly opsPerSecond: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  /** Server CPU time (all members, user + system) per operation, in microseconds. */
  readonly serverCpuUsPerOp: number;
}

export function keyOf(index: number): string {
  return `key-${String(index).padStart(KEY_BYTES - 4, '0')}`;
}

export const VALUE = 'v'.repeat(VALUE_BYTES);

function send(
  agent: http.Agent,
  endpoint: URL,
  request: { method: 'GET' | 'POST'; path: string; body: string | null },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      {
        host: endpoint.hostname,
        port: endpoint.port,
        method: request.method,
        path: request.path,
        agent,
        timeout: REQUEST_TIMEOUT_MS,
        headers:
          request.body === null
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(request.body) },
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => {
          resolve({ status: response.statusCode ?? 0, body });
        });
        response.on('error', reject);
      },
    );
    outgoing.on('timeout', () => {
      outgoing.destroy(new Error('timeout'));
    });
    outgoing.on('error', reject);
    outgoing.end(request.body ?? undefined);
  });
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.floor(fraction * sorted.length));
  return sorted[index] ?? 0;
}

/**
 * `clients` closed-loop clients, spread over the endpoints, each issuing one operation at a time on
 * random keys for `durationMs`. Errors are counted, never retried.
 */
export async function runLoad(
  target: LoadTarget,
  operation: Operation,
  clients: number,
  durationMs: number,
  cpuMicros: () => number,
): Promise<RunResult> {
  if (clients < 1 || clients > CLIENTS_MAX) throw new RangeError(`1..${CLIENTS_MAX} clients`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const endpoints = target.endpoints.map((endpoint) => new URL(endpoint));
  const latencies = new Float64Array(LATENCY_SAMPLES_MAX);
  let samples = 0;
  let errors = 0;
  const cpuBefore = cpuMicros();
  const startedNs = process.hrtime.bigint();
  const deadlineMs = Date.now() + durationMs;
  const client = async (index: number): Promise<void> => {
    const endpoint = endpoints[index % endpoints.length];
    if (endpoint === undefined) throw new Error('no endpoint');
    while (Date.now() < deadlineMs && samples < LATENCY_SAMPLES_MAX) {
      const request = target.request(operation, keyOf(Math.floor(Math.random() * KEY_SPACE)), VALUE);
      const sentNs = process.hrtime.bigint();
      try {
        const answer = await send(agent, endpoint, request);
        if (target.ok(answer.status, answer.body))
          latencies[samples++] = Number(process.hrtime.bigint() - sentNs) / 1e6;
        else errors += 1;
      } catch {
        errors += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, index) => client(index)));
  const elapsedMs = Number(process.hrtime.bigint() - startedNs) / 1e6;
  const cpuUs = cpuMicros() - cpuBefore;
  agent.destroy();
  const sorted = latencies.slice(0, samples).sort();
  const round = (value: number) => Math.round(value * 1_000) / 1_000;
  return {
    system: target.name,
    operation,
    clients,
    durationMs: Math.round(elapsedMs),
    ops: samples,
    errors,
    opsPerSecond: Math.round(samples / (elapsedMs / 1_000)),
    p50Ms: round(percentile(sorted, 0.5)),
    p90Ms: round(percentile(sorted, 0.9)),
    p99Ms: round(percentile(sorted, 0.99)),
    p999Ms: round(percentile(sorted, 0.999)),
    maxMs: round(sorted[sorted.length - 1] ?? 0),
    serverCpuUsPerOp: samples === 0 ? 0 : Math.round(cpuUs / samples),
  };
}
