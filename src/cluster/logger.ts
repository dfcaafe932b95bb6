import pino from 'pino';

/** The levels `--log-level` takes, most severe first. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** One log line at a level (info when not given). Components take this; tests collect the lines. */
export type Log = (line: string, level?: LogLevel) => void;

/** A log that drops everything (tests, library use). */
export const silentLog: Log = () => undefined;

export interface LoggerOptions {
  readonly nodeId: number;
  readonly level: LogLevel;
  /** File descriptor written to: stderr (2), where the one-line fatal errors go too. */
  readonly fd?: number;
}

/**
 * Structured logs with pino (the logger Fastify uses): one JSON object per line on stderr, with
 * `level`, `time` (ISO 8601), `node_id` and `msg`; lines below `level` are not written. Writes are
 * synchronous, so a line logged just before the process exits is never lost.
 */
export function createLog(options: LoggerOptions): Log {
  const logger = pino(
    {
      level: options.level,
      base: { node_id: options.nodeId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: options.fd ?? 2, sync: true }),
  );
  return (line, level = 'info') => {
    logger[level](line);
  };
}
