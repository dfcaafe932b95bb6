/**
 * GET /state's `http_urls`: where each member's HTTP API listens, as the node asked knows it, so a
 * client given one endpoint finds every member (`aspen status`, `aspen health`). The node's own URL
 * comes from --http-addr and the port it listens on; the others' from their discovery
 * announcements (`http_addr`, authenticated by the cluster cookie). A wildcard host (0.0.0.0, ::)
 * is replaced by the host of the member's raft_addr; a member whose address is unknown (discovery
 * off, not announced yet) is left out. The scheme is this node's: a cluster serves HTTPS on every
 * node or on none.
 */
import type { ClusterState } from '../api/types.ts';
import type { NodeId } from '../base/ids.ts';

/** Hosts that mean "every interface": no client can dial them. */
const WILDCARD_HOSTS: ReadonlySet<string> = new Set(['', '0.0.0.0', '::', '[::]']);
/** Multiaddr protocols whose value is a host a client can dial. */
const MULTIADDR_HOSTS: ReadonlySet<string> = new Set(['ip4', 'ip6', 'dns', 'dns4', 'dns6']);

export interface SelfHttp {
  readonly nodeId: NodeId;
  /** --http-addr as configured (`host:port`), or undefined when the node has none. */
  readonly address: string | undefined;
  /** The port the server listens on (the configured one may be 0: any free port). */
  readonly port: number | null;
  readonly secure: boolean;
}

/** `{ "<node id>": "http(s)://host:port" }` for every member (voters, then learners) with a known address. */
export function memberHttpUrls(
  state: ClusterState,
  self: SelfHttp,
  announced: ReadonlyMap<NodeId, string | null>,
): Record<string, string> {
  const urls: Record<string, string> = {};
  for (const node of [...state.nodes, ...state.learners]) {
    const address =
      node.id === self.nodeId ? withPort(self.address, self.port) : (announced.get(node.id) ?? null);
    const url = address === null ? null : httpUrl(address, node.raft_addr, self.secure);
    if (url !== null) urls[String(node.id)] = url;
  }
  return urls;
}

/** The configured `host:port` with the port actually listened on. */
function withPort(address: string | undefined, port: number | null): string | null {
  if (address === undefined) return null;
  const host = splitHostPort(address)?.host;
  if (host === undefined) return null;
  return port === null ? address : `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function splitHostPort(address: string): { host: string; port: number } | null {
  const match = /^(.*):(\d{1,5})$/.exec(address);
  if (match === null) return null;
  return { host: (match[1] ?? '').replace(/^\[(.*)\]$/, '$1'), port: Number(match[2]) };
}

/** `http(s)://host:port` from an announced `host:port`, or null when no client could dial it. */
export function httpUrl(address: string, raftAddr: string, secure: boolean): string | null {
  const parts = splitHostPort(address);
  if (parts === null || parts.port < 1 || parts.port > 65_535) return null;
  const host = WILDCARD_HOSTS.has(parts.host) ? raftHost(raftAddr) : parts.host;
  if (host === null || WILDCARD_HOSTS.has(host)) return null;
  try {
    const url = new URL(
      `${secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${parts.port}`,
    );
    return url.origin;
  } catch {
    return null;
  }
}

/** The host of a raft address: `ip:port`, or a multiaddr starting /ip4/, /ip6/ or /dns…/. */
function raftHost(raftAddr: string): string | null {
  if (raftAddr.startsWith('/')) {
    const [, protocol = '', value = ''] = raftAddr.split('/');
    return MULTIADDR_HOSTS.has(protocol) && value.length > 0 ? value : null;
  }
  return splitHostPort(raftAddr)?.host ?? null;
}
