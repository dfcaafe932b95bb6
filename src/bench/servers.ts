import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FREE_PORT_ATTEMPTS_MAX, freePort } from './ports.ts';

/** Ports this process handed to a server: a port is free until its server binds it, so never twice. */
const portsHandedOut = new Set<number>();

/** A free loopback port no server of this process was given yet. */
async function serverPort(): Promise<number> {
  for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS_MAX; attempt += 1) {
    const port = await freePort();
    if (!portsHandedOut.has(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  throw new Error('no free port that this bench has not handed out already');
}

/** A server process must print its ready line within this. */
export const STARTUP_TIMEOUT_MS = 30_000;
/**
 * A member started again after kill -9 must serve within this: it replays its log first (etcd with
 * its default --snapshot-count replays every entry since its last snapshot: 600 MB at 5M keys).
 */
export const RESTART_TIMEOUT_MS = 300_000;
/** A member asked to stop (SIGTERM) is killed (SIGKILL) after this. */
export const STOP_GRACE_MS = 5_000;
/** A killed process is reaped within this (the kernel frees a SIGKILLed process at once). */
export const KILL_WAIT_MS = 10_000;
/** A membership call of the bench may take this long (an Aspen add-learner waits up to 40 s itself). */
export const MEMBERSHIP_CALL_TIMEOUT_MS = 60_000;
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

/** A cluster whose members can be killed, started again and joined by a learner (npm run bench:scale). */
export interface ManagedCluster extends ServerCluster {
  /** Every member started, a learner added later included, in the order started. */
  readonly members: readonly BenchMember[];
  /**
   * Start one more member and add it as a learner; resolves once the process runs and the cluster
   * took it (Aspen: the add-learner call answered, which waits for the learner to be near the log's
   * end), with when its joining began (performance.now(): Aspen the start of its process, etcd the
   * member add the cluster accepted).
   */
  addLearner(): Promise<LearnerStart>;
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

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves when `child` has exited, killing it with SIGKILL if it has not within `graceMs` of `signal`. */
function ended(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  return new Promise((resolvePromise) => {
    if (!running(child)) {
      resolvePromise();
      return;
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise();
    });
    child.kill(signal);
  });
}

function waitForLine(child: ChildProcess, pattern: RegExp, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let seen = '';
    const timer = setTimeout(() => {
      reject(new Error(`${what} did not start within ${timeoutMs} ms: ${seen.slice(-2_000)}`));
    }, timeoutMs);
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

/**
 * One server process a benchmark started on its own data dir: it can be killed (SIGKILL) and started
 * again with the same arguments on the same data dir, as an operator would after a crash.
 */
export class BenchMember {
  /** Aspen: the node id; etcd: its place in the order started, from 1. */
  readonly id: number;
  readonly name: string;
  /** Client URL. */
  readonly endpoint: string;
  readonly dataDir: string;
  private readonly launch: () => ChildProcess;
  /** Resolves once a freshly launched process serves (rejects if it exits first). */
  private readonly ready: (child: ChildProcess, what: string, timeoutMs: number) => Promise<void>;
  private child: ChildProcess;
  private served: Promise<void>;

  constructor(
    where: {
      readonly id: number;
      readonly name: string;
      readonly endpoint: string;
      readonly dataDir: string;
    },
    launch: () => ChildProcess,
    ready: (child: ChildProcess, what: string, timeoutMs: number) => Promise<void>,
  ) {
    this.id = where.id;
    this.name = where.name;
    this.endpoint = where.endpoint;
    this.dataDir = where.dataDir;
    this.launch = launch;
    this.ready = ready;
    this.child = launch();
    this.served = this.watch();
  }

  /** Watches the process just launched for readiness from its first output on. */
  private watch(timeoutMs = STARTUP_TIMEOUT_MS): Promise<void> {
    const served = this.ready(this.child, this.name, timeoutMs);
    served.catch(() => undefined); // awaited by waitReady; a member never waited for fails nothing
    return served;
  }

  pid(): number | undefined {
    return this.child.pid;
  }

  cpuMicros(): number {
    return cpuMicrosOf(this.child.pid);
  }

  /** Resolves once the process serves. */
  waitReady(): Promise<void> {
    return this.served;
  }

  /** SIGKILL, as a crash: nothing is flushed or closed. */
  kill9(): Promise<void> {
    return ended(this.child, 'SIGKILL', KILL_WAIT_MS);
  }

  /** Start the process again on its data dir (after kill9) and wait until it serves. */
  async restart(): Promise<void> {
    if (running(this.child)) throw new Error(`${this.name} is still running`);
    this.child = this.launch();
    this.served = this.watch(RESTART_TIMEOUT_MS);
    await this.served;
  }

  /** SIGTERM, then SIGKILL after STOP_GRACE_MS. */
  stop(): Promise<void> {
    return ended(this.child, 'SIGTERM', STOP_GRACE_MS);
  }
}

/** Stops every member and removes every data dir, whatever failed before. */
async function stopAll(members: readonly BenchMember[], dirs: readonly string[]): Promise<void> {
  await Promise.all(members.map((member) => member.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}

export interface LearnerStart {
  readonly member: BenchMember;
  readonly startedMs: number;
}

/** A ManagedCluster over `members` (the array grows when a learner is added) and the dirs to remove. */
function managed(
  name: string,
  members: BenchMember[],
  dirs: string[],
  addLearner: () => Promise<LearnerStart>,
  headers?: Readonly<Record<string, string>>,
): ManagedCluster {
  return {
    name,
    ...(headers === undefined ? {} : { headers }),
    members,
    get endpoints() {
      return members.map((member) => member.endpoint);
    },
    cpuMicros: () => members.reduce((sum, member) => sum + member.cpuMicros(), 0),
    addLearner,
    stop: () => stopAll(members, dirs),
  };
}

async function post(
  url: string,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
  accept: (status: number, text: string) => boolean = () => false,
): Promise<void> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(MEMBERSHIP_CALL_TIMEOUT_MS),
  });
  const text = await response.text();
  if (!response.ok && !accept(response.status, text)) throw new Error(`${url}: ${response.status} ${text}`);
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

const aspenReady = (child: ChildProcess, what: string, timeoutMs: number) =>
  waitForLine(child, / up: /, what, timeoutMs);

/** An aspen-node process for node `id` on LMDB in `dir`, its Raft and HTTP ports given. */
async function aspenMember(
  id: number,
  dir: string,
  cookie: string,
  flags: readonly string[],
): Promise<{ member: BenchMember; raftAddr: string }> {
  const raftPort = await serverPort();
  const httpPort = await serverPort();
  // ASPEN_BENCH_CPU_PROF_DIR=dir: every node writes a V8 CPU profile there when it stops (node --cpu-prof).
  const profileDir = process.env.ASPEN_BENCH_CPU_PROF_DIR;
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const args = [
    ...profile,
    ASPEN_NODE,
    '--node-id',
    String(id),
    '--port',
    String(raftPort),
    '--http-addr',
    `127.0.0.1:${httpPort}`,
    '--cookie',
    cookie,
    '--data-dir',
    dir,
    '--storage',
    'lmdb',
    '--disable-mdns',
    ...flags,
  ];
  // ASPEN_BENCH_LOG_DIR=dir: every node's log is appended to dir/node-<id>.log (restarts included).
  const logDir = process.env.ASPEN_BENCH_LOG_DIR;
  const launch = () => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (logDir !== undefined)
      child.stderr.pipe(createWriteStream(join(logDir, `node-${id}.log`), { flags: 'a' }));
    return child;
  };
  const endpoint = `http://127.0.0.1:${httpPort}`;
  const member = new BenchMember({ id, name: `node-${id}`, endpoint, dataDir: dir }, launch, aspenReady);
  return { member, raftAddr: `127.0.0.1:${raftPort}` };
}

/**
 * Three aspen-node processes on LMDB in temp dirs (fsync before every acknowledgement), formed into
 * one cluster; `auth`: started with --auth-tokens, every request carrying an admin token.
 */
export async function startAspen(options: { readonly auth?: boolean } = {}): Promise<ManagedCluster> {
  const ids = [1, 2, 3];
  const dirs = ids.map(() => mkdtempSync(join(tmpdir(), 'aspen-bench-')));
  const tokenFile = join(dirs[0] ?? '', 'tokens');
  const headers = options.auth === true ? { authorization: `Bearer ${benchToken(tokenFile)}` } : undefined;
  const authFlags = headers === undefined ? [] : ['--auth-tokens', tokenFile];
  const cookie = `aspen-bench-cluster-${process.pid}`;
  const members: BenchMember[] = [];
  const raftAddrs = new Map<number, string>();
  const start = async (id: number, dir: string): Promise<BenchMember> => {
    const { member, raftAddr } = await aspenMember(id, dir, cookie, authFlags);
    members.push(member);
    raftAddrs.set(id, raftAddr);
    return member;
  };
  const node = (id: number) => ({ id, addr: `node-${id}`, raft_addr: raftAddrs.get(id) ?? '' });
  const first = () => members[0]?.endpoint ?? '';
  const addLearner = async (): Promise<LearnerStart> => {
    const id = members.length + 1;
    const dir = mkdtempSync(join(tmpdir(), 'aspen-bench-'));
    dirs.push(dir);
    const startedMs = performance.now();
    const learner = await start(id, dir);
    await learner.waitReady();
    // 504 with definite:false: the learner answered and stays, still catching up (the caller waits).
    await post(`${first()}/add-learner`, { learner: node(id) }, headers, (status, text) => {
      return status === 504 && text.includes('"definite":false');
    });
    return { member: learner, startedMs };
  };
  const cluster = managed(headers === undefined ? 'aspen' : 'aspen-auth', members, dirs, addLearner, headers);
  try {
    for (const [index, id] of ids.entries()) await start(id, dirs[index] ?? '');
    await Promise.all(members.map((member) => member.waitReady()));
    await post(`${first()}/init`, { initial_members: [node(1)] }, headers);
    await post(`${first()}/add-learner`, { learner: node(2) }, headers);
    await post(`${first()}/add-learner`, { learner: node(3) }, headers);
    await post(`${first()}/change-membership`, { members: ids }, headers);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
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

interface EtcdSpec {
  readonly name: string;
  readonly dir: string;
  readonly clientPort: number;
  readonly peerPort: number;
}

const peerUrl = (spec: EtcdSpec) => `http://127.0.0.1:${spec.peerPort}`;

/** An etcd process for `spec`; `state` new: a founding member, existing: one added later. */
function etcdMember(
  binary: string,
  id: number,
  spec: EtcdSpec,
  initialCluster: string,
  state: 'new' | 'existing',
): BenchMember {
  const clientUrl = `http://127.0.0.1:${spec.clientPort}`;
  const args = [
    '--name',
    spec.name,
    '--data-dir',
    spec.dir,
    '--listen-client-urls',
    clientUrl,
    '--advertise-client-urls',
    clientUrl,
    '--listen-peer-urls',
    peerUrl(spec),
    '--initial-advertise-peer-urls',
    peerUrl(spec),
    '--initial-cluster',
    initialCluster,
    '--initial-cluster-state',
    state,
    '--initial-cluster-token',
    `bench-${process.pid}`,
    '--log-level',
    'warn',
  ];
  const launch = () =>
    spawn(binary, args, {
      // Drained by nobody: etcd's warnings go nowhere rather than fill a pipe and block it.
      stdio: ['ignore', 'ignore', 'ignore'],
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch },
    });
  return new BenchMember(
    { id, name: spec.name, endpoint: clientUrl, dataDir: spec.dir },
    launch,
    (child, what, timeoutMs) => waitForHealthy(clientUrl, child, what, timeoutMs),
  );
}

async function etcdSpec(name: string): Promise<EtcdSpec> {
  return {
    name,
    dir: mkdtempSync(join(tmpdir(), 'etcd-bench-')),
    clientPort: await serverPort(),
    peerPort: await serverPort(),
  };
}

/**
 * etcd refuses a member add until every member has been connected for 5 s ("unhealthy cluster",
 * 503), as after a restart: the add is tried again this often, this many times.
 */
const MEMBER_ADD_ATTEMPTS_MAX = 60;
const MEMBER_ADD_RETRY_MS = 500;

/** Adds `peer` to the etcd cluster as a learner; resolves with when the accepted attempt began. */
async function etcdMemberAdd(endpoint: string, peer: string): Promise<number> {
  let refused = '';
  for (let attempt = 0; attempt < MEMBER_ADD_ATTEMPTS_MAX; attempt += 1) {
    const startedMs = performance.now();
    const response = await fetch(`${endpoint}/v3/cluster/member/add`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ peerURLs: [peer], isLearner: true }),
      signal: AbortSignal.timeout(MEMBERSHIP_CALL_TIMEOUT_MS),
    });
    refused = `${response.status} ${await response.text()}`;
    if (response.ok) return startedMs;
    if (response.status !== 503) break;
    await new Promise((resolvePromise) => setTimeout(resolvePromise, MEMBER_ADD_RETRY_MS));
  }
  throw new Error(`etcd member add: ${refused}`);
}

