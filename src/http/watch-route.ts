import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WatchService, WatchSink, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import { WATCH_START_HEADER, type WatchEvent, type WatchRequest } from '../api/types.ts';
import { assert } from '../base/assert.ts';

/** A revision number as text: a positive decimal without sign or leading zero (the hub checks the range). */
const REVISION_PATTERN = '^[1-9][0-9]{0,15}$';
/** A Last-Event-ID: a revision this node sent, or 0 (nothing seen yet). */
const EVENT_ID = /^(0|[1-9][0-9]{0,15})$/;

const watchQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    key: { type: 'string' },
    prefix: { type: 'string' },
    start_revision: { type: 'string', pattern: REVISION_PATTERN },
    prev_kv: { enum: ['true', 'false'] },
    progress_interval_ms: { type: 'string', pattern: '^(0|[1-9][0-9]{0,8})$' },
  },
} as const;

interface WatchQuery {
  readonly key?: string;
  readonly prefix?: string;
  readonly start_revision?: string;
  readonly prev_kv?: 'true' | 'false';
  readonly progress_interval_ms?: string;
}

/**
 * The watch request a GET /watch stands for: the query's fields as numbers and booleans, and a
 * `Last-Event-ID` header (an EventSource reconnecting, or a client resuming) as start_revision id + 1,
 * ahead of the query's start_revision.
 */
export function watchRequestOf(query: WatchQuery, lastEventId: string | string[] | undefined): WatchRequest {
  let start = query.start_revision === undefined ? undefined : Number(query.start_revision);
  if (lastEventId !== undefined) {
    if (typeof lastEventId !== 'string' || !EVENT_ID.test(lastEventId))
      throw new AspenError(
        'INVALID_INPUT',
        'Last-Event-ID must be a revision this node sent (a whole number)',
      );
    start = Number(lastEventId) + 1;
  }
  return {
    ...(query.key === undefined ? {} : { key: query.key }),
    ...(query.prefix === undefined ? {} : { prefix: query.prefix }),
    ...(start === undefined ? {} : { start_revision: start }),
    ...(query.prev_kv === undefined ? {} : { prev_kv: query.prev_kv === 'true' }),
    ...(query.progress_interval_ms === undefined
      ? {}
      : { progress_interval_ms: Number(query.progress_interval_ms) }),
  };
}

/**
 * Characters a stream gathers within one turn of the event loop before they go to its socket at once;
 * past it they go now (so the socket's high-water mark, which ready() reads, still holds the stream back).
 */
export const SSE_BATCH_CHARS_MAX = 64 * 1024;
/**
 * Longest a stream goes without a byte: every stream gets an SSE comment line this often, whatever its
 * progress interval (0 included). A comment is no event (EventSource and KvClient.watch skip it); the
 * write is what lets TCP notice a peer that vanished (its retransmissions time out and the socket
 * closes), so a half-open stream does not hold one of the node's WATCHERS_MAX places forever.
 */
export const WATCH_HEARTBEAT_MS = 15_000;
/** The heartbeat: one comment line (no blank line, so it never ends or splits an event). */
const SSE_HEARTBEAT = ':\n';

