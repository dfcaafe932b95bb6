/**
 * What npm run bench:scale prints and writes: a summary table with a column per system, a table of
 * the samples per system, the JSON of the run, and with --write-docs the section of
 * docs/benchmarks.md between its scale markers and a chart of RSS per member against keys.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { memoryChartSvg, type MemorySeries } from './chart.ts';
import { markdown } from './markdown.ts';
import type { LoadOutcome, StepSample, Timing } from './scale-measure.ts';

/** What one system did in the run. */
export interface ScaleResult extends LoadOutcome {
  readonly system: 'aspen' | 'etcd';
  readonly keysRequested: number;
  /** Samples at steps while loading, the last one after the load, every member caught up. */
  readonly steps: readonly StepSample[];
  /** Why the members had not caught up after the load; null: they had. */
  readonly settleProblem: string | null;
  /** Per founding member, its longest event-loop stall since its start (Aspen; null for etcd). */
  readonly stalls: readonly {
    readonly name: string;
    readonly beforeLoadMs: number | null;
    readonly afterSnapshotMs: number | null;
  }[];
  /** New terms (elections) in each phase: the highest term any member reports, after minus before. */
  readonly leaderChanges: {
    readonly load: number;
    readonly snapshot: number;
    readonly restart: number;
    readonly learner: number;
  };
  readonly leaderBefore: string | null;
  readonly leaderAfterSnapshot: string | null;
  readonly snapshot: Timing;
  readonly restart: Timing;
  readonly learner: Timing;
}

export interface ScaleRun {
  readonly date: string;
  readonly machine: string;
  readonly commit: string;
  readonly command: string;
  readonly keys: number;
  readonly batchKeys: number;
  readonly valueBytes: number;
  readonly clients: number;
  /** The machine's 1-minute load average when the run began and ended: others' work shows here. */
  readonly loadAverage: { readonly start: number; readonly end: number };
  readonly results: readonly ScaleResult[];
}

const MEBIBYTE = 2 ** 20;
const SCALE_BEGIN = '<!-- scale:begin -->';
const SCALE_END = '<!-- scale:end -->';
const DOCS = resolve(import.meta.dirname, '../../docs');

const count = (value: number) => value.toLocaleString('en-US');
const mib = (bytes: number | null) => (bytes === null ? 'n/a' : count(Math.round(bytes / MEBIBYTE)));
const seconds = (timing: Timing) =>
  timing.ms === null ? `n/a (${timing.reason ?? 'no figure'})` : `${(timing.ms / 1_000).toFixed(1)} s`;

function lastStep(result: ScaleResult): StepSample | undefined {
  return result.steps[result.steps.length - 1];
}

/** A figure for each member, "a / b / c". */
function perMember(
  step: StepSample | undefined,
  pick: (bytes: StepSample['members'][number]) => number | null,
) {
  return step === undefined ? 'n/a' : step.members.map((member) => mib(pick(member))).join(' / ');
}

function stallText(result: ScaleResult): string {
  if (result.stalls.every((stall) => stall.afterSnapshotMs === null)) return 'n/a (not a Node process)';
  return result.stalls.map((stall) => String(stall.afterSnapshotMs ?? 'n/a')).join(' / ');
}

function caughtUpText(timing: Timing): string {
  const serving =
    timing.servingMs === undefined ? '' : `, serving after ${(timing.servingMs / 1_000).toFixed(1)} s`;
  const stall =
    timing.stallMs === undefined || timing.stallMs === null ? '' : `, its longest stall ${timing.stallMs} ms`;
  return `${seconds(timing)}${timing.member === undefined ? '' : ` (${timing.member}${serving}${stall})`}`;
}

