import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { AspenError } from '../api/errors.ts';
import { checkJsonBody } from '../api/limits.ts';

/** Parameters in one query string (the API's GET routes take one or two). */
export const QUERY_PARAMETERS_MAX = 16;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Query objects whose text was not valid percent-encoded UTF-8 (the parser may not throw: it runs in the router). */
const malformedQueries = new WeakSet<object>();

function decodeComponent(text: string): string | null {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    return null; // a stray '%' or bytes that are not UTF-8: never stored as some other key
  }
}

/**
 * Query strings decoded strictly: percent-encoding must spell well-formed UTF-8 (the lenient default
 * keeps "%FF" as those three characters, an alias of another key); a repeated name becomes an array,
 * which the route schemas refuse. Never throws: a malformed query is refused by `checkQuery`.
 */
export function parseQueryStrict(text: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  const parts = text.length === 0 ? [] : text.split('&');
  if (parts.length > QUERY_PARAMETERS_MAX) {
    malformedQueries.add(query);
    return query;
  }
  for (const part of parts) {
    if (part.length === 0) continue;
    const equals = part.indexOf('=');
    const name = decodeComponent(equals < 0 ? part : part.slice(0, equals));
    const value = decodeComponent(equals < 0 ? '' : part.slice(equals + 1));
    if (name === null || value === null) {
      malformedQueries.add(query);
      continue;
    }
    const previous = query[name];
    query[name] =
      previous === undefined ? value : [...(Array.isArray(previous) ? previous : [previous]), value];
  }
  return query;
}

/** Refuse a query string `parseQueryStrict` could not decode. */
export function checkQuery(query: unknown): AspenError | null {
  if (typeof query === 'object' && query !== null && malformedQueries.has(query)) {
    return new AspenError(
      'INVALID_INPUT',
      `the query string must be percent-encoded UTF-8 with at most ${QUERY_PARAMETERS_MAX} parameters`,
    );
  }
  return null;
}

/**
 * The only body parser: JSON in strict UTF-8 (invalid bytes are refused, not turned into U+FFFD),
 * without prototype keys, bounded in depth and count, every string well-formed Unicode. Any other
 * content type is 415 (so a browser's form or text/plain post never reaches a route).
 */
export function installJsonParser(app: FastifyInstance, bodyLimitBytes: number): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: bodyLimitBytes },
    (request, body, done) => {
      let text: string;
      try {
        text = strictUtf8.decode(body as Buffer);
      } catch {
        done(new AspenError('INVALID_INPUT', 'the body is not valid UTF-8'), undefined);
        return;
      }
      void parseJson(request, text, (error, value) => {
        if (error !== null) {
          done(error, undefined);
          return;
        }
        const problem = checkJsonBody(value);
        if (problem === null) done(null, value);
        else done(problem, undefined);
      });
    },
  );
}

/** Host names always accepted besides IP literals: what a local client sends. */
const LOCAL_HOST_NAMES = ['localhost'];

/**
 * DNS rebinding: a browser page on evil.example whose name later resolves to 127.0.0.1 sends
 * "Host: evil.example". A request is served only when its Host is an IP literal, localhost, or a
 * name the operator configured; no Host at all (HTTP/1.0) is let through.
 */
export function checkHost(
  hostHeader: string | undefined,
  allowedNames: readonly string[],
): AspenError | null {
  if (hostHeader === undefined) return null;
  const host = hostHeader.toLowerCase();
  const bracketed = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(host);
  const name = bracketed?.[1] ?? host.replace(/:\d{1,5}$/, '');
  if (isIP(name) !== 0 || LOCAL_HOST_NAMES.includes(name) || allowedNames.includes(name)) return null;
  return new AspenError(
    'HOST_NOT_ALLOWED',
    `Host "${hostHeader.slice(0, 255)}" is not an address of this node; allow a name with --http-allowed-hosts`,
  );
}
