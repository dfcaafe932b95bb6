import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { HttpTls } from '../http/server.ts';
import { readBoundedFile } from './bounded-file.ts';
import { ConfigError } from './errors.ts';

export type { HttpTls };

/** Largest certificate chain or key file read (a chain of a few RSA 4096 certificates is ~10 KiB). */
export const TLS_PEM_BYTES_MAX = 256 * 1024;

/** The first line of a crypto error (OpenSSL's text, without its stack). */
function reason(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

/**
 * Read and check --http-tls-cert and --http-tls-key: each must be a readable PEM file of its kind,
 * and the key must belong to the certificate. Anything else is one ConfigError line naming the file.
 * Read at start and again on SIGHUP (a bad pair then keeps the one in force).
 */
export function loadHttpTls(certPath: string, keyPath: string): HttpTls {
  const cert = readBoundedFile(certPath, '--http-tls-cert', TLS_PEM_BYTES_MAX);
  const key = readBoundedFile(keyPath, '--http-tls-key', TLS_PEM_BYTES_MAX);
  try {
    new X509Certificate(cert); // the first certificate of the chain: the server's own
  } catch (error) {
    throw new ConfigError(`--http-tls-cert ${certPath} is not a PEM certificate: ${reason(error)}`);
  }
  try {
    createPrivateKey(key);
  } catch (error) {
    throw new ConfigError(`--http-tls-key ${keyPath} is not a PEM private key: ${reason(error)}`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    throw new ConfigError(
      `--http-tls-key ${keyPath} does not belong to --http-tls-cert ${certPath} (or the chain is unusable): ${reason(error)}`,
    );
  }
  return { cert, key };
}

/** The HTTP API's certificate and key of a configuration, read and checked; null for plain HTTP. */
export function httpTlsOf(config: {
  readonly httpTlsCert: string | null;
  readonly httpTlsKey: string | null;
}): HttpTls | null {
  if (config.httpTlsCert === null || config.httpTlsKey === null) return null;
  return loadHttpTls(config.httpTlsCert, config.httpTlsKey);
}

/** Why the certificate is not valid at `nowMs` (expired, or not yet valid), for a warning; null when it is. */
export function certificateProblem(tls: HttpTls, nowMs: number): string | null {
  const certificate = new X509Certificate(tls.cert);
  if (nowMs > certificate.validToDate.getTime()) return `it expired on ${certificate.validTo}`;
  if (nowMs < certificate.validFromDate.getTime()) return `it is not valid before ${certificate.validFrom}`;
  return null;
}
