/**
 * Aspen as a library: start a node inside another Node.js process with the same options as
 * aspen-node, e.g. `const node = await startNode(config, createLog({ nodeId: 1, level: 'info' }))`
 * with `const config = parseNodeConfig(['--node-id', '1'])`; any `(line, level?) => void` will do.
 */
export { startNode, type RunningNode } from './cluster/bootstrap.ts';
export { createLog, type Log, type LogLevel } from './cluster/logger.ts';
export { parseNodeConfig, type NodeConfig } from './cluster/config.ts';
export { ConfigError, StartError, StorageError } from './cluster/errors.ts';
export type { ClusterController, KeyValueStore } from './api/contracts.ts';
export { AspenError, type AspenErrorCode } from './api/errors.ts';
export type * from './api/types.ts';
export {
  KvClient,
  KvError,
  type CallOptions,
  type KvClientOptions,
  type KvErrorCode,
  type MemberSpec,
} from './client/index.ts';
