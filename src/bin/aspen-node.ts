#!/usr/bin/env node
/**
 * aspen-node: one Aspen node. `aspen-node --node-id 1 --port 26001 --cookie my-cluster-secret --http-addr 127.0.0.1:8001`
 * Bad configuration exits with one line and code 2; a start refused for an operating reason (data
 * directory in use, port in use, storage) with one line and code 1; SIGINT/SIGTERM shut down in
 * reverse order (code 0).
 * A broken invariant is not an operating error: it crashes loudly, with its stack.
 */
import { startNode, StartError, type RunningNode } from '../cluster/bootstrap.ts';
import { ConfigError, isLoopbackHost, parseNodeConfig, type NodeConfig } from '../cluster/config.ts';
import { StorageError } from '../storage/errors.ts';

const EXIT_CONFIG = 2;
const EXIT_FAILED = 1;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

/** One line to stderr, and exit. */
function fail(line: string, code: number): never {
  process.stderr.write(`aspen-node: ${line}\n`);
  process.exit(code);
}

function configure(): NodeConfig {
  try {
    return parseNodeConfig(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (error.helpShown) process.exit(0);
    return fail(error.message, EXIT_CONFIG);
  }
}

async function main(): Promise<void> {
  const config = configure();
  if (config.cookieIsDefault && !isLoopbackHost(config.host)) {
    log(`warning: the default cookie is in use on ${config.host} (--insecure); set --cookie to a secret`);
  }
  let running: RunningNode;
  try {
    running = await startNode(config, log);
  } catch (error) {
    if (error instanceof StorageError || error instanceof StartError) fail(`cannot start node ${config.nodeId}: ${error.message}`, EXIT_FAILED);
    throw error;
  }
  log(`node ${config.nodeId} up: raft ${running.transport.listenAddresses.join(' ')} (peer ${running.transport.peerId}), http ${running.httpUrl}, storage ${config.storage} in ${config.dataDir}`);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down node ${config.nodeId}`);
    running.stop().then(() => process.exit(0), (error: unknown) => {
      log(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(EXIT_FAILED);
    });
  };
  process.on('SIGINT', () => { shutdown('SIGINT'); });
  process.on('SIGTERM', () => { shutdown('SIGTERM'); });
}

await main();
