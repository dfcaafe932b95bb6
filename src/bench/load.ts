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

/** `cas`: a compare-and-swap increment (read the key, swap in the next counter value, retry on a conflict). */
export type Operation = 'write' | 'read' | 'cas';

export type HttpRequest = {
  method: 'GET' | 'POST';
  path: string;
  body: string | null;
  /** More headers (the bearer token of a secured cluster). */
  headers?: Readonly<Record<string, string>>;
};

/** `target` with `headers` on every request it makes (a secured Aspen: its bearer token). */
export function withHeaders(
  target: LoadTarget,
  name: string,
  headers: Readonly<Record<string, string>>,
): LoadTarget {
  const add = (request: HttpRequest): HttpRequest => ({
    ...request,
    headers: { ...request.headers, ...headers },
  });
  return {
    ...target,
    name,
    request: (operation, key, value) => add(target.request(operation, key, value)),
    cas: {
      ...target.cas,
      read: (key) => add(target.cas.read(key)),
      swap: (key, expected, next) => add(target.cas.swap(key, expected, next)),
    },
  };
}

/** A CAS increment as a system speaks it: read the value, then swap it only if unchanged. */
export interface CasProtocol {
  read(key: string): HttpRequest;
  /** The value read, or null when the read failed. */
  valueOf(status: number, body: string): string | null;
  swap(key: string, expected: string, next: string): HttpRequest;
  /** ok: swapped; conflict: the value had changed (retry); error: anything else. */
  swapOutcome(status: number, body: string): 'ok' | 'conflict' | 'error';
}

/** How one system is spoken to: the request for an operation on a key, and what counts as success. */
export interface LoadTarget {
  readonly name: string;
  readonly endpoints: readonly string[];
  request(operation: Operation, key: string, value: string): HttpRequest;
  ok(status: number, body: string): boolean;
  readonly cas: CasProtocol;
}

/** Attempts of one CAS increment before it counts as an error (a bound on a hot key's retries). */
export const CAS_ATTEMPTS_MAX = 100;

export interface RunResult {
  readonly system: string;
  readonly operation: Operation;
  readonly clients: number;
  readonly durationMs: number;
  readonly ops: number;
  readonly errors: number;
  /** CAS runs: swaps refused because the value had changed since it was read (each retried). */
  readonly retries: number;
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

/** The next value of a CAS counter: the read value plus one, as VALUE_BYTES decimal digits (non-numbers count as 0). */
export function nextCounter(value: string): string {
  const current = /^\d+$/.test(value) ? Number(value) : 0;
  return String(current + 1).padStart(VALUE_BYTES, '0');
}

export function send(
  agent: http.Agent,
  endpoint: URL,
  request: HttpRequest,
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
            ? { ...request.headers }
            : {
                ...request.headers,
                'content-type': 'application/json',
                'content-length': Buffer.byteLength(request.body),
              },
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

export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.floor(fraction * sorted.length));
  return sorted[index] ?? 0;
}

/**
 * `clients` closed-loop clients, spread over the endpoints, each issuing one operation at a time on
 * random keys for `durationMs`. Errors are counted, never retried; a CAS increment whose swap finds
 * the value changed reads again and retries (counted in `retries`, bounded by CAS_ATTEMPTS_MAX), and
 * its latency runs from the first read to the swap that succeeded.
 */
export async function runLoad(
  target: LoadTarget,
  operation: Operation,
  clients: number,
  durationMs: number,
  cpuMicros: () => number,
  /** Called with the body of every answer to a write or read as it arrives, and when it was sent (performance.now()). */
  observe?: (body: string, sentMs: number) => void,
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
  let retries = 0;
  const once = async (endpoint: URL, key: string): Promise<boolean> => {
    if (operation !== 'cas') {
      const sentMs = performance.now();
      const answer = await send(agent, endpoint, target.request(operation, key, VALUE));
      observe?.(answer.body, sentMs);
      return target.ok(answer.status, answer.body);
    }
    for (let attempt = 0; attempt < CAS_ATTEMPTS_MAX; attempt += 1) {
      const read = await send(agent, endpoint, target.cas.read(key));
      const value = target.cas.valueOf(read.status, read.body);
      if (value === null) return false;
      const swapped = await send(agent, endpoint, target.cas.swap(key, value, nextCounter(value)));
      const outcome = target.cas.swapOutcome(swapped.status, swapped.body);
      if (outcome !== 'conflict') return outcome === 'ok';
      retries += 1;
    }
    return false;
  };
  const client = async (index: number): Promise<void> => {
    const endpoint = endpoints[index % endpoints.length];
    if (endpoint === undefined) throw new Error('no endpoint');
    while (Date.now() < deadlineMs && samples < LATENCY_SAMPLES_MAX) {
      const key = keyOf(Math.floor(Math.random() * KEY_SPACE));
      const sentNs = process.hrtime.bigint();
      try {
        if (await once(endpoint, key)) latencies[samples++] = Number(process.hrtime.bigint() - sentNs) / 1e6;
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
    retries,
    opsPerSecond: Math.round(samples / (elapsedMs / 1_000)),
    p50Ms: round(percentile(sorted, 0.5)),
    p90Ms: round(percentile(sorted, 0.9)),
    p99Ms: round(percentile(sorted, 0.99)),
    p999Ms: round(percentile(sorted, 0.999)),
    maxMs: round(sorted[sorted.length - 1] ?? 0),
    serverCpuUsPerOp: samples === 0 ? 0 : Math.round(cpuUs / samples),
  };
}
