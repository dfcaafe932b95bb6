import { assert } from '../base/assert.ts';

interface ScheduledEvent {
  readonly timeMs: number;
  readonly sequence: number;
  readonly action: () => void;
}

/** Events a run may hold at once; more means a runaway feedback loop, which is a bug. */
export const EVENTS_PENDING_MAX = 1_000_000;

/**
 * Discrete-event scheduler over virtual time: a binary min-heap ordered by (time, insertion
 * sequence), so equal-time events run in the order they were scheduled and every run replays.
 */
export class EventQueue {
  private readonly heap: ScheduledEvent[] = [];
  private sequence = 0;
  nowMs = 0;
  eventsRun = 0;

  get size(): number {
    return this.heap.length;
  }

  at(timeMs: number, action: () => void): void {
    assert(timeMs >= this.nowMs, `event scheduled in the past: ${timeMs} < ${this.nowMs}`);
    assert(this.heap.length < EVENTS_PENDING_MAX, 'too many pending simulator events');
    this.sequence += 1;
    this.heap.push({ timeMs, sequence: this.sequence, action });
    this.siftUp(this.heap.length - 1);
  }

  after(delayMs: number, action: () => void): void {
    assert(delayMs >= 0, `negative delay ${delayMs}`);
    this.at(this.nowMs + delayMs, action);
  }

  /** Run the next event; false when none is due at or before `untilMs`. */
  runNext(untilMs: number): boolean {
    const next = this.heap[0];
    if (next === undefined || next.timeMs > untilMs) return false;
    const last = this.heap.pop();
    assert(last !== undefined, 'heap non-empty');
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    this.nowMs = next.timeMs;
    this.eventsRun += 1;
    next.action();
    return true;
  }

  /** Move virtual time forward to `timeMs` once nothing is due before it. */
  advanceTo(timeMs: number): void {
    const next = this.heap[0];
    assert(next === undefined || next.timeMs > timeMs, 'advance only past due events');
    if (timeMs > this.nowMs) this.nowMs = timeMs;
  }

  private less(a: ScheduledEvent, b: ScheduledEvent): boolean {
    return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.sequence < b.sequence);
  }

  private siftUp(start: number): void {
    let index = start;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const child = this.heap[index];
      const up = this.heap[parent];
      assert(child !== undefined && up !== undefined, 'heap slots');
      if (!this.less(child, up)) return;
      this.heap[index] = up;
      this.heap[parent] = child;
      index = parent;
    }
  }

  private siftDown(start: number): void {
    let index = start;
    const length = this.heap.length;
    while (true) {
      const left = 2 * index + 1;
      const right = left + 1;
      let smallest = index;
      if (left < length && this.less(this.at_(left), this.at_(smallest))) smallest = left;
      if (right < length && this.less(this.at_(right), this.at_(smallest))) smallest = right;
      if (smallest === index) return;
      const moved = this.at_(index);
      this.heap[index] = this.at_(smallest);
      this.heap[smallest] = moved;
      index = smallest;
    }
  }

  private at_(index: number): ScheduledEvent {
    const event = this.heap[index];
    assert(event !== undefined, 'heap slot in range');
    return event;
  }
}
