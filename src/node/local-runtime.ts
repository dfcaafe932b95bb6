import type { Clock } from './interfaces.ts';

/**
 * Production clock: setImmediate for the next turn, unref'd setTimeout otherwise. Time is
 * milliseconds since the Unix epoch, yet monotonic within the process (the process's time origin
 * plus a monotonic offset): deadlines only take differences, and the leader stamps it on proposals
 * as log time, which must be comparable across nodes (a process-relative clock would make a new
 * leader's log time stand still until its uptime passed the old leader's).
 */
export const systemClock: Clock = {
  nowMs(): number {
    return performance.timeOrigin + performance.now();
  },
  setTimer(delayMs: number, callback: () => void): () => void {
    if (delayMs <= 0) {
      const immediate = setImmediate(callback);
      return () => {
        clearImmediate(immediate);
      };
    }
    const timer = setTimeout(callback, delayMs);
    return () => {
      clearTimeout(timer);
    };
  },
};