/** A three-member etcd cluster on loopback in temp dirs (etcd syncs its WAL before acknowledging). */
export async function startEtcd(binary: string): Promise<ManagedCluster> {
  const specs: EtcdSpec[] = [];
  for (const name of ['e1', 'e2', 'e3']) specs.push(await etcdSpec(name));
  const dirs = specs.map((spec) => spec.dir);
  const members: BenchMember[] = [];
  const clusterOf = () => specs.map((spec) => `${spec.name}=${peerUrl(spec)}`).join(',');
  const addLearner = async (): Promise<LearnerStart> => {
    const spec = await etcdSpec(`e${specs.length + 1}`);
    dirs.push(spec.dir);
    const startedMs = await etcdMemberAdd(members[0]?.endpoint ?? '', peerUrl(spec));
    specs.push(spec);
    const learner = etcdMember(binary, specs.length, spec, clusterOf(), 'existing');
    members.push(learner);
    return { member: learner, startedMs };
  };
  const cluster = managed('etcd', members, dirs, addLearner);
  const initialCluster = clusterOf();
  for (const [index, spec] of specs.entries())
    members.push(etcdMember(binary, index + 1, spec, initialCluster, 'new'));
  try {
    await Promise.all(members.map((member) => member.waitReady()));
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Resolves once etcd at `endpoint` reports itself healthy; rejects if `child` exits or after `timeoutMs`. */
async function waitForHealthy(
  endpoint: string,
  child: ChildProcess,
  what: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!running(child)) throw new Error(`${what} exited with ${String(child.exitCode ?? child.signalCode)}`);
    try {
      const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
      if (response.ok && ((await response.json()) as { health?: string }).health === 'true') return;
    } catch {
      // not up yet
    }
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 200));
  }
  throw new Error(`etcd at ${endpoint} did not become healthy within ${timeoutMs} ms`);
}
