import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import type { ProcessMetrics } from '../api/types.ts';

/**
 * The sampler's period: Node's timer fires every this many ms and records how late it ran. A stall
 * is measured to within it, and an idle loop reads 0.
 */
export const EVENT_LOOP_RESOLUTION_MS = 10;
/**
 * `event_loop_delay_recent_max_ms` covers the window in progress and the one before it: the last
 * one to two windows. One unref'd timer per process folds a window into the since-start maximum.
 */
export const EVENT_LOOP_WINDOW_MS = 60_000;
const NS_PER_MS = 1_000_000;

/** The longest event-loop stalls of this process: one histogram, shared by every server in it. */
class EventLoopStalls {
  private readonly histogram: ELDHistogram;
  private sinceStartMaxNs = 0;
  private previousWindowMaxNs = 0;

  constructor() {
    this.histogram = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.histogram.enable();
    setInterval(() => {
      this.rotate();
    }, EVENT_LOOP_WINDOW_MS).unref();
  }

  private rotate(): void {
    const windowMaxNs = this.histogram.max;
    this.sinceStartMaxNs = Math.max(this.sinceStartMaxNs, windowMaxNs);
    this.previousWindowMaxNs = windowMaxNs;
    this.histogram.reset();
  }

  /** A sampled interval minus the period it was due after: how late the loop ran, in whole ms. */
  private static stallMs(intervalNs: number): number {
    return Math.max(0, Math.round(intervalNs / NS_PER_MS - EVENT_LOOP_RESOLUTION_MS));
  }

  read(): { readonly sinceStartMs: number; readonly recentMs: number } {
    const current = this.histogram.max;
    return {
      sinceStartMs: EventLoopStalls.stallMs(Math.max(this.sinceStartMaxNs, current)),
      recentMs: EventLoopStalls.stallMs(Math.max(this.previousWindowMaxNs, current)),
    };
  }
}

let stalls: EventLoopStalls | undefined;

/** This process's sampler, started on the first call (the HTTP server starts it when built). */
function sampler(): EventLoopStalls {
  stalls ??= new EventLoopStalls();
  return stalls;
}

/** Start sampling this process's event loop (once; later calls do nothing). */
export function startEventLoopSampler(): void {
  sampler();
}

/** The process's figures for GET /metrics: the longest event-loop stalls and the V8 heap in use. */
export function processMetrics(): ProcessMetrics {
  const read = sampler().read();
  return {
    event_loop_delay_max_ms: read.sinceStartMs,
    event_loop_delay_recent_max_ms: read.recentMs,
    heap_used_bytes: getHeapStatistics().used_heap_size,
  };
}
