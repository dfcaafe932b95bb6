import { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify';

/** Longest URL kept in a request's log line. */
const LOGGED_URL_CHARS_MAX = 200;

/**
 * Fastify's request lines, at the levels a node logs at: one line per request at debug (method,
 * URL, status, time) instead of two at info, a failed reply at warn. Lines carry Fastify's request
 * id (`reqId`) and whatever the node's logger adds (`node_id`, `component`).
 */
class RequestLog extends LogController {
  override incomingRequest(): void {
    // one line per request: requestCompleted says it all
  }

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    const line = `${request.method} ${request.url.slice(0, LOGGED_URL_CHARS_MAX)} ${reply.statusCode} in ${reply.elapsedTime.toFixed(1)} ms`;
    const fields = { status: reply.statusCode, response_ms: Math.round(reply.elapsedTime) };
    if (error == null) reply.log.debug(fields, line);
    else reply.log.warn({ ...fields, err: error }, `${line}: ${error.message}`);
  }

  override routeNotFound(request: FastifyRequest): void {
    request.log.debug(`no route for ${request.method} ${request.url.slice(0, LOGGED_URL_CHARS_MAX)}`);
  }

  override streamError(error: Error & { code?: string }, request: FastifyRequest, reply: FastifyReply): void {
    if (error.code === 'ERR_STREAM_PREMATURE_CLOSE')
      reply.log.debug('the client left before the answer ended');
    else
      reply.log.warn(
        { err: error },
        `the answer to ${request.method} ${request.url.slice(0, LOGGED_URL_CHARS_MAX)} broke off: ${error.message}`,
      );
  }

  override serviceUnavailable(logger: FastifyBaseLogger): void {
    logger.debug('a request arrived while the server closes: 503');
  }
}

/** Fastify's logger options: the node's pino logger with request lines at debug, or none (`false`). */
export function fastifyLogging(
  logger: FastifyBaseLogger | boolean | undefined,
): { logger: boolean } | { loggerInstance: FastifyBaseLogger; logController: LogController } {
  if (typeof logger !== 'object') return { logger: logger ?? false };
  return { loggerInstance: logger, logController: new RequestLog() };
}
