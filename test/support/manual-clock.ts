import type { Clock } from '../../src/node/interfaces.ts';

/** Timers run in one advance at most (a node always has its tick timer). */
const TIMER_RUNS_MAX = 100_000;

/** Timers run only when the test advances time: every turn of the code under test is a call the test makes. */
export class ManualClock implements Clock {
  private now = 0;
  private sequence = 0;
  private readonly timers = new Map<number, { readonly atMs: number; readonly callback: () => void }>();

  nowMs(): number {
    return this.now;
  }

  setTimer(delayMs: number, callback: () => void): () => void {
    this.sequence += 1;
    const id = this.sequence;
    this.timers.set(id, { atMs: this.now + delayMs, callback });
    return () => {
      this.timers.delete(id);
    };
  }

  /** Run every timer due within `ms`, in time order (bounded: a node always has its tick timer). */
  advance(ms: number): void {
    const until = this.now + ms;
    for (let runs = 0; runs < TIMER_RUNS_MAX; runs += 1) {
      const due = [...this.timers.entries()]
        .filter(([, timer]) => timer.atMs <= until)
        .sort(([a, x], [b, y]) => x.atMs - y.atMs || a - b)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].atMs);
      due[1].callback();
    }
    this.now = until;
  }

  /** Timers set and not yet run or canceled. */
  get pending(): number {
    return this.timers.size;
  }
}
