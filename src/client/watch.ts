import type { WatchEvent } from '../api/types.ts';
import { KvError } from './errors.ts';
import type { RetryPolicy } from './options.ts';
import { assert, backoff, isAborted } from './retry.ts';

/** Largest SSE event the client buffers (a put with its prev is at most two values and two keys). */
export const SSE_EVENT_CHARS_MAX = 4 * 1024 * 1024;
/** A connection that stayed open this long counts as healthy: the next failure starts a new outage. */
export const WATCH_HEALTHY_CONNECTION_MS = 10_000;
/** Streams one watch opens in its life (a bound no watch reaches: one a second for 68 years). */
export const WATCH_STREAMS_MAX = 2 ** 31;
/** Without a byte for this many progress intervals, the stream is taken as dead and reopened. */
export const WATCH_SILENT_INTERVALS_MAX = 3;

export interface WatchOptions {
  /** Watch every key that starts with the given text (default: exactly that key). */
  readonly prefix?: boolean;
  /** The first revision to see (default: the next one the node applies). */
  readonly startRevision?: number;
  /** Each event carries `prev`, the record before the change (null: it did not exist). */
  readonly prevKv?: boolean;
  /** Milliseconds between progress updates while nothing changes (server default 5,000; 0: none). */
  readonly progressIntervalMs?: number;
  /** Ends the iteration (without an error). */
  readonly signal?: AbortSignal;
  /** Overrides of the client's retry policy for each outage (attempts and time without a stream). */
  readonly retry?: Partial<RetryPolicy>;
}

/**
 * One step of a watch: the changes of one revision, in the order the entry made them, or (with no
 * events) a progress update: every matching change up to `revision` has been yielded.
 */
export interface WatchUpdate {
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

export interface WatchTarget {
  readonly endpoints: readonly string[];
  readonly retry: RetryPolicy;
  /** Bound on connecting and receiving the answer's headers. */
  readonly timeoutMs: number;
}

/** Server answers that no other attempt changes: the caller's mistake or history that is gone. */
const FINAL_CODES = new Set(['COMPACTED', 'INVALID_INPUT', 'KEY_TOO_LARGE', 'NOT_FOUND', 'HOST_NOT_ALLOWED']);

interface SseMessage {
  readonly event: string;
  readonly data: string;
  readonly id: string | null;
}

/** Server-Sent Events parsed from text chunks (the WHATWG rules Aspen's streams need), bounded per event. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | null = null;

  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const messages: SseMessage[] = [];
    let start = 0;
    for (let newline = this.buffer.indexOf('\n'); newline >= 0; newline = this.buffer.indexOf('\n', start)) {
      const line = this.buffer.slice(start, newline).replace(/\r$/, '');
      start = newline + 1;
      const message = this.line(line);
      if (message !== null) messages.push(message);
    }
    this.buffer = this.buffer.slice(start);
    const pending = this.buffer.length + this.data.reduce((sum, part) => sum + part.length, 0);
    if (pending > SSE_EVENT_CHARS_MAX)
      throw new KvError('BAD_RESPONSE', `an SSE event over ${SSE_EVENT_CHARS_MAX} characters`, {
        definite: true,
      });
    return messages;
  }

  private line(line: string): SseMessage | null {
    if (line === '') {
      const message =
        this.data.length === 0 ? null : { event: this.event, data: this.data.join('\n'), id: this.id };
      this.event = '';
      this.data = [];
      this.id = null;
      return message;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
    return null;
  }
}

/** Where the stream stands: the next revision to ask for (null: the node's next one, until it says). */
interface Position {
  next: number | null;
  /** Events of a revision whose last event (the one with the id) has not arrived yet. */
  partial: WatchEvent[];
}

function watchPath(keyOrPrefix: string, options: WatchOptions, next: number | null): string {
  const query = new URLSearchParams({ [options.prefix === true ? 'prefix' : 'key']: keyOrPrefix });
  if (next !== null) query.set('start_revision', String(next));
  if (options.prevKv === true) query.set('prev_kv', 'true');
  if (options.progressIntervalMs !== undefined)
    query.set('progress_interval_ms', String(options.progressIntervalMs));
  return `/watch?${query.toString()}`;
}

function badResponse(what: string, endpoint: string): KvError {
  return new KvError('BAD_RESPONSE', `watch: ${what} from ${endpoint}`, { endpoint, definite: true });
}

/**
 * What one SSE message means for the caller: an update to yield, the end of this stream (canceled:
 * reopen from the revision after the one it names), or nothing yet (an event inside a revision).
 */
function consume(message: SseMessage, position: Position, endpoint: string): WatchUpdate | 'canceled' | null {
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch {
    throw badResponse(`an SSE ${message.event} event that is not JSON`, endpoint);
  }
  const revision = (data as { revision?: unknown } | null)?.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0)
    throw badResponse(`an SSE ${message.event} event without a revision`, endpoint);
  if (message.event === 'canceled') {
    position.partial = [];
    position.next = revision + 1;
    return 'canceled';
  }
  if (message.event === 'progress') {
    position.partial = [];
    position.next = revision + 1;
    return { revision, events: [] };
  }
  if (message.event !== 'put' && message.event !== 'delete')
    throw badResponse(`an SSE event "${message.event}"`, endpoint);
  position.partial.push(data as WatchEvent);
  if (message.id === null) return null;
  if (message.id !== String(revision))
    throw badResponse(`id ${message.id} on revision ${revision}`, endpoint);
  const events = position.partial;
  position.partial = [];
  position.next = revision + 1;
  return { revision, events };
}

