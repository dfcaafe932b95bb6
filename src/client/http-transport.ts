import http from 'node:http';
import { KvError } from './errors.ts';

/** Keep-alive sockets per endpoint (the pool's bound). */
export const SOCKETS_PER_ENDPOINT_MAX = 64;
/** Largest response body read; the API's largest answer (a full scan page) is well under it. */
export const RESPONSE_BYTES_MAX = 64 * 1024 * 1024;

/** Connection errors that prove the request never reached the server. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export interface HttpAnswer {
  readonly status: number;
  readonly body: unknown;
}

/**
 * One keep-alive HTTP/1.1 pool for all endpoints (node:http, so that a refused connection — the
 * request certainly not sent — can be told apart from a connection lost after sending).
 */
export class HttpPool {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: SOCKETS_PER_ENDPOINT_MAX });

  request(endpoint: string, method: 'GET' | 'POST', path: string, body: unknown, signal: AbortSignal): Promise<HttpAnswer> {
    const url = new URL(path, endpoint);
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      let written = false;
      const request = http.request(url, {
        method,
        agent: this.agent,
        signal,
        headers: payload === null ? { accept: 'application/json' } : { 'content-type': 'application/json', 'content-length': payload.length, accept: 'application/json' },
      }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > RESPONSE_BYTES_MAX) response.destroy(new Error(`response over ${RESPONSE_BYTES_MAX} bytes`));
          else chunks.push(chunk);
        });
        response.on('end', () => { resolve({ status: response.statusCode ?? 0, body: parseJson(Buffer.concat(chunks).toString('utf8')) }); });
        response.on('error', (error) => { reject(this.failure(error, endpoint, true, signal)); });
      });
      request.on('finish', () => { written = true; });
      request.on('error', (error) => { reject(this.failure(error, endpoint, written, signal)); });
      request.end(payload ?? undefined);
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private failure(error: Error, endpoint: string, written: boolean, signal: AbortSignal): KvError {
    if (signal.aborted) {
      const timedOut = signal.reason instanceof DOMException && signal.reason.name === 'TimeoutError';
      return new KvError(timedOut ? 'TIMEOUT' : 'ABORTED', `${timedOut ? 'timed out' : 'aborted'} waiting for ${endpoint}`, { endpoint, definite: false });
    }
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const notSent = !written && NOT_SENT_CODES.has(code);
    return new KvError('CONNECTION', `${endpoint}: ${code === '' ? error.message : code}`, { endpoint, definite: notSent });
  }
}

function parseJson(text: string): unknown {
  if (text.length === 0) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: 'BAD_RESPONSE', message: `not JSON: ${text.slice(0, 120)}` } };
  }
}
