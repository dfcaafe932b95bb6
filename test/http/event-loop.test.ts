import { afterEach, describe, expect, it } from 'vitest';
import type { NodeMetrics } from '../../src/api/types.ts';
import { EVENT_LOOP_RESOLUTION_MS, processMetrics } from '../../src/http/event-loop.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { RaftControlClient } from '../../src/node/control-client.ts';
import { startMemoryNode } from '../support/memory-node.ts';

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** Long enough that no scheduling hiccup of a busy machine could pass for it. */
const BLOCK_MS = 300;

function blockEventLoop(ms: number): void {
  const until = performance.now() + ms;
  let spins = 0;
  while (performance.now() < until) spins += 1;
  expect(spins).toBeGreaterThan(0);
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

describe('the event-loop stall metric', () => {
  it('reports a blocked event loop as the longest stall, since start and recently', async () => {
    const before = processMetrics();
    await sleep(EVENT_LOOP_RESOLUTION_MS * 3);
    blockEventLoop(BLOCK_MS);
    // The sampler's timer records the stall when it next runs.
    await sleep(EVENT_LOOP_RESOLUTION_MS * 3);
    const after = processMetrics();
    expect(after.event_loop_delay_max_ms).toBeGreaterThanOrEqual(BLOCK_MS - 2 * EVENT_LOOP_RESOLUTION_MS);
    expect(after.event_loop_delay_max_ms).toBeGreaterThanOrEqual(before.event_loop_delay_max_ms);
    expect(after.event_loop_delay_recent_max_ms).toBeGreaterThanOrEqual(
      BLOCK_MS - 2 * EVENT_LOOP_RESOLUTION_MS,
    );
    expect(after.event_loop_delay_recent_max_ms).toBeLessThanOrEqual(after.event_loop_delay_max_ms);
    expect(after.heap_used_bytes).toBeGreaterThan(0);
  });

  it('is served in GET /metrics and as Prometheus gauges', async () => {
    const node = startMemoryNode({ electionTicksMin: 3, electionTicksMax: 4 });
    const client = new RaftControlClient(node, { requestTimeoutMs: 2_000 });
    const app = buildHttpServer({
      controller: client,
      store: client,
      identity: { nodeId: 1, endpointId: '', startedAtMs: 0, nowMs: () => 0 },
    });
    stops.push(
      () => app.close(),
      () => {
        node.stop();
      },
    );
    blockEventLoop(BLOCK_MS);
    await sleep(EVENT_LOOP_RESOLUTION_MS * 3);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).json<NodeMetrics>();
    expect(metrics).toMatchObject({ node_id: 1 });
    expect(metrics.event_loop_delay_max_ms).toBeGreaterThanOrEqual(BLOCK_MS - 2 * EVENT_LOOP_RESOLUTION_MS);
    expect(metrics.heap_used_bytes).toBeGreaterThan(0);
    const text = (await app.inject({ method: 'GET', url: '/metrics/prometheus' })).body;
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(gauge('aspen_event_loop_delay_max_seconds')).toBeGreaterThanOrEqual(
      (BLOCK_MS - 2 * EVENT_LOOP_RESOLUTION_MS) / 1_000,
    );
    expect(gauge('aspen_event_loop_delay_recent_max_seconds')).toBeGreaterThan(0);
    expect(gauge('aspen_heap_used_bytes')).toBeGreaterThan(0);
  });
});
