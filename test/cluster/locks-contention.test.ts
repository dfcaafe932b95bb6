import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_LEASE_LOST, EXIT_LOCK_TIMEOUT } from '../../src/bin/aspen.ts';
import { FENCED_EXIT } from './fenced-append.ts';
import { eventually, formCluster, get, ProcessCluster, type NodeProcess } from './process-harness.ts';

/**
 * Locks on real processes: CONTENDERS `aspen lock` processes (each started again when it ends) contend
 * for one name on three aspen-node processes (LMDB, election timeout 0.8–1.6 s). Each holder runs
 * fenced-append.ts, which appends its fencing token to one log key twice with the fencing recipe
 * (a Transaction comparing the lock key's create_index with the token). Meanwhile one holder, the
 * victim, is SIGSTOPped together with its `aspen lock` until its lease has expired and a later
 * holder has written, then SIGCONTed: its late append must fail the compare (and its aspen exits 6);
 * and the leader is SIGKILLed and restarted twice. Afterwards the log's entries carry strictly
 * increasing (token, write) pairs, and none of the victim's writes follows its expiry.
 */
const CONTENTION_MS = 60_000;
const CONTENDERS = 6;
/** The contender whose first run is the victim. */
const VICTIM = 0;
const LOCK_NAME = 'contention';
const LOG_KEY = 'contention-log';
/** The lease TTL of every `aspen lock` (the minimum is 3 s at this election timeout). */
const TTL_SECONDS = 4;
/** How long `aspen lock` waits for the lock before LOCK_TIMEOUT (the contender then starts again). */
const LOCK_WAIT_SECONDS = 30;
/** A holder's pause between its two appends. */
const HOLD_MS = 200;
/** Appends of one holder ("<token>:1" and "<token>:2"): (token, write) ranks as token * this + write. */
const WRITES_PER_HOLD = 3;
/** The victim's: long enough for the test to stop it in between (its timer is overdue when it resumes). */
const VICTIM_HOLD_MS = 3_000;
/** One `aspen lock` run is SIGKILLed (and the test fails) past this. */
const RUN_MS_MAX = 90_000;
/** Runs of one contender (each takes the lock once at most). */
const RUNS_MAX = 200;
/** Holders the run must see at least, so that the checks mean something. */
const HOLDERS_MIN = 8;
/** Waits for the victim's lock, its expiry and a leader. */
const WAIT_MS_MAX = 30_000;
const POLL_MS = 50;
const TEST_TIMEOUT_MS = 210_000;

const AspenBin = resolve(import.meta.dirname, '../../src/bin/aspen.ts');
const AppendScript = resolve(import.meta.dirname, 'fenced-append.ts');

const clusters: ProcessCluster[] = [];
/** Pids of the running `aspen lock` processes: SIGKILLed if the test ends early. */
const children = new Set<number>();
afterAll(() => {
  for (const pid of children) process.kill(pid, 'SIGKILL');
  for (const cluster of clusters) cluster.cleanup();
});

const pause = (ms: number) => new Promise((resolvePromise) => setTimeout(resolvePromise, ms));

interface Run {
  readonly pid: number;
  readonly output: { stdout: string; stderr: string };
  readonly exited: Promise<number | null>;
  lines(): string[];
}

/** One `aspen lock NAME -- node fenced-append.ts …` in the background (SIGKILLed past RUN_MS_MAX). */
function lockRun(endpoints: string, holdMs: number): Run {
  const child = spawn(
    process.execPath,
    [
      AspenBin,
      '--endpoints',
      endpoints,
      'lock',
      '--ttl',
      String(TTL_SECONDS),
      '--timeout',
      String(LOCK_WAIT_SECONDS),
      LOCK_NAME,
      '--',
      process.execPath,
      AppendScript,
      endpoints,
      LOG_KEY,
      String(holdMs),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error('aspen lock did not start');
  children.add(pid);
  const output = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (text: string) => (output.stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (output.stderr += text));
  const exited = new Promise<number | null>((resolveExit) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_MS_MAX);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(pid);
      resolveExit(code);
    });
  });
  const lines = () => output.stdout.split('\n').filter((line) => line.length > 0);
  return { pid, output, exited, lines };
}

interface Contention {
  stopping: boolean;
  readonly runs: { run: Run; code: number | null }[];
  victim: Run | null;
}

/** Start `aspen lock` again and again until `stopping`; the victim contender's first run holds longer. */
async function contend(index: number, endpoints: string, state: Contention) {
  for (let round = 0; round < RUNS_MAX && !state.stopping; round += 1) {
    const isVictim = index === VICTIM && round === 0;
    const run = lockRun(endpoints, isVictim ? VICTIM_HOLD_MS : HOLD_MS);
    if (isVictim) state.victim = run;
    state.runs.push({ run, code: await run.exited });
  }
}

/** The node that leads, asked of the live nodes until one answers with a live leader. */
async function liveLeader(nodes: readonly NodeProcess[]): Promise<NodeProcess> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while (Date.now() < deadline) {
    for (const node of nodes) {
      const answer = await get(`${node.http}/leader`).catch(() => null);
      const leader = nodes.find((candidate) => candidate.id === answer?.json.leader);
      if (leader !== undefined) return leader;
    }
    await pause(POLL_MS);
  }
  throw new Error('no leader among the live nodes');
}