/** The figures side by side, a column per system. */
export function summaryTable(results: readonly ScaleResult[]): string {
  const rows: [string, (result: ScaleResult) => string][] = [
    ['keys loaded / requested', (r) => `${count(r.keysLoaded)} / ${count(r.keysRequested)}`],
    ['bulk load (keys/s)', (r) => count(r.keysPerSecond)],
    ['failed writes (attempts / batches)', (r) => `${r.failedAttempts} / ${r.failedBatches}`],
    ['RSS per member at the end (MiB)', (r) => perMember(lastStep(r), (m) => m.rssBytes)],
    ['heap per member at the end (MiB)', (r) => perMember(lastStep(r), (m) => m.heapBytes)],
    ['data dir per member (MiB)', (r) => perMember(lastStep(r), (m) => m.dataBytes)],
    ['longest event-loop stall per member (ms)', stallText],
    ['new terms: load / snapshot', (r) => `${r.leaderChanges.load} / ${r.leaderChanges.snapshot}`],
    ['new terms: restart / learner', (r) => `${r.leaderChanges.restart} / ${r.leaderChanges.learner}`],
    [
      'leader before / after the snapshot',
      (r) => `${r.leaderBefore ?? 'none'} / ${r.leaderAfterSnapshot ?? 'none'}`,
    ],
    [
      'snapshot on the leader',
      (r) => `${seconds(r.snapshot)}${r.snapshot.note === undefined ? '' : ` (${r.snapshot.note})`}`,
    ],
    ['restart after kill -9, until caught up', (r) => caughtUpText(r.restart)],
    ['a new learner catching up', (r) => caughtUpText(r.learner)],
  ];
  return markdown([
    ['', ...results.map((result) => result.system)],
    ...rows.map(([label, figure]) => [label, ...results.map(figure)]),
  ]);
}

/** One row per sample: keys, time, then RSS, heap and data dir of each member. */
export function stepsTable(result: ScaleResult): string {
  const names = result.steps[0]?.members.map((member) => member.name) ?? [];
  return markdown([
    [
      'keys',
      'elapsed s',
      ...names.map((name) => `RSS ${name} MiB`),
      ...(result.system === 'aspen' ? names.map((name) => `heap ${name} MiB`) : []),
      ...names.map((name) => `data ${name} MiB`),
    ],
    ...result.steps.map((step) => [
      count(step.keys),
      (step.elapsedMs / 1_000).toFixed(1),
      ...step.members.map((member) => mib(member.rssBytes)),
      ...(result.system === 'aspen' ? step.members.map((member) => mib(member.heapBytes)) : []),
      ...step.members.map((member) => mib(member.dataBytes)),
    ]),
  ]);
}

export function report(run: ScaleRun): string {
  const parts = [summaryTable(run.results)];
  for (const result of run.results)
    parts.push(`${result.system}, sampled while loading:\n\n${stepsTable(result)}`);
  return parts.join('\n\n');
}

function series(run: ScaleRun): MemorySeries[] {
  return run.results.flatMap((result) =>
    (result.steps[0]?.members ?? []).map((member, index) => ({
      system: result.system,
      member: member.name,
      points: result.steps.map((step) => [step.keys, step.members[index]?.rssBytes ?? 0] as const),
    })),
  );
}

/** The JSON and chart under docs/bench/, and the generated part of the Scale section of docs/benchmarks.md. */
export function writeDocs(run: ScaleRun): void {
  const directory = resolve(DOCS, 'bench');
  mkdirSync(directory, { recursive: true });
  writeFileSync(resolve(directory, 'scale.json'), `${JSON.stringify(run, null, 2)}\n`);
  const systems = run.results.map((result) => result.system).join(' and ');
  const title = `RSS per member against keys loaded, ${systems}, 3 members on loopback (${run.date.slice(0, 10)})`;
  writeFileSync(resolve(directory, 'scale-rss.svg'), memoryChartSvg(series(run), title));
  const file = resolve(DOCS, 'benchmarks.md');
  const text = readFileSync(file, 'utf8');
  const begin = text.indexOf(SCALE_BEGIN);
  const end = text.indexOf(SCALE_END);
  if (begin < 0 || end < begin)
    throw new Error(`docs/benchmarks.md has no ${SCALE_BEGIN} … ${SCALE_END} section`);
  const section = [
    `${run.date} UTC, ${run.machine}; Aspen at ${run.commit}. Command: \`${run.command}\`.`,
    `${count(run.keys)} keys of ${run.valueBytes} bytes, ${run.batchKeys} keys per write, ${run.clients} clients; ` +
      `the machine's load average was ${run.loadAverage.start.toFixed(1)} at the start and ${run.loadAverage.end.toFixed(1)} at the end.`,
    report(run),
    '![RSS per member against keys loaded](bench/scale-rss.svg)',
  ].join('\n\n');
  writeFileSync(file, `${text.slice(0, begin + SCALE_BEGIN.length)}\n\n${section}\n\n${text.slice(end)}`);
}
