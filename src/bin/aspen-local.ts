#!/usr/bin/env node
/**
 * `npm start`: a local three-node Aspen cluster on loopback in one process, data under ./data,
 * initialized on first start, printing its endpoints and a curl to try. Ctrl-C stops it. Each
 * node logs JSON lines on stderr with its node_id.
 */
// First: on a Node too old for the rest, one clear line and exit 1 (node-guard.ts).
import './node-guard.ts';
import { startNode, type RunningNode } from '../cluster/bootstrap.ts';
import { parseNodeConfig } from '../cluster/config.ts';
import { createLog } from '../cluster/logger.ts';
import { StorageError, StartError, ConfigError } from '../cluster/errors.ts';

const NODE_IDS = [1, 2, 3] as const;
const RAFT_PORT_BASE = 26_000;
const HTTP_PORT_BASE = 8_000;
const INIT_ATTEMPTS_MAX = 50;
/** The local cluster's cookie: loopback only, but as long as any cookie must be. */
const LOCAL_COOKIE = 'aspen-local-cluster';

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

const nodes: RunningNode[] = [];

/** Stop every node that is up, in reverse; a node that already stopped itself reports its own failure. */
async function stopAll(): Promise<void> {
  for (const node of [...nodes].reverse()) await node.stop().catch(() => undefined);
}

/** A node's storage failed: it stopped itself; say so in one line, stop the others, exit 1. */
function onFatal(id: number, error: StorageError): void {
  process.stderr.write(`aspen: node ${id} stopped: ${error.message}\n`);
  void stopAll().then(() => process.exit(1));
}

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
    ]);
    nodes.push(
      await startNode(config, createLog({ nodeId: id, level: config.logLevel }), {
        onFatal: (error) => {
          onFatal(id, error);
        },
      }),
    );
  }
  await initialize(nodes[0]?.httpUrl ?? '');
} catch (error) {
  if (!(error instanceof StorageError || error instanceof StartError || error instanceof ConfigError))
    throw error; // a bug: loudly
  process.stderr.write(`aspen: cannot start the local cluster: ${error.message}\n`);
  await stopAll();
  process.exit(1);
}
process.stdout.write(`Aspen is running: 3 nodes on loopback, data in ./data
${nodes.map((node, index) => `  node ${index + 1}: ${node.httpUrl}`).join('\n')}
Try:
  curl -X POST ${nodes[0]?.httpUrl ?? ''}/write -H 'Content-Type: application/json' -d '{"command":{"Set":{"key":"greeting","value":"hello world"}}}'
  curl '${nodes[0]?.httpUrl ?? ''}/read?key=greeting'
  curl ${nodes[0]?.httpUrl ?? ''}/state
(writes and linearizable reads go to the leader: GET /leader tells which node that is)
Ctrl-C stops the cluster.
`);
let stopping = false;
const shutdown = (): void => {
  if (stopping) return;
  stopping = true;
  void stopAll().then(() => process.exit(0));
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