/** Whether `key` is absent, read linearizably through any live node (false while none answers). */
async function keyGone(nodes: readonly NodeProcess[], key: string): Promise<boolean> {
  for (const node of nodes) {
    const answer = await get(`${node.http}/read?key=${encodeURIComponent(key)}`).catch(() => null);
    if (answer === null) continue;
    if (answer.status === 200) return false;
    if ((answer.json.error as { code?: string } | undefined)?.code === 'KEY_NOT_FOUND') return true;
  }
  return false;
}

async function readLog(nodes: readonly NodeProcess[]): Promise<string[]> {
  for (const node of nodes) {
    const answer = await get(`${node.http}/read?key=${LOG_KEY}`).catch(() => null);
    if (answer?.status === 200) return String(answer.json.value).split(' ');
  }
  throw new Error('the log could not be read');
}

/** "<token>:<write>" entries as pairs. */
function parseLog(entries: readonly string[]): [number, number][] {
  return entries.map((entry) => {
    const [token, write] = entry.split(':').map(Number);
    expect(Number.isSafeInteger(token) && (write === 1 || write === 2)).toBe(true);
    return [token ?? 0, write ?? 0];
  });
}

describe('locks on real processes', () => {
  it(
    'contending aspen lock holders write strictly increasing fencing tokens across leader kills; a stopped holder is fenced out',
    async () => {
      const startedMs = performance.now();
      const cluster = new ProcessCluster();
      clusters.push(cluster);
      const dataDirs = [1, 2, 3].map(() => cluster.tempDir());
      const dataDir = (id: number): string => dataDirs[id - 1] ?? '';
      let nodes = await Promise.all([1, 2, 3].map((id) => cluster.start(id, { dataDir: dataDir(id) })));
      await formCluster(cluster, nodes);
      const endpoints = nodes.map((node) => node.http).join(',');

      const state: Contention = { stopping: false, runs: [], victim: null };
      const contending = Promise.all(
        Array.from({ length: CONTENDERS }, (_, index) => contend(index, endpoints, state)),
      );
      try {
        // The victim: stopped (aspen lock first, then its command) right after its first append.
        let begin: string[] = [];
        await eventually(() => {
          begin =
            state.victim
              ?.lines()
              .find((line) => line.startsWith('begin '))
              ?.split(' ') ?? [];
          return begin.length === 4;
        }, WAIT_MS_MAX);
        const victim = state.victim as Run;
        const [, tokenText = '', commandPid = '', victimKey = ''] = begin;
        const victimToken = Number(tokenText);
        process.kill(victim.pid, 'SIGSTOP');
        process.kill(Number(commandPid), 'SIGSTOP');
        expect(victim.lines()).toHaveLength(1); // stopped before its second append
        // Its lease expires (its key is deleted) and a later holder appends; then it resumes.
        await eventually(() => keyGone(nodes, victimKey), WAIT_MS_MAX);
        await eventually(
          async () => parseLog(await readLog(nodes)).some(([token]) => token > victimToken),
          WAIT_MS_MAX,
        );
        process.kill(Number(commandPid), 'SIGCONT');
        process.kill(victim.pid, 'SIGCONT');
        expect(await victim.exited).toBe(EXIT_LEASE_LOST);
        expect(victim.lines()).toEqual([begin.join(' '), `fenced ${victimToken} 2`]);

        // The leader SIGKILLed and restarted (same data directory), twice.
        for (let kill = 0; kill < 2; kill += 1) {
          const leader = await liveLeader(nodes);
          await cluster.kill(leader);
          const restarted = await cluster.start(leader.id, { dataDir: dataDir(leader.id) });
          nodes = nodes.map((node) => (node.id === leader.id ? restarted : node));
          await liveLeader(nodes);
        }
        await pause(Math.max(0, CONTENTION_MS - (performance.now() - startedMs)));
      } finally {
        state.stopping = true;
        for (const pid of children) process.kill(pid, 'SIGCONT');
      }
      await contending;

      // Every run ended as an aspen lock may: its command's code (0, or fenced), a timeout, or (the
      // victim, or a holder whose keeper could not renew across a leader election) its lease lost.
      const endings = new Set([0, FENCED_EXIT, EXIT_LOCK_TIMEOUT, EXIT_LEASE_LOST]);
      expect(state.runs.filter(({ code }) => code === null || !endings.has(code))).toEqual([]);
      const log = parseLog(await readLog(nodes));
      // Strictly increasing (token, write) pairs: one holder at a time, in token order.
      const ranks = log.map(([token, write]) => token * WRITES_PER_HOLD + write);
      expect(ranks).toEqual([...new Set(ranks)].sort((a, b) => a - b));
      const holders = new Set(log.map(([token]) => token));
      expect(holders.size).toBeGreaterThanOrEqual(HOLDERS_MIN);
      // Every completed run's two appends are in the log; a fenced append is not.
      for (const { run, code } of state.runs) {
        for (const line of run.lines()) {
          const [word, token, write] = line.split(' ');
          const appended = (n: number) => log.some(([t, w]) => t === Number(token) && w === n);
          if (word === 'begin') expect(appended(1)).toBe(true);
          if (word === 'end') expect(appended(2)).toBe(true);
          if (word === 'fenced') expect(appended(Number(write))).toBe(false);
        }
        if (code === 0) expect(run.lines().map((line) => line.split(' ')[0])).toEqual(['begin', 'end']);
      }
      console.log(
        `locks-contention: ${holders.size} holders, ${state.runs.length} runs in ${Math.round(performance.now() - startedMs)} ms`,
      );
    },
    TEST_TIMEOUT_MS,
  );
});
