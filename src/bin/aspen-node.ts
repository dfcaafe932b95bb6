#!/usr/bin/env node
/**
 * aspen-node: one Aspen node. `aspen-node --node-id 1 --port 26001 --cookie my-cluster-secret --http-addr 127.0.0.1:8001`
 * Bad configuration exits with one line and code 2; SIGINT/SIGTERM shut down in reverse order.
 */
import { startNode } from '../cluster/bootstrap.ts';
import { ConfigError, isLoopbackHost, parseNodeConfig, type NodeConfig } from '../cluster/config.ts';
import { StorageError } from '../storage/lmdb-store.ts';

const EXIT_CONFIG = 2;
const EXIT_START = 1;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

async function main(): Promise<void> {
  let config: NodeConfig;
  try {
    config = parseNodeConfig(process.argv.slice(2));
  } catch (error) {
    if (error instanceof ConfigError) {
      if (error.helpShown) process.exit(0);
      process.stderr.write(`aspen-node: ${error.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw error;
  }
  if (config.cookieIsDefault && !isLoopbackHost(config.host)) {
    log(`warning: the default cookie is in use on ${config.host} (--insecure); set --cookie to a secret`);
  }
  let running;
  try {
    running = await startNode(config, log);
  } catch (error) {
    const reason = error instanceof StorageError || error instanceof Error ? error.message : String(error);
    process.stderr.write(`aspen-node: cannot start node ${config.nodeId}: ${reason}\n`);
    process.exit(EXIT_START);
  }
  log(`node ${config.nodeId} up: raft ${running.transport.listenAddresses.join(' ')} (peer ${running.transport.peerId}), http ${running.httpUrl}, storage ${config.storage} in ${config.dataDir}`);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down node ${config.nodeId}`);
    running.stop().then(() => process.exit(0), (error: unknown) => {
      log(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(EXIT_START);
    });
  };
  process.on('SIGINT', () => { shutdown('SIGINT'); });
  process.on('SIGTERM', () => { shutdown('SIGTERM'); });
}

await main();
