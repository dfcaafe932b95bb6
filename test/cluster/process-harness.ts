import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';
import { freePort } from '../../src/bench/ports.ts';

export { freePort };

const BIN = resolve(import.meta.dirname, '../../src/bin/aspen-node.ts');
const STARTUP_TIMEOUT_MS = 20_000;
/** Every HTTP call of a test is bounded. */
export const REQUEST_TIMEOUT_MS = 15_000;
/** Polling interval of eventually(). */
const POLL_MS = 50;

export interface NodeProcess {
  readonly id: number;
  readonly child: ChildProcess;
  readonly http: string;
  readonly raftAddr: string;
  readonly log: string[];
}

export interface StartOptions {
  /** The cluster cookie (default: this cluster's); null passes no --cookie at all. */
  readonly cookie?: string | null;
  /** A data directory for LMDB storage; in-memory storage without one. */
  readonly dataDir?: string;
  /** Listen for Raft on this port instead of base+id (a node that moved). */
  readonly raftPort?: number;
  /** The HTTP port (default: this cluster's port for the id). */
  readonly httpPort?: number;
  /** More flags (discovery ones, --peers, --ticket). */
  readonly flags?: readonly string[];
  /** Serve the HTTP API over TLS with this certificate and key (files): `http` is then https://. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

/** Real aspen-node processes on loopback, all killed (and temp dirs removed) by cleanup(). */
export class ProcessCluster {
  private readonly raftPorts = new Map<number, number>();
  private readonly httpPorts = new Map<number, number>();
  /** Unique per test file: mDNS and gossip never mix clusters of files running side by side. */
  readonly cookie = `my-cluster-${Math.random().toString(16).slice(2, 10)}`;
  private readonly children: ChildProcess[] = [];
  private readonly dirs: string[] = [];

  tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'aspen-proc-'));
    this.dirs.push(dir);
    return dir;
  }

  member(node: NodeProcess): { id: number; addr: string; raft_addr: string } {
    return { id: node.id, addr: `node-${node.id}`, raft_addr: node.raftAddr };
  }

  /** Node `id`'s Raft port (QUIC and TCP), chosen free once and kept across restarts. */
  async raftPort(id: number): Promise<number> {
    const known = this.raftPorts.get(id) ?? (await freePort());
    this.raftPorts.set(id, known);
    return known;
  }

  private async httpPort(id: number): Promise<number> {
    const known = this.httpPorts.get(id) ?? (await freePort());
    this.httpPorts.set(id, known);
    return known;
  }

  /** Start node `id` and wait for its "up" line. */
  async start(id: number, options: StartOptions = {}): Promise<NodeProcess> {
    const raftPort = options.raftPort ?? (await this.raftPort(id));
    const httpPort = options.httpPort ?? (await this.httpPort(id));
    const storage =
      options.dataDir === undefined
        ? ['--storage', 'memory']
        : ['--storage', 'lmdb', '--data-dir', options.dataDir];
    const cookie = options.cookie === null ? [] : ['--cookie', options.cookie ?? this.cookie];
    const child = spawn(
      process.execPath,
      [
        BIN,
        '--node-id',
        String(id),
        '--port',
        String(raftPort),
        ...cookie,
        '--http-addr',
        `127.0.0.1:${httpPort}`,
        ...storage,
        '--heartbeat-interval-ms',
        '100',
        '--election-timeout-min-ms',
        '800',
        '--election-timeout-max-ms',
        '1600',
        ...(options.tls === undefined
          ? []
          : ['--http-tls-cert', options.tls.cert, '--http-tls-key', options.tls.key]),
        ...(options.flags ?? []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.children.push(child);
    const log: string[] = [];
    return new Promise<NodeProcess>((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`node ${id} did not start: ${log.join('\n')}`));
      }, STARTUP_TIMEOUT_MS);
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        log.push(...text.split('\n').filter((line) => line.length > 0));
        if (text.includes(' up: ')) {
          clearTimeout(timer);
          resolvePromise({
            id,
            child,
            http: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${httpPort}`,
            raftAddr: `127.0.0.1:${raftPort}`,
            log,
          });
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`node ${id} exited with ${code}: ${log.join('\n')}`));
      });
    });
  }

  /** SIGKILL: no shutdown path runs, as in a power cut of the process. */
  async kill(node: NodeProcess): Promise<void> {
    if (node.child.exitCode !== null || node.child.signalCode !== null) return;
    const exited = new Promise<void>((resolvePromise) => {
      node.child.once('exit', () => {
        resolvePromise();
      });
    });
    node.child.kill('SIGKILL');
    await exited;
  }

  cleanup(): void {
    for (const child of this.children) child.kill('SIGKILL');
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

export async function post(
  url: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

export async function get(url: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** The libp2p peer id a node printed in its "up" line. */
export function peerIdOf(node: NodeProcess): string {
  const line = node.log.find((entry) => entry.includes(' up: ')) ?? '';
  const peer = /\(peer (\S+)\)/.exec(line)?.[1];
  if (peer === undefined) throw new Error(`node ${node.id} printed no peer id: ${line}`);
  return peer;
}

/** Poll `check` until it holds or `timeoutMs` passes; then assert it. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check()) && Date.now() < deadline)
    await new Promise((resolvePromise) => setTimeout(resolvePromise, POLL_MS));
  expect(await check()).toBe(true);
}

/** Form the README's cluster: init on the first node, add the others as learners, promote all. */
export async function formCluster(cluster: ProcessCluster, nodes: readonly NodeProcess[]): Promise<void> {
  const [first, ...rest] = nodes;
  if (first === undefined) throw new Error('no nodes');
  expect((await post(`${first.http}/init`, { initial_members: [cluster.member(first)] })).status).toBe(200);
  for (const node of rest)
    expect((await post(`${first.http}/add-learner`, { learner: cluster.member(node) })).status).toBe(200);
  expect(
    (await post(`${first.http}/change-membership`, { members: nodes.map((node) => node.id) })).json,
  ).toMatchObject({ members: nodes.map((node) => node.id) });
}

export interface FormedCluster {
  readonly nodes: readonly NodeProcess[];
  readonly leader: NodeProcess;
  /** A node that is not the leader (when the cluster formed). */
  readonly follower: NodeProcess;
}

/** Start nodes 1, 2 and 3, form the README's cluster, and say which one leads. */
export async function startFormedCluster(
  cluster: ProcessCluster,
  options: { readonly lmdb?: boolean } = {},
): Promise<FormedCluster> {
  const nodes = await Promise.all(
    [1, 2, 3].map((id) => cluster.start(id, options.lmdb === true ? { dataDir: cluster.tempDir() } : {})),
  );
  await formCluster(cluster, nodes);
  const leaderId = (await get(`${nodes[0]?.http ?? ''}/leader`)).json.leader;
  const leader = nodes.find((node) => node.id === leaderId);
  const follower = nodes.find((node) => node.id !== leaderId);
  if (leader === undefined || follower === undefined)
    throw new Error(`no leader among the formed nodes (leader ${String(leaderId)})`);
  return { nodes, leader, follower };
}

/** Discovery on loopback takes well under a second here; this bounds a slow CI machine. */
export const DISCOVERY_TIMEOUT_MS = 20_000;

export async function peerIds(node: NodeProcess): Promise<number[]> {
  const { json } = await get(`${node.http}/peers`);
  return (json.peers as { node_id: number }[]).map((peer) => peer.node_id);
}

export async function discoversAll(nodes: readonly NodeProcess[]): Promise<void> {
  await eventually(async () => {
    const views = await Promise.all(nodes.map(peerIds));
    return views.every((view, index) =>
      nodes.every((node) => node.id === nodes[index]?.id || view.includes(node.id)),
    );
  }, DISCOVERY_TIMEOUT_MS);
}

/** /init, /add-learner and /change-membership naming nodes by id only: discovery supplies raft_addr. */
export async function formById(nodes: readonly NodeProcess[]): Promise<void> {
  const [first, ...rest] = nodes;
  if (first === undefined) throw new Error('no nodes');
  expect((await post(`${first.http}/init`, { initial_members: [{ id: first.id }] })).status).toBe(200);
  for (const node of rest) {
    const added = await post(`${first.http}/add-learner`, { learner: { id: node.id } });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
  }
  expect(
    (await post(`${first.http}/change-membership`, { members: nodes.map((node) => node.id) })).json,
  ).toMatchObject({ members: nodes.map((node) => node.id) });
}

/** Nodes 1, 2 and 3 that found each other by mDNS, formed into one cluster by ids alone. */
export async function startThreeById(
  cluster: ProcessCluster,
): Promise<[NodeProcess, NodeProcess, NodeProcess]> {
  const nodes = await Promise.all([1, 2, 3].map((id) => cluster.start(id)));
  await discoversAll(nodes);
  await formById(nodes);
  return nodes as [NodeProcess, NodeProcess, NodeProcess];
}
