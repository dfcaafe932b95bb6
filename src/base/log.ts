/** The levels `--log-level` takes, most severe first. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Structured fields of a line (`term`, `leader_id`, `peer_id`, …): JSON keys beside `msg`. */
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

/**
 * One log line at a level (info when not given), with optional fields. Components take this, made
 * for them by the node's logger with their `component` (cluster/logger.ts: componentLog); tests
 * collect the lines.
 */
export type Log = (line: string, level?: LogLevel, fields?: LogFields) => void;

/** A log that drops everything (tests, library use). */
export const silentLog: Log = () => undefined;