/**
 * Open one stream: its answer, or the KvError its refusal or failure stands for. `timeoutMs` bounds
 * connecting and the answer's headers only (aborting `connection`); the stream itself has no end.
 */
async function connect(
  endpoint: string,
  path: string,
  timeoutMs: number,
  signal: AbortSignal,
  connection: AbortController,
): Promise<Response> {
  const clock = { timedOut: false };
  const timer = setTimeout(() => {
    clock.timedOut = true;
    connection.abort();
  }, timeoutMs);
  let response: Response;
  try {
    response = await fetch(new URL(path, endpoint), { headers: { accept: 'text/event-stream' }, signal });
  } catch (error) {
    throw new KvError(
      clock.timedOut ? 'TIMEOUT' : 'CONNECTION',
      `watch: ${endpoint}: ${clock.timedOut ? `no answer in ${timeoutMs} ms` : error instanceof Error ? error.message : String(error)}`,
      { endpoint, definite: true },
    );
  } finally {
    clearTimeout(timer);
  }
  if (response.ok) return response;
  const text = await response.text().catch(() => '');
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: a BAD_RESPONSE below
  }
  throw KvError.fromAnswer(response.status, body, endpoint);
}

/**
 * The updates of one open stream until it ends (the node closed it, it was canceled, or it went
 * silent): yields as they arrive, advancing `position`.
 */
async function* streamUpdates(
  response: Response,
  position: Position,
  endpoint: string,
  silentMs: number | null,
  connection: AbortController,
): AsyncGenerator<WatchUpdate> {
  const body = response.body;
  if (body === null) return;
  const parser = new SseParser();
  const decoder = new TextDecoder();
  let silence: ReturnType<typeof setTimeout> | undefined;
  const quiet = (): void => {
    clearTimeout(silence);
    if (silentMs !== null)
      silence = setTimeout(() => {
        connection.abort();
      }, silentMs);
  };
  quiet();
  try {
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      quiet();
      for (const message of parser.push(decoder.decode(chunk, { stream: true }))) {
        const update = consume(message, position, endpoint);
        if (update === 'canceled') return;
        if (update !== null) yield update;
      }
    }
  } finally {
    clearTimeout(silence);
    position.partial = [];
  }
}

