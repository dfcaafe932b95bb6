/** The Aspen client library: `new KvClient({ endpoints: ['http://127.0.0.1:8001'] })`. */
export { KvClient, type CallOptions, type HealthResult, type KvClientOptions, type MemberSpec, type NodeInfo, type RetryPolicy } from './kv-client.ts';
export { KvError, type KvErrorCode } from './errors.ts';
