#!/usr/bin/env node
/**
 * aspen-node: one Aspen node. `aspen-node --node-id 1 --port 26001 --cookie my-cluster-secret --http-addr 127.0.0.1:8001`
 * Bad configuration, or a join ticket the cluster refused, exits with one line and code 2; a start
 * refused for an operating reason (data directory in use, port in use, storage, no answer to a join)
 * with one line and code 1; a storage failure while running stops the node with one line and code 1; SIGINT/SIGTERM shut down in reverse order (code 0).
 * A broken invariant is not an operating error: it crashes loudly, with its stack.
 * Logs: one JSON object per line on stderr (pino), with node_id and component, at --log-level and above.
 */
// First: on a Node too old for the rest, one clear line and exit 1 (node-guard.ts).
import './node-guard.ts';
import { AuthTokens, addToken } from '../cluster/auth-tokens.ts';
import { startNode, type RunningNode } from '../cluster/bootstrap.ts';
import { DEFAULT_COOKIE, isLoopbackHost, parseNodeConfig, type NodeConfig } from '../cluster/config.ts';
import { certificateProblem, httpTlsOf, type HttpTls } from '../cluster/http-tls.ts';
import { componentLog, createLog, type Log } from '../cluster/logger.ts';
import { StorageError, StartError, ConfigError } from '../cluster/errors.ts';
import { seedFromBackup, type SeededRestore } from '../cluster/restore.ts';

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

const TOKENS_USAGE = 'usage: aspen-node tokens add NAME read|write|admin --auth-tokens FILE';

/**
 * `aspen-node tokens add NAME ROLE --auth-tokens FILE`: prints a new token once (stdout) and stores
 * only its hash in FILE; a running node reads FILE again on SIGHUP.
 */
function tokensCommand(args: readonly string[]): never {
  const fileAt = args.indexOf('--auth-tokens');
  const file = fileAt < 0 ? undefined : args[fileAt + 1];
  const rest = fileAt < 0 ? [...args] : [...args.slice(0, fileAt), ...args.slice(fileAt + 2)];
  const [verb, name, role, ...extra] = rest;
  const path = file ?? process.env.ASPEN_AUTH_TOKENS;
  if (verb !== 'add' || name === undefined || role === undefined || extra.length > 0 || path === undefined)
    fail(TOKENS_USAGE, EXIT_CONFIG);
  try {
    process.stdout.write(`${addToken(path, name, role)}\n`);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(error.message, EXIT_CONFIG);
  }
  process.stderr.write(`aspen-node: token ${name} (${role}) added to ${path}; it is shown only this once\n`);
  process.exit(0);
}

/** The tokens of --auth-tokens, read before anything starts (a bad file: one line, code 2). */
function loadTokens(config: NodeConfig): AuthTokens | null {
  if (config.authTokensFile === null) return null;
  try {
    return new AuthTokens(config.authTokensFile);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return fail(error.message, EXIT_CONFIG);
  }
}

/** The certificate and key of --http-tls-cert/--http-tls-key, read before anything starts (a bad one: one line, code 2). */
function loadHttpTls(config: NodeConfig): HttpTls | null {
  try {
    return httpTlsOf(config);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return fail(error.message, EXIT_CONFIG);
  }
}

/**
 * SIGHUP: read the token file and the TLS certificate and key again. A file that is broken now is
 * refused with a log line, and what is in force stays.
 */
function reload(config: NodeConfig, tokens: AuthTokens | null, running: RunningNode, log: Log): void {
  if (tokens === null && config.httpTlsCert === null) {
    log('SIGHUP: no --auth-tokens file or TLS certificate to read again');
    return;
  }
  if (tokens !== null) {
    const reloaded = tokens.reload();
    if (reloaded.ok) log(`SIGHUP: ${reloaded.tokens} tokens read again from ${config.authTokensFile ?? ''}`);
    else log(`SIGHUP: the tokens in force stay: ${reloaded.message}`, 'error');
  }
  if (config.httpTlsCert === null) return;
  try {
    const httpTls = httpTlsOf(config);
    if (httpTls === null) return;
    running.replaceHttpTls(httpTls);
    log(`SIGHUP: TLS certificate read again from ${config.httpTlsCert}; new connections use it`);
    warnCertificate(httpTls, config, log);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    log(`SIGHUP: the TLS certificate in force stays: ${error.message}`, 'error');
  }
}

