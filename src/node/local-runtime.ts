import type { Clock } from './interfaces.ts';

/** Production clock: setImmediate for the next turn, unref'd setTimeout otherwise. */
export const systemClock: Clock = {
  nowMs(): number {
    return performance.now();
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
