/**
 * `aspen --endpoints`: each endpoint a URL (`http://10.0.0.5:8001`, `https://db-1.example:8443`) or,
 * as etcdctl takes them, `host:port` (`127.0.0.1:8001`, `[::1]:8001`): http:// is assumed, https://
 * when --cacert is given. A bad one is a usage error that names it.
 */
import { ENDPOINTS_MAX } from '../client/options.ts';
import { InputError } from './aspen-txn.ts';

/** A scheme in front: `http://…`, `https://…`, or another (refused below). */
const HAS_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** The comma-separated endpoints as URL origins, in order, duplicates dropped. */
export function endpointUrls(text: string, secure: boolean): string[] {
  const parts = text
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  if (parts.length === 0) throw new InputError('--endpoints: give at least one endpoint (host:port or URL)');
  if (parts.length > ENDPOINTS_MAX)
    throw new InputError(`--endpoints: at most ${ENDPOINTS_MAX} endpoints, got ${parts.length}`);
  return [...new Set(parts.map((part) => endpointUrl(part, secure)))];
}

/** One endpoint as a URL origin (`http://127.0.0.1:8001`). */
export function endpointUrl(text: string, secure: boolean): string {
  const given = HAS_SCHEME.test(text);
  const bad = (why: string): InputError => new InputError(`--endpoints: "${text}" ${why}`);
  let url: URL;
  try {
    url = new URL(given ? text : `${secure ? 'https' : 'http'}://${text}`);
  } catch {
    throw bad('is not host:port or an http:// or https:// URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad('is not an http:// or https:// URL');
  if (!given && url.port === '') throw bad('has no port: give host:port (e.g. 127.0.0.1:8001) or a URL');
  if (url.username !== '' || url.password !== '')
    throw bad('carries credentials: give a token with --token or ASPEN_TOKEN instead');
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '')
    throw bad('has a path: an endpoint is host:port or scheme://host:port');
  return url.origin;
}