/** One SSE event; `id` only where a resume may start after it. */
function sseEvent(event: string, data: unknown, id?: number): string {
  return `event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;
}

/**
 * The frames of one revision's events: its last event carries the `id:` (a stream cut inside a
 * revision resumes at that revision). Kept per events array: the hub passes the same array to every
 * watcher of the same filter, so a revision is serialized once per filter, not once per watcher. The
 * map holds no array alive; the hub bounds the arrays it shares (WATCH_SHARED_REVISIONS_MAX).
 */
const revisionFrames = new WeakMap<readonly WatchEvent[], string>();

export function revisionFrame(revision: number, events: readonly WatchEvent[]): string {
  const kept = revisionFrames.get(events);
  if (kept !== undefined) return kept;
  assert(events.length > 0, 'a revision passed on has events');
  let text = '';
  const last = events.length - 1;
  for (let position = 0; position <= last; position += 1) {
    const event = events[position];
    assert(event !== undefined && event.revision === revision, 'the events are of the revision');
    text += sseEvent(event.type, event, position === last ? revision : undefined);
  }
  revisionFrames.set(events, text);
  return text;
}

/**
 * Streams with text gathered in this turn, written in one go at its end (setImmediate): a watcher that
 * hears several revisions in one turn costs one socket write, not one per revision.
 */
class SseBatcher {
  private readonly waiting = new Set<SseSink>();
  private scheduled = false;

  add(sink: SseSink): void {
    this.waiting.add(sink);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const sinks = [...this.waiting];
      this.waiting.clear();
      for (const waiting of sinks) waiting.flush();
    });
  }

  forget(sink: SseSink): void {
    this.waiting.delete(sink);
  }
}

/**
 * A watcher's stream as Server-Sent Events. Text is gathered in order (a revision's events always
 * together) and written once per turn, or at once past SSE_BATCH_CHARS_MAX. The sink is ready while the
 * socket's buffer is under its high-water mark; 'drain' resumes the watcher.
 */
export class SseSink implements WatchSink {
  private readonly response: ServerResponse;
  private readonly batcher: SseBatcher;
  private ended = false;
  /** Text not yet written, in stream order. */
  private gathered = '';

  constructor(response: ServerResponse, batcher: SseBatcher) {
    this.response = response;
    this.batcher = batcher;
  }

  events(revision: number, events: readonly WatchEvent[]): void {
    this.write(revisionFrame(revision, events));
  }

  progress(revision: number): void {
    this.write(sseEvent('progress', { revision }, revision));
  }

  canceled(reason: string, revision: number): void {
    this.write(sseEvent('canceled', { reason, revision }));
    this.end();
  }

  /** Any other event (`id` only where a resume may start after it). */
  send(event: string, data: unknown, id?: number): void {
    this.write(sseEvent(event, data, id));
  }

  /** A comment line, in stream order (skipped while the socket is backed up: its bytes are in flight). */
  heartbeat(): void {
    if (this.ready()) this.write(SSE_HEARTBEAT);
  }

  /** Write what was gathered (the batcher's turn ended, the batch is full, or the stream ends). */
  flush(): void {
    if (this.gathered === '') return;
    const text = this.gathered;
    this.gathered = '';
    this.batcher.forget(this);
    if (this.ended || this.response.destroyed) return;
    this.response.write(text);
  }

  ready(): boolean {
    return !this.ended && !this.response.destroyed && !this.response.writableNeedDrain;
  }

  /** End the stream (after a cancel, or as the server stops): the client resumes from its last id. */
  end(): void {
    if (this.ended) return;
    this.flush();
    this.ended = true;
    this.response.end();
  }

  private write(text: string): void {
    if (this.ended || this.response.destroyed) return;
    this.gathered += text;
    if (this.gathered.length >= SSE_BATCH_CHARS_MAX) this.flush();
    else this.batcher.add(this);
  }
}

/**
 * Every open stream's heartbeat, from one interval timer (unref'd: it never keeps the process alive),
 * running only while a stream is open.
 */
class Heartbeats {
  private readonly sinks = new Set<SseSink>();
  private readonly intervalMs: number;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(intervalMs: number) {
    assert(Number.isSafeInteger(intervalMs) && intervalMs > 0, `heartbeat interval ${intervalMs} ms`);
    this.intervalMs = intervalMs;
  }

  add(sink: SseSink): void {
    this.sinks.add(sink);
    if (this.timer !== null) return;
    this.timer = setInterval(() => {
      // bounded by the hub's WATCHERS_MAX: a stream is here only while its watcher is open
      for (const each of this.sinks) each.heartbeat();
    }, this.intervalMs);
    this.timer.unref();
  }

  forget(sink: SseSink): void {
    this.sinks.delete(sink);
    if (this.sinks.size > 0 || this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
  }
}

export interface WatchRouteOptions {
  /** Tests inject a short one; default WATCH_HEARTBEAT_MS. */
  readonly heartbeatMs?: number;
}

/**
 * The open SSE streams of one route: batched writes, one heartbeat timer, and the end of every stream
 * at once as the server stops (so a stop is never held by a stream, and the clients resume elsewhere).
 * A stream counts as a request in flight, so no idle timeout closes it: its heartbeat (and TCP
 * keepalive) find a dead peer.
 */
export class SseStreams {
  private readonly open = new Map<SseSink, WatchSubscription>();
  private readonly batcher = new SseBatcher();
  private readonly heartbeats: Heartbeats;
  private readonly heartbeatMs: number;

  constructor(app: FastifyInstance, heartbeatMs: number = WATCH_HEARTBEAT_MS) {
    this.heartbeatMs = heartbeatMs;
    this.heartbeats = new Heartbeats(heartbeatMs);
    app.addHook('preClose', (done) => {
      for (const [sink, subscription] of this.open) {
        subscription.close();
        this.heartbeats.forget(sink);
        sink.end();
      }
      this.open.clear();
      done();
    });
  }

  /**
   * Open a subscription that writes to an SSE sink on this reply; a refusal (`subscribe` throws or
   * rejects) answers as an ordinary JSON error, as nothing was sent yet. Once open the reply is
   * hijacked and streams until the client leaves, the source cancels it, or the server stops.
   */
  async stream(
    reply: FastifyReply,
    subscribe: (sink: SseSink) => WatchSubscription | Promise<WatchSubscription>,
    headers: (subscription: WatchSubscription) => Record<string, string> = () => ({}),
  ): Promise<void> {
    const response = reply.raw;
    const sink = new SseSink(response, this.batcher);
    // Listen before the subscription exists: a client gone in between must not leave it open.
    let subscription: WatchSubscription | null = null;
    const client = { gone: false };
    response.once('close', () => {
      client.gone = true;
      this.open.delete(sink);
      this.batcher.forget(sink);
      this.heartbeats.forget(sink);
      subscription?.close();
    });
    subscription = await subscribe(sink); // throws before anything is sent
    reply.hijack();
    if (client.gone || response.destroyed || response.socket === null || response.socket.destroyed) {
      subscription.close(); // the client left before the stream began
      return;
    }
    const opened = subscription;
    this.open.set(sink, opened);
    this.heartbeats.add(sink);
    response.socket.setKeepAlive(true, this.heartbeatMs);
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // A stream that ended means the client reconnects: never reuse its connection.
      connection: 'close',
      'x-accel-buffering': 'no',
      ...headers(opened),
    });
    response.flushHeaders();
    response.on('drain', () => {
      opened.resume();
    });
  }
}

/**
 * GET /watch (docs/api.md "Watch"): validation and the hub's refusals (COMPACTED, TOO_MANY_WATCHERS)
 * answer as ordinary JSON errors; once the watcher is open the reply becomes an SSE stream (SseStreams).
 */
export function addWatchRoute(
  app: FastifyInstance,
  watch: WatchService,
  options: WatchRouteOptions = {},
): void {
  const streams = new SseStreams(app, options.heartbeatMs);
  app.get('/watch', { schema: { querystring: watchQuery } }, async (request: FastifyRequest, reply) => {
    const watchRequest = watchRequestOf(request.query as WatchQuery, request.headers['last-event-id']);
    // Where the stream starts: a client that connected without a start knows its position at once.
    await streams.stream(
      reply,
      (sink) => watch.open(watchRequest, sink),
      (opened) => ({ [WATCH_START_HEADER]: String(opened.startRevision) }),
    );
  });
}
