import { buildHttpServer, type HttpServerOptions } from '../../src/http/server.ts';
import { listenInitialized, realNodeParts } from '../client/real-node.ts';
import type { Answer } from './coordination.ts';

/**
 * HTTP helpers of the lock and election tests (test/http/locks.test.ts, elections.test.ts): calls
 * that may wait, and polling for a state.
 */

/** Bound on polling for a state in these tests. */
export const WAIT_MS_MAX = 5_000;
const POLL_MS = 10;

export async function post(url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Answer> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** A pending call, with whether it has answered yet. */
export function pending(answer: Promise<Answer>) {
  const state: { done: boolean; answer: Promise<Answer> } = { done: false, answer };
  void answer.then(() => {
    state.done = true;
  });
  return state;
}

export async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** A lease id as it appears in a lock or campaign key. */
export function hex(leaseId: number): string {
  return leaseId.toString(16).padStart(16, '0');
}

type Parts = ReturnType<typeof realNodeParts>;

/**
 * A real single node (initialized) on a loopback port with the routes `services` add (the locks, the
 * elections); `stops` gets its shutdown. Also: a 60 s lease grant, and the keys under a prefix.
 */
export async function servedNode(
  stops: (() => unknown)[],
  services: (parts: Parts) => Pick<HttpServerOptions, 'locks' | 'elections'>,
) {
  const parts = realNodeParts();
  const { control, leases } = parts;
  const app = buildHttpServer({
    controller: control,
    store: control,
    leases,
    ...services(parts),
    identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
  });
  const url = await listenInitialized(app, parts, stops);
  const grant = async () => (await leases.grant({ ttl_seconds: 60 })).lease_id;
  const keys = async (prefix: string) => (await control.scan({ prefix })).entries.map((entry) => entry.key);
  return { ...parts, url, grant, keys };
}
