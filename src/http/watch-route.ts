import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WatchService, WatchSink, WatchSubscription } from '../api/contracts.ts';
import { AspenError } from '../api/errors.ts';
import type { WatchEvent, WatchRequest } from '../api/types.ts';
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

/** One SSE event; `id` only where a resume may start after it. */
function sseEvent(event: string, data: unknown, id?: number): string {
  return `event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;
}

/**
 * A watcher's stream as Server-Sent Events. Each revision is one write, its last event carrying the
 * `id:` (a stream cut inside a revision resumes at that revision). The sink is ready while the
 * socket's buffer is under its high-water mark; 'drain' resumes the watcher.
 */
class SseSink implements WatchSink {
  private readonly response: ServerResponse;
  private ended = false;

  constructor(response: ServerResponse) {
    this.response = response;
  }

  events(revision: number, events: readonly WatchEvent[]): void {
    assert(events.length > 0, 'a revision passed on has events');
    let text = '';
    for (const [position, event] of events.entries())
      text += sseEvent(event.type, event, position === events.length - 1 ? revision : undefined);
    this.write(text);
  }

  progress(revision: number): void {
    this.write(sseEvent('progress', { revision }, revision));
  }

  canceled(reason: string, revision: number): void {
    this.write(sseEvent('canceled', { reason, revision }));
    this.end();
  }

  ready(): boolean {
    return !this.ended && !this.response.destroyed && !this.response.writableNeedDrain;
  }

  /** End the stream (after a cancel, or as the server stops): the client resumes from its last id. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.response.end();
  }

  private write(text: string): void {
    if (this.ended || this.response.destroyed) return;
    this.response.write(text);
  }
}

/**
 * GET /watch (docs/api.md "Watch"): validation and the hub's refusals (COMPACTED, TOO_MANY_WATCHERS)
 * answer as ordinary JSON errors; once the watcher is open the reply is hijacked and becomes an SSE
 * stream until the client leaves, the hub cancels it, or the server stops (then every stream ends at
 * once, so a stop is never held by a watcher, and the clients resume elsewhere).
 */
export function addWatchRoute(app: FastifyInstance, watch: WatchService): void {
  const open = new Map<SseSink, WatchSubscription>();
  app.addHook('preClose', (done) => {
    for (const [sink, subscription] of open) {
      subscription.close();
      sink.end();
    }
    open.clear();
    done();
  });
  app.get('/watch', { schema: { querystring: watchQuery } }, (request: FastifyRequest, reply) => {
    const watchRequest = watchRequestOf(request.query as WatchQuery, request.headers['last-event-id']);
    const response = reply.raw;
    const sink = new SseSink(response);
    const subscription = watch.open(watchRequest, sink); // throws before anything is sent
    reply.hijack();
    open.set(sink, subscription);
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // A stream that ended means the client reconnects: never reuse its connection.
      connection: 'close',
      'x-accel-buffering': 'no',
    });
    response.flushHeaders();
    response.on('drain', () => {
      subscription.resume();
    });
    response.once('close', () => {
      open.delete(sink);
      subscription.close();
    });
  });
}
