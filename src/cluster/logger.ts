import pino from 'pino';
import type { Log, LogLevel } from '../base/log.ts';

export { LOG_LEVELS, silentLog, type Log, type LogFields, type LogLevel } from '../base/log.ts';

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
/** Component names are this wide on a pretty line, so messages line up. */
const PRETTY_COMPONENT_CHARS = 10;

/** The pino loggers behind each Log made here: its own (for Fastify) and the node's root one. */
const loggers = new WeakMap<Log, { readonly logger: pino.Logger; readonly root: pino.Logger }>();

interface Entry {
  time?: unknown;
  level?: unknown;
  node_id?: unknown;
  component?: unknown;
  msg?: unknown;
  reqId?: unknown;
  peer_id?: unknown;
}

/**
 * A JSON log line as a terminal shows it, prefixed by its node (`npm start` runs three in one
 * terminal): `[node 1] 18:00:00.123 INFO  raft       leader elected: node 1 in term 2`. A request's
 * id leads its message; a peer id the message does not show follows it.
 */
export function prettyLine(json: string): string {
  const entry = JSON.parse(json) as Entry;
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '';
  const level = typeof entry.level === 'string' ? entry.level.toUpperCase().padEnd(5) : '';
  const component = typeof entry.component === 'string' ? entry.component : '';
  let message = typeof entry.msg === 'string' ? entry.msg : '';
  if (typeof entry.reqId === 'string') message = `${entry.reqId} ${message}`;
  if (typeof entry.peer_id === 'string' && !message.includes(entry.peer_id))
    message = `${message} (peer ${entry.peer_id})`;
  return `[node ${String(entry.node_id)}] ${time} ${level} ${component.padEnd(PRETTY_COMPONENT_CHARS)} ${message.slice(0, PRETTY_MESSAGE_CHARS_MAX)}\n`;
}

/**
 * Structured logs with pino (the logger Fastify uses): one JSON object per line on stderr, with
 * `level`, `time` (ISO 8601), `node_id`, `component` (componentLog), any fields, and `msg`; lines
 * below `level` are not written, for every component and Fastify alike. Writes are synchronous, so a
 * line logged just before the process exits is never lost. On a terminal each entry is one compact
 * line instead (prettyLine).
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
  return logOf(logger, logger);
}

function logOf(logger: pino.Logger, root: pino.Logger): Log {
  const log: Log = (line, level = 'info', fields) => {
    if (fields === undefined) logger[level](line);
    else logger[level](fields, line);
  };
  loggers.set(log, { logger, root });
  return log;
}

/**
 * The log of one component (raft, transport, discovery, http, storage, forwarding, …): its lines
 * carry `component`. Of a log not made by createLog (a test's), the lines pass through unchanged.
 */
export function componentLog(log: Log, component: string): Log {
  const made = loggers.get(log);
  return made === undefined ? log : logOf(made.root.child({ component }), made.root);
}

/** The pino logger behind a log made here, for Fastify's `loggerInstance` (null for a test's log). */
export function pinoLoggerOf(log: Log): pino.Logger | null {
  return loggers.get(log)?.logger ?? null;
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