function warnCertificate(httpTls: HttpTls, config: NodeConfig, log: Log): void {
  const problem = certificateProblem(httpTls, Date.now());
  if (problem !== null)
    log(`--http-tls-cert ${config.httpTlsCert ?? ''}: ${problem}; clients will refuse it`, 'warn');
}

/** Warnings for what --insecure let through. */
function warnInsecure(config: NodeConfig, log: Log): void {
  if (config.cookieIsDefault && !isLoopbackHost(config.host))
    log(`the default cookie is in use on ${config.host} (--insecure); set --cookie to a secret`, 'warn');
  if (config.previousCookie === DEFAULT_COOKIE && !isLoopbackHost(config.host))
    log(
      `the default cookie is accepted as --previous-cookie on ${config.host} (--insecure); finish the rotation`,
      'warn',
    );
  if (config.authTokensFile === null && !isLoopbackHost(config.httpHost))
    log(
      `the HTTP API on ${config.httpHost}:${config.httpPort} takes calls from anyone (--insecure); give --auth-tokens FILE`,
      'warn',
    );
}

/**
 * --restore FILE: seed the data dir from the backup before the start (a bad file or a data dir
 * that is not empty: one line, code 2; a storage failure: code 1). Null without --restore.
 */
async function restore(config: NodeConfig, log: Log): Promise<SeededRestore | null> {
  if (config.restore === null) return null;
  try {
    return await seedFromBackup(config, log);
  } catch (error) {
    if (error instanceof ConfigError) return fail(error.message, EXIT_CONFIG);
    if (error instanceof StorageError) return fail(error.message, EXIT_FAILED);
    throw error;
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === 'tokens') tokensCommand(process.argv.slice(3));
  const config = configure();
  const tokens = loadTokens(config);
  const httpTls = loadHttpTls(config);
  const log = componentLog(createLog({ nodeId: config.nodeId, level: config.logLevel }), 'node');
  warnInsecure(config, log);
  if (httpTls !== null) warnCertificate(httpTls, config, log);
  consoleOnOneLine(log);
  const seeded = await restore(config, log);
  let running: RunningNode;
  try {
    const failStep = process.env[FAIL_START_STEP_VARIABLE];
    running = await startNode(config, log, {
      ...(tokens === null ? {} : { tokens }),
      ...(httpTls === null ? {} : { httpTls }),
      onFatal: (error) => {
        fail(`node ${config.nodeId} stopped: ${error.message}`, EXIT_FAILED);
      },
      beforeStep: (step) => {
        if (step === failStep)
          throw new StartError(`start step ${step} failed (${FAIL_START_STEP_VARIABLE})`);
      },
    });
  } catch (error) {
    // A restore whose node did not start leaves the directory empty again, to be retried as it was.
    seeded?.undo();
    if (error instanceof StorageError || error instanceof StartError)
      fail(`cannot start node ${config.nodeId}: ${error.message}`, EXIT_FAILED);
    // A stored cookie that cannot be read, or a join the cluster refused: one line, code 2.
    if (error instanceof ConfigError) fail(error.message, EXIT_CONFIG);
    throw error;
  }
  log(
    `node ${config.nodeId} up: raft ${running.transport.listenAddresses.join(' ')} (peer ${running.transport.peerId}), http ${running.httpUrl}, storage ${config.storage} in ${config.dataDir}; started in ${Math.round(process.uptime() * 1000)} ms since the process began (${running.startTimes})`,
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
  process.on('SIGHUP', () => {
    reload(config, tokens, running, log);
  });
}

await main();
