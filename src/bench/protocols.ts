/**
 * How the bench speaks to each system over HTTP: Aspen's API and etcd's JSON gateway (etcd 3.4), for
 * the key-value runs (LoadTarget) and the coordination runs (CoordinationProtocol).
 */
import type { CoordinationProtocol } from './coordination-load.ts';
import type { HttpRequest, LoadTarget } from './load.ts';

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

export function aspenTarget(endpoints: readonly string[]): LoadTarget {
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

export function etcdTarget(endpoints: readonly string[]): LoadTarget {
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

export const aspenCoordination: CoordinationProtocol = {
  watch: (prefix) => ({ method: 'GET', path: `/watch?prefix=${encodeURIComponent(prefix)}`, body: null }),
  // Every change's `id:` line (on the last event of its revision) follows the `event:` line.
  revisionMarker: '\nid: ',
  writeRevision: (body) => numberIn(body, /"revision":(\d+)/),
  grant: (ttlSeconds) => jsonPost('/lease/grant', { ttl_seconds: ttlSeconds }),
  leaseId: (status, body) => (status === 200 ? (/"lease_id":(\d+)/.exec(body)?.[1] ?? null) : null),
  keepAlive: (leaseId) => jsonPost('/lease/keepalive', { lease_id: Number(leaseId) }),
  keptAlive: (status) => status === 200,
  lock: (name, leaseId, waitMs) => jsonPost('/lock', { name, lease_id: Number(leaseId), timeout_ms: waitMs }),
  lockKey: (status, body) => (status === 200 ? (/"key":"([^"]+)"/.exec(body)?.[1] ?? null) : null),
  unlock: (key) => jsonPost('/unlock', { key }),
  unlocked: (status) => status === 200,
};

/** The end of etcd's key range for a prefix: the prefix with its last byte plus one. */
function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix);
  const last = bytes.length - 1;
  bytes[last] = (bytes[last] ?? 0) + 1;
  return bytes.toString();
}

/** etcd 3.4's JSON gateway: int64 fields (revisions, lease ids, TTLs) are JSON strings. */
export const etcdCoordination: CoordinationProtocol = {
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
  // The v3lock gateway: the lock waits as long as the request lasts; its key comes back base64, as
  // unlock takes it.
  lock: (name, leaseId) => jsonPost('/v3/lock/lock', { name: b64(name), lease: leaseId }),
  lockKey: (status, body) => (status === 200 ? (/"key":"([^"]+)"/.exec(body)?.[1] ?? null) : null),
  unlock: (key) => jsonPost('/v3/lock/unlock', { key }),
  unlocked: (status) => status === 200,
};
