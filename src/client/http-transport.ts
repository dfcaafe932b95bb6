import http from 'node:http';
import type { Socket } from 'node:net';
import { KvError } from './errors.ts';

/** Keep-alive sockets per endpoint (the pool's bound). */
export const SOCKETS_PER_ENDPOINT_MAX = 64;
/** Largest response body read; the API's largest answer (a full scan page) is well under it. */
export const RESPONSE_BYTES_MAX = 64 * 1024 * 1024;
/** Characters of a non-JSON answer quoted in an error message. */
const QUOTE_CHARS_MAX = 120;

export interface HttpAnswer {
  readonly status: number;
  /** Parsed JSON, or the raw text when the answer is not JSON (Prometheus metrics). */
  readonly body: unknown;
}

/**
 * One keep-alive HTTP/1.1 pool for all endpoints. node:http rather than fetch, so that a request
 * that certainly never reached the server (its socket never connected: refused, unresolvable, or
 * timed out while connecting) can be told apart from one lost after it may have been received.
 */
export class HttpPool {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: SOCKETS_PER_ENDPOINT_MAX });
  /** Headers every request carries (the bearer token). */
  private readonly headers: Readonly<Record<string, string>>;

  constructor(headers: Readonly<Record<string, string>> = {}) {
    this.headers = headers;
  }

  request(
    endpoint: string,
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal,
  ): Promise<HttpAnswer> {
    const url = new URL(path, endpoint);
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      let connected = false;
      const request = http.request(
        url,
        {
          method,
          agent: this.agent,
          signal,
          headers:
            payload === null
              ? { ...this.headers, accept: 'application/json' }
              : {
                  ...this.headers,
                  'content-type': 'application/json',
                  'content-length': payload.length,
                  accept: 'application/json',
                },
        },
        (response) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > RESPONSE_BYTES_MAX)
              response.destroy(new Error(`response over ${RESPONSE_BYTES_MAX} bytes`));
            else chunks.push(chunk);
          });
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            resolve({
              status: response.statusCode ?? 0,
              body: decode(text, response.headers['content-type'] ?? ''),
            });
          });
          response.on('error', (error) => {
            reject(failure(error, endpoint, true, signal));
          });
        },
      );
      request.on('socket', (socket: Socket) => {
        // A pooled socket is connected already; a new one connects first.
        if (socket.connecting)
          socket.once('connect', () => {
            connected = true;
          });
        else connected = true;
      });
      request.on('error', (error) => {
        reject(failure(error, endpoint, connected, signal));
      });
      request.end(payload ?? undefined);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A failed request as a KvError: definite exactly when no connection (so no byte) reached the server. */
function failure(error: Error, endpoint: string, connected: boolean, signal: AbortSignal): KvError {
  if (signal.aborted) {
    const timedOut = signal.reason instanceof DOMException && signal.reason.name === 'TimeoutError';
    const what = timedOut ? 'timed out' : 'aborted';
    return new KvError(
      timedOut ? 'TIMEOUT' : 'ABORTED',
      `${what} ${connected ? 'waiting for' : 'connecting to'} ${endpoint}`,
      { endpoint, definite: !connected },
    );
  }
  const code = (error as NodeJS.ErrnoException).code ?? '';
  return new KvError('CONNECTION', `${endpoint}: ${code === '' ? error.message : code}`, {
    endpoint,
    definite: !connected,
  });
}

function decode(text: string, contentType: string): unknown {
  if (text.length === 0) return null;
  if (!contentType.includes('json')) return text;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: 'BAD_RESPONSE', message: `not JSON: ${text.slice(0, QUOTE_CHARS_MAX)}` } };
  }
}
