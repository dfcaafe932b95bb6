import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { realNode } from '../client/real-node.ts';

const DASHBOARD = resolve(import.meta.dirname, '../../deploy/grafana-dashboard.json');

/** PromQL functions and aggregations the dashboard may call (the rest of an identifier is a metric). */
const PROMQL_FUNCTIONS = new Set([
  'sum',
  'max',
  'min',
  'avg',
  'count',
  'rate',
  'irate',
  'increase',
  'changes',
  'histogram_quantile',
  'vector',
  'label_values',
  'abs',
  'clamp_min',
  'time',
]);
/** Words of PromQL that are neither functions nor metrics. */
const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring']);
/** Suffixes of the series of a histogram family (prom-client's counters carry `_total` in their name). */
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'] as const;

const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * The metric names a PromQL expression (or a Grafana label_values query) reads: label matchers,
 * range and grouping lists, strings and variables removed; an identifier followed by "(" is a function (it must be a known one); every
 * other identifier is a metric.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    // Grafana's label_values(METRIC, LABEL): the second argument is a label.
    .replace(/\blabel_values\(([^,)]*),\s*\w+\s*\)/g, 'label_values($1)')
    .replace(/\$\w+/g, ' ');
  const names: string[] = [];
  for (const match of stripped.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    const [, name = '', call] = match;
    if (call !== undefined) {
      if (!PROMQL_FUNCTIONS.has(name)) throw new Error(`unknown PromQL function ${name} in ${expr}`);
    } else if (!PROMQL_KEYWORDS.has(name)) names.push(name);
  }
  return names;
}

/** Every family of the exposition text by its `# TYPE` line: name → type. */
function families(exposition: string): Map<string, string> {
  return new Map(
    [...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match): [string, string] => [
      match[1] ?? '',
      match[2] ?? '',
    ]),
  );
}

/** Whether `name` is a series the node exports: a family, or a histogram's _bucket, _sum or _count. */
function exported(name: string, types: ReadonlyMap<string, string>): boolean {
  const type = types.get(name);
  if (type !== undefined) return type !== 'histogram' && type !== 'summary';
  return HISTOGRAM_SUFFIXES.some((suffix) => {
    if (!name.endsWith(suffix)) return false;
    const family = types.get(name.slice(0, -suffix.length));
    return family === 'histogram' || (family === 'summary' && suffix !== '_bucket');
  });
}

interface Panel {
  readonly title: string;
  readonly targets?: readonly { readonly expr: string }[];
}

describe('deploy/grafana-dashboard.json', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    uid: string;
    panels: Panel[];
    templating: { list: { query: string | { query: string } }[] };
  };
  const expressions = [
    ...dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr)),
    ...dashboard.templating.list.map((variable) =>
      typeof variable.query === 'string' ? '' : variable.query.query,
    ),
  ].filter((expr) => expr.length > 0);

  it('reads metrics by name, telling functions, labels and histogram series apart', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le) (rate(aspen_write_latency_seconds_bucket{job="$job"}[$__rate_interval])))',
      ),
    ).toEqual(['aspen_write_latency_seconds_bucket']);
    expect(metricNames('count(aspen_current_leader{job="x"} == 0) or vector(0)')).toEqual([
      'aspen_current_leader',
    ]);
    expect(metricNames('aspen_commit_index - on (instance) aspen_last_applied_index')).toEqual([
      'aspen_commit_index',
      'aspen_last_applied_index',
    ]);
    expect(metricNames('label_values(aspen_current_term, job)')).toEqual(['aspen_current_term']);
    expect(() => metricNames('predict_linear(aspen_x[5m], 60)')).toThrow(/unknown PromQL function/);
    const types = new Map([
      ['aspen_write_latency_seconds', 'histogram'],
      ['aspen_errors_total', 'counter'],
      ['aspen_state', 'gauge'],
    ]);
    expect(exported('aspen_write_latency_seconds_bucket', types)).toBe(true);
    expect(exported('aspen_write_latency_seconds_count', types)).toBe(true);
    expect(exported('aspen_write_latency_seconds', types)).toBe(false); // no such series
    expect(exported('aspen_errors_total', types)).toBe(true);
    expect(exported('aspen_errors', types)).toBe(false);
    expect(exported('aspen_state_count', types)).toBe(false); // a gauge has no _count
  });

  it('has panels with queries, and every metric a query names is one a node exports', async () => {
    expect(dashboard.uid).toBe('aspen-cluster');
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(10);
    for (const panel of dashboard.panels) expect(panel.targets?.length ?? 0, panel.title).toBeGreaterThan(0);
    const endpoint = await realNode(cleanups);
    const exposition = await (await fetch(`${endpoint}/metrics/prometheus`)).text();
    const types = families(exposition);
    expect(types.get('aspen_current_term')).toBe('gauge');
    const used = new Set(expressions.flatMap(metricNames));
    for (const name of used) expect([name, exported(name, types)]).toEqual([name, true]);
    // The panels the operator needs first: one query at least for each.
    for (const name of [
      'aspen_current_leader',
      'aspen_current_term',
      'aspen_state',
      'aspen_commit_index',
      'aspen_last_applied_index',
      'aspen_replication_lag',
      'aspen_write_latency_seconds_bucket',
      'aspen_read_latency_seconds_bucket',
      'aspen_errors_total',
      'aspen_quorum_ack_age_seconds',
      'aspen_auth_failures_total',
    ])
      expect(used).toContain(name);
  });
});