/** How a broken stream shows (undici's "terminated", an abort, a socket error), as opposed to a bug. */
function isStreamFailure(error: unknown): boolean {
  return (
    error instanceof TypeError ||
    error instanceof DOMException ||
    (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string')
  );
}

/**
 * A watch that resumes by itself (DESIGN.md §12 "Watch"): it streams from one endpoint; when the
 * stream ends, is canceled, goes silent or the node is down, it reopens (on the next endpoint after
 * a failure, with the client's backoff) from the revision after the last one it yielded, so the
 * caller sees every matching revision once, in order. A run of failed attempts longer than the
 * retry policy, and answers no retry can change (410 COMPACTED: the revision is older than the
 * node's history; 400), end the iteration with a KvError. `signal` and `break` end it quietly.
 */
export async function* watchUpdates(
  target: WatchTarget,
  keyOrPrefix: string,
  options: WatchOptions = {},
): AsyncGenerator<WatchUpdate> {
  assert(target.endpoints.length > 0, 'a watch has an endpoint');
  const retry = { ...target.retry, ...options.retry };
  const position: Position = { next: options.startRevision ?? null, partial: [] };
  const interval = options.progressIntervalMs;
  const silentMs = interval === 0 ? null : WATCH_SILENT_INTERVALS_MAX * (interval ?? 5_000);
  let endpointIndex = 0;
  let failures = 0;
  let outageStartMs = Date.now();
  // Each pass is one stream; a stream that yielded or lived long resets the count (it is per outage).
  for (let stream = 0; stream < WATCH_STREAMS_MAX; stream += 1) {
    if (isAborted(options.signal)) return;
    const endpoint = target.endpoints[endpointIndex % target.endpoints.length];
    assert(endpoint !== undefined, 'the endpoint index is in range');
    const connection = new AbortController();
    const signal =
      options.signal === undefined ? connection.signal : AbortSignal.any([options.signal, connection.signal]);
    const openedMs = Date.now();
    let failure: KvError | null = null;
    let yielded = false;
    try {
      const response = await connect(
        endpoint,
        watchPath(keyOrPrefix, options, position.next),
        target.timeoutMs,
        signal,
        connection,
      );
      for await (const update of streamUpdates(response, position, endpoint, silentMs, connection)) {
        failures = 0;
        yielded = true;
        yield update;
      }
    } catch (error) {
      if (isAborted(options.signal)) return;
      if (!(error instanceof KvError)) {
        if (!isAborted(connection.signal) && !isStreamFailure(error)) throw error;
        failure = new KvError('CONNECTION', `watch: the stream from ${endpoint} broke`, {
          endpoint,
          definite: true,
        });
      } else if (FINAL_CODES.has(error.code) || (error.code === 'BAD_RESPONSE' && error.status === null)) {
        // (a stream that breaks the format is a bug to report; a garbled error answer may be a proxy's)
        throw error;
      } else {
        failure = error;
      }
    } finally {
      connection.abort();
    }
    const healthy = Date.now() - openedMs >= WATCH_HEALTHY_CONNECTION_MS;
    if (healthy) failures = 0;
    // A stream that ended or was canceled reopens where it stopped, at once unless it ended empty-handed.
    if (failure === null && (yielded || healthy)) continue;
    failure ??= new KvError('CONNECTION', `watch: ${endpoint} ended the stream at once`, {
      endpoint,
      definite: true,
    });
    endpointIndex += 1;
    if (failures === 0) outageStartMs = Date.now();
    failures += 1;
    if (failures >= retry.attemptsMax || Date.now() - outageStartMs >= retry.totalMsMax) throw failure;
    await backoff(retry, failures, outageStartMs + retry.totalMsMax, options.signal);
  }
  throw new KvError('INVALID_INPUT', `watch: more than ${WATCH_STREAMS_MAX} streams`, { definite: true });
}
