#!/usr/bin/env node
/**
 * `npm start`: a local three-node Aspen cluster on loopback in one process, data under ./data/local
 * (apart from the hand walkthrough's ./data/node-N), initialized on first start and reopened after,
 * printing which it did, its cookie, its endpoints and a curl to try. Ctrl-C stops it. Each node
 * logs on stderr: JSON lines with its node_id, or on a terminal lines prefixed `[node N]`.
 * `npm start -- --log-level debug` (or error, warn, info) sets the level of all three.
 */
// First: on a Node too old for the rest, one clear line and exit 1 (node-guard.ts).
import './node-guard.ts';
import { startNode, type RunningNode } from '../cluster/bootstrap.ts';
import { parseNodeConfig } from '../cluster/config.ts';
import { createLog } from '../cluster/logger.ts';
import { StorageError, StartError, ConfigError } from '../cluster/errors.ts';

const NODE_IDS = [1, 2, 3] as const;
/**
 * Where the cluster listens and keeps its data, for tests (and anyone running it beside a cluster on
 * the documented ports): node N listens on HTTP base + N and Raft base + N.
 */
const HTTP_PORT_BASE = portBase('ASPEN_LOCAL_HTTP_PORT_BASE', 8_000);
const RAFT_PORT_BASE = portBase('ASPEN_LOCAL_RAFT_PORT_BASE', 26_000);
const INIT_ATTEMPTS_MAX = 50;
/** The local cluster's cookie: fixed and public, which is safe only because every node listens on loopback. */
const LOCAL_COOKIE = 'aspen-local-cluster';
/** Where the three nodes keep their data (node-1, node-2, node-3 inside). */
const DATA_DIR = process.env.ASPEN_LOCAL_DATA_DIR ?? './data/local';
const USAGE = 'usage: npm start [-- --log-level error|warn|info|debug]';

/** A port base from the environment (its nodes' ports base+1..base+3 must be valid ports), else `fallback`. */
function portBase(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined) return fallback;
  const base = Number(text);
  if (!/^\d+$/.test(text) || base < 1 || base + NODE_IDS.length > 65_535) {
    process.stderr.write(
      `aspen: ${name} must be a port number below ${65_535 - NODE_IDS.length}, got "${text}"\n`,
    );
    process.exit(2);
  }
  return base;
}

/** The one flag `npm start` takes: `--log-level LEVEL` (checked by parseNodeConfig). */
function logLevelArgs(args: readonly string[]): string[] {
  if (args.length === 0) return [];
  if (args.length === 2 && args[0] === '--log-level') return [...args];
  process.stderr.write(`${USAGE}\n`);
  process.exit(args.includes('--help') ? 0 : 2);
}

async function initialize(httpUrl: string): Promise<void> {
  const initialMembers = NODE_IDS.map((id) => ({
    id,
    addr: `node-${id}`,
    raft_addr: `127.0.0.1:${RAFT_PORT_BASE + id}`,
  }));
  for (let attempt = 0; attempt < INIT_ATTEMPTS_MAX; attempt += 1) {
    const response = await fetch(`${httpUrl}/init`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ initial_members: initialMembers }),
    });
    if (response.ok) return;
    const body = (await response.json()) as { error?: { code?: string } };
    if (body.error?.code === 'ALREADY_INITIALIZED') return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new StartError('the cluster did not initialize');
}

/** How long `npm start` waits for its cluster to elect a leader before it says it is running. */
const LEADER_WAIT_MS = 15_000;
const LEADER_POLL_MS = 50;

/** Resolves once every node knows the leader: the curls printed next then work at once. */
async function leaderKnown(running: readonly RunningNode[]): Promise<void> {
  const deadlineMs = Date.now() + LEADER_WAIT_MS;
  while (!running.every((node) => node.node.knownLeader() !== 0)) {
    if (Date.now() > deadlineMs) throw new StartError(`no leader elected within ${LEADER_WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, LEADER_POLL_MS));
  }
}

const nodes: RunningNode[] = [];
/** The data directory held a cluster already: it is reopened, not initialized. */
let reopened = false;

/** Stop every node that is up, in reverse; a node that already stopped itself reports its own failure. */
async function stopAll(): Promise<void> {
  for (const node of [...nodes].reverse()) await node.stop().catch(() => undefined);
}

/** A node's storage failed: it stopped itself; say so in one line, stop the others, exit 1. */
function onFatal(id: number, error: StorageError): void {
  process.stderr.write(`aspen: node ${id} stopped: ${error.message}\n`);
  void stopAll().then(() => process.exit(1));
}

// Ctrl-C stops what has started, even during the start.
let stopping = false;
const shutdown = (): void => {
  if (stopping) return;
  stopping = true;
  void stopAll().then(() => process.exit(0));
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

const levelArgs = logLevelArgs(process.argv.slice(2));
try {
  for (const id of NODE_IDS) {
    const config = parseNodeConfig([
      '--node-id',
      String(id),
      '--port',
      String(RAFT_PORT_BASE + id),
      '--http-addr',
      `127.0.0.1:${HTTP_PORT_BASE + id}`,
      '--cookie',
      LOCAL_COOKIE,
      '--data-dir',
      `${DATA_DIR}/node-${id}`,
      ...levelArgs,
    ]);
    nodes.push(
      await startNode(config, createLog({ nodeId: id, level: config.logLevel }), {
        onFatal: (error) => {
          onFatal(id, error);
        },
      }),
    );
  }
  reopened = nodes.some((running) => running.node.status().membership !== null);
  if (!reopened) await initialize(nodes[0]?.httpUrl ?? '');
  await leaderKnown(nodes);
} catch (error) {
  if (!(error instanceof StorageError || error instanceof StartError || error instanceof ConfigError))
    throw error; // a bug: loudly
  process.stderr.write(`aspen: cannot start the local cluster: ${error.message}\n`);
  await stopAll();
  process.exit(1);
}
process.stdout.write(`Aspen is running: 3 nodes on loopback.
${reopened ? 'Reopened the cluster' : 'Created a new cluster'} in ${DATA_DIR} (rm -rf ${DATA_DIR.replace(/^\.\//, '')} to start over).
Cookie: ${LOCAL_COOKIE} (fixed for this local cluster: safe only because its nodes listen on loopback)
${nodes.map((node, index) => `  node ${index + 1}: ${node.httpUrl}`).join('\n')}
Try:
  curl -X POST ${nodes[0]?.httpUrl ?? ''}/write -H 'Content-Type: application/json' -d '{"command":{"Set":{"key":"greeting","value":"hello world"}}}'
  curl '${nodes[0]?.httpUrl ?? ''}/read?key=greeting'
  curl ${nodes[0]?.httpUrl ?? ''}/state
(writes and linearizable reads go to the leader: GET /leader tells which node that is)
Ctrl-C stops the cluster.
`);
