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
  /** One compact human-readable line per entry instead of JSON (default: when stderr is a terminal). */
  readonly pretty?: boolean;
}

/** Longest message kept on a pretty line (a JSON line keeps all of it). */
const PRETTY_MESSAGE_CHARS_MAX = 2_000;

/** A JSON log line as a terminal shows it: `18:00:00.123 INFO  node 1 node 1 up: …`. */
export function prettyLine(json: string): string {
  const entry = JSON.parse(json) as { time?: unknown; level?: unknown; node_id?: unknown; msg?: unknown };
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '';
  const level = typeof entry.level === 'string' ? entry.level.toUpperCase().padEnd(5) : '';
  const message = typeof entry.msg === 'string' ? entry.msg.slice(0, PRETTY_MESSAGE_CHARS_MAX) : '';
  return `${time} ${level} node ${String(entry.node_id)} ${message}\n`;
}

/**
 * Structured logs with pino (the logger Fastify uses): one JSON object per line on stderr, with
 * `level`, `time` (ISO 8601), `node_id` and `msg`; lines below `level` are not written. Writes are
 * synchronous, so a line logged just before the process exits is never lost. On a terminal each
 * entry is one compact line instead (prettyLine).
 */
export function createLog(options: LoggerOptions): Log {
  const logger = pino(
    {
      level: options.level,
      base: { node_id: options.nodeId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination(options),
  );
  return (line, level = 'info') => {
    logger[level](line);
  };
}

function destination(options: LoggerOptions): pino.DestinationStream {
  const fd = options.fd ?? 2;
  const json = pino.destination({ dest: fd, sync: true });
  const pretty = options.pretty ?? (fd === 2 && process.stderr.isTTY);
  if (!pretty) return json;
  return {
    write: (line: string) => {
      json.write(prettyLine(line));
    },
  };
}
