import type { IncomingMessage } from 'node:http';
import { WATCH_START_HEADER, type WatchEvent } from '../api/types.ts';
import {
  BATCH_KEYS_MAX,
  LEASE_KEYS_MAX,
  TXN_OPS_MAX,
  WATCH_HISTORY_BYTES_MAX,
  WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
} from '../base/limits.ts';
import { KvError } from './errors.ts';
import { openStream, readText, tlsFailure } from './http-transport.ts';
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
  /**
   * The first revision to see. Default: every change applied after the watch connected (the node
   * names that revision in the answer's x-aspen-watch-start header; a stream lost later reopens from
   * there). With an older node that sends no header: where the first update says (a progress at the
   * node's applied index R, or the first changes); a stream lost before it is reopened without a
   * start, since nothing was promised yet.
   */
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
  /** Headers every stream request carries (the bearer token). */
  readonly headers?: Readonly<Record<string, string>>;
  /** CA certificates (PEM) trusted for https:// endpoints (KvClientOptions.ca, checked). */
  readonly ca?: string;
}

/** Server answers that no other attempt changes: the caller's mistake (COMPACTED: see Rotation). */
const FINAL_CODES = new Set([
  'INVALID_INPUT',
  'KEY_TOO_LARGE',
  'NOT_FOUND',
  'HOST_NOT_ALLOWED',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'TLS_ERROR',
]);

