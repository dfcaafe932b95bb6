import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SCRIPT_EXIT_USAGE } from '../../src/base/script-args.ts';
import { stepsFor } from '../../src/bench/scale-measure.ts';
import { summaryTable, type ScaleResult, type ScaleRun } from '../../src/bench/scale-report.ts';

const SCALE = resolve(import.meta.dirname, '../../src/bench/scale.ts');
/** The smoke run's keys: 500 writes, below the automatic snapshot threshold (10,000 entries). */
const SMOKE_KEYS = 50_000;
/** The run takes about 30 s on 2 busy cores; past this it is interrupted (it stops its servers on SIGINT). */
const RUN_TIMEOUT_MS = 100_000;
/** After SIGINT, the bench has this long to stop its servers before it is killed. */
const INTERRUPT_GRACE_MS = 10_000;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the bench with `args`, its temp dirs under `tmp`; bounded by RUN_TIMEOUT_MS. */
function runScale(args: readonly string[], tmp: string): Promise<Finished> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [SCALE, ...args], {
      env: { ...process.env, TMPDIR: tmp },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const interrupt = setTimeout(() => {
      child.kill('SIGINT');
      setTimeout(() => child.kill('SIGKILL'), INTERRUPT_GRACE_MS).unref();
    }, RUN_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(interrupt);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const isCount = (value: unknown) => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

function checkFigures(result: ScaleResult): void {
  expect(result).toMatchObject({ system: 'aspen', keysRequested: SMOKE_KEYS, keysLoaded: SMOKE_KEYS });
  expect(result.failedBatches).toBe(0);
  expect(result.keysPerSecond).toBeGreaterThan(0);
  expect(result.settleProblem).toBeNull();
  expect(result.steps.map((step) => step.keys).slice(-1)).toEqual([SMOKE_KEYS]);
  expect(result.steps.length).toBeGreaterThanOrEqual(stepsFor(SMOKE_KEYS).length);
  for (const step of result.steps) {
    expect(step.members.map((member) => member.name)).toEqual(['node-1', 'node-2', 'node-3']);
    for (const member of step.members) {
      expect(member.rssBytes).toBeGreaterThan(0);
      expect(member.heapBytes).toBeGreaterThan(0);
      expect(member.dataBytes).toBeGreaterThan(0);
    }
  }
  for (const stall of result.stalls) {
    expect(isCount(stall.beforeLoadMs) && isCount(stall.afterSnapshotMs)).toBe(true);
    expect(stall.afterSnapshotMs).toBeGreaterThanOrEqual(stall.beforeLoadMs ?? 0);
  }
  expect(Object.values(result.leaderChanges).every(isCount)).toBe(true);
  expect(result.leaderBefore).toMatch(/^node-[123]$/);
  expect(result.snapshot.ms).toBeGreaterThan(0);
  for (const timing of [result.restart, result.learner]) {
    expect([timing.ms, timing.reason]).toEqual([expect.any(Number), undefined]);
    expect(isCount(timing.stallMs)).toBe(true);
    expect(timing.rssBytes).toBeGreaterThan(0);
  }
  expect(result.learner.member).toBe('node-4');
  expect(result.restart.servingMs).toBeLessThanOrEqual(result.restart.ms ?? 0);
}

describe('npm run bench:scale (a smoke run: that it runs and reports, not its goals)', () => {
  it(`loads ${SMOKE_KEYS} keys into Aspen, reports every figure and leaves no process or data dir`, async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'aspen-scale-smoke-'));
    dirs.push(tmp);
    const out = join(tmp, 'run.json');
    const finished = await runScale(['--keys', String(SMOKE_KEYS), '--out', out], tmp);
    expect([finished.code, finished.stderr.slice(-2_000)]).toEqual([
      0,
      expect.stringContaining(`wrote ${out}`),
    ]);
    const run = JSON.parse(readFileSync(out, 'utf8')) as ScaleRun;
    expect(run).toMatchObject({ keys: SMOKE_KEYS, batchKeys: 100, valueBytes: 100, clients: 8 });
    expect(run.results.map((result) => result.system)).toEqual(['aspen']);
    expect(run.loadAverage.end).toBeGreaterThanOrEqual(0);
    const [result] = run.results;
    if (result === undefined) throw new Error('no result');
    checkFigures(result);
    expect(finished.stdout).toContain('| bulk load (keys/s) |');
    expect(finished.stdout).toContain('| a new learner catching up |');
    // Every server stopped, every data dir removed: only the result file is left.
    const pids = result.steps.flatMap((step) => step.members.map((member) => member.pid ?? 0));
    expect(pids.filter(alive)).toEqual([]);
    expect(readdirSync(tmp)).toEqual(['run.json']);
  });

  it('refuses a bad --keys before starting anything, with the usage', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'aspen-scale-smoke-'));
    dirs.push(tmp);
    for (const keys of ['0', '20000000', 'many']) {
      const finished = await runScale(['--keys', keys], tmp);
      expect(finished.code).toBe(SCRIPT_EXIT_USAGE);
      expect(finished.stderr).toContain('--keys must be an integer in [1, 10000000]');
      expect(finished.stderr).toContain('usage: npm run bench:scale');
    }
    expect(readdirSync(tmp)).toEqual([]);
  });
});

describe('the scale report', () => {
  it('samples at the milestones and fractions below the total', () => {
    expect(stepsFor(1_000_000)).toEqual([100_000, 250_000, 500_000]);
    expect(stepsFor(50_000)).toEqual([5_000, 12_500, 25_000]);
    expect(stepsFor(1)).toEqual([]);
  });

  it('says n/a and why for a figure a phase could not take', () => {
    const result = {
      system: 'etcd',
      keysRequested: 10,
      keysLoaded: 10,
      loadMs: 1,
      keysPerSecond: 10_000,
      failedAttempts: 0,
      failedBatches: 0,
      steps: [],
      settleProblem: null,
      stalls: [{ name: 'e1', beforeLoadMs: null, afterSnapshotMs: null }],
      leaderChanges: { load: 0, snapshot: 1, restart: 0, learner: 0 },
      leaderBefore: 'e1',
      leaderAfterSnapshot: 'e2',
      snapshot: { ms: null, reason: 'no such call' },
      restart: { ms: 1_500, member: 'e2', servingMs: 1_000 },
      learner: { ms: null, reason: 'refused' },
    } satisfies ScaleResult;
    const table = summaryTable([result]);
    expect(table).toContain('| snapshot on the leader | n/a (no such call) |');
    expect(table).toContain('| a new learner catching up | n/a (refused) |');
    expect(table).toContain('| restart after kill -9, until caught up | 1.5 s (e2, serving after 1.0 s) |');
    expect(table).toContain('| new terms: load / snapshot | 0 / 1 |');
    expect(table).toContain('| longest event-loop stall per member (ms) | n/a (not a Node process) |');
    const timedByMetrics = { ...result, snapshot: { ms: 4_321, note: 'timed by /metrics' } };
    expect(summaryTable([timedByMetrics])).toContain(
      '| snapshot on the leader | 4.3 s (timed by /metrics) |',
    );
  });
});
