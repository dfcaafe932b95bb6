/**
 * How npm run bench:scale speaks to each system: one batch of puts as one Raft entry (Aspen: a
 * SetMulti; etcd 3.4: a transaction through its JSON gateway) and one member's view of the cluster
 * (Aspen: GET /metrics; etcd: the maintenance status).
 */
import type { NodeMetrics } from '../api/types.ts';
import type { HttpRequest } from './load.ts';

/** Every status call of the bench is bounded. */
export const STATUS_TIMEOUT_MS = 5_000;

/** One member's view of the cluster, as far as the bench needs it. */
export interface MemberStatus {
  /** This member, as the system names it (Aspen: node id; etcd: member id). */
  readonly self: string;
  /** The leader it knows, or null. */
  readonly leader: string | null;
  readonly term: number;
  /** Progress of its state machine: Aspen the applied log index, etcd the revision. */
  readonly applied: number;
  /** V8 heap in use (Aspen); null where the system does not say. */
  readonly heapBytes: number | null;
  /** The longest event-loop stall since the process started (Aspen); null elsewhere. */
  readonly stallMs: number | null;
  /** The log index of its last snapshot (Aspen; 0: none); null where the system does not say. */
  readonly snapshotIndex: number | null;
}

export interface ScaleProtocol {
  readonly system: 'aspen' | 'etcd';
  /** A write of all `pairs` in one entry. */
  batch(pairs: readonly (readonly [string, string])[]): HttpRequest;
  /** The status of the member at `endpoint`, or null when it does not answer. */
  status(endpoint: string): Promise<MemberStatus | null>;
}

async function getJson(url: string, init: RequestInit = {}): Promise<unknown> {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

export const aspenScale: ScaleProtocol = {
  system: 'aspen',
  batch: (pairs) => ({
    method: 'POST',
    path: '/write',
    body: JSON.stringify({ command: { SetMulti: { pairs } } }),
  }),
  status: async (endpoint) => {
    const metrics = (await getJson(`${endpoint}/metrics`)) as NodeMetrics | null;
    if (metrics === null || typeof metrics.current_term !== 'number') return null;
    return {
      self: String(metrics.node_id),
      leader: metrics.current_leader === null ? null : String(metrics.current_leader),
      term: metrics.current_term,
      applied: metrics.last_applied,
      heapBytes: typeof metrics.heap_used_bytes === 'number' ? metrics.heap_used_bytes : null,
      stallMs: typeof metrics.event_loop_delay_max_ms === 'number' ? metrics.event_loop_delay_max_ms : null,
      snapshotIndex: metrics.snapshot?.index ?? 0,
    };
  },
};

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** etcd 3.4's maintenance status through the JSON gateway (int64 fields are strings). */
interface EtcdStatus {
  readonly header?: { readonly member_id?: string; readonly revision?: string };
  readonly leader?: string;
  readonly raftTerm?: string;
}

export const etcdScale: ScaleProtocol = {
  system: 'etcd',
  batch: (pairs) => ({
    method: 'POST',
    path: '/v3/kv/txn',
    body: JSON.stringify({
      success: pairs.map(([key, value]) => ({ request_put: { key: b64(key), value: b64(value) } })),
    }),
  }),
  status: async (endpoint) => {
    const status = (await getJson(`${endpoint}/v3/maintenance/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })) as EtcdStatus | null;
    const self = status?.header?.member_id;
    if (status === null || self === undefined) return null;
    return {
      self,
      leader: status.leader === undefined || status.leader === '0' ? null : status.leader,
      term: Number(status.raftTerm ?? 0),
      applied: Number(status.header?.revision ?? 0),
      heapBytes: null,
      stallMs: null,
      snapshotIndex: null,
    };
  },
};