export interface SseMessage {
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

/**
 * Events one revision may carry: the largest entry is a lease revoke that deletes every key of its
 * lease (a SetMulti or a transaction changes fewer).
 */
export const WATCH_REVISION_EVENTS_MAX = Math.max(LEASE_KEYS_MAX, BATCH_KEYS_MAX, TXN_OPS_MAX);
/**
 * Key and value bytes (with prev values) of one revision's events: a node never sends a larger one,
 * since its watch history holds at most this much. Counted in UTF-16 code units, never more than
 * the UTF-8 bytes the node counts.
 */
export const WATCH_REVISION_BYTES_MAX = WATCH_HISTORY_BYTES_MAX;

/** Where the stream stands. */
export interface Position {
  /**
   * The next revision to ask for; null until a watch opened without a start revision has heard
   * where it starts (the first answer's start header, or from an older node its first update). Only
   * ever moves forward.
   */
  next: number | null;
  /** Events of one revision whose last event (the one with the id) has not arrived yet. */
  partial: WatchEvent[];
  /** Key and value code units in `partial` (bounded by WATCH_REVISION_BYTES_MAX). */
  partialBytes: number;
  /** Why the node canceled the last stream (null: it was not canceled). */
  canceled: string | null;
}

function watchPath(keyOrPrefix: string, options: WatchOptions, next: number | null): string {
  const query = new URLSearchParams({ [options.prefix === true ? 'prefix' : 'key']: keyOrPrefix });
  if (next !== null) query.set('start_revision', String(next));
  if (options.prevKv === true) query.set('prev_kv', 'true');
  if (options.progressIntervalMs !== undefined)
    query.set('progress_interval_ms', String(options.progressIntervalMs));
  return `/watch?${query.toString()}`;
}

/** A stream that breaks the protocol: the watch drops it and resumes elsewhere, never yielding from it. */
function badResponse(what: string, endpoint: string): KvError {
  return new KvError('BAD_RESPONSE', `watch: ${what} from ${endpoint}`, { endpoint, definite: true });
}

function isRevision(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The JSON object of an SSE message that carries a revision. */
function parseData(message: SseMessage, endpoint: string): Record<string, unknown> & { revision: number } {
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch {
    throw badResponse(`an SSE ${message.event} event that is not JSON`, endpoint);
  }
  const revision = (data as { revision?: unknown } | null)?.revision;
  if (!isRevision(revision)) throw badResponse(`an SSE ${message.event} event without a revision`, endpoint);
  return data as Record<string, unknown> & { revision: number };
}

/**
 * What one SSE message means for the caller: an update to yield, the end of this stream (canceled:
 * reopen from the revision after the one it names), or nothing yet (an event inside a revision).
 * Throws (before changing `position`) on a message that breaks the protocol.
 */
export function consume(
  message: SseMessage,
  position: Position,
  endpoint: string,
): WatchUpdate | 'canceled' | null {
  const data = parseData(message, endpoint);
  const { revision } = data;
  if (message.event === 'put' || message.event === 'delete')
    return consumeEvent(message, data, position, endpoint);
  if (message.event !== 'canceled' && message.event !== 'progress')
    throw badResponse(`an SSE event "${message.event}"`, endpoint);
  // A progress or a cancel says everything up to `revision` was sent: never inside a revision, never back.
  const open = position.partial[0];
  if (open !== undefined)
    throw badResponse(`a ${message.event} at ${revision} inside revision ${open.revision}`, endpoint);
  if (position.next !== null && revision < position.next - 1)
    throw badResponse(`a ${message.event} at ${revision} after revision ${position.next - 1}`, endpoint);
  position.next = revision + 1;
  if (message.event === 'progress') return { revision, events: [] };
  position.canceled = typeof data.reason === 'string' ? data.reason : '';
  return 'canceled';
}

/** Key and value code units of a well-formed event (with its prev), or -1 when it is malformed. */
function eventBytes(event: Record<string, unknown>, type: string): number {
  const prev = event.prev as { value?: unknown } | null | undefined;
  if (event.type !== type || typeof event.key !== 'string' || typeof event.value !== 'string') return -1;
  if (prev === undefined || prev === null) return event.key.length + event.value.length;
  if (typeof prev !== 'object' || typeof prev.value !== 'string') return -1;
  return event.key.length + event.value.length + prev.value.length;
}

/** One put or delete: buffered until the revision's last event (its `id:`), then the whole revision. */
function consumeEvent(
  message: SseMessage,
  data: Record<string, unknown> & { revision: number },
  position: Position,
  endpoint: string,
): WatchUpdate | null {
  const { revision } = data;
  const bytes = eventBytes(data, message.event);
  if (bytes < 0 || revision === 0) throw badResponse(`a malformed ${message.event} event`, endpoint);
  const open = position.partial[0];
  if (open !== undefined && open.revision !== revision)
    throw badResponse(`an event of revision ${revision} inside revision ${open.revision}`, endpoint);
  if (position.next !== null && revision < position.next)
    throw badResponse(`an event of revision ${revision} after revision ${position.next - 1}`, endpoint);
  if (
    position.partial.length >= WATCH_REVISION_EVENTS_MAX ||
    position.partialBytes + bytes > WATCH_REVISION_BYTES_MAX
  )
    throw badResponse(
      `revision ${revision} over ${WATCH_REVISION_EVENTS_MAX} events or ${WATCH_REVISION_BYTES_MAX} bytes`,
      endpoint,
    );
  if (message.id !== null && message.id !== String(revision))
    throw badResponse(`id ${message.id} on revision ${revision}`, endpoint);
  position.partial.push(data as unknown as WatchEvent);
  position.partialBytes += bytes;
  if (message.id === null) return null;
  const events = position.partial;
  position.partial = [];
  position.partialBytes = 0;
  position.next = revision + 1;
  return { revision, events };
}

/** A start header's value: a positive decimal without sign or leading zero, as the node writes it. */
const START_PATTERN = /^[1-9][0-9]{0,15}$/;

/**
 * Take the stream's first revision from its start header: a watch that had no position has one from
 * the moment it connected (every later change is promised); one that had must get what it asked for.
 * Without the header (an older node) the first update tells, as before. Throws on a bad header.
 */
function takeStart(response: IncomingMessage, position: Position, endpoint: string): void {
  const given = response.headers[WATCH_START_HEADER];
  if (given === undefined) return;
  const header = String(given);
  const revision = START_PATTERN.test(header) ? Number(header) : Number.NaN;
  if (!Number.isSafeInteger(revision)) throw badResponse(`${WATCH_START_HEADER}: "${header}"`, endpoint);
  if (position.next === null) position.next = revision;
  else if (revision !== position.next)
    throw badResponse(`a stream from revision ${revision} for one asked from ${position.next}`, endpoint);
}

/** Largest error answer read from a stream's refusal (an error body is well under it). */
export const STREAM_ERROR_BYTES_MAX = 64 * 1024;

/** What a stream carries: its media type, and how its errors name it. */
export interface StreamKind {
  readonly accept: string;
  readonly what: string;
}

/** Server-Sent Events of GET /watch and GET /election/observe. */
const EVENT_STREAM: StreamKind = { accept: 'text/event-stream', what: 'watch' };

/**
 * Open one stream to `endpoint` with the target's headers and CA: its answer, or the KvError its
 * refusal or failure stands for. The target's `timeoutMs` bounds connecting and the answer's headers
 * only (aborting `connection`); the stream itself has no end.
 */
export async function connect(
  target: WatchTarget,
  endpoint: string,
  path: string,
  signal: AbortSignal,
  connection: AbortController,
  kind: StreamKind = EVENT_STREAM,
): Promise<IncomingMessage> {
  const { timeoutMs, headers = {}, ca } = target;
  const clock = { timedOut: false };
  const timer = setTimeout(() => {
    clock.timedOut = true;
    connection.abort();
  }, timeoutMs);
  let response: IncomingMessage;
  try {
    response = await openStream(new URL(path, endpoint), { ...headers, accept: kind.accept }, signal, ca);
  } catch (error) {
    const tls = clock.timedOut || !(error instanceof Error) ? null : tlsFailure(error, endpoint);
    if (tls !== null) throw tls;
    throw new KvError(
      clock.timedOut ? 'TIMEOUT' : 'CONNECTION',
      `${kind.what}: ${endpoint}: ${clock.timedOut ? `no answer in ${timeoutMs} ms` : error instanceof Error ? error.message : String(error)}`,
      { endpoint, definite: true },
    );
  } finally {
    clearTimeout(timer);
  }
  const status = response.statusCode ?? 0;
  if (status >= 200 && status < 300) return response;
  const text = await readText(response, STREAM_ERROR_BYTES_MAX).catch(() => '');
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: a BAD_RESPONSE below
  }
  throw KvError.fromAnswer(status, body, endpoint);
}

/**
 * The SSE messages of one open stream until it ends (the node closed it, or it went silent: then
 * `connection` is aborted). Silence counts only while waiting for the node: the timer stops while a
 * message is with the caller (a slow loop body is no dead stream).
 */
export async function* sseMessages(
  response: IncomingMessage,
  silentMs: number | null,
  connection: AbortController,
): AsyncGenerator<SseMessage> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  let silence: ReturnType<typeof setTimeout> | undefined;
  const listen = (): void => {
    if (silentMs !== null)
      silence = setTimeout(() => {
        connection.abort();
      }, silentMs);
  };
  listen();
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      clearTimeout(silence);
      yield* parser.push(decoder.decode(chunk, { stream: true }));
      listen();
    }
  } finally {
    clearTimeout(silence);
  }
}

