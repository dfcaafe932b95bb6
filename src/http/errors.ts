import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { FastifyError, FastifyReply } from 'fastify';
import { AspenError, ERROR_STATUS, escalateBrokenInvariant } from '../api/errors.ts';
import type { Log } from '../base/log.ts';
import type { PrometheusMetrics } from './prometheus.ts';

/**
 * The HTTP layer's errors: every failure, the API's own (AspenError) and Fastify's or Node's
 * refusals (no route, bad URL, body too large, bad content type, unparsable JSON, malformed HTTP),
 * leaves as the one error body `{"error":{"code","message","definite"}}` with a code of the status
 * table in docs/api.md.
 */
export type ErrorBody = ReturnType<AspenError['toJSON']>;

/** A log line at a level (info when not given), as the node's logger takes it. */
export type HttpLog = Log;

/** The one answer to a request that is not HTTP. */
const CLIENT_ERROR_BODY = JSON.stringify(new AspenError('INVALID_INPUT', 'malformed HTTP request').toJSON());

/** Request body bound (docs/api.md); a larger body gets 413 BODY_TOO_LARGE. */
export const REQUEST_BODY_BYTES_MAX = 2 * 1024 * 1024;

/** Fastify's own failures (body, schema, content type) as the API's errors. */
export function fromFastifyError(error: Partial<FastifyError>): AspenError | null {
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return new AspenError('BODY_TOO_LARGE', `request body exceeds ${REQUEST_BODY_BYTES_MAX} bytes`);
  if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || error.statusCode === 415)
    return new AspenError('UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
  if (error.validation !== undefined || error.statusCode === 400)
    return new AspenError('INVALID_INPUT', error.message ?? 'invalid request');
  return null;
}

/**
 * The one place where failures become HTTP: AspenError by code, Fastify's refusals by kind, and
 * anything else a 500 INTERNAL with a log line (the process carries on). Every body has `definite`.
 */
export function sendError(
  reply: FastifyReply,
  error: unknown,
  metrics: PrometheusMetrics,
  log: HttpLog,
): FastifyReply {
  escalateBrokenInvariant(error); // the process stops; the reply below may or may not leave first
  const known = error instanceof AspenError ? error : fromFastifyError(error as Partial<FastifyError>);
  let body: ErrorBody;
  if (known === null) {
    const request = reply.request;
    log(
      `http: ${request.method} ${request.url.slice(0, 200)} failed unexpectedly: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
      'error',
      { reqId: request.id },
    );
    // A write that failed this way may or may not have been proposed.
    body = new AspenError('INTERNAL', 'internal error (see the node log)', { definite: false }).toJSON();
  } else {
    body = known.toJSON();
  }
  metrics.errors.inc({ code: body.error.code });
  return reply.code(ERROR_STATUS[body.error.code]).send(body);
}

/**
 * Node's clientError (bytes that are not HTTP, a bad Content-Length, headers too large, a request
 * not received in time): answered 400 INVALID_INPUT in the API's error shape, never Fastify's own
 * body, and the socket closed. A socket already gone gets nothing, and neither does a TLS connection
 * whose handshake never completed (https.Server reports those here too: plain HTTP to the TLS port,
 * a handshake timeout, a refused certificate): an answer would wait forever for the handshake.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  const handshakeFailed = socket instanceof TLSSocket && socket.getPeerFinished() === undefined;
  if (error.code === 'ECONNRESET' || !socket.writable || handshakeFailed) {
    socket.destroy();
    return;
  }
  socket.end(
    `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(CLIENT_ERROR_BODY)}\r\nConnection: close\r\n\r\n${CLIENT_ERROR_BODY}`,
  );
}
