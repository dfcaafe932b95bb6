#!/usr/bin/env node
/**
 * aspen-node: one Aspen node. `aspen-node --node-id 1 --port 26001 --cookie my-cluster-secret --http-addr 127.0.0.1:8001`
 * Bad configuration exits with one line and code 2; a start refused for an operating reason (data
 * directory in use, port in use, storage) with one line and code 1; a storage failure while running
 * stops the node with one line and code 1; SIGINT/SIGTERM shut down in reverse order (code 0).
 * A broken invariant is not an operating error: it crashes loudly, with its stack.
 * Logs: one JSON object per line on stderr (pino), with node_id, at --log-level and above.
 */
import { startNode, type RunningNode } from '../cluster/bootstrap.ts';
import { isLoopbackHost, parseNodeConfig, type NodeConfig } from '../cluster/config.ts';
import { createLog, type Log } from '../cluster/logger.ts';
import { StorageError, StartError, ConfigError } from '../cluster/errors.ts';

/**
 * Test hook, in the spirit of FoundationDB's BUGGIFY: the start step named here fails, to prove that
 * a failed start at any step stops exactly what started (test/cluster/lifecycle.test.ts).
 */
const FAIL_START_STEP_VARIABLE = 'ASPEN_TEST_FAIL_START_STEP';
const EXIT_CONFIG = 2;
const EXIT_FAILED = 1;
/** Longest dependency console message kept on its one line. */
const DEPENDENCY_LINE_CHARS_MAX = 500;

/** One line to stderr, and exit. */
function fail(line: string, code: number): never {
  process.stderr.write(`aspen-node: ${line}\n`);
  process.exit(code);
}

/**
 * Dependencies that print to the console (lmdb-js prints a failed commit with its stack before it
 * rejects the write) get one log line per call, never a stack trace: the node reports the failure
 * itself, in one line.
 */
function consoleOnOneLine(log: Log): void {
  const write = (...items: unknown[]): void => {
    const text = items
      .map((item) => (item instanceof Error ? `${item.name}: ${item.message}` : String(item)))
      .join(' ');
    log(`dependency: ${text.replace(/\s*\n\s*/g, ' ').slice(0, DEPENDENCY_LINE_CHARS_MAX)}`, 'warn');
  };
  console.error = write;
  console.warn = write;
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
  const log = createLog({ nodeId: config.nodeId, level: config.logLevel });
  if (config.cookieIsDefault && !isLoopbackHost(config.host)) {
    log(`the default cookie is in use on ${config.host} (--insecure); set --cookie to a secret`, 'warn');
  }
  consoleOnOneLine(log);
  let running: RunningNode;
  try {
    const failStep = process.env[FAIL_START_STEP_VARIABLE];
    running = await startNode(config, log, {
      onFatal: (error) => {
        fail(`node ${config.nodeId} stopped: ${error.message}`, EXIT_FAILED);
      },
      beforeStep: (step) => {
        if (step === failStep)
          throw new StartError(`start step ${step} failed (${FAIL_START_STEP_VARIABLE})`);
      },
    });
  } catch (error) {
    if (error instanceof StorageError || error instanceof StartError)
      fail(`cannot start node ${config.nodeId}: ${error.message}`, EXIT_FAILED);
    throw error;
  }
  log(
    `node ${config.nodeId} up: raft ${running.transport.listenAddresses.join(' ')} (peer ${running.transport.peerId}), http ${running.httpUrl}, storage ${config.storage} in ${config.dataDir}`,
  );
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down node ${config.nodeId}`);
    running.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        if (error instanceof StorageError)
          fail(`node ${config.nodeId} stopped: ${error.message}`, EXIT_FAILED);
        log(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`, 'error');
        process.exit(EXIT_FAILED);
      },
    );
  };
  process.on('SIGINT', () => {
    shutdown('SIGINT');
  });
  process.on('SIGTERM', () => {
    shutdown('SIGTERM');
  });
}

await main();