/** The updates of one open stream until it ends or is canceled, advancing `position`. */
async function* streamUpdates(
  response: IncomingMessage,
  position: Position,
  endpoint: string,
  silentMs: number | null,
  connection: AbortController,
): AsyncGenerator<WatchUpdate> {
  try {
    for await (const message of sseMessages(response, silentMs, connection)) {
      const update = consume(message, position, endpoint);
      if (update === 'canceled') return;
      if (update !== null) yield update;
    }
  } finally {
    position.partial = [];
    position.partialBytes = 0;
  }
}

/**
 * The endpoint each stream goes to: the same one while streams go well, the next after a failure,
 * skipping those that refused the current start revision as compacted (a follower that installed a
 * snapshot has lost history the leader or another node may still hold).
 */
export class Rotation {
  private readonly endpoints: readonly string[];
  private index = 0;
  /** The start revision `refused` is about: a new one forgets them. */
  private refusedStart: number | null = null;
  private readonly refused = new Set<string>();
  private compactRevisionMax: number | undefined;

  constructor(endpoints: readonly string[]) {
    assert(endpoints.length > 0, 'a watch has an endpoint');
    this.endpoints = endpoints;
  }

  get current(): string {
    const endpoint = this.endpoints[this.index % this.endpoints.length];
    assert(endpoint !== undefined, 'the endpoint index is in range');
    return endpoint;
  }

  /** On to the next endpoint that has not refused `start` (there is one unless all did). */
  advance(start: number | null): void {
    this.forgetUnless(start);
    for (let step = 0; step < this.endpoints.length; step += 1) {
      this.index = (this.index + 1) % this.endpoints.length;
      if (!this.refused.has(this.current)) return;
    }
  }

  /**
   * `current` refused `start` as compacted: the error that ends the watch once every endpoint has
   * (with the highest compact revision any named), else null (the watch tries the others).
   */
  compacted(error: KvError, start: number | null): KvError | null {
    assert(error.code === 'COMPACTED', 'a compacted refusal');
    this.forgetUnless(start);
    this.refused.add(this.current);
    const seen = error.compactRevision;
    if (seen !== undefined) this.compactRevisionMax = Math.max(seen, this.compactRevisionMax ?? seen);
    if (this.endpoints.some((endpoint) => !this.refused.has(endpoint))) return null;
    const compactRevision = this.compactRevisionMax;
    const oldest =
      compactRevision === undefined ? '' : `; the oldest revision one serves is ${compactRevision}`;
    return new KvError(
      'COMPACTED',
      `${error.message} (refused by every endpoint: ${this.refused.size}${oldest})`,
      { status: error.status, definite: true, ...(compactRevision === undefined ? {} : { compactRevision }) },
    );
  }

  private forgetUnless(start: number | null): void {
    if (start === this.refusedStart) return;
    this.refusedStart = start;
    this.refused.clear();
    this.compactRevisionMax = undefined;
  }
}

/** What one stream's requests listen to: the caller's signal (if any) and the stream's own connection. */
export function streamSignal(caller: AbortSignal | undefined, connection: AbortController): AbortSignal {
  return caller === undefined ? connection.signal : AbortSignal.any([caller, connection.signal]);
}

