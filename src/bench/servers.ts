import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './ports.ts';

/** A server process must print its ready line within this. */
export const STARTUP_TIMEOUT_MS = 30_000;
const CLOCK_TICKS_PER_SECOND = 100; // Linux USER_HZ
const ASPEN_NODE = resolve(import.meta.dirname, '../bin/aspen-node.ts');

/** Servers started by a benchmark: only these are ever stopped. */
export interface ServerCluster {
  readonly name: string;
  /** Client URLs, one per member. */
  readonly endpoints: readonly string[];
  /** CPU time (user + system) all members used so far, in microseconds. */
  cpuMicros(): number;
  /** Headers every request must carry (a secured Aspen: its bearer token); none: open. */
  readonly headers?: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

function cpuMicrosOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0); // utime, stime (fields 14 and 15)
    return (ticks * 1_000_000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let seen = '';
    const timer = setTimeout(() => {
      reject(new Error(`${what} did not start: ${seen.slice(-2_000)}`));
    }, STARTUP_TIMEOUT_MS);
    const onData = (text: string): void => {
      seen = (seen + text).slice(-20_000);
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolvePromise();
      }
    };
    child.stderr?.setEncoding('utf8').on('data', onData);
    child.stdout?.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${String(code)}: ${seen.slice(-2_000)}`));
    });
  });
}

async function stopAll(children: readonly ChildProcess[], dirs: readonly string[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolvePromise) => {
          if (child.exitCode !== null || child.signalCode !== null) {
            resolvePromise();
            return;
          }
          const timer = setTimeout(() => {
            child.kill('SIGKILL');
          }, 5_000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolvePromise();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}

async function post(
  url: string,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): Promise<void> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
}

/** An admin token made as an operator makes one (`aspen-node tokens add`), its hash stored in `file`. */
function benchToken(file: string): string {
  const made = spawnSync(
    process.execPath,
    [ASPEN_NODE, 'tokens', 'add', 'bench', 'admin', '--auth-tokens', file],
    {
      encoding: 'utf8',
      timeout: STARTUP_TIMEOUT_MS,
    },
  );
  if (made.status !== 0) throw new Error(`aspen-node tokens add: ${made.stderr.trim()}`);
  return made.stdout.trim();
}

/**
 * Three aspen-node processes on LMDB in temp dirs (fsync before every acknowledgement), formed into
 * one cluster; `auth`: started with --auth-tokens, every request carrying an admin token.
 */
export async function startAspen(options: { readonly auth?: boolean } = {}): Promise<ServerCluster> {
  const ids = [1, 2, 3];
  const dirs = ids.map(() => mkdtempSync(join(tmpdir(), 'aspen-bench-')));
  const tokenFile = join(dirs[0] ?? '', 'tokens');
  const headers = options.auth === true ? { authorization: `Bearer ${benchToken(tokenFile)}` } : undefined;
  const authFlags = headers === undefined ? [] : ['--auth-tokens', tokenFile];
  const raftPorts = await Promise.all(ids.map(() => freePort()));
  const httpPorts = await Promise.all(ids.map(() => freePort()));
  const cookie = `aspen-bench-cluster-${process.pid}`;
  // ASPEN_BENCH_CPU_PROF_DIR=dir: every node writes a V8 CPU profile there when it stops (node --cpu-prof).
  const profileDir = process.env.ASPEN_BENCH_CPU_PROF_DIR;
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const children = ids.map((id, index) =>
    spawn(
      process.execPath,
      [
        ...profile,
        ASPEN_NODE,
        '--node-id',
        String(id),
        '--port',
        String(raftPorts[index]),
        '--http-addr',
        `127.0.0.1:${httpPorts[index] ?? 0}`,
        '--cookie',
        cookie,
        '--data-dir',
        dirs[index] ?? '',
        '--storage',
        'lmdb',
        '--disable-mdns',
        ...authFlags,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    ),
  );
  const endpoints = httpPorts.map((port) => `http://127.0.0.1:${port}`);
  try {
    await Promise.all(children.map((child, index) => waitForLine(child, / up: /, `aspen-node ${index + 1}`)));
    const member = (index: number) => ({
      id: index + 1,
      addr: `node-${index + 1}`,
      raft_addr: `127.0.0.1:${raftPorts[index] ?? 0}`,
    });
    const first = endpoints[0] ?? '';
    await post(`${first}/init`, { initial_members: [member(0)] }, headers);
    await post(`${first}/add-learner`, { learner: member(1) }, headers);
    await post(`${first}/add-learner`, { learner: member(2) }, headers);
    await post(`${first}/change-membership`, { members: ids }, headers);
  } catch (error) {
    await stopAll(children, dirs);
    throw error;
  }
  return {
    name: headers === undefined ? 'aspen' : 'aspen-auth',
    ...(headers === undefined ? {} : { headers }),
    endpoints,
    cpuMicros: () => children.reduce((sum, child) => sum + cpuMicrosOf(child.pid), 0),
    stop: () => stopAll(children, dirs),
  };
}

/** The etcd binary, installed from Debian's etcd-server package when missing (as root, with apt). */
export function ensureEtcd(): string {
  const found = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  if (found.status === 0 && found.stdout.trim().length > 0) return found.stdout.trim();
  console.error("bench: etcd not found; installing Debian's etcd-server (apt-get)");
  const installed = spawnSync(
    'sh',
    ['-c', 'apt-get install -y etcd-server || (apt-get update && apt-get install -y etcd-server)'],
    { stdio: 'inherit' },
  );
  const again = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  if (installed.status !== 0 || again.status !== 0)
    throw new Error('cannot install etcd-server: run `apt-get install etcd-server` as root');
  return again.stdout.trim();
}

/** A three-member etcd cluster on loopback in temp dirs (etcd syncs its WAL before acknowledging). */
export async function startEtcd(binary: string): Promise<ServerCluster> {
  const names = ['e1', 'e2', 'e3'];
  const dirs = names.map(() => mkdtempSync(join(tmpdir(), 'etcd-bench-')));
  const clientPorts = await Promise.all(names.map(() => freePort()));
  const peerPorts = await Promise.all(names.map(() => freePort()));
  const initialCluster = names
    .map((name, index) => `${name}=http://127.0.0.1:${peerPorts[index] ?? 0}`)
    .join(',');
  const children = names.map((name, index) =>
    spawn(
      binary,
      [
        '--name',
        name,
        '--data-dir',
        dirs[index] ?? '',
        '--listen-client-urls',
        `http://127.0.0.1:${clientPorts[index] ?? 0}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${clientPorts[index] ?? 0}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peerPorts[index] ?? 0}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peerPorts[index] ?? 0}`,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        `bench-${process.pid}`,
        '--log-level',
        'warn',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch },
      },
    ),
  );
  const endpoints = clientPorts.map((port) => `http://127.0.0.1:${port}`);
  try {
    await Promise.all(endpoints.map((endpoint) => waitForHealthy(endpoint)));
  } catch (error) {
    await stopAll(children, dirs);
    throw error;
  }
  return {
    name: 'etcd',
    endpoints,
    cpuMicros: () => children.reduce((sum, child) => sum + cpuMicrosOf(child.pid), 0),
    stop: () => stopAll(children, dirs),
  };
}

async function waitForHealthy(endpoint: string): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      if (response.ok && ((await response.json()) as { health?: string }).health === 'true') return;
    } catch {
      // not up yet
    }
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 200));
  }
  throw new Error(`etcd at ${endpoint} did not become healthy`);
}
