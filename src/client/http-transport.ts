import { X509Certificate } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
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
 * One keep-alive HTTP/1.1 pool for all endpoints, http:// and https://. node:http(s) rather than
 * fetch, so that a request that certainly never reached the server (its socket never connected:
 * refused, unresolvable, timed out while connecting, or its TLS handshake failed) can be told apart
 * from one lost after it may have been received, and so that a CA of the caller's applies.
 */
export class HttpPool {
  private readonly plainAgent = new http.Agent({ keepAlive: true, maxSockets: SOCKETS_PER_ENDPOINT_MAX });
  private readonly tlsAgent: https.Agent;
  /** Headers every request carries (the bearer token). */
  private readonly headers: Readonly<Record<string, string>>;

  /** `ca`: PEM certificates trusted for https:// endpoints instead of Node's default roots (checkCa). */
  constructor(headers: Readonly<Record<string, string>> = {}, ca?: string) {
    this.headers = headers;
    this.tlsAgent = new https.Agent({
      keepAlive: true,
      maxSockets: SOCKETS_PER_ENDPOINT_MAX,
      ...(ca === undefined ? {} : { ca }),
    });
  }

  request(
    endpoint: string,
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal,
  ): Promise<HttpAnswer> {
    const url = new URL(path, endpoint);
    const secure = url.protocol === 'https:';
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      let connected = false;
      const request = (secure ? https : http).request(
        url,
        {
          method,
          agent: secure ? this.tlsAgent : this.plainAgent,
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
          readText(response, RESPONSE_BYTES_MAX).then(
            (text) => {
              resolve({
                status: response.statusCode ?? 0,
                body: decode(text, response.headers['content-type'] ?? ''),
              });
            },
            (error: unknown) => {
              reject(failure(error as Error, endpoint, true, signal));
            },
          );
        },
      );
      request.on('socket', (socket: Socket) => {
        // A pooled socket is connected already; a new one connects first, and over TLS no request
        // byte leaves before the handshake completed (secureConnect).
        if (socket.connecting)
          socket.once(secure ? 'secureConnect' : 'connect', () => {
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
    this.plainAgent.destroy();
    this.tlsAgent.destroy();
  }
}

/**
 * Open a long-lived GET (a watch or observe stream) on its own connection: its answer once the
 * headers arrived, or the request's error. `ca` as for HttpPool.
 */
export function openStream(
  url: URL,
  headers: Readonly<Record<string, string>>,
  signal: AbortSignal,
  ca: string | undefined,
): Promise<IncomingMessage> {
  const secure = url.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const options = { headers, signal, agent: false as const };
    const request = secure
      ? https.request(url, ca === undefined ? options : { ...options, ca }, resolve)
      : http.request(url, options, resolve);
    request.on('error', reject);
    request.end();
  });
}

/** A response's body as text, at most `bytesMax` bytes (a larger one rejects). */
export function readText(response: IncomingMessage, bytesMax: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    response.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > bytesMax) response.destroy(new Error(`response over ${bytesMax} bytes`));
      else chunks.push(chunk);
    });
    response.on('end', () => {
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    response.on('error', reject);
  });
}

/** Certificates one `ca` may hold (a whole system bundle is about 150). */
export const CA_CERTIFICATES_MAX = 1_024;

/**
 * The `ca` of KvClientOptions as PEM text, each certificate in it parsed; a RangeError for anything
 * that is not one or more PEM certificates (Node itself would silently ignore a malformed one).
 */
export function checkCa(ca: string | Uint8Array | undefined): string | undefined {
  if (ca === undefined) return undefined;
  const text = typeof ca === 'string' ? ca : Buffer.from(ca).toString('utf8');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new RangeError('ca: no PEM certificate (-----BEGIN CERTIFICATE-----) in it');
  if (blocks.length > CA_CERTIFICATES_MAX)
    throw new RangeError(`ca: more than ${CA_CERTIFICATES_MAX} certificates`);
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new RangeError(
        `ca: certificate ${index + 1} is not valid: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }
  return blocks.join('\n');
}

/**
 * OpenSSL's certificate verification failures as Node names them (error.code; the list of
 * tls.TLSSocket's authorizationError in the Node documentation).
 */
const CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/**
 * A failed TLS handshake as a TLS_ERROR (definite: no request byte is sent before the handshake
 * completes), or null for any other failure. No retry changes a certificate or a protocol mismatch,
 * so callers treat it as final.
 */
export function tlsFailure(error: Error, endpoint: string): KvError | null {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  let why: string;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    why = `the node's certificate is not for this host (${error.message})`;
  else if (CERTIFICATE_CODES.has(code))
    why = `the node's certificate is not trusted (${code}: ${error.message.split(';')[0] ?? ''}); give the CA that signed it (KvClient ca, aspen --cacert)`;
  else if (code === 'EPROTO' || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    const openssl = /SSL routines:[^:]*:([^:]+)/.exec(error.message)?.[1] ?? error.message;
    why = `the TLS handshake failed (${code}: ${openssl}); is this the https:// address of a node started with --http-tls-cert?`;
  } else return null;
  return new KvError('TLS_ERROR', `${endpoint}: ${why}`, { endpoint, definite: true });
}

/** A failed request as a KvError: definite exactly when no connection (so no byte) reached the server. */
function failure(error: Error, endpoint: string, connected: boolean, signal: AbortSignal): KvError {
  const tls = signal.aborted ? null : tlsFailure(error, endpoint);
  if (tls !== null) return tls;
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