/** How a broken stream shows (an abort, a socket error such as "aborted"), as opposed to a bug. */
function isStreamFailure(error: unknown): boolean {
  return (
    error instanceof TypeError ||
    error instanceof DOMException ||
    (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string')
  );
}

/** Why the node canceled the stream that just ended (null: it was not canceled), forgotten once read. */
function takeCanceled(position: Position): string | null {
  const reason = position.canceled;
  position.canceled = null;
  return reason;
}

/**
 * One failed attempt as the KvError to count, or the error that ends the watch (thrown): a bug,
 * or an answer no retry changes. A stream that breaks the protocol counts as a failed attempt.
 */
export function classify(error: unknown, endpoint: string, connection: AbortSignal): KvError {
  if (error instanceof KvError) {
    if (FINAL_CODES.has(error.code)) throw error;
    return error;
  }
  if (!isAborted(connection) && !isStreamFailure(error)) throw error;
  return new KvError('CONNECTION', `watch: the stream from ${endpoint} broke`, { endpoint, definite: true });
}

/**
 * A watch that resumes by itself (DESIGN.md §12 "Watch"): it streams from one endpoint; when the
 * stream ends, is canceled, goes silent, breaks the protocol or the node is down, it reopens (on
 * the next endpoint after a failure, with the client's backoff) from the revision after the last
 * one it yielded, so the caller sees every matching revision once, in order. Without a start
 * revision the watch starts where the node's start header says (every change applied after it
 * connected); with an older node that sends none, where its first update says, and a stream lost
 * before that reopens without one: nothing was promised yet, so nothing is skipped. A run of failed attempts longer than the retry policy ends the iteration with a KvError,
 * as do answers no retry can change (400; 410 COMPACTED once every endpoint has refused the same
 * start revision). `signal` and `break` end it quietly.
 */
export async function* watchUpdates(
  target: WatchTarget,
  keyOrPrefix: string,
  options: WatchOptions = {},
): AsyncGenerator<WatchUpdate> {
  const retry = { ...target.retry, ...options.retry };
  const position: Position = {
    next: options.startRevision ?? null,
    partial: [],
    partialBytes: 0,
    canceled: null,
  };
  const interval = options.progressIntervalMs;
  const silentMs =
    interval === 0 ? null : WATCH_SILENT_INTERVALS_MAX * (interval ?? WATCH_PROGRESS_INTERVAL_MS_DEFAULT);
  const rotation = new Rotation(target.endpoints);
  let failures = 0;
  let outageStartMs = Date.now();
  // Each pass is one stream; a stream that yielded or lived long resets the count (it is per outage).
  for (let stream = 0; stream < WATCH_STREAMS_MAX; stream += 1) {
    if (isAborted(options.signal)) return;
    const endpoint = rotation.current;
    const connection = new AbortController();
    const signal = streamSignal(options.signal, connection);
    const openedMs = Date.now();
    const start = position.next;
    let failure: KvError | null = null;
    let yielded = false;
    try {
      const path = watchPath(keyOrPrefix, options, start);
      const response = await connect(target, endpoint, path, signal, connection);
      takeStart(response, position, endpoint);
      for await (const update of streamUpdates(response, position, endpoint, silentMs, connection)) {
        failures = 0;
        yielded = true;
        yield update;
      }
    } catch (error) {
      if (isAborted(options.signal)) return;
      failure = classify(error, endpoint, connection.signal);
    } finally {
      connection.abort();
    }
    const healthy = Date.now() - openedMs >= WATCH_HEALTHY_CONNECTION_MS;
    if (healthy) failures = 0;
    // A cancel for lost history moves on: this node's history starts past the position.
    const movedOn = takeCanceled(position)?.startsWith('compacted') === true;
    if (movedOn) rotation.advance(position.next);
    // A stream that ended or was canceled reopens where it stopped, at once unless it ended empty-handed.
    if (failure === null && (yielded || healthy)) continue;
    failure ??= new KvError('CONNECTION', `watch: ${endpoint} ended the stream at once`, {
      endpoint,
      definite: true,
    });
    const compacted = failure.code === 'COMPACTED';
    if (compacted) {
      const final = rotation.compacted(failure, start);
      if (final !== null) throw final;
    }
    if (!movedOn) rotation.advance(position.next);
    if (failures === 0) outageStartMs = Date.now();
    failures += 1;
    const spent = failures >= retry.attemptsMax || Date.now() - outageStartMs >= retry.totalMsMax;
    // (a 410 is an answer, not an outage: the endpoints that have not refused are tried first)
    if (spent && !compacted) throw failure;
    await backoff(retry, failures, outageStartMs + retry.totalMsMax, options.signal);
  }
  throw new KvError('INVALID_INPUT', `watch: more than ${WATCH_STREAMS_MAX} streams`, { definite: true });
}
